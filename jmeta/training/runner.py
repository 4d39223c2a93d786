"""The Runner: an algorithm's jitted ``train`` in chunks, with logs, checkpoints and guards.

>>> from jmeta.training import Runner, RunSpec
>>> spec = RunSpec("maml-rl", "point-nav", algo_config={"num_tasks": 4, "outer": "ppo"})
>>> state = Runner(spec, "runs/nav", chunk_size=10).run(100)     # doctest: +SKIP

Between chunks, on the host, the Runner

1. checks that the parameters, optimiser state and scalar metrics are finite; if not, it rolls the
   state back to the chunk's start, logs an event, perturbs the key deterministically
   (``jax.random.fold_in(key, retry)``) and retries; after ``max_nonfinite`` failures in a row it
   aborts with a ``RuntimeError``;
2. appends one line per iteration to ``RUN_DIR/metrics.jsonl`` (schema: :mod:`.logs`) and writes
   TensorBoard scalars and per-task return histograms under ``RUN_DIR/tb``;
3. saves an orbax checkpoint under ``RUN_DIR/checkpoints`` (:mod:`.checkpoint`), keeping the last
   ``keep`` and the best by ``best_metric``;
4. advances a rich progress bar (ETA, live key metrics), or prints one line per chunk when the
   terminal is not interactive.

Exact resume: chunks end at multiples of ``chunk_size`` (and at ``num_iterations``), and the whole
state (params, optimiser state, PRNG key, iteration) is checkpointed, so a run interrupted after any
chunk and resumed (``run`` restores the latest good checkpoint by itself) gives bit-identical
parameters and metrics to the uninterrupted run on CPU. ``metrics.jsonl`` lines after the restored
iteration are dropped on resume.

Continual runs (a ``RunSpec`` with ``continual``: task groups in sequence with task replay,
:mod:`jmeta.continual`): the state is a :class:`~jmeta.continual.ContinualState` whose replay
buffer is checkpointed with it, and the stage is a function of the iteration, so a run stopped
mid-stage resumes in that stage with that buffer, bit-exactly. One compiled ``train`` serves every
stage (a chunk may cross a stage boundary). Each ``metrics.jsonl`` line holds the metrics
``stage`` (0-based), ``replayed_tasks`` and ``buffer_size``; the progress bar shows the stage.

``RUN_DIR/run.json`` records what the run is (its :class:`~jmeta.training.spec.RunSpec`, or the
``config`` given with a bare ``Algorithm``, with the seed and chunk size); a Runner for something
else refuses the directory. ``RUN_DIR/spec.json`` holds the ``RunSpec`` alone
(``RunSpec.from_json``). Events (``events.jsonl``): ``start``, ``resume``, ``done``,
``nonfinite_rollback``, ``abort``, ``checkpoint_fallback``, ``stage`` (continual runs: a stage
began).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jmeta import sharding
from jmeta.algorithms.base import Algorithm
from jmeta.training import logs
from jmeta.training.checkpoint import Checkpoints
from jmeta.training.spec import RunSpec, build, default_best_metric

__all__ = ["Runner", "load"]

RUN_FILE = "run.json"
SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_DIR = "checkpoints"
TB_DIR = "tb"

# Live metrics of the progress bar, by algorithm (the first ones present are shown).
_KEY_METRICS = ("return_pre", "return_post", "trial_return", "query_loss_before",
                "query_loss_after", "kl", "entropy")


def _check_int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, allow_nan=False)


class Runner:
    """Drives ``jax.jit(algo.train)`` in chunks and does the host-side work between them.

    Args:
      target: a :class:`~jmeta.training.spec.RunSpec` (the env, tasks and algorithm are built
        from it and it is saved with the run, so :func:`load` can rebuild everything), or an
        ``Algorithm`` (then pass ``seed`` and, to guard the run directory against being reused
        for something else, a JSON-able ``config``).
      run_dir: the run directory (created; an existing one is resumed).
      chunk_size: iterations per jitted chunk (>= 1). Chunks end at multiples of it.
      keep: the number of latest checkpoints kept (>= 1), besides the best.
      best_metric: the scalar metric checkpoints are ranked by (its mean over the chunk):
        ``"auto"`` takes the algorithm's (``return_post``, ``trial_return``,
        ``query_loss_after``; with a bare ``Algorithm``: none); ``None`` keeps only the latest.
      best_mode: ``"max"``, ``"min"`` or ``"auto"`` (``"min"`` for metrics named like a loss).
      max_nonfinite: the number of non-finite chunks in a row (each retried from the chunk's
        start with a perturbed key) after which the run aborts (>= 1).
      checkpoint_every: save a checkpoint every this many chunks (>= 1) and at the end.
      progress: show a progress bar (interactive terminals) or print a line per chunk.
      tensorboard: write TensorBoard event files under ``RUN_DIR/tb``.
      seed: with an ``Algorithm``: ``algo.init(jax.random.key(seed))`` (default 0). With a
        ``RunSpec``, the seed is the spec's.
      config: with an ``Algorithm``: JSON-able data describing it, saved in ``run.json`` and in
        every checkpoint and compared on resume.
      key_metrics: the scalar metrics the progress bar shows (default: the algorithm's main ones).
      devices: with a ``RunSpec`` of ``maml-rl``/``rl2``: shard each meta-iteration's task batch
        over this many devices (a :func:`jmeta.sharding.task_mesh`; ``num_tasks`` must be
        divisible by it), the state replicated. ``None`` or 1: one device. Not part of the run's
        identity: a run may be resumed on another number of devices (same numbers within float
        round-off); the ``start``/``resume`` events record it. With an ``Algorithm``, build it
        with ``mesh=`` and jit it yourself (:func:`jmeta.sharding.jit_train`).

    Runners of equal specs in one process share the built algorithm and its compiled ``train``
    (the numbers do not depend on it: a run resumed in another process is bit-identical).

    Raises:
      ValueError: a bad argument (names it), ``run_dir`` is a file, ``run_dir`` holds a
        different run, more ``devices`` than exist, or a multi-process job (the Runner writes the
        run directory from one process; see :mod:`jmeta.sharding`).
    """

    def __init__(self, target: RunSpec | Algorithm, run_dir: str | os.PathLike, *,
                 chunk_size: int = 10, keep: int = 3, best_metric: str | None = "auto",
                 best_mode: str = "auto", max_nonfinite: int = 3, checkpoint_every: int = 1,
                 progress: bool = True, tensorboard: bool = True, seed: int | None = None,
                 config: Any = None, key_metrics: Sequence[str] | None = None,
                 devices: int | None = None):
        self.devices = 1 if devices is None else _check_int("devices", devices, 1)
        if jax.process_count() > 1:
            raise ValueError(f"Runner: this is process {jax.process_index()} of "
                             f"{jax.process_count()}; the Runner is single-process (it writes the "
                             f"run directory). Drive algo.train under jmeta.sharding.task_mesh() "
                             f"yourself (see jmeta.sharding)")
        if isinstance(target, RunSpec):
            if seed is not None:
                raise ValueError("seed: a RunSpec has its own seed; set RunSpec.seed instead")
            if config is not None:
                raise ValueError("config: a RunSpec is the config; pass config only with an "
                                 "Algorithm")
            self.spec: RunSpec | None = target
            self.env, self.tasks, self.algo, self._train = _built(target, self.devices)
            self.seed = target.seed
            auto_metric, auto_mode = default_best_metric(target.algo)
        elif isinstance(target, Algorithm):
            if self.devices != 1:
                raise ValueError("devices: only with a RunSpec; build the Algorithm with "
                                 "mesh=jmeta.sharding.task_mesh(N) and pass it alone")
            self.spec = None
            self.env = self.tasks = None
            self.algo = target
            self._train = jax.jit(target.train, static_argnames="num_iterations")
            self.seed = 0 if seed is None else _check_int("seed", seed, 0)
            auto_metric, auto_mode = None, None
        else:
            raise ValueError(f"target: expected a RunSpec or an Algorithm, got "
                             f"{type(target).__name__}")
        if config is not None:
            try:
                _canonical(config)
            except (TypeError, ValueError) as e:
                raise ValueError(f"config: not JSON-serialisable ({e})") from None
        self.config = config
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"run_dir: {str(run_dir)!r} is a file, not a directory")
        self.run_dir = run_dir
        self.chunk_size = _check_int("chunk_size", chunk_size, 1)
        self.keep = _check_int("keep", keep, 1)
        self.max_nonfinite = _check_int("max_nonfinite", max_nonfinite, 1)
        self.checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        if best_metric == "auto":
            best_metric = auto_metric
        if best_metric is not None and not isinstance(best_metric, str):
            raise ValueError(f"best_metric: expected a metric name, 'auto' or None, got "
                             f"{best_metric!r}")
        if best_mode not in ("auto", "max", "min"):
            raise ValueError(f"best_mode: expected 'auto', 'max' or 'min', got {best_mode!r}")
        if best_metric is not None and best_mode == "auto":
            best_mode = (auto_mode if best_metric == auto_metric and auto_mode
                         else "min" if "loss" in best_metric else "max")
        self.best_metric = best_metric
        self.best_mode = best_mode if best_metric is not None else None
        self.progress = bool(progress)
        self.tensorboard = bool(tensorboard)
        self.key_metrics = None if key_metrics is None else list(key_metrics)
        self._finite = jax.jit(_tree_finite)
        self._metric_names: list[str] | None = None
        if run_dir.exists():
            self._check_run_file()

    # --- the run directory ------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        """``RUN_DIR/metrics.jsonl``."""
        return self.run_dir / METRICS_FILE

    @property
    def events_path(self) -> Path:
        """``RUN_DIR/events.jsonl``."""
        return self.run_dir / EVENTS_FILE

    def _identity(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict() if self.spec is not None else None,
                "config": self.config}

    def _check_run_file(self):
        path = self.run_dir / RUN_FILE
        if not path.exists():
            if (self.run_dir / CHECKPOINT_DIR).exists():
                raise ValueError(f"run_dir: {str(self.run_dir)!r} has checkpoints but no "
                                 f"{RUN_FILE}; it is not a jmeta run directory")
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"run_dir: {str(path)!r} is unreadable ({e})") from None
        mine = self._identity()
        theirs = {"spec": saved.get("spec"), "config": saved.get("config")}
        if _canonical(mine) != _canonical(theirs):
            what = (f"spec {_canonical(theirs['spec'])}" if theirs["spec"] is not None
                    else f"config {_canonical(theirs['config'])}")
            raise ValueError(f"run_dir: {str(self.run_dir)!r} holds a different run ({what}); "
                             f"use another run_dir or the same spec/config")

    def _write_run_file(self):
        path = self.run_dir / RUN_FILE
        if path.exists():
            return
        data = {**self._identity(), "seed": self.seed, "chunk_size": self.chunk_size,
                "jmeta_version": _version()}
        if self.spec is not None:  # the RunSpec alone, for tools (``RunSpec.from_json``, doctor)
            logs.write_atomic(self.run_dir / SPEC_FILE, self.spec.to_json() + "\n")
        logs.write_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")

    def _checkpoints(self) -> Checkpoints:
        return Checkpoints(self.run_dir / CHECKPOINT_DIR, keep=self.keep,
                           best_mode=self.best_mode, on_event=self._event_now)

    # --- events -----------------------------------------------------------------------------
    def _event_now(self, event: str, message: str, **fields):
        self._event(event, message, iteration=fields.pop("iteration", None), **fields)

    def _event(self, event: str, message: str, iteration: int | None = None, **fields):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"iteration": iteration, "time": self._now(), "event": event,
                  "message": message, **fields}
        logs.JsonlLog(self.events_path).write([record])
        print(f"jmeta: {message}", file=sys.stderr, flush=True)

    def _now(self) -> float:
        start = getattr(self, "_clock_start", None)
        return 0.0 if start is None else self._time_offset + (time.perf_counter() - start)

    # --- state ------------------------------------------------------------------------------
    def init_state(self) -> Any:
        """``algo.init(jax.random.key(seed))``: the state a fresh run starts from."""
        return self.algo.init(jax.random.key(self.seed))

    def abstract_state(self) -> Any:
        """``jax.eval_shape`` of :meth:`init_state`: the restore target."""
        return jax.eval_shape(self.algo.init, jax.random.key(self.seed))

    def restore(self) -> Any | None:
        """The state of the latest readable checkpoint of ``run_dir`` (``None``: none yet).

        An unreadable latest checkpoint is reported (``events.jsonl`` and stderr, one line) and
        the previous one is restored.

        Raises:
          jmeta.training.checkpoint.CheckpointError: checkpoints exist but none is readable.
        """
        if not (self.run_dir / CHECKPOINT_DIR).exists():
            return None
        ckpt = self._checkpoints()
        try:
            restored = ckpt.restore(self.abstract_state())
        finally:
            ckpt.close()
        if restored is None:
            return None
        state, meta = restored
        self._restored_meta = meta
        return state

    # --- the loop ---------------------------------------------------------------------------
    def run(self, num_iterations: int) -> Any:
        """Trains until ``state.iteration == num_iterations``, resuming from ``run_dir``.

        Args:
          num_iterations: the total number of meta-iterations of the run (>= 1), counting those
            done before a resume.

        Returns:
          The final ``TrainState``.

        Raises:
          ValueError: ``num_iterations`` is not a positive int.
          RuntimeError: ``max_nonfinite`` chunks in a row produced non-finite values.
        """
        num_iterations = _check_int("num_iterations", num_iterations, 1)
        state = self.begin(num_iterations)
        start = int(state.iteration)
        if start >= num_iterations:
            self._event("done", f"already at iteration {start} >= {num_iterations}; nothing to "
                        f"do", iteration=start)
            self.close()
            return state
        bar = _Progress(self.progress, start, num_iterations, self._key_metric_names())
        try:
            it = start
            while it < num_iterations:
                end = min((it // self.chunk_size + 1) * self.chunk_size, num_iterations)
                t0 = self._now()
                state, metrics = self._chunk(state, end - it)
                self.record(state, metrics, t0, save=True if end == num_iterations else None)
                self._stage_events(metrics, it)
                it = end
                bar.update(it, self.last_records[-1]["metrics"], self._now())
        finally:
            bar.close()
            self.close()
        return state

    # --- an externally driven loop (jmeta.distributed's trainer) ----------------------------
    def begin(self, num_iterations: int | None = None) -> Any:
        """Opens the run directory and returns the state to continue from.

        What :meth:`run` does before its first chunk, for a loop that makes its own updates (the
        distributed trainer): writes ``run.json``, restores the latest good checkpoint (or
        ``init_state()``), drops ``metrics.jsonl`` lines after it, logs ``start``/``resume``.
        Then call :meth:`record` after each update (or chunk) and :meth:`close` at the end.
        :attr:`restored_meta` holds the restored checkpoint's metadata (``None``: fresh run),
        including what was passed as ``meta`` to :meth:`record`.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_run_file()
        self._write_run_file()
        self._restored_meta = None
        self._clock_start, self._time_offset = None, 0.0
        state = self.restore()
        start = 0 if state is None else int(state.iteration)
        self._metrics_log = logs.JsonlLog(self.metrics_path)
        dropped = self._metrics_log.truncate_after(start)
        kept = logs.read_jsonl(self.metrics_path)
        if kept:
            self._time_offset = float(kept[-1].get("time") or 0.0)
        elif self._restored_meta is not None:
            self._time_offset = float(self._restored_meta.get("time") or 0.0)
        self._clock_start = time.perf_counter()
        total = f"{num_iterations} iterations, " if num_iterations is not None else ""
        if state is None:
            state = self.init_state()
            self._event("start", f"started {self._describe()} in {self.run_dir} "
                        f"({total}chunks of {self.chunk_size})",
                        iteration=0, num_iterations=num_iterations, devices=self.devices)
        else:
            extra = f"; dropped {dropped} metrics line(s) logged after it" if dropped else ""
            self._event("resume", f"resumed {self._describe()} from checkpoint {start} in "
                        f"{self.run_dir}{extra}", iteration=start, dropped_lines=dropped,
                        devices=self.devices)
        self._iteration = start
        self._tb = None
        self._ckpt = None
        self._chunks_since_save = 0
        self.last_records: list[dict] = []
        if num_iterations is None or start < num_iterations:
            self._check_metric_names(state)
        if self.devices == 1:
            # A restored state is committed to its device, a fresh one is not; jit compiles the
            # two apart. Committing both lets a resumed run reuse the compiled ``train``.
            state = jax.device_put(state, jax.devices()[0])
        return state

    @property
    def restored_meta(self) -> dict[str, Any] | None:
        """The metadata of the checkpoint :meth:`begin` restored (``None``: a fresh run)."""
        return getattr(self, "_restored_meta", None)

    def record(self, state: Any, metrics: Mapping[str, Any], t0: float, *,
               save: bool | None = None, meta: Mapping[str, Any] | None = None) -> bool:
        """Logs the iterations from the last recorded one to ``state.iteration`` and
        checkpoints.

        Args:
          state: the state after the update(s).
          metrics: their metrics on the host, stacked along a leading ``[n]`` axis.
          t0: :meth:`now` when the update(s) started.
          save: checkpoint now (``True``), never (``False``), or every ``checkpoint_every``
            calls (``None``).
          meta: JSON-able data stored with the checkpoint (:attr:`restored_meta` on resume).

        Returns:
          Whether a checkpoint was saved.
        """
        it, end = self._iteration, int(state.iteration)
        n = end - it
        if n < 1:
            raise ValueError(f"state: iteration {end} is not after the last recorded one ({it})")
        t1 = self._now()
        records = logs.iteration_records(
            metrics, it + 1, [t0 + (t1 - t0) * (i + 1) / n for i in range(n)])
        self._metrics_log.write(records)
        if self.tensorboard and self._tb is None:
            self._tb = logs.TensorBoardLog(self.run_dir / TB_DIR,
                                           purge_step=it + 1 if it else None)
        if self._tb is not None:
            self._tb.write(records)
        self._iteration = end
        self.last_records = records
        self._chunks_since_save += 1
        if save is None:
            save = self._chunks_since_save >= self.checkpoint_every
        if save:
            if self._ckpt is None:
                self._ckpt = self._checkpoints()
            self._save(self._ckpt, state, records, meta)
            self._chunks_since_save = 0
        return bool(save)

    def now(self) -> float:
        """Seconds since the run started (continuing across resumes), as logged."""
        return self._now()

    def close(self) -> None:
        """Closes the TensorBoard writer and the checkpoint manager opened by :meth:`record`."""
        if getattr(self, "_tb", None) is not None:
            self._tb.close()
            self._tb = None
        if getattr(self, "_ckpt", None) is not None:
            self._ckpt.close()
            self._ckpt = None

    def _stage_events(self, metrics: Mapping[str, Any], first: int) -> None:
        """A ``stage`` event for each stage of a continual run that began in this chunk."""
        if self.spec is None or self.spec.continual is None or "stage" not in metrics:
            return
        per_stage = self.spec.continual["iterations_per_stage"]
        groups = self.spec.continual["task_groups"]
        for i in range(len(np.asarray(metrics["stage"]))):
            j = first + i  # updates done before this one
            if j % per_stage == 0 and j // per_stage < len(groups):
                stage = j // per_stage
                group = ", ".join(f"{k} {lo:g}:{hi:g}" for k, (lo, hi) in groups[stage].items())
                self._event("stage", f"stage {stage + 1}/{len(groups)} ({group}) from iteration "
                            f"{j + 1}", iteration=j, stage=stage)

    def _describe(self) -> str:
        if self.spec is not None:
            cont = self.spec.continual_config()
            if cont is not None:
                return (f"{self.spec.algo} on {self.spec.env} (continual: {cont.num_stages} task "
                        f"groups x {cont.iterations_per_stage} iterations, replay ratio "
                        f"{cont.replay_ratio:g}, {cont.buffer} buffer of {cont.replay_capacity})")
            return f"{self.spec.algo} on {self.spec.env}"
        return "the algorithm"

    def _check_metric_names(self, state):
        """Checks ``best_metric``/``key_metrics`` against ``update``'s metrics (traced only)."""
        _, shapes = jax.eval_shape(self.algo.update, state)
        scalars = sorted(k for k, v in shapes.items()
                         if hasattr(v, "shape") and v.shape == () and not k.startswith("task_"))
        self._metric_names = scalars
        if self.best_metric is not None and self.best_metric not in scalars:
            raise ValueError(f"best_metric: unknown metric {self.best_metric!r}; valid: "
                             f"{', '.join(scalars)}")
        for name in self.key_metrics or ():
            if name not in scalars:
                raise ValueError(f"key_metrics: unknown metric {name!r}; valid: "
                                 f"{', '.join(scalars)}")

    def _key_metric_names(self) -> list[str]:
        if self.key_metrics is not None:
            return self.key_metrics
        names = self._metric_names or []
        picked = [m for m in _KEY_METRICS if m in names][:3]
        if self.best_metric and self.best_metric not in picked:
            picked.insert(0, self.best_metric)
        if self.spec is not None and self.spec.continual is not None and "stage" in names:
            picked.insert(0, "stage")
        return picked

    def _chunk(self, state, n: int):
        """One chunk with the non-finite guard: returns ``(state, host metrics)``."""
        begin = state
        for attempt in range(self.max_nonfinite):
            new_state, metrics = self._train(state, num_iterations=n)
            metrics = jax.device_get(metrics)
            params_ok, opt_ok = (bool(x) for x in self._finite(new_state.params,
                                                               new_state.opt_state))
            bad = [] if params_ok else ["params"]
            if not opt_ok:
                bad.append("optimizer state")
            bad_metrics = _nonfinite_scalars(metrics)
            if bad_metrics:
                bad.append("metrics " + ", ".join(bad_metrics[:8])
                           + (" ..." if len(bad_metrics) > 8 else ""))
            if not bad:
                return new_state, metrics
            it = int(begin.iteration)
            retry = attempt + 1
            if retry >= self.max_nonfinite:
                message = (f"aborted: non-finite values ({'; '.join(bad)}) in iterations "
                           f"{it + 1}-{it + n}, {retry} time(s) in a row (max_nonfinite="
                           f"{self.max_nonfinite}); the last good checkpoint is at or before "
                           f"iteration {it}")
                self._event("abort", message, iteration=it, nonfinite=bad)
                raise RuntimeError(message)
            self._event("nonfinite_rollback", f"non-finite values ({'; '.join(bad)}) in iterations "
                        f"{it + 1}-{it + n}; rolled back to iteration {it}, retry {retry}/"
                        f"{self.max_nonfinite - 1} with a perturbed key", iteration=it,
                        retry=retry, nonfinite=bad)
            state = begin.replace(key=jax.random.fold_in(begin.key, retry))
        raise AssertionError("unreachable")

    def _save(self, ckpt: Checkpoints, state, records: list[dict],
              extra: Mapping[str, Any] | None = None):
        best_value = None
        if self.best_metric is not None:
            values = [r["metrics"].get(self.best_metric) for r in records]
            values = [v for v in values if v is not None and math.isfinite(v)]
            best_value = float(np.mean(values)) if values else None
        meta = {**self._identity(), "seed": self.seed, "time": records[-1]["time"],
                "best_metric": self.best_metric, "best_mode": self.best_mode,
                "metrics": logs.jsonable(records[-1]["metrics"]), "jmeta_version": _version()}
        if extra:
            meta.update({k: v for k, v in extra.items() if k not in meta})
        ckpt.save(state, meta, best_value)


def load(run_dir: str | os.PathLike) -> tuple[RunSpec, Any, Any, Algorithm, Any]:
    """Rebuilds a run from its directory: spec, env, tasks, algorithm and the latest good state.

    Args:
      run_dir: a directory written by a :class:`Runner` given a ``RunSpec``.

    Returns:
      ``(spec, env, tasks, algo, state)`` (see :func:`~jmeta.training.spec.build` for
      ``env``/``tasks``); ``state`` is the latest readable checkpoint's ``TrainState``.

    Raises:
      ValueError: not a run directory, a run made from a bare ``Algorithm`` (no spec), or no
        checkpoint yet.
      jmeta.training.checkpoint.CheckpointError: no checkpoint is readable.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise ValueError(f"run_dir: {str(run_dir)!r} is not a directory")
    if not path.exists():
        raise ValueError(f"run_dir: {str(run_dir)!r} is not a jmeta run directory (no {RUN_FILE})")
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"run_dir: {str(path)!r} is unreadable ({e})") from None
    if saved.get("spec") is None:
        raise ValueError(f"run_dir: {str(run_dir)!r} was trained from an Algorithm object, not a "
                         f"RunSpec; rebuild it and use Runner(algo, run_dir, ...).restore()")
    spec = RunSpec.from_dict(saved["spec"])
    runner = Runner(spec, run_dir, progress=False, tensorboard=False)
    state = runner.restore()
    if state is None:
        raise ValueError(f"run_dir: {str(run_dir)!r} has no checkpoint yet")
    return spec, runner.env, runner.tasks, runner.algo, state


# --- helpers -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _built(spec: RunSpec, devices: int = 1):
    """``build(spec)`` and its jitted ``train``, shared by the Runners of equal specs (and device
    counts) in one process, so a new Runner on a run directory (a resume in a notebook) does not
    recompile. ``devices > 1``: the task batch sharded over a ``task_mesh(devices)``, the state
    and the outputs replicated."""
    mesh = None if devices == 1 else sharding.task_mesh(devices)
    env, tasks, algo = build(spec, mesh=mesh)
    return env, tasks, algo, sharding.jit_train(algo.train, mesh)


def _tree_finite(*trees) -> list[jax.Array]:
    """One bool per tree: all its inexact leaves are finite."""
    out = []
    for tree in trees:
        leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
                  if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
        out.append(jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True))
    return out


def _nonfinite_scalars(metrics: Mapping[str, Any]) -> list[str]:
    bad = []
    for name, value in metrics.items():
        if name.startswith("task_") or isinstance(value, Mapping):
            continue
        x = np.asarray(value)
        if x.ndim == 1 and np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
            bad.append(name)
    return bad


def _version() -> str:
    import jmeta

    return jmeta.__version__


class _Progress:
    """A rich progress bar with ETA and live metrics, or one printed line per chunk when stderr
    is not a terminal; nothing when disabled."""

    def __init__(self, enabled: bool, start: int, total: int, key_metrics: list[str]):
        self.enabled, self.start, self.total, self.key_metrics = enabled, start, total, key_metrics
        self.t0 = time.perf_counter()
        self._progress = None
        if not enabled:
            return
        from rich.console import Console

        self.console = Console(stderr=True)
        if self.console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"), console=self.console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, completed=start,
                                                 metrics="")

    def _text(self, metrics: Mapping[str, float]) -> str:
        parts = []
        for name in self.key_metrics:
            v = metrics.get(name)
            if v is not None:
                parts.append(f"{name} {v:.4g}")
        return "  ".join(parts)

    def update(self, iteration: int, metrics: Mapping[str, float], now: float):
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=iteration, metrics=self._text(metrics))
            return
        elapsed = time.perf_counter() - self.t0
        done = iteration - self.start
        eta = elapsed / done * (self.total - iteration) if done else float("nan")
        self.console.print(f"iteration {iteration}/{self.total}  {self._text(metrics)}  "
                           f"elapsed {elapsed:.0f}s  eta {eta:.0f}s", highlight=False,
                           soft_wrap=True)

    def close(self):
        if self._progress is not None:
            self._progress.stop()
