"""Paired comparison of RL² checkpoints of one benchmark setting on the same test tasks.

Each checkpoint (a ``.msgpack`` that ``rl2_bandits.py`` or ``rl2_mdp.py`` wrote under its
``--ckpt-dir``) has its network restored into that script's configuration for the setting (only
the network must match, not the optimiser state: so states of the bandit n = 100 run can play
n = 500, as ``rl2_bandits.CURRICULUM`` has them do) and plays one trial on the same test tasks
with the same key (``jmeta.evaluate``, as the scripts evaluate). Reported:
each checkpoint's mean total reward per trial and SEM, and the *paired* difference (the mean and
SEM of the per-task differences of totals) between consecutive checkpoints and first to last. Two
states of one run play the same tasks, so their difference is measured several times more
precisely than the two SEMs suggest: what tells "training on helped" from noise.

    python benchmarks/rl2_checkpoints.py bandit --n 100 --k 10 A.msgpack B.msgpack [...]
    python benchmarks/rl2_checkpoints.py mdp --n 10 A.msgpack B.msgpack [...]
        [--cell C] [--test-tasks 5000] [--key 2024] [--out PATH.json]

``--quick`` without checkpoints trains a tiny bandit agent for 10 and 20 iterations into a
temporary directory and compares those two states (the smoke test of the benchmark suite).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import rl2_bandits  # noqa: E402
import rl2_mdp  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import rl2  # noqa: E402


def make_algo(env_name: str, n: int, k: int, cell: str | None, quick: bool):
    """``(algorithm, tasks, config)`` of ``rl2_bandits.py`` (``bandit``, ``n`` pulls, ``k`` arms) or
    ``rl2_mdp.py`` (``mdp``, ``n`` episodes) for that setting, as the script builds it."""
    if env_name == "bandit":
        env, tasks = jmeta.make("bandit", num_arms=k)
        hidden = 64 if cell == "transformer" and not quick else 256
        config = rl2_bandits.rl2_config(n, quick, cell, hidden)
    else:
        env, tasks = jmeta.make("tabular-mdp")
        config = rl2_mdp.rl2_config(n, cell, quick)
    return rl2.make(config, env, tasks), tasks, config


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and SEM of the per-task differences ``b - a``."""
    return _common.mean_sem(b - a)


def quick_checkpoints(directory: Path) -> list[Path]:
    """Two checkpoints of a tiny bandit run (``rl2_bandits.py --quick``'s setting n = 10, k = 5):
    at 10 and at 20 iterations."""
    algo, _, _ = make_algo("bandit", 10, 5, None, quick=True)
    paths = []
    for iterations in (10, 20):
        _common.train_with_checkpoints(algo, iterations, 10, directory, "n10_k5", True,
                                       lambda msg: None, rl2_bandits.record)
        paths.append(directory / f"n10_k5_{iterations}.msgpack")
        shutil.copy(directory / "n10_k5.msgpack", paths[-1])
    return paths


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("env", nargs="?", choices=("bandit", "mdp"), default=None,
                    help="the benchmark the checkpoints come from (rl2_bandits.py, rl2_mdp.py)")
    ap.add_argument("checkpoints", nargs="*", help="two or more .msgpack files, in order")
    ap.add_argument("--n", type=_common.positive_int, default=None,
                    help="pulls (bandit) or episodes (mdp) per trial")
    ap.add_argument("--k", type=_common.positive_int, default=10, help="bandit arms (default 10)")
    ap.add_argument("--cell", default=None, choices=rl2.MEMORIES,
                    help="the memory the run trained (default: the script's for this n)")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None,
                    help="default 5000 (--quick: 100)")
    ap.add_argument("--key", type=int, default=2024,
                    help="evaluation key (the scripts' own: 2024; another draws fresh tasks)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/rl2_checkpoints.json")
    args = ap.parse_intermixed_args(argv)
    test_tasks = args.test_tasks or (100 if args.quick else 5000)

    tmp = None
    if args.quick and not args.checkpoints:
        tmp = tempfile.TemporaryDirectory()
        env_name, n, k = "bandit", 10, 5
        checkpoints = quick_checkpoints(Path(tmp.name))
    else:
        if args.env is None or args.n is None:
            ap.error("give the benchmark (bandit or mdp), --n and the checkpoints")
        if len(args.checkpoints) < 2:
            ap.error(f"expected two or more checkpoints to compare, got {len(args.checkpoints)}")
        env_name, n, k = args.env, args.n, args.k
        checkpoints = [Path(c) for c in args.checkpoints]
        for c in checkpoints:
            if not c.is_file():
                ap.error(f"no checkpoint file {c}")

    algo, tasks, config = make_algo(env_name, n, k, args.cell, args.quick)
    evaluate = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))
    totals, rows = [], []
    for path in checkpoints:
        try:
            params, iteration = _common.load_params(algo, path)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}: does not restore into the {env_name} n={n} "
                             f"configuration (cell {config.cell}; --cell?): {e}") from None
        state = algo.init(jax.random.key(0)).replace(params=params)
        ev = evaluate(algo, state, tasks.test, jax.random.key(args.key), test_tasks)
        total = np.asarray(jnp.sum(ev.returns, axis=-1))
        totals.append(total)
        rows.append({"checkpoint": str(path), "iteration": iteration, **_common.mean_sem(total)})
    steps = [{"from": rows[i]["iteration"], "to": rows[i + 1]["iteration"],
              **paired(totals[i], totals[i + 1])} for i in range(len(rows) - 1)]
    first_last = paired(totals[0], totals[-1])
    if tmp is not None:
        tmp.cleanup()

    headline = {}
    for i, r in enumerate(rows):  # two branches of a run can stand at the same iteration
        name = f"iteration_{r['iteration']}_total_reward"
        headline[name if name not in headline else f"{name}_{i}"] = r["mean"]
    headline["first_to_last_paired_gain"] = first_last["mean"]
    headline["first_to_last_paired_sem"] = first_last["sem"]
    _common.write_json(args.out, headline, {
        "env": env_name, "n": n, "k": k if env_name == "bandit" else None,
        "cell": config.cell, "test_tasks": test_tasks, "key": args.key,
        "quick": args.quick}, checkpoints=rows, paired_steps=steps,
        first_to_last=first_last)

    print(f"{'iteration':>10s} {'total reward':>14s} {'paired gain over the previous':>32s}")
    for i, r in enumerate(rows):
        gain = "" if i == 0 else f"{steps[i - 1]['mean']:+.3f} ± {steps[i - 1]['sem']:.3f}"
        print(f"{r['iteration']:10d} {r['mean']:8.3f} ± {r['sem']:.3f} {gain:>32s}")
    print(f"first to last: {first_last['mean']:+.3f} ± {first_last['sem']:.3f} "
          f"({test_tasks} test tasks, key {args.key})")
    return headline


if __name__ == "__main__":
    main()
