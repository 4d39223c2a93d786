"""``jmeta sampler``: roll out and adapt on task batches under the latest parameters, publish.

Loop: read the run record (the spec) from the run's bucket; build env, tasks and algorithm;
then repeatedly take the latest ``params`` entry, run the algorithm's ``sample`` on
``tasks_per_batch`` fresh training tasks (MAML-RL: pre-update rollouts, the inner step(s) and
post-update rollouts; RL²: one trial per task) and publish the result as one schema-1
``trajectories`` message (:mod:`jmeta.distributed.schema`) with ``Nats-Msg-Id`` = the batch id.
A publish that fails (server down, stream full) is retried with the same id until it is
acknowledged, so a batch is stored once. After ``batches_per_version`` batches from one
parameter version the sampler waits for the next version.

Stops after ``max_batches`` batches, on SIGTERM/SIGINT (finishing the batch in flight), or on an
error (one line).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
from typing import Any

import jax

from jmeta.distributed import schema, settings
from jmeta.distributed.connection import NatsOptions, connect
from jmeta.distributed.protocol import (
    PARAMS_KEY,
    RUN_KEY,
    DistributedError,
    RunInfo,
    open_bucket,
    params_template,
    spec_sha256,
)
from jmeta.training.spec import build

__all__ = ["run_sampler", "default_sampler_id"]


def default_sampler_id() -> str:
    """``$JMETA_SAMPLER_ID``, else ``HOSTNAME-PID``."""
    return os.environ.get(settings.ENV_SAMPLER_ID) or f"{socket.gethostname()}-{os.getpid()}"


async def run_sampler(options: NatsOptions, run: str, *, sampler_id: str | None = None,
                      max_batches: int | None = None, seed: int | None = None,
                      log_path: str | os.PathLike | None = None, wait: float = 60.0,
                      publish_timeout: float = 300.0, stop: asyncio.Event | None = None,
                      quiet: bool = False) -> dict[str, Any]:
    """Runs a sampler until ``max_batches`` (``None``: forever) or ``stop`` is set.

    Args:
      options: the NATS connection.
      run: the run name (the trainer's ``--run``).
      sampler_id: this sampler's id in batch ids (default :func:`default_sampler_id`).
      max_batches: stop after this many published batches.
      seed: PRNG seed of this sampler's task and rollout keys (default: random, printed).
      log_path: append one JSON line per acknowledged batch (batch id, version, bytes, time).
      wait: seconds to wait for the trainer's bucket, run record and first parameters.
      publish_timeout: give up (error) when one batch could not be stored for this long.
      stop: set it to stop after the batch in flight.

    Returns:
      ``{"published": n, "bytes": b, "seconds": s, "sampler_id": id}``.

    Raises:
      jmeta.distributed.connection.ConnectError: the server is unreachable or refuses us.
      DistributedError: no such run, or a batch could not be stored.
    """
    from nats.js.errors import KeyNotFoundError

    settings.check_run_name(run)
    sampler_id = sampler_id or default_sampler_id()
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches: expected >= 1, got {max_batches}")
    if seed is None:
        seed = secrets.randbits(31)
    stop = stop or asyncio.Event()
    nonce = secrets.token_hex(4)
    say = (lambda msg: None) if quiet else (  # noqa: E731
        lambda msg: print(f"jmeta sampler {sampler_id}: {msg}", file=sys.stderr, flush=True))
    log = open(log_path, "a") if log_path is not None else None
    nc = await connect(options, name=f"jmeta-sampler-{sampler_id}")
    try:
        js = nc.jetstream()
        kv = await open_bucket(js, run, wait)
        deadline = time.monotonic() + wait
        while True:
            try:
                info = RunInfo.from_json((await kv.get(RUN_KEY)).value)
                break
            except KeyNotFoundError:
                if time.monotonic() > deadline:
                    raise DistributedError(f"run {run!r}: no run record after {wait:g} s")
                await asyncio.sleep(0.25)
        spec = info.spec
        sha = spec_sha256(spec)
        _, _, algo = build(spec)
        if algo.sample is None:
            raise DistributedError(f"run {run!r}: {spec.algo} has no sampling phase; the "
                                   f"distributed trainer runs maml-rl and rl2")
        template = params_template(algo, spec.seed)
        num_tasks = info.tasks_per_batch
        sample = jax.jit(lambda p, k: algo.sample(p, k, num_tasks))
        subject = settings.trajectory_subject(run)
        say(f"run {run!r} ({spec.algo} on {spec.env}), {num_tasks} tasks per batch, seed {seed}")
        key = jax.random.key(seed)
        revision, version, params, made = None, None, None, 0
        published, total_bytes, start = 0, 0, time.monotonic()
        while not stop.is_set() and (max_batches is None or published < max_batches):
            try:
                entry = await kv.get(PARAMS_KEY)
            except KeyNotFoundError:
                entry = None
            except Exception as e:  # noqa: BLE001 - server restarting: retry below
                if not _transient(e):
                    raise
                entry = None
            if entry is None:
                if params is None and time.monotonic() > deadline:
                    raise DistributedError(f"run {run!r}: no parameters after {wait:g} s")
                await _sleep(stop, 0.2)
                continue
            if entry.revision != revision:
                params, meta = schema.decode(entry.value, template, "params")
                if meta.get("spec_sha256") != sha:
                    raise DistributedError(f"run {run!r}: parameters from another spec")
                revision, version, made = entry.revision, int(meta["version"]), 0
            if made >= info.batches_per_version:
                await _sleep(stop, 0.05)  # wait for the next version
                continue
            key, k = jax.random.split(key)
            data = await asyncio.to_thread(lambda: jax.device_get(sample(params, k)))
            batch_id = f"{sampler_id}-{nonce}-{published:06d}"
            payload = schema.encode(data, "trajectories", {
                "run": run, "algo": spec.algo, "spec_sha256": sha, "sampler_id": sampler_id,
                "batch_id": batch_id, "params_version": version, "num_tasks": num_tasks,
                "created": time.time()})
            if len(payload) > nc.max_payload:
                raise DistributedError(
                    f"a batch of {num_tasks} tasks is {len(payload)} bytes, over the server's "
                    f"max_payload of {nc.max_payload}; lower --tasks-per-batch on the trainer or "
                    f"raise max_payload in nats.conf")
            ack = await _publish(js, subject, payload, batch_id, publish_timeout, stop)
            if ack is None:
                break
            made += 1
            published += 1
            total_bytes += len(payload)
            if log is not None:
                log.write(json.dumps({"batch_id": batch_id, "params_version": version,
                                      "bytes": len(payload), "seq": ack.seq,
                                      "duplicate": bool(ack.duplicate),
                                      "time": time.time()}) + "\n")
                log.flush()
        seconds = time.monotonic() - start
        say(f"published {published} batches ({total_bytes / 1e6:.1f} MB) in {seconds:.1f} s")
        return {"published": published, "bytes": total_bytes, "seconds": seconds,
                "sampler_id": sampler_id}
    finally:
        if log is not None:
            log.close()
        await _close(nc)


def _transient(e: BaseException) -> bool:
    """Errors of a server that is restarting or briefly unreachable."""
    import nats.errors
    import nats.js.errors

    return isinstance(e, (asyncio.TimeoutError, nats.errors.TimeoutError,
                          nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
                          nats.errors.ConnectionReconnectingError,
                          nats.errors.OutboundBufferLimitError,
                          nats.js.errors.ServiceUnavailableError, nats.js.errors.APIError))


async def _publish(js, subject, payload, batch_id, timeout, stop):
    """Publishes until acknowledged (same ``Nats-Msg-Id`` every time); ``None`` if stopped."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await js.publish(subject, payload, timeout=5.0,
                                    headers={"Nats-Msg-Id": batch_id})
        except Exception as e:  # noqa: BLE001 - filtered by _transient
            if not _transient(e):
                raise
            if time.monotonic() > deadline:
                raise DistributedError(f"batch {batch_id}: not stored after {timeout:g} s "
                                       f"({type(e).__name__}: {e})") from None
            if stop.is_set() and time.monotonic() > deadline - timeout + 10:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _sleep(stop: asyncio.Event, seconds: float):
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def _close(nc):
    try:
        await asyncio.wait_for(nc.close(), 5)
    except Exception:  # noqa: BLE001 - closing a connection to a dead server
        pass


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` (Kubernetes stops pods with SIGTERM)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass

