"""The ``jmeta`` command line (shared/DESIGN.md §1–2): train, evaluate, diagnose, list envs, run a
benchmark.

::

    jmeta train maml-rl --env point-nav --logdir runs/nav [--iterations N] [--set field=value ...]
                        [--task.FIELD VALUE ...] [--config FILE.yaml] [--chunk N] [--seed S]
                        [--task-groups "NAME=LO:HI;NAME=LO:HI;..." [--replay-ratio R]
                         [--replay-capacity N] [--replay-buffer reservoir|ring]]
    jmeta evaluate runs/nav [--split test|ood] [--steps K] [--tasks N]
    jmeta doctor runs/nav [--json]
    jmeta envs [NAME]
    jmeta algos [NAME]
    jmeta bench NAME [--quick] [-- ARGS ...]     (ARGS go to benchmarks/NAME.py)
    jmeta demo [--logdir runs/demo] [--quick]
    jmeta trainer maml-rl --env point-nav --run-dir DIR --iterations N [--run NAME] [--nats URL]
                  [--set ...] [--config FILE.yaml] [--max-lag L] [--tasks-per-batch N] [--drain]
    jmeta sampler [--run NAME] [--nats URL] [--sampler-id ID] [--max-batches N]
    jmeta version

``trainer`` and ``sampler`` are the decoupled layout of :mod:`jmeta.distributed` (NATS
JetStream; the ``distributed`` extra); URL, run name, credentials and TLS files also come from
``$JMETA_NATS_URL``, ``$JMETA_RUN``, ``$JMETA_NATS_USER``/``$JMETA_NATS_PASSWORD`` or
``$JMETA_NATS_TOKEN``, ``$JMETA_NATS_TLS_CA``/``_CERT``/``_KEY``.

``--set`` sets a field of the algorithm's ``Config`` (``jmeta algos NAME`` lists them with the
help text of the config's docstring); ``--task.FIELD VALUE`` (or ``--set task.FIELD=VALUE``) sets
an option of the environment (``jmeta envs NAME``). Values are parsed by the field's type:
``--set hidden_sizes=64,64``, ``--task.friction 0.5:0.9``. A YAML config holds the same::

    algo: maml-rl
    env: point-nav
    iterations: 200
    config: {inner_lr: 0.1, num_tasks: 20}
    task: {goal_radius: 0.5}

Continual meta-training (:mod:`jmeta.continual`, maml-rl and rl2): ``--task-groups`` is a schedule
of task groups, one stage each, separated by ``;`` (a group's range overrides by ``,``; names are
the env's task ranges, ``jmeta envs NAME``), e.g. ``--task-groups
"goal_radius=0.4:0.5;goal_radius=0.2:0.3;goal_radius=0:0.1"``. ``--iterations`` is then per
stage (the run trains stages × N iterations; resume with the same N). ``--replay-ratio R``
(default 0.3; 0 turns replay off) of each iteration's tasks come from a replay buffer of earlier
stages' tasks (``--replay-capacity``, default 100; ``--replay-buffer``, default reservoir). In
YAML: ``continual: {task_groups: "...", replay_ratio: 0.3, replay_capacity: 100}``
(``task_groups`` also as a list of mappings ``{goal_radius: [0.4, 0.5]}``).

Command-line values override the file's. Every mistake a user can type (unknown algorithm, env
or field, a wrong type, malformed YAML, a missing or foreign run directory, iterations ≤ 0, …)
prints one line ``jmeta: error: …`` and exits with status 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from jmeta.training.configs import ConfigError

EXIT_USAGE = 2
EXIT_FAILURE = 1  # the run itself failed (aborted on non-finite values, no readable checkpoint)

# Finn et al. 2017, Fig. 5 (shared/reference/published.md): MAML's return after 0..3 steps.
# Shown beside a maml-rl run's table when the run used the paper's horizon.
PAPER_MAML = {
    "point-nav": ("2D navigation, H=100", [-40.41, -11.68, -3.33, -3.23], 100),
    "halfcheetah-vel": ("HalfCheetah velocity, H=200", [-129.53, -78.57, -66.62, -60.78], 200),
    "halfcheetah-dir": ("HalfCheetah direction, H=200", [-50.69, 293.19, 313.48, 315.65], 200),
}


class UsageError(Exception):
    """A mistake on the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) and exits with status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(message)


# --- helpers ------------------------------------------------------------------------------------
def int_at_least(minimum: int):
    """An argparse ``type`` for ints >= ``minimum`` (argparse prefixes the option's name)."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"--config {path}: malformed YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping at the top level, "
                         f"got {type(data).__name__}")
    allowed = {"algo", "env", "iterations", "chunk", "seed", "config", "task", "continual"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"--config {path}: unknown key {unknown[0]!r}; valid keys: "
                         f"{', '.join(sorted(allowed))}")
    return data


def _split_task_args(rest: Sequence[str]) -> list[str]:
    """``--task.FIELD VALUE`` / ``--task.FIELD=VALUE`` pairs as ``FIELD=VALUE`` assignments."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--task."):
            raise UsageError(f"unrecognized argument {arg!r}")
        body = arg[len("--task."):]
        if "=" in body:
            out.append(body)
            i += 1
            continue
        if not body:
            raise UsageError("--task.: missing field name (e.g. --task.friction 0.5:0.9)")
        if i + 1 >= len(rest) or rest[i + 1].startswith("--"):
            raise UsageError(f"{arg}: expected a value")
        out.append(f"{body}={rest[i + 1]}")
        i += 2
    return out


def _pop_task_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits ``--task.FIELD [VALUE]`` tokens off ``argv`` (before argparse, which would otherwise
    take a value such as ``0.3`` for the optional ALGO positional)."""
    rest, task, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg.startswith("--task.") and "=" not in arg:
            task.append(arg)
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                task.append(argv[i + 1])
                i += 1
        elif arg.startswith("--task."):
            task.append(arg)
        else:
            rest.append(arg)
        i += 1
    return rest, task


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header)
    for row in rows:
        table.add_row(*(str(x) for x in row))
    Console().print(table)


# --- commands ----------------------------------------------------------------------------------
def cmd_version(args) -> int:
    import jax

    import jmeta

    print(f"jmeta {jmeta.__version__} (jax {jax.__version__}, {jax.devices()[0].platform})")
    return 0


def cmd_envs(args) -> int:
    import jmeta
    from jmeta.training import configs

    if args.name is None:
        rows = []
        for name in jmeta.envs.names():
            cls = jmeta.envs.config_class(name)
            summary = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            summary = re.sub(r"^``jmeta\.make\([^`]*\)``:\s*", "", summary)
            rows.append((name, summary))
        from jmeta.training import spec

        for name in spec.SUPERVISED_ENVS:
            rows.append((name, "supervised few-shot task family (algos "
                               f"{', '.join(spec.SUPERVISED_ALGORITHMS)})"))
        _print_table(("env", "description"), rows)
        print("`jmeta envs NAME` lists a task's parameters and default ranges.")
        return 0
    try:
        cls = jmeta.envs.config_class(args.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    rows = [(n, t, d, h) for n, t, d, h in configs.help_table(cls)]
    rows.append(("obs_noise", "a number or a range low:high", "None",
                 "per-task Gaussian sensor-noise std (every env)"))
    rows.append(("rescale_actions", "true or false", "False",
                 "policy acts in [-1, 1]^d, mapped onto the action box (rllab's normalize)"))
    _print_table(("option", "type", "default", "help"), rows)
    return 0


ALGO_SUMMARY = {
    "maml-rl": "MAML for RL: VPG inner loop, TRPO/ProMP/PPO outer loop (first_order=true: FOMAML)",
    "rl2": "RL²: recurrent (LSTM/GRU) or Transformer actor-critic trained with PPO over trials",
    "maml": "MAML, supervised few-shot (sinusoid, digits), second order",
    "fomaml": "first-order MAML, supervised few-shot",
    "reptile": "Reptile, supervised few-shot",
    "meta-sgd": "Meta-SGD (learned per-parameter inner rates), supervised few-shot",
}


def cmd_algos(args) -> int:
    from jmeta.training import configs, spec

    if args.name is None:
        _print_table(("algorithm", "description"),
                     [(n, ALGO_SUMMARY.get(n, "")) for n in spec.ALGORITHMS])
        print("`jmeta algos NAME` lists the config fields (set with --set field=value).")
        return 0
    try:
        cls = spec.config_class(args.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    rows = [r for r in configs.help_table(cls)
            if not (args.name in spec.SUPERVISED_ALGORITHMS and r[0] == "method")]
    _print_table(("field", "type", "default", "help"), rows)
    return 0


def _benchmarks_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "benchmarks"
    if not here.is_dir():
        raise UsageError("bench: the benchmarks/ directory is not next to this jmeta install "
                         "(run from a source checkout: pip install -e .)")
    return here


BENCH_ALIASES = {"throughput": "env_throughput"}  # shared/DESIGN.md §1's `jmeta bench throughput`


def cmd_bench(args, extra: Sequence[str]) -> int:
    root = _benchmarks_dir()
    scripts = sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))
    name = BENCH_ALIASES.get(args.name, args.name.removesuffix(".py"))
    if name not in scripts:
        matches = [s for s in scripts if name in s]
        if len(matches) != 1:
            what = "ambiguous" if matches else "unknown"
            raise UsageError(f"bench: {what} benchmark {args.name!r}; valid: {', '.join(scripts)}")
        name = matches[0]
    extra = [a for a in extra if a != "--"]
    cmd = [sys.executable, str(root / f"{name}.py"), *(["--quick"] if args.quick else []), *extra]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=root.parent)


def _spec_from_args(args, extra: Sequence[str], command: str = "train"):
    """``(RunSpec, iterations, chunk, yaml data)`` from ALGO/--env/--config/--set/--task.*."""
    from jmeta.training import configs, spec as spec_mod

    data = _load_yaml(args.config) if args.config else {}
    algo = args.algo or data.get("algo")
    if algo is None:
        raise UsageError(f"{command}: missing ALGO (e.g. jmeta {command} maml-rl --env "
                         f"point-nav ...)")
    if data.get("algo") not in (None, algo):
        raise UsageError(f"{command}: ALGO {algo!r} disagrees with the config file's "
                         f"algo {data['algo']!r}")
    env = args.env or data.get("env")
    if env is None:
        raise UsageError(f"{command}: missing --env NAME (`jmeta envs` lists them)")
    try:
        config_cls = spec_mod.config_class(algo)
    except ValueError as err:
        raise UsageError(str(err)) from None
    what = f"{algo} config"
    algo_values = configs.typed_mapping(config_cls, data.get("config") or {}, what)
    sets = list(args.set or [])
    task_sets = [s[len("task."):] for s in sets if s.startswith("task.")]
    algo_sets = [s for s in sets if not s.startswith("task.")]
    algo_values.update(configs.parse_overrides(config_cls, algo_sets, what))
    if algo in spec_mod.SUPERVISED_ALGORITHMS and "method" in algo_values:
        raise UsageError(f"method: set by the algorithm name ({algo}); drop it")
    task_values = _task_values(algo, env, data.get("task") or {},
                               task_sets + _split_task_args(extra))
    iterations = args.iterations if args.iterations is not None else data.get("iterations")
    if iterations is None:
        raise UsageError(f"{command}: missing --iterations N")
    iterations = configs.coerce(int, iterations, "iterations")
    if iterations < 1:
        raise UsageError(f"iterations: expected a positive int, got {iterations}")
    chunk = getattr(args, "chunk", None)
    chunk = chunk if chunk is not None else configs.coerce(
        int, data.get("chunk", 10), "chunk")
    if chunk < 1:
        raise UsageError(f"chunk: expected a positive int, got {chunk}")
    seed = args.seed if args.seed is not None else configs.coerce(int, data.get("seed", 0), "seed")
    if seed < 0:
        raise UsageError(f"seed: expected an int >= 0, got {seed}")
    cont = _continual_values(args, data, iterations)
    if cont is not None and algo not in spec_mod.RL_ALGORITHMS:
        raise UsageError(f"--task-groups: continual meta-training is for "
                         f"{' and '.join(spec_mod.RL_ALGORITHMS)}, not {algo}")
    try:
        run_spec = spec_mod.RunSpec(algo=algo, env=env, env_kwargs=task_values,
                                    algo_config=algo_values, seed=seed, continual=cont)
    except ValueError as err:  # names, fields and values, each named in one line
        message = str(err)
        if message.startswith("continual: task_groups: "):
            message = "--task-groups: " + message[len("continual: task_groups: "):]
        raise UsageError(message) from None
    if cont is not None:  # --iterations is per stage
        iterations = run_spec.continual_config().total_iterations
    return run_spec, iterations, chunk, data


def _fraction(text: str) -> float:
    """An argparse ``type`` for a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _continual_values(args, data: dict[str, Any], iterations: int) -> dict[str, Any] | None:
    """The ``RunSpec.continual`` dict from --task-groups/--replay-* and the YAML ``continual``
    mapping (``None``: not a continual run). ``iterations`` (per stage) fills
    ``iterations_per_stage``."""
    from jmeta import continual
    from jmeta.training import configs

    section = data.get("continual")
    if section is not None and not isinstance(section, dict):
        raise UsageError(f"continual: expected a mapping in the config file, "
                         f"got {type(section).__name__}")
    section = dict(section or {})
    valid = ("task_groups", "replay_ratio", "replay_capacity", "buffer")
    unknown = [k for k in section if k not in valid]
    if unknown:
        raise UsageError(f"continual: unknown key {unknown[0]!r} in the config file; valid: "
                         f"{', '.join(valid)} (iterations: the top-level key, per stage)")
    flags = {"replay_ratio": getattr(args, "replay_ratio", None),
             "replay_capacity": getattr(args, "replay_capacity", None),
             "buffer": getattr(args, "replay_buffer", None)}
    groups = getattr(args, "task_groups", None)
    if groups is None and not section:
        given = [f"--{k.replace('_', '-')}" if k != "buffer" else "--replay-buffer"
                 for k, v in flags.items() if v is not None]
        if given:
            raise UsageError(f"{given[0]}: needs --task-groups (a continual run)")
        return None
    if groups is not None:
        try:
            section["task_groups"] = continual.parse_task_groups(groups)
        except ValueError as err:
            raise UsageError(f"--task-groups: {err}") from None
    elif isinstance(section.get("task_groups"), str):
        try:
            section["task_groups"] = continual.parse_task_groups(section["task_groups"])
        except ValueError as err:
            raise UsageError(f"continual.task_groups: {err}") from None
    if "task_groups" not in section:
        raise UsageError("continual: missing task_groups (--task-groups or continual.task_groups "
                         "in the config file)")
    for field, tp in (("replay_ratio", float), ("replay_capacity", int), ("buffer", str)):
        if field in section:
            section[field] = configs.coerce(tp, section[field], f"continual.{field}")
    section.update({k: v for k, v in flags.items() if v is not None})
    ratio = section.get("replay_ratio", 0.3)
    if not 0.0 <= ratio <= 1.0:
        raise UsageError(f"continual.replay_ratio: expected a number in [0, 1], got {ratio}")
    if section.get("replay_capacity", 1) < 1:
        raise UsageError(f"continual.replay_capacity: expected a positive int, "
                         f"got {section['replay_capacity']}")
    if section.get("buffer", "reservoir") not in continual.BUFFER_KINDS:
        raise UsageError(f"continual.buffer: expected one of "
                         f"{', '.join(continual.BUFFER_KINDS)}, got {section['buffer']!r}")
    section["iterations_per_stage"] = iterations
    return section


def cmd_train(args, extra: Sequence[str]) -> int:
    from jmeta.training import spec as spec_mod
    from jmeta.training.runner import Runner

    run_spec, iterations, chunk, _ = _spec_from_args(args, extra)
    logdir = Path(args.logdir)
    devices = args.devices
    if devices is not None and devices > 1:
        if run_spec.algo not in spec_mod.RL_ALGORITHMS:
            raise UsageError(f"--devices: task-batch sharding is for "
                             f"{' and '.join(spec_mod.RL_ALGORITHMS)}, not {run_spec.algo}")
        from jmeta import sharding

        try:  # on a CPU-only machine, N host devices (before JAX starts its backend)
            sharding.use_host_devices(devices)
            sharding.task_mesh(devices)
        except ValueError as err:
            raise UsageError(f"--devices: {err}") from None
    try:
        runner = Runner(run_spec, logdir, chunk_size=chunk, progress=not args.no_progress,
                        devices=devices)
    except ValueError as err:  # e.g. LOGDIR is a file or holds a different run
        message = str(err)
        raise UsageError(message if message.startswith(("num_tasks", "devices")) else
                         f"--logdir: {message}") from None
    from jmeta.training.checkpoint import CheckpointError

    try:
        state = runner.run(iterations)
    except (RuntimeError, CheckpointError) as err:  # non-finite abort, no readable checkpoint
        print(f"jmeta: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"trained {int(state.iteration)} iterations; run directory: {logdir}\n"
          f"  TensorBoard: tensorboard --logdir {logdir / 'tb'}\n"
          f"  metrics: {logdir / 'metrics.jsonl'}   checkpoints: {logdir / 'checkpoints'}\n"
          f"  next: jmeta evaluate {logdir}   |   jmeta doctor {logdir}")
    return 0


def _nats_options(args):
    try:
        import nats  # noqa: F401
    except ImportError:
        raise UsageError("the distributed commands need the `distributed` extra: "
                         "pip install 'jmeta[distributed]'") from None
    from jmeta.distributed import settings
    from jmeta.distributed.connection import NatsOptions

    try:
        run = settings.check_run_name(args.run or os.environ.get(settings.ENV_RUN) or "")
    except ValueError as err:
        raise UsageError(f"--run (or ${settings.ENV_RUN}): {err}") from None
    try:
        return NatsOptions.from_env(args.nats, connect_timeout=args.connect_timeout), run
    except ValueError as err:
        raise UsageError(str(err)) from None


def _run_async(coro) -> int:
    import asyncio

    from jmeta.distributed.connection import ConnectError
    from jmeta.distributed.protocol import DistributedError
    from jmeta.training.checkpoint import CheckpointError

    try:
        asyncio.run(coro)
    except ConnectError as err:
        print(f"jmeta: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (DistributedError, CheckpointError) as err:
        print(f"jmeta: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def cmd_sampler(args) -> int:
    import asyncio

    from jmeta.distributed.sampler import install_stop_handlers, run_sampler

    options, run = _nats_options(args)

    async def main():
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await run_sampler(options, run, sampler_id=args.sampler_id, max_batches=args.max_batches,
                          seed=args.seed, log_path=args.log, wait=args.wait, stop=stop)

    return _run_async(main())


def cmd_trainer(args, extra: Sequence[str]) -> int:
    from jmeta.distributed.trainer import run_trainer

    options, run = _nats_options(args)
    run_spec, iterations, _, _ = _spec_from_args(args, extra, command="trainer")
    if run_spec.algo not in ("maml-rl", "rl2"):
        raise UsageError(f"trainer: runs maml-rl and rl2, not {run_spec.algo}")
    if run_spec.continual is not None:
        raise UsageError("trainer: continual runs (task groups, replay) train in-process only; "
                         "use jmeta train")
    num_tasks = run_spec.config().num_tasks
    if args.tasks_per_batch is not None and num_tasks % args.tasks_per_batch:
        raise UsageError(f"--tasks-per-batch: {args.tasks_per_batch} does not divide num_tasks "
                         f"{num_tasks}")
    try:
        coro = run_trainer(options, run, run_spec, args.run_dir, iterations,
                           tasks_per_batch=args.tasks_per_batch, max_lag=args.max_lag,
                           ack_wait=args.ack_wait, checkpoint_every=args.checkpoint_every,
                           drain=args.drain, tensorboard=not args.no_tensorboard)
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        return _run_async(coro)
    except ValueError as err:  # the Runner refusing the run directory
        raise UsageError(f"--run-dir: {err}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _add_nats_args(p) -> None:
    p.add_argument("--nats", default=None, metavar="URL",
                   help="nats://HOST:PORT or tls://HOST:PORT (default $JMETA_NATS_URL, else "
                        "nats://127.0.0.1:4222); credentials and TLS files come from "
                        "$JMETA_NATS_USER/$JMETA_NATS_PASSWORD or $JMETA_NATS_TOKEN and "
                        "$JMETA_NATS_TLS_CA/_CERT/_KEY")
    p.add_argument("--run", default=None, help="run name (default $JMETA_RUN)")
    p.add_argument("--connect-timeout", type=_positive_float, default=10.0, metavar="S")


_NOISE_FIELDS = ("obs_noise", "ood_obs_noise")
_GENERIC_TASK_FIELDS = {"rescale_actions": bool}


def _task_values(algo: str, env: str, mapping: Any, assignments: Sequence[str]) -> dict[str, Any]:
    """Typed env options from the YAML ``task:`` section and the command line."""
    import jmeta
    from jmeta.training import configs, spec as spec_mod

    if not isinstance(mapping, dict):
        raise UsageError(f"task: expected a mapping of field: value, got {type(mapping).__name__}")
    pairs = list(mapping.items()) + [configs.parse_assignment(a) for a in assignments]
    if algo in spec_mod.SUPERVISED_ALGORITHMS:
        # Supervised families take plain constructor arguments: YAML scalars/lists as given,
        # command-line values parsed as YAML scalars or comma-separated lists (RunSpec checks).
        import yaml

        out = {}
        for k, v in pairs:
            if isinstance(v, str):
                v = [yaml.safe_load(x) for x in v.split(",")] if "," in v else yaml.safe_load(v)
            out[k] = v
        return out
    if env not in jmeta.envs.names():
        return dict(pairs)  # RunSpec names the problem (unknown env, or a supervised family)
    types_ = configs.field_types(jmeta.envs.config_class(env))
    out = {}
    for k, v in pairs:
        if k in _NOISE_FIELDS:
            out[k] = configs.coerce(tuple[float, float] | float | None, v, k)
            continue
        if k in _GENERIC_TASK_FIELDS:
            out[k] = configs.coerce(_GENERIC_TASK_FIELDS[k], v, k)
            continue
        if k not in types_:
            raise UsageError(f"unknown task field {k!r} for {env}; valid: "
                             f"{', '.join([*types_, *_NOISE_FIELDS, *_GENERIC_TASK_FIELDS])}")
        out[k] = configs.coerce(types_[k], v, k)
    return out


# The README's main command: MAML-TRPO on 2D navigation with the authors' settings
# (maml_examples/maml_trpo_point.py; benchmarks/RESULTS.md "MAML-RL, 2D navigation"), fewer
# meta-iterations. configs/demo_nav.yaml holds the same run as a --config file.
DEMO = {
    "algo": "maml-rl", "env": "point-nav", "iterations": 40, "chunk": 5, "seed": 0,
    "task": {"rescale_actions": True},
    "config": {"num_tasks": 20, "num_episodes": 20, "inner_lr": 0.5, "hidden_sizes": [100, 100],
               "activation": "relu", "outer": "trpo", "max_kl": 0.01, "eval_episodes": 40},
}
DEMO_QUICK = {"iterations": 2, "chunk": 1,
              "config": {"num_tasks": 2, "num_episodes": 2, "hidden_sizes": [8],
                         "eval_episodes": 2},
              "task": {}}


def cmd_demo(args) -> int:
    """Meta-train on 2D navigation, meta-test on held-out and OOD tasks, say where things are."""
    from jmeta.training import spec as spec_mod
    from jmeta.training.runner import Runner

    demo = {**DEMO, "config": dict(DEMO["config"]), "task": dict(DEMO["task"])}
    if args.quick:
        demo["iterations"], demo["chunk"] = DEMO_QUICK["iterations"], DEMO_QUICK["chunk"]
        demo["config"].update(DEMO_QUICK["config"])
        demo["task"].update(DEMO_QUICK["task"])
    tasks_n = 2 if args.quick else 40
    logdir = Path(args.logdir)
    run_spec = spec_mod.RunSpec(algo=demo["algo"], env=demo["env"], env_kwargs=demo["task"],
                                algo_config=demo["config"], seed=demo["seed"])
    print(f"jmeta demo: MAML-TRPO on 2D navigation (Finn et al. 2017), {demo['iterations']} "
          f"meta-iterations of {demo['config']['num_tasks']} tasks x "
          f"{demo['config']['num_episodes']} trajectories -> {logdir}", flush=True)
    try:
        runner = Runner(run_spec, logdir, chunk_size=demo["chunk"], progress=not args.no_progress)
    except ValueError as err:
        raise UsageError(f"--logdir: {err}") from None
    runner.run(demo["iterations"])
    for split in ("test", "ood"):
        print(f"\nmeta-test on {tasks_n} {'held-out' if split == 'test' else 'out-of-distribution'}"
              f" tasks ({split} split): return after 0..3 adaptation steps", flush=True)
        ns = argparse.Namespace(run_dir=str(logdir), split=split, steps=None, tasks=tasks_n,
                                seed=123)
        cmd_evaluate(ns)
    print(f"\nrun directory: {logdir}\n"
          f"  adaptation tables + plots: {logdir / 'eval_test.json'}, {logdir / 'eval_test.png'},"
          f" {logdir / 'eval_ood.json'}, {logdir / 'eval_ood.png'}\n"
          f"  TensorBoard: tensorboard --logdir {logdir / 'tb'}\n"
          f"  diagnosis: jmeta doctor {logdir}")
    return 0


def _run_dir(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such run directory")
    if not p.is_dir():
        raise UsageError(f"{path}: not a directory")
    return p


def cmd_evaluate(args) -> int:
    import dataclasses

    import jax
    import numpy as np

    import jmeta
    from jmeta.algorithms import supervised
    from jmeta.training import logs, runner as runner_mod, spec as spec_mod
    from jmeta.training.checkpoint import CheckpointError

    run_dir = _run_dir(args.run_dir)
    try:
        run_spec, env, tasks, algo, state = runner_mod.load(run_dir)
    except (ValueError, CheckpointError) as err:
        raise UsageError(str(err)) from None
    split = getattr(tasks, args.split, None)
    if split is None:
        raise UsageError(f"--split {args.split}: {run_spec.env} has no {args.split} split")
    is_supervised = run_spec.algo in spec_mod.SUPERVISED_ALGORITHMS
    if is_supervised:
        config = run_spec.config()
        steps = args.steps if args.steps is not None else config.eval_inner_steps
        curve = supervised.evaluate(config, split, state.params, jax.random.key(args.seed),
                                    num_tasks=args.tasks, num_steps=steps)
        returns = np.asarray(curve["loss"], np.float64)
        x_name, y_name = "steps", "query loss"
    else:
        if args.steps is not None:
            if run_spec.algo != "maml-rl":
                raise UsageError(f"--steps: {run_spec.algo} adapts within a trial whose length "
                                 f"is its training config's; --steps is for gradient-based "
                                 f"algorithms")
            run_spec = dataclasses.replace(
                run_spec, algo_config={**run_spec.algo_config, "eval_steps": args.steps})
            env, tasks, algo = spec_mod.build(run_spec)
            split = getattr(tasks, args.split)
        ev = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))(
            algo, state, split, jax.random.key(args.seed), args.tasks)
        returns = np.asarray(ev.returns, np.float64)
        x_name = "steps" if run_spec.algo == "maml-rl" else "episode"
        y_name = "return"
    summary = jmeta.evaluation.finite_summary(returns)
    mean, sem, non_finite = summary["mean"], summary["sem"], summary["non_finite"]
    paper = (PAPER_MAML.get(run_spec.env) if run_spec.algo == "maml-rl" and args.split == "test"
             else None)
    if paper and run_spec.env_kwargs.get("horizon", paper[2]) != paper[2]:
        print(f"(the paper's numbers need H={paper[2]}; this run used "
              f"H={run_spec.env_kwargs['horizon']}, so they are not shown)")
        paper = None
    rows = []
    for k in range(returns.shape[1]):
        row = [k, f"{mean[k]:.3f} ± {sem[k]:.3f}", int(non_finite[k])]
        if paper:
            row.append(f"{paper[1][k]:.2f}" if k < len(paper[1]) else "")
        rows.append(row)
    header = [x_name, f"{y_name} ({args.tasks} {args.split} tasks, mean ± s.e.m.)", "non-finite"]
    if paper:
        header.append(f"paper MAML ({paper[0]})")
    _print_table(header, rows)
    out = {"run_dir": str(run_dir), "split": args.split, "num_tasks": args.tasks,
           "seed": args.seed, "x": x_name, "y": y_name, "mean": mean.tolist(),
           "sem": sem.tolist(), "non_finite": non_finite.tolist(),
           "values": returns.tolist(), "iteration": int(state.iteration),
           "spec": run_spec.to_dict(),
           "paper": {"label": paper[0], "mean": paper[1]} if paper else None}
    stem = run_dir / f"eval_{args.split}"
    stem.with_suffix(".json").write_text(json.dumps(logs.jsonable(out), indent=1,
                                                    allow_nan=False))
    _plot_eval(out, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


def _plot_eval(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = list(range(len(out["mean"])))
    ax.errorbar(xs, out["mean"], yerr=out["sem"], marker="o", label="jmeta")
    if out.get("paper"):
        p = out["paper"]["mean"][: len(xs)]
        ax.plot(range(len(p)), p, "k--", label=f"paper MAML ({out['paper']['label']})")
    ax.set_xticks(xs)
    ax.set_xlabel("adaptation steps" if out["x"] == "steps" else "trial episode")
    ax.set_ylabel(f"mean {out['y']}")
    ax.set_title(f"{out['spec']['algo']} on {out['spec']['env']} ({out['split']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_doctor(args) -> int:
    from jmeta.training import doctor

    run_dir = _run_dir(args.run_dir)
    try:
        findings = doctor.diagnose(run_dir)
    except doctor.DoctorError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    if args.json:
        print(doctor.findings_to_json(findings))
    else:
        print(doctor.format_report(findings))
    return 0


# --- entry point -------------------------------------------------------------------------------
def _parser() -> _Parser:
    p = _Parser(prog="jmeta", description="jmeta: meta-reinforcement learning in JAX.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    t = sub.add_parser("train", help="meta-train an algorithm on a task distribution")
    t.add_argument("algo", nargs="?", default=None, help="algorithm (`jmeta algos` lists them)")
    t.add_argument("--env", default=None, help="environment (`jmeta envs` lists them)")
    t.add_argument("--logdir", required=True, help="run directory (resumed if it has checkpoints)")
    t.add_argument("--iterations", type=int_at_least(1), default=None,
                   help="meta-iterations to reach (counting those already in LOGDIR)")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="set an algorithm config field (repeatable; task.FIELD=VALUE for the env)")
    t.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML config file")
    t.add_argument("--chunk", type=int_at_least(1), default=None,
                   help="iterations per jitted chunk (default 10)")
    t.add_argument("--seed", type=int_at_least(0), default=None)
    t.add_argument("--devices", type=int_at_least(1), default=None, metavar="N",
                   help="shard each task batch over N devices (maml-rl, rl2; num_tasks divisible "
                        "by N; on CPU, N host devices sharing the cores; see jmeta.sharding)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--task-groups", default=None, metavar="NAME=LO:HI;...",
                   help="continual meta-training: task groups in sequence, ';' between groups, "
                        "',' between a group's ranges, e.g. 'goal_radius=0.4:0.5;goal_radius="
                        "0:0.1' (maml-rl, rl2); --iterations is then per stage")
    t.add_argument("--replay-ratio", type=_fraction, default=None, metavar="R",
                   help="fraction of each iteration's tasks replayed from earlier stages "
                        "(default 0.3; 0: no replay)")
    t.add_argument("--replay-capacity", type=int_at_least(1), default=None, metavar="N",
                   help="replay buffer slots (default 100)")
    t.add_argument("--replay-buffer", choices=("reservoir", "ring"), default=None,
                   help="buffer kind (default reservoir: a uniform sample of all tasks seen)")

    e = sub.add_parser("evaluate", help="meta-test a run: return after 0..K adaptation steps")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=("test", "ood", "train"), default="test")
    e.add_argument("--steps", type=int_at_least(1), default=None,
                   help="adaptation steps K (gradient-based algorithms; default: the config's)")
    e.add_argument("--tasks", type=int_at_least(1), default=40)
    e.add_argument("--seed", type=int_at_least(0), default=123)

    d = sub.add_parser("doctor", help="diagnose a run from its logged curves")
    d.add_argument("run_dir")
    d.add_argument("--json", action="store_true", help="findings as JSON")

    v = sub.add_parser("envs", help="list environments, or one env's task parameters")
    v.add_argument("name", nargs="?", default=None)
    a = sub.add_parser("algos", help="list algorithms, or one algorithm's config fields")
    a.add_argument("name", nargs="?", default=None)

    b = sub.add_parser("bench", help="run a benchmarks/ script (extra arguments are passed on)")
    b.add_argument("name")
    b.add_argument("--quick", action="store_true")

    m = sub.add_parser("demo", help="meta-train MAML on 2D navigation, meta-test, plot (minutes)")
    m.add_argument("--logdir", default="runs/demo")
    m.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    m.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("trainer", help="meta-train from samplers' batches over NATS JetStream")
    r.add_argument("algo", nargs="?", default=None, help="maml-rl or rl2")
    r.add_argument("--env", default=None)
    r.add_argument("--run-dir", required=True, help="run directory (checkpoints; resumed)")
    r.add_argument("--iterations", type=int_at_least(1), default=None)
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="as for train")
    r.add_argument("--config", default=None, metavar="FILE.yaml", help="as for train")
    r.add_argument("--seed", type=int_at_least(0), default=None)
    r.add_argument("--tasks-per-batch", type=int_at_least(1), default=None,
                   help="tasks per sampler batch (divides num_tasks; default <= 5)")
    r.add_argument("--max-lag", type=int_at_least(0), default=0,
                   help="use batches sampled up to this many parameter versions ago")
    r.add_argument("--ack-wait", type=_positive_float, default=30.0, metavar="S")
    r.add_argument("--checkpoint-every", type=int_at_least(1), default=1)
    r.add_argument("--drain", action="store_true",
                   help="after the last iteration, consume what is left in the stream")
    r.add_argument("--no-tensorboard", action="store_true")
    _add_nats_args(r)
    s = sub.add_parser("sampler", help="sample and adapt on task batches for a trainer")
    s.add_argument("--sampler-id", default=None, help="default $JMETA_SAMPLER_ID, else HOST-PID")
    s.add_argument("--max-batches", type=int_at_least(1), default=None)
    s.add_argument("--seed", type=int_at_least(0), default=None)
    s.add_argument("--log", default=None, metavar="FILE.jsonl",
                   help="append a line per stored batch")
    s.add_argument("--wait", type=_positive_float, default=60.0, metavar="S",
                   help="wait this long for the trainer's run and parameters")
    _add_nats_args(s)
    sub.add_parser("version", help="print the versions")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (2 for a usage error, printed as one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        if not argv:
            parser.print_help()
            return EXIT_USAGE
        argv, task_args = _pop_task_args(argv)
        args, extra = parser.parse_known_args(argv)
        if task_args and args.command not in ("train", "trainer"):
            raise UsageError(f"unrecognized argument {task_args[0]!r} (--task.FIELD is for "
                             f"train and trainer)")
        extra = task_args + extra
        if args.command in ("bench",):
            return cmd_bench(args, extra)
        if args.command == "train":
            return cmd_train(args, extra)
        if args.command == "trainer":
            return cmd_trainer(args, extra)
        if extra:
            raise UsageError(f"unrecognized argument {extra[0]!r}")
        return {"evaluate": cmd_evaluate, "doctor": cmd_doctor, "envs": cmd_envs,
                "algos": cmd_algos, "version": cmd_version, "demo": cmd_demo,
                "sampler": cmd_sampler}[args.command](args)
    except (UsageError, ConfigError) as err:
        print(f"jmeta: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jmeta: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point (``jmeta``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())


if __name__ == "__main__":
    entry()
