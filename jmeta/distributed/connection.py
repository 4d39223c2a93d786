"""Connecting to NATS: URL, credentials and TLS from flags or the environment, one-line errors.

Credentials never come from command-line flags (they would show in ``ps``): user/password or a
token from ``JMETA_NATS_USER``/``JMETA_NATS_PASSWORD`` or ``JMETA_NATS_TOKEN``; TLS from
``JMETA_NATS_TLS_CA`` (the CA that signed the server certificate) and optionally
``JMETA_NATS_TLS_CERT``/``JMETA_NATS_TLS_KEY`` (a client certificate, for mutual TLS). A
``tls://`` URL or a CA file turns TLS on. NKey/JWT credentials are not supported yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import urllib.parse
from typing import Any, Mapping

from jmeta.distributed import settings

__all__ = ["ConnectError", "NatsOptions", "connect"]

SCHEMES = ("nats", "tls")


class ConnectError(RuntimeError):
    """The NATS server cannot be reached or refuses the client (one line, says which)."""


@dataclasses.dataclass(frozen=True)
class NatsOptions:
    """How to reach the NATS server.

    Attributes:
      url: ``nats://HOST:PORT`` or ``tls://HOST:PORT``.
      user, password: user/password authentication (both or neither).
      token: token authentication (instead of user/password).
      tls_ca: PEM file of the CA that signed the server's certificate (turns TLS on).
      tls_cert, tls_key: PEM files of a client certificate and its key (mutual TLS).
      connect_timeout: seconds to wait for the first connection before giving up.
    """

    url: str = settings.DEFAULT_URL
    user: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 10.0

    def __post_init__(self):
        parsed = urllib.parse.urlparse(self.url) if isinstance(self.url, str) else None
        if parsed is None or parsed.scheme not in SCHEMES or not parsed.hostname:
            raise ValueError(f"nats: expected a URL nats://HOST:PORT or tls://HOST:PORT, got "
                             f"{self.url!r}")
        try:
            parsed.port
        except ValueError:
            raise ValueError(f"nats: bad port in {self.url!r}") from None
        if parsed.username or parsed.password:
            raise ValueError(f"nats: put credentials in ${settings.ENV_USER}/"
                             f"${settings.ENV_PASSWORD} or ${settings.ENV_TOKEN}, not in the URL")
        if (self.user is None) != (self.password is None):
            raise ValueError(f"nats: set both ${settings.ENV_USER} and ${settings.ENV_PASSWORD}, "
                             f"or neither")
        if self.token is not None and self.user is not None:
            raise ValueError(f"nats: set either a token (${settings.ENV_TOKEN}) or a user and "
                             f"password, not both")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(f"nats: set both ${settings.ENV_TLS_CERT} and "
                             f"${settings.ENV_TLS_KEY}, or neither")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"nats: {name} file {path!r} does not exist")
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout: expected > 0, got {self.connect_timeout!r}")

    @classmethod
    def from_env(cls, url: str | None = None, env: Mapping[str, str] | None = None,
                 **overrides: Any) -> "NatsOptions":
        """Options from ``url`` (else ``$JMETA_NATS_URL``, else the default) and the
        environment's credentials and TLS files (empty variables count as unset)."""
        env = os.environ if env is None else env
        get = lambda name: env.get(name) or None  # noqa: E731
        return cls(url=url or get(settings.ENV_URL) or settings.DEFAULT_URL,
                   user=get(settings.ENV_USER), password=get(settings.ENV_PASSWORD),
                   token=get(settings.ENV_TOKEN), tls_ca=get(settings.ENV_TLS_CA),
                   tls_cert=get(settings.ENV_TLS_CERT), tls_key=get(settings.ENV_TLS_KEY),
                   **overrides)

    @property
    def uses_tls(self) -> bool:
        return self.url.startswith("tls://") or self.tls_ca is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (server certificate verified against ``tls_ca`` or the system
        CAs), or ``None`` without TLS."""
        if not self.uses_tls:
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert is not None:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


_HANDSHAKE_RESETS = 3  # connection resets during the handshake retried before giving up


def _is_reset(error: BaseException) -> bool:
    return isinstance(error, ConnectionResetError) or "Connection reset" in str(error)


def _reason(error: BaseException | None, reported: list[BaseException]) -> BaseException | None:
    """The server's own reason (an authorization error reported through ``error_cb``) when it
    arrived, else ``error``."""
    for e in reversed(reported):
        if "authorization" in str(e).lower():
            return e
    return error


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no answer"
    text = str(error).strip() or type(error).__name__
    if "Authorization Violation" in text or "authorization" in text.lower():
        return (f"authorization violation (check ${settings.ENV_USER}/${settings.ENV_PASSWORD} "
                f"or ${settings.ENV_TOKEN})")
    if isinstance(error, ConnectionRefusedError) or "Connect call failed" in text:
        return "connection refused (is nats-server running there?)"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if isinstance(error, ssl.SSLError) or "SSL" in text or "certificate" in text:
        return f"TLS error: {text}"
    return text


async def connect(options: NatsOptions, *, name: str = "jmeta", reconnect: bool = True):
    """Connects (``nats.aio.client.Client``); after the first connection the client reconnects
    by itself forever (``reconnect=True``), buffering publishes meanwhile.

    Raises:
      ConnectError: no connection within ``options.connect_timeout`` or the server refused
        the client; the message names the URL and the cause. A connection reset during the
        handshake (a refusing server's close can overtake its reason) is retried up to 3 times
        within the timeout, so the reason (e.g. an authorization violation) is what is reported.
    """
    import nats  # the optional `distributed` extra

    errors: list[BaseException] = []
    connected = asyncio.Event()

    async def error_cb(e):
        errors.append(e)

    async def reconnected_cb():
        connected.set()

    kwargs: dict[str, Any] = dict(
        servers=[options.url], name=name, error_cb=error_cb, reconnected_cb=reconnected_cb,
        connect_timeout=min(2.0, options.connect_timeout), allow_reconnect=reconnect,
        max_reconnect_attempts=-1 if reconnect else 0, reconnect_time_wait=0.25,
        ping_interval=5, max_outstanding_pings=3)
    if options.user is not None:
        kwargs.update(user=options.user, password=options.password)
    if options.token is not None:
        kwargs.update(token=options.token)
    tls = options.ssl_context()
    if tls is not None:
        kwargs.update(tls=tls)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.connect_timeout
    for attempt in range(_HANDSHAKE_RESETS + 1):
        errors.clear()
        task = asyncio.ensure_future(nats.connect(**kwargs))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        except BaseException:
            task.cancel()
            raise
        if not done:
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - the cancellation itself
                pass
            raise ConnectError(f"cannot connect to {options.url}: "
                               f"{_describe(_reason(errors[-1] if errors else None, errors))}")
        error = task.exception()
        if error is None:
            return task.result()
        error = _reason(error, errors)
        # A server refusing the client sends its reason (-ERR) and closes; when the close wins
        # the race, the client sees only a reset. Asking again shows the reason.
        if not _is_reset(error) or attempt == _HANDSHAKE_RESETS or loop.time() >= deadline:
            break
        await asyncio.sleep(0.1)
    raise ConnectError(f"cannot connect to {options.url}: {_describe(error)}")
