"""``jmeta trainer``: meta-updates from the samplers' trajectory batches, over NATS JetStream.

The trainer owns the run: it writes the run record and the parameters to the run's bucket,
creates the stream and its durable pull consumer (:mod:`jmeta.distributed.protocol`), and
drives a :class:`jmeta.training.Runner` (``metrics.jsonl``, TensorBoard, orbax checkpoints,
resume) with ``algo.learn`` instead of ``algo.update``.

One meta-iteration: fetch batches until ``num_tasks`` tasks' worth of usable ones are held;
concatenate them along the task axis; ``state = learn(state, data)`` (MAML-RL recomputes the
inner step(s) from the shipped pre-update data as functions of the current parameters, so the
meta-gradient is exact for batches sampled with them); log; checkpoint; **then** ack the batches
used; publish the new parameters (version = the new iteration).

Which batches are used (each decision is a line of ``RUN_DIR/batches.jsonl``: ``batch_id``,
``fate``, ``iteration``, ``params_version``, ``sampler_id``):

* ``used`` — sampled with parameters at most ``max_lag`` versions old. Staleness is *not*
  importance-corrected in the inner step; the outer surrogate's ratio (MAML-RL) and PPO's ratio
  (RL²) are taken against the behaviour log-probs shipped with the batch, which corrects the
  outer objective. ``max_lag=0`` (the default) is exact on-policy meta-training.
* ``stale`` — older than ``max_lag`` (acked and dropped, counted);
* ``future`` — made with a version the trainer has not reached (after a restart from an older
  checkpoint); dropped;
* ``duplicate`` — a batch id already used (JetStream may redeliver acked messages after a
  server crash, and a sampler may republish): acked, never used twice. The used ids are saved in
  every checkpoint, so this holds across trainer restarts;
* ``malformed`` — an unreadable message or another run's/spec's batch (terminated);
* ``leftover`` — drained after the last iteration (``drain=True``).

Crash safety: a batch is acked only after the checkpoint that includes its update is saved, so
a trainer killed at any point resumes from its checkpoint and gets every unused batch again
(redelivered after ``ack_wait``); a batch acked but lost to a server crash is redelivered and
recognised by its id.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.distributed import schema, settings
from jmeta.distributed.connection import NatsOptions, connect
from jmeta.distributed.protocol import (
    PARAMS_KEY,
    RUN_KEY,
    DistributedError,
    RunInfo,
    rollouts_template,
    spec_sha256,
)
from jmeta.distributed.sampler import _close, _transient
from jmeta.training import logs
from jmeta.training.runner import Runner
from jmeta.training.spec import RunSpec

__all__ = ["run_trainer", "BATCHES_FILE", "SUMMARY_FILE", "FATES"]

BATCHES_FILE = "batches.jsonl"
SUMMARY_FILE = "distributed.json"
FATES = ("used", "stale", "future", "duplicate", "malformed", "leftover")


class _Held:
    """A fetched, decoded batch waiting to be used (its message not yet acked)."""

    __slots__ = ("msg", "meta", "data", "since", "size")

    def __init__(self, msg, meta, data, size):
        self.msg, self.meta, self.data, self.size = msg, meta, data, size
        self.since = time.monotonic()


async def run_trainer(options: NatsOptions, run: str, spec: RunSpec,
                      run_dir: str | os.PathLike, num_iterations: int, *,
                      tasks_per_batch: int | None = None, max_lag: int = 0,
                      batches_per_version: int | None = None, ack_wait: float = 30.0,
                      checkpoint_every: int = 1, drain: bool = False,
                      stream_max_bytes: int = 2 * 1024 ** 3, tensorboard: bool = True,
                      quiet: bool = False) -> dict[str, Any]:
    """Trains ``spec`` for ``num_iterations`` meta-iterations (counting those before a resume).

    Args:
      options: the NATS connection.
      run: the run name (stream, bucket and consumer names derive from it).
      spec: the run's spec (``maml-rl`` or ``rl2``).
      run_dir: the Runner's run directory (checkpoints; an existing one is resumed).
      num_iterations: the total number of meta-iterations.
      tasks_per_batch: tasks per sampler batch (divides ``num_tasks``; default: the largest
        divisor of ``num_tasks`` that is at most 5).
      max_lag: use batches sampled with parameters up to this many versions old (>= 0).
      batches_per_version: batches a sampler makes per parameter version (default
        ``num_tasks / tasks_per_batch``).
      ack_wait: seconds before JetStream redelivers an unacked batch (held batches are kept
        alive with in-progress acks).
      checkpoint_every: checkpoint (and ack) every this many iterations.
      drain: after the last iteration, consume what is left in the stream (fate ``leftover``)
        until it is empty, so every published batch is accounted for.
      stream_max_bytes: the stream's size limit (publishes are refused beyond it).

    Returns:
      The summary also written to ``RUN_DIR/distributed.json``: ``counts``, the decisions per
      fate over the whole run (the lines of ``batches.jsonl``, across restarts); and for this
      process: batches and bytes received, ``seconds`` (drain included), ``batches_per_s``,
      ``mb_per_s``, and ``idle_fraction`` (the share of the training loop's wall time spent
      waiting for batches rather than learning; ``None`` when this process learned nothing).

    Raises:
      ValueError: a bad argument.
      jmeta.distributed.connection.ConnectError: the server is unreachable or refuses us.
      DistributedError: the run exists on the server with another spec, or a learn step failed.
    """
    import nats.errors
    import nats.js.errors
    from nats.js.api import (
        AckPolicy,
        ConsumerConfig,
        DiscardPolicy,
        RetentionPolicy,
        StorageType,
        StreamConfig,
    )

    settings.check_run_name(run)
    if not isinstance(spec, RunSpec) or spec.algo not in ("maml-rl", "rl2"):
        raise ValueError(f"spec: the distributed trainer runs maml-rl and rl2, got "
                         f"{getattr(spec, 'algo', spec)!r}")
    config = spec.config()
    num_tasks = config.num_tasks
    if tasks_per_batch is None:
        tasks_per_batch = max(d for d in range(1, min(5, num_tasks) + 1) if num_tasks % d == 0)
    for name, value, low in (("num_iterations", num_iterations, 1),
                             ("tasks_per_batch", tasks_per_batch, 1), ("max_lag", max_lag, 0),
                             ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if num_tasks % tasks_per_batch:
        raise ValueError(f"tasks_per_batch: {tasks_per_batch} does not divide num_tasks "
                         f"{num_tasks}")
    per_update = num_tasks // tasks_per_batch
    batches_per_version = batches_per_version or per_update
    if not ack_wait > 1:
        raise ValueError(f"ack_wait: expected > 1 s, got {ack_wait!r}")
    say = (lambda msg: None) if quiet else (  # noqa: E731
        lambda msg: print(f"jmeta trainer: {msg}", file=sys.stderr, flush=True))

    # connect first: a bad URL or bad credentials leave no trace in the run directory
    nc = await connect(options, name="jmeta-trainer")
    runner = fates = None
    try:
        runner = Runner(spec, run_dir, chunk_size=1, checkpoint_every=checkpoint_every,
                        progress=False, tensorboard=tensorboard)
        algo = runner.algo
        if algo.learn is None:
            raise DistributedError(f"{spec.algo} has no learn step")
        state = runner.begin(num_iterations)
        iteration = int(state.iteration)
        restored = (runner.restored_meta or {}).get("distributed") or {}
        used_ids: set[str] = set(restored.get("used_batches", []))
        counts = {f: 0 for f in FATES}
        counts.update({k: int(v) for k, v in restored.get("counts", {}).items() if k in counts})
        counts["used"] = len(used_ids)
        fates = _FateLog(Path(run_dir) / BATCHES_FILE, iteration)
        sha = spec_sha256(spec)
        info = RunInfo(spec=spec, tasks_per_batch=tasks_per_batch,
                       batches_per_version=batches_per_version, max_lag=max_lag)
        template = rollouts_template(algo, state.params, tasks_per_batch)
        learn = jax.jit(algo.learn)

        js = nc.jetstream()
        stream = settings.stream_name(run)
        subject = settings.trajectory_subject(run)
        stream_config = StreamConfig(
            name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, discard=DiscardPolicy.NEW, max_bytes=stream_max_bytes,
            duplicate_window=120.0, max_msg_size=nc.max_payload)
        try:
            await js.stream_info(stream)
            await js.update_stream(stream_config)
        except nats.js.errors.NotFoundError:
            await js.add_stream(stream_config)
        kv = await js.create_key_value(bucket=settings.params_bucket(run), history=1,
                                       storage=StorageType.FILE)
        try:
            previous = RunInfo.from_json((await kv.get(RUN_KEY)).value)
        except nats.js.errors.KeyNotFoundError:
            previous = None
        if previous is not None and spec_sha256(previous.spec) != sha:
            raise DistributedError(f"run {run!r} on the server has another spec "
                                   f"({previous.spec.algo} on {previous.spec.env}); use another "
                                   f"--run name")
        await kv.put(RUN_KEY, info.to_json().encode())

        async def publish_params(st):
            payload = schema.encode(jax.device_get(st.params), "params",
                                    {"run": run, "spec_sha256": sha,
                                     "version": int(st.iteration)})
            if len(payload) > nc.max_payload:
                raise DistributedError(f"parameters are {len(payload)} bytes, over the server's "
                                       f"max_payload {nc.max_payload}")
            await _retry(lambda: kv.put(PARAMS_KEY, payload))

        await publish_params(state)
        consumer = settings.consumer_name(run)
        psub = await js.pull_subscribe(
            subject, durable=consumer, stream=stream,
            config=ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT,
                                  ack_wait=ack_wait, max_ack_pending=-1))
        say(f"run {run!r}: {spec.algo} on {spec.env}, {num_tasks} tasks per update in batches "
            f"of {tasks_per_batch}, max_lag {max_lag}; at iteration {iteration}/{num_iterations}")

        held: list[_Held] = []
        done_unacked: list[Any] = []  # used since the last checkpoint
        received = received_bytes = 0
        busy = 0.0
        t_start = time.monotonic()
        t_first = None

        def decide(msg) -> _Held | None:
            nonlocal received, received_bytes
            received += 1
            received_bytes += len(msg.data)
            try:
                header, _ = schema.read_header(msg.data)
                meta = header["meta"]
                if meta.get("run") != run or meta.get("spec_sha256") != sha:
                    raise schema.SchemaError("a batch of another run or spec")
                if meta.get("num_tasks") != tasks_per_batch:
                    raise schema.SchemaError(f"{meta.get('num_tasks')} tasks, expected "
                                             f"{tasks_per_batch}")
                bid = str(meta["batch_id"])
                version = int(meta["params_version"])
            except (schema.SchemaError, KeyError, TypeError, ValueError) as e:
                fates.write("malformed", None, iteration, None, None, str(e))
                counts["malformed"] += 1
                return _Term(msg)
            if bid in used_ids:
                fates.write("duplicate", bid, iteration, version, meta.get("sampler_id"))
                counts["duplicate"] += 1
                return _Ack(msg)
            if any(h.meta["batch_id"] == bid for h in held):
                return None  # a redelivery of a batch we hold: the held copy gets acked
            if version > iteration:
                fates.write("future", bid, iteration, version, meta.get("sampler_id"))
                counts["future"] += 1
                return _Ack(msg)
            if iteration - version > max_lag:
                fates.write("stale", bid, iteration, version, meta.get("sampler_id"))
                counts["stale"] += 1
                return _Ack(msg)
            try:
                data, _ = schema.decode(msg.data, template, "trajectories")
            except schema.SchemaError as e:
                fates.write("malformed", bid, iteration, version, meta.get("sampler_id"), str(e))
                counts["malformed"] += 1
                return _Term(msg)
            return _Held(msg, meta, data, len(msg.data))

        async def fetch(n: int, timeout: float):
            try:
                return await psub.fetch(batch=n, timeout=timeout)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                return []
            except Exception as e:  # noqa: BLE001
                if _transient(e):
                    await asyncio.sleep(0.2)
                    return []
                raise

        async def handle(msgs):
            for msg in msgs:
                out = decide(msg)
                if isinstance(out, _Held):
                    held.append(out)
                elif out is not None:
                    await out.run()

        async def keep_alive():
            now = time.monotonic()
            for h in held:
                if now - h.since > ack_wait / 3:
                    await _quiet(h.msg.in_progress())
                    h.since = now
            for m in done_unacked:
                await _quiet(m.in_progress())

        while iteration < num_iterations:
            if len(held) < per_update:
                await handle(await fetch(per_update - len(held), 0.5))
                await keep_alive()
                continue
            if t_first is None:
                t_first = time.monotonic()
            t0 = time.monotonic()
            batch, held = held[:per_update], held[per_update:]
            data = jax.tree.map(lambda *xs: np.concatenate(xs), *[h.data for h in batch])
            r0 = runner.now()
            new_state, metrics = learn(state, data)
            metrics = jax.device_get(metrics)
            if not _finite(new_state):
                raise DistributedError(f"iteration {iteration + 1}: non-finite parameters "
                                       f"after learn; the last checkpoint is kept")
            lags = [iteration - int(h.meta["params_version"]) for h in batch]
            state = new_state
            iteration = int(state.iteration)
            for h in batch:
                used_ids.add(h.meta["batch_id"])
                fates.write("used", h.meta["batch_id"], iteration,
                            int(h.meta["params_version"]), h.meta.get("sampler_id"))
            counts["used"] = len(used_ids)
            metrics = dict(metrics)
            metrics["distributed"] = {"lag": float(np.mean(lags)), "stale": counts["stale"],
                                      "duplicate": counts["duplicate"]}
            stacked = jax.tree.map(lambda x: np.asarray(x)[None], metrics)
            saved = runner.record(state, stacked, r0,
                                  save=True if iteration == num_iterations else None,
                                  meta={"distributed": {"used_batches": sorted(used_ids),
                                                        "counts": counts}})
            done_unacked.extend(h.msg for h in batch)
            if saved:
                for m in done_unacked:
                    await _quiet(m.ack())
                done_unacked.clear()
            await publish_params(state)
            # batches held from now-too-old versions are dropped
            keep = []
            for h in held:
                if iteration - int(h.meta["params_version"]) > max_lag:
                    fates.write("stale", h.meta["batch_id"], iteration,
                                int(h.meta["params_version"]), h.meta.get("sampler_id"))
                    counts["stale"] += 1
                    await _quiet(h.msg.ack())
                else:
                    keep.append(h)
            held = keep
            busy += time.monotonic() - t0
            if not quiet:
                ret = metrics.get("return_post", metrics.get("trial_return"))
                say(f"iteration {iteration}/{num_iterations}: return {float(ret):.2f}, lag "
                    f"{np.mean(lags):.2f}, stale {counts['stale']}, dup {counts['duplicate']}")
        t_end = time.monotonic()
        for h in held:  # unused: leave them for the next run (nak: redeliver now)
            await _quiet(h.msg.nak())
        held.clear()
        if drain:
            empty = 0
            while empty < 3:
                msgs = await fetch(32, 1.0)
                if not msgs:
                    ci = await psub.consumer_info()
                    empty = empty + 1 if ci.num_pending == 0 and ci.num_ack_pending == 0 else 0
                    continue
                for msg in msgs:
                    out = decide(msg)
                    if isinstance(out, _Held):
                        bid = out.meta["batch_id"]
                        fates.write("leftover", bid, iteration, int(out.meta["params_version"]),
                                    out.meta.get("sampler_id"))
                        counts["leftover"] += 1
                        await _quiet(msg.ack())
                    elif out is not None:
                        await out.run()
        await _quiet(nc.flush(timeout=5))
        wall = (t_end - t_first) if t_first is not None else 0.0
        seconds = time.monotonic() - t_start  # including the drain
        summary = {
            "run": run, "iteration": iteration, "counts": dict(fates.counts),
            "received_batches": received, "received_bytes": received_bytes,
            "seconds": seconds, "training_seconds": wall,
            "batches_per_s": received / seconds if seconds > 0 else None,
            "mb_per_s": received_bytes / 1e6 / seconds if seconds > 0 else None,
            "idle_fraction": (1.0 - busy / wall) if wall > 0 else None,
            "tasks_per_batch": tasks_per_batch, "max_lag": max_lag,
        }
        (Path(run_dir) / SUMMARY_FILE).write_text(
            json.dumps(logs.jsonable(summary), indent=2, sort_keys=True) + "\n")
        runner._event("done", f"distributed run at iteration {iteration}: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items() if v), iteration=iteration,
                      counts=counts)
        return summary
    finally:
        if runner is not None:
            runner.close()
        if fates is not None:
            fates.close()
        await _close(nc)


class _Ack:
    def __init__(self, msg):
        self.msg = msg

    async def run(self):
        await _quiet(self.msg.ack())


class _Term(_Ack):
    async def run(self):
        await _quiet(self.msg.term())


async def _quiet(aw):
    """Acks and flushes to a server that may be down: the message comes back and is recognised
    by its batch id, so a failure here is harmless."""
    try:
        await asyncio.wait_for(aw, 5)
    except Exception:  # noqa: BLE001
        pass


async def _retry(make, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await make()
        except Exception as e:  # noqa: BLE001
            if not _transient(e) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)


def _finite(state) -> bool:
    leaves = jax.tree.leaves((state.params, state.opt_state))
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves
               if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact))


class _FateLog:
    """``batches.jsonl``: one line per batch decision. On resume from iteration ``start``, the
    ``used`` lines of later iterations (whose update the checkpoint does not hold) are dropped:
    those batches were never acked and come back."""

    def __init__(self, path: Path, start: int):
        self.path = path
        self.counts = {f: 0 for f in FATES}  # the lines of the file, per fate
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if rec.get("fate") == "used" and (rec.get("iteration") or 0) > start:
                    continue
                kept.append(json.dumps(rec))
                if rec.get("fate") in self.counts:
                    self.counts[rec["fate"]] += 1
            logs.write_atomic(path, "".join(k + "\n" for k in kept))
        self.file = open(path, "a")

    def write(self, fate, batch_id, iteration, version, sampler_id, reason=None):
        rec = {"batch_id": batch_id, "fate": fate, "iteration": iteration,
               "params_version": version, "sampler_id": sampler_id, "time": time.time()}
        if reason:
            rec["reason"] = reason
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        self.counts[fate] += 1

    def close(self):
        self.file.close()

