"""Helpers shared by the benchmark scripts (machine description, JSON output, timing)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jmeta.cli import int_at_least


def machine_info() -> dict[str, Any]:
    """CPU/GPU model, core count and library versions, for the JSON's ``"machine"`` field."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": devices[0].platform,
        "devices": [d.device_kind for d in devices],
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def write_json(path: str | os.PathLike, headline: dict[str, float], config: dict[str, Any],
               **detail: Any) -> dict[str, Any]:
    """Writes ``{"headline", "config", "machine", **detail}`` to ``path`` and returns it."""
    out = {"headline": headline, "config": config, "machine": machine_info(), **detail}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


def pick(quick: bool, value: Any, quick_default: Any, full_default: Any) -> Any:
    """A command-line ``value`` when one was given (not ``None``), else the ``--quick`` or the
    full protocol's default."""
    if value is not None:
        return value
    return quick_default if quick else full_default


RL2_PROBE_FIELDS = ("gamma", "gae_lambda", "num_tasks", "learning_rate", "ent_coef",
                    "hidden_size")
_INT_FIELDS = ("num_tasks", "hidden_size")


def add_rl2_probe_args(ap: argparse.ArgumentParser, defaults: dict[str, str]) -> None:
    """Adds ``--gamma --gae-lambda --num-tasks --learning-rate --ent-coef --hidden-size``,
    overrides of the ``rl2.Config`` fields of the same names for probes (all default to
    ``None``: the script's own configuration), and ``--task-critic`` (``rl2.Config.task_critic``). ``defaults`` gives each
    numeric field's script default in words, for the help. Also ``--task-prediction-coef``,
    ``--outer``, ``--max-kl``, ``--fisher-subsample``, ``--separate-critic``, ``--clip-eps``,
    ``--ent-coef-schedule``, ``--learning-rate-schedule`` and ``--num-tasks-schedule`` (not a
    ``rl2.Config`` field: the scripts pass it to :func:`train_with_checkpoints` as ``phases``)."""
    for field in RL2_PROBE_FIELDS:
        what = "trials per iteration" if field == "num_tasks" else f"rl2.Config.{field}"
        ap.add_argument("--" + field.replace("_", "-"), default=None,
                        type=positive_int if field in _INT_FIELDS else float,
                        help=f"{what} (default {defaults[field]})")
    ap.add_argument("--task-critic", action="store_true", default=None,
                    help="rl2.Config.task_critic: the critic also reads the task's parameters "
                         "(meta-training only; the actor never does)")
    ap.add_argument("--separate-critic", action=argparse.BooleanOptionalAction, default=None,
                    help="rl2.Config.separate_critic: the critic has its own recurrent core "
                         "(default: the script's setting; rl2's own default is only with "
                         "--outer trpo)")
    ap.add_argument("--clip-eps", type=float, default=None,
                    help="rl2.Config.clip_eps: PPO's clipping (default: the script's "
                         "setting; rl2's own default is 0.2)")
    ap.add_argument("--ent-coef-schedule", type=schedule, default=None, metavar="IT:V,...",
                    help="rl2.Config.ent_coef_schedule: from meta-iteration IT on, the entropy "
                         "bonus is V (default: the script's setting)")
    ap.add_argument("--learning-rate-schedule", type=schedule, default=None, metavar="IT:V,...",
                    help="rl2.Config.learning_rate_schedule: from meta-iteration IT on, Adam's "
                         "step size is V (default: the script's setting)")
    ap.add_argument("--num-tasks-schedule", type=trials_schedule, default=None,
                    metavar="IT:N,...",
                    help="from meta-iteration IT on, N trials per iteration (the checkpoint "
                         "carries over: only the batch changes; default: the script's schedule, "
                         "which --num-tasks' help gives; with --num-tasks or --quick none)")
    ap.add_argument("--task-prediction-coef", type=float, default=None,
                    help="rl2.Config.task_prediction_coef: weight of the auxiliary task-inference "
                         "loss (default 0: off)")
    ap.add_argument("--outer", choices=("ppo", "trpo"), default=None,
                    help="rl2.Config.outer: the meta-update (default ppo)")
    ap.add_argument("--max-kl", type=float, default=None,
                    help="rl2.Config.max_kl: TRPO's trust region (default 0.01)")
    ap.add_argument("--fisher-subsample", type=int, default=None,
                    help="rl2.Config.fisher_subsample: TRPO's Fisher from every k-th trial "
                         "(default 1)")


def rl2_probe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``rl2.Config`` overrides given on the command line (see :func:`add_rl2_probe_args`)."""
    fields = (*RL2_PROBE_FIELDS, "task_critic", "task_prediction_coef", "outer", "max_kl",
              "fisher_subsample", "separate_critic", "clip_eps", "ent_coef_schedule",
              "learning_rate_schedule")
    return {f: getattr(args, f) for f in fields if getattr(args, f) is not None}


def mean_sem(x) -> dict[str, float]:
    """``{"mean", "sem"}`` of per-task values ``x`` (the SEM with the population std, as every
    RL² table here reports it)."""
    x = np.asarray(x)
    return {"mean": float(x.mean()), "sem": float(x.std() / np.sqrt(len(x)))}


#: An argparse ``type``: a positive int, else a usage error (the ``jmeta`` CLI's own parser).
positive_int = int_at_least(1)


def with_memory(setting: dict[str, Any], cell: str | None) -> dict[str, Any]:
    """An RL² benchmark's ``rl2.Config`` fields ``setting`` with its memory replaced by ``cell``
    (``None``: the setting's own, else the GRU); a Transformer drops ``separate_critic`` (its
    trunk is shared: no separate critic core), the other fields stay."""
    setting = {**setting, "cell": cell or setting.get("cell", "gru")}
    if setting["cell"] == "transformer":
        setting.pop("separate_critic", None)
    return setting


def schedule(text: str) -> tuple[tuple[int, float], ...]:
    """An argparse ``type``: ``"400:0.01,600:0.003"`` -> ``((400, 0.01), (600, 0.003))``, a
    piecewise-constant ``rl2.Config`` schedule (checked by ``rl2.check_schedule``)."""
    from jmeta.algorithms import rl2
    from jmeta.training import configs

    try:
        if any(not part.strip() for part in text.split(",")):  # no empty pair (nor text)
            raise ValueError
        pairs = configs.coerce(tuple[tuple[int, float], ...], text, "schedule")
        return rl2.check_schedule("schedule", pairs, allow_zero=True)
    except ValueError as err:  # configs.ConfigError is one
        detail = f" ({err})" if str(err) else ""
        raise argparse.ArgumentTypeError(
            f"expected ITERATION:VALUE pairs joined by ',', e.g. 400:0.01,600:0.003; got "
            f"{text!r}{detail}") from None


def trials_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """An argparse ``type``: ``"1000:1024"`` or ``"1000:512,1500:1024"`` -> ``((1000, 512), (1500,
    1024))``: from meta-iteration IT on, N trials per meta-iteration (see the ``phases`` of
    :func:`train_with_checkpoints`); the iterations positive and increasing."""
    pairs = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+):([1-9]\d*)", part)
        if not m or int(m[1]) < 1 or (pairs and int(m[1]) <= pairs[-1][0]):
            raise argparse.ArgumentTypeError(
                f"expected ITERATION:TRIALS pairs joined by ',' with positive integers and the "
                f"iterations increasing, e.g. 1000:1024; got {text!r}")
        pairs.append((int(m[1]), int(m[2])))
    return tuple(pairs)


def num_tasks_schedule(args: argparse.Namespace, n: int,
                       defaults: dict[int, tuple[tuple[int, int], ...]]
                       ) -> tuple[tuple[int, int], ...]:
    """The batch phases of an RL² script's trial length ``n``: ``--num-tasks-schedule``, else the
    script's ``defaults[n]`` (none with ``--quick`` or ``--num-tasks``)."""
    if args.num_tasks_schedule is not None:
        return args.num_tasks_schedule
    return () if args.quick or args.num_tasks else defaults.get(n, ())


def describe_schedules(by_n: dict[int, tuple[tuple[int, Any], ...]]) -> str:
    """Words for a help text from a script's per-trial-length schedule ``{n: ((IT, V), ...)}``,
    so the ``--help`` of an RL² script says what its constants say:
    ``{10: ((4000, 1024),)}`` -> ``"1,024 from iteration 4,000 at n = 10"``."""
    def word(v: Any) -> str:
        if isinstance(v, int):
            return f"{v:,}"
        return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.0e}".replace("e-0", "e-")

    return "; ".join(", then ".join(f"{word(v)} from iteration {it:,}" for it, v in phases)
                     + f" at n = {n}" for n, phases in sorted(by_n.items()) if phases)


def rl2_batch_phases(config, env, tasks, schedule: tuple[tuple[int, int], ...]) -> tuple:
    """The ``phases`` of :func:`train_with_checkpoints` for a ``num_tasks`` schedule
    (:func:`num_tasks_schedule`): ``((iteration, RL² algorithm with config's num_tasks
    replaced), ...)``."""
    import dataclasses

    from jmeta.algorithms import rl2

    return tuple((it, rl2.make(dataclasses.replace(config, num_tasks=m), env, tasks))
                 for it, m in schedule)


def parse_solver(text: str) -> tuple[int, int]:
    """``"ITERATIONS/LS_ITERATIONS"`` (e.g. ``"4/8"``) -> ``(4, 8)``: an MJX solver cap as the
    MJX benchmarks take it on the command line (usable as an argparse ``type``)."""
    if not re.fullmatch(r"[1-9]\d*/[1-9]\d*", text):
        raise argparse.ArgumentTypeError(
            f"solver {text!r}: expected ITERATIONS/LS_ITERATIONS with positive integers, e.g. 4/8")
    iterations, ls_iterations = (int(x) for x in text.split("/"))
    return iterations, ls_iterations


class Phases:
    """Wall time of a script's phases: ``phase = Phases(log)``, then ``phase("training")`` at the
    end of each phase logs and records the seconds since the previous one (or the start).

    Attributes:
      start: ``time.perf_counter()`` at construction.
      seconds: phase name -> seconds, in order.
    """

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.start = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now
        self.log(f"[{now - self.start:6.1f} s] {name} done ({self.seconds[name]:.1f} s)")

    def wall(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """``tight_layout``, then writes ``fig`` to ``path`` (creating its folder) and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def time_call(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` (blocking on its result) over ``repeats`` calls, and all times."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a jitted ``n × n`` float32 matmul (median of ``repeats``): the peak that
    benchmarks compare their achieved GFLOP/s against."""
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    median, _ = time_call(lambda: f(a, b), repeats)
    return 2 * n**3 / median


def _restore_like(template, path: str | os.PathLike, entry: str | None = None):
    """``template``'s tree with the values of the checkpoint ``path`` (a flax msgpack state
    dict; with ``entry``, that entry of it), after checking that the checkpoint has
    ``template``'s leaves, no others, each with its shape: a checkpoint of another setting fails
    here with a ``ValueError`` that names the first difference, not inside a jitted program
    later. Returns ``(restored, raw)``, ``raw`` the whole checkpoint as read."""
    from flax import serialization

    raw = serialization.msgpack_restore(Path(path).read_bytes())
    tree = raw
    if entry is not None:
        if not isinstance(raw, dict) or entry not in raw:
            raise ValueError(f"{path}: not a checkpoint of train_with_checkpoints (no '{entry}')")
        tree = raw[entry]
    want = jax.tree_util.tree_flatten_with_path(serialization.to_state_dict(template))[0]
    got = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
    for where, leaf in want:
        if where not in got:
            raise ValueError(f"{path}: no {jax.tree_util.keystr(where)} (the checkpoint's "
                             "network or optimiser differs from this configuration's)")
        if jax.numpy.shape(got[where]) != jax.numpy.shape(leaf):
            raise ValueError(f"{path}: {jax.tree_util.keystr(where)} has shape "
                             f"{jax.numpy.shape(got[where])} in the checkpoint, "
                             f"{jax.numpy.shape(leaf)} in the configuration")
    if len(got) != len(want):
        extra = sorted(jax.tree_util.keystr(w) for w in set(got) - {w for w, _ in want})
        raise ValueError(f"{path}: entries this configuration does not have: {extra[:3]} (the "
                         "checkpoint's network or optimiser differs from this configuration's)")
    return serialization.from_state_dict(template, tree), raw


def load_state(algo, path: str | os.PathLike, seed: int = 0):
    """The TrainState of ``algo`` in the checkpoint ``path`` (written by
    :func:`train_with_checkpoints`; the key stored as raw key data). Its tree must be the
    TrainState's, leaf for leaf and shape for shape, else a ``ValueError`` naming the first
    difference."""
    template = algo.init(jax.random.key(seed))
    template = template.replace(key=jax.random.key_data(template.key))
    state, _ = _restore_like(template, path)
    return state.replace(key=jax.random.wrap_key_data(state.key))


def load_params(algo, path: str | os.PathLike, seed: int = 0) -> tuple[Any, int]:
    """The network parameters of the checkpoint ``path`` (written by
    :func:`train_with_checkpoints`) as ``algo``'s parameters, whatever the rest of the checkpoint's
    configuration (trial length, batch, optimiser and its schedules): the start of a run that
    carries a network over from another setting (``--init-from``). Its parameter tree must be
    ``algo``'s, leaf for leaf and shape for shape (the same memory, width and critic core),
    else a ``ValueError`` that names the first difference.

    Returns ``(params, iteration)``: the meta-iteration the checkpoint was written at."""
    params, raw = _restore_like(algo.init(jax.random.key(seed)).params, path, entry="params")
    if "iteration" not in raw:
        raise ValueError(f"{path}: not a checkpoint of train_with_checkpoints (no 'iteration')")
    return params, int(raw["iteration"])


def train_with_checkpoints(algo, iterations: int, chunk: int, ckpt_dir: Path, name: str,
                           resume: bool, log: Callable[[str], None],
                           record: Callable[[Any, int], dict], seed: int = 0,
                           keep_every: int | None = None, phases: tuple = (),
                           init_params: Any = None, keep_at: tuple[int, ...] = ()):
    """Trains ``algo`` for ``iterations`` meta-iterations in jitted chunks of ``chunk``, writing a
    checkpoint (flax msgpack of the TrainState, key as raw key data) and the history after each
    chunk, so a killed run continues with ``resume=True``.

    Each file is written to a temporary name and renamed over the old one, the history first and
    then the state, so a kill at any moment leaves a readable pair whose history reaches at least
    the state's iteration; on resume the history is cut back to the state's iteration (the rerun
    chunk records those iterations again).

    Args:
      record: ``record(metrics, i) -> dict``: the history entry of the chunk's ``i``-th iteration
        from the chunk's stacked metrics.
      keep_every: also keep a copy of the state as ``kept/{name}_{iteration}.msgpack`` after
        each chunk that reaches or passes a multiple of ``keep_every`` (for paired comparisons
        of one run's checkpoints with ``rl2_checkpoints.py``); ``None`` keeps none.
      phases: ``((iteration, algo), ...)``, iterations increasing: from meta-iteration
        ``iteration`` on, train with that ``algo`` instead (one whose TrainState has the same
        layout: in the RL² scripts, the configuration with another ``num_tasks``). Chunks end at
        each phase's start, so the run is the same whatever ``chunk`` and wherever it resumes.
      keep_at: iterations whose states are also kept as ``kept/{name}_{iteration}.msgpack``
        (chunks end there, so the state is that iteration's whatever ``chunk``): e.g. the state
        another setting starts from (``rl2_bandits.CURRICULUM``).
      init_params: a fresh run (no checkpoint resumed) starts from these parameters (e.g.
        :func:`load_params` of another setting's state) with a fresh optimiser state at
        iteration 0; ``None``: from ``algo.init``. A resumed run ignores it.

    Returns:
      ``(state, history)``; each history entry also has ``iteration`` and ``seconds`` (the chunk's
      wall time per iteration; the first chunk includes compilation).
    """
    from flax import serialization

    from jmeta.training.logs import write_atomic

    history: list[dict] = []
    ckpt, hist_path = ckpt_dir / f"{name}.msgpack", ckpt_dir / f"{name}.history.json"
    if resume and ckpt.exists() and hist_path.exists():
        state = load_state(algo, ckpt, seed)
        done = int(state.iteration)
        history = [h for h in json.loads(hist_path.read_text()) if h["iteration"] <= done]
        if len(history) != done:
            raise RuntimeError(f"{hist_path}: {len(history)} history entries up to the "
                               f"checkpoint's iteration {done}; the pair does not match")
        log(f"{name}: resumed at iteration {done}")
    else:
        state = algo.init(jax.random.key(seed))
        if init_params is not None:
            state = state.replace(params=init_params)
    starts = [it for it, _ in phases]
    if any(b <= a for a, b in zip([0, *starts], starts)):
        raise ValueError(f"phases: the start iterations must be positive and increasing, got "
                         f"{starts}")
    trains = [jax.jit(a.train, static_argnames="num_iterations")
              for a in (algo, *(a for _, a in phases))]
    while int(state.iteration) < iterations:
        done = int(state.iteration)
        phase = sum(it <= done for it in starts)  # 0: algo, i: phases[i - 1]
        end = min([iterations, *(it for it in (*starts, *keep_at) if it > done)])
        n = min(chunk, end - done)
        t0 = time.perf_counter()
        state, metrics = trains[phase](state, num_iterations=n)
        jax.block_until_ready(metrics)
        dt = time.perf_counter() - t0
        for i in range(n):
            history.append({"iteration": int(state.iteration) - n + i + 1, **record(metrics, i),
                            "seconds": dt / n})
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(hist_path, json.dumps(history))
        state_bytes = serialization.to_bytes(state.replace(key=jax.random.key_data(state.key)))
        write_atomic(ckpt, state_bytes)
        it = int(state.iteration)
        if it in keep_at or keep_every and it // keep_every > (it - n) // keep_every:
            (ckpt_dir / "kept").mkdir(exist_ok=True)
            write_atomic(ckpt_dir / "kept" / f"{name}_{it}.msgpack", state_bytes)
        last = {k: v for k, v in history[-1].items() if k not in ("iteration", "seconds")}
        log(f"{name}: iteration {it}/{iterations}  "
            + "  ".join(f"{k} {v:8.2f}" for k, v in last.items() if isinstance(v, float))
            + f"  ({dt / n:.2f} s/iter)")
    return state, history
