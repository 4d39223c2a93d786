"""RL² memories on a long-memory probe: LSTM vs GRU vs Transformer on ``memory-cue``.

The probe (``jmeta.envs.memory_cue``): a hidden cue c ∈ {0..k−1} is shown once, at the trial's
first step; the trial has n rounds of L steps with look-alike distractor tokens in between, and the
last step of every round asks for c. Correct answers are paid only at the trial's end, so nothing
re-reveals c mid-trial: the answer of round j needs a fact ``j·L − 1`` steps old. RL² (PPO over
whole trials, ``trial_episodes=1``: one env episode is the probe trial) is trained with each memory
(``--cells``) at each trial length (``--rounds``) with comparable parameter counts, then every agent
plays one trial on the same test tasks (``tasks.test``, and ``tasks.ood``: a distractor at every
step). Reported: answer accuracy per round index (chance = 1/k), the mean over the late rounds
(the second half, rounds j > n/2), parameter counts and training wall time per meta-iteration
(steady state) and in all (compilation included).

Same iterations, unequal compute: the Transformer's step costs several times an RNN step on CPU, so
at the longest trial one memory (``--long-cell``, default LSTM) is also trained for
``--long-iterations`` (default 5000, about the Transformer's wall time): does the RNN catch up
with more compute? (headline ``lstm_long_*``).

Training runs in jitted chunks with a checkpoint after each (``benchmarks/out/rl2_memory/``), so a
killed run continues with ``--resume``.

    python benchmarks/rl2_memory.py [--quick] [--out PATH.json] [--rounds 2,8,16]
        [--cells lstm,gru,transformer] [--iterations N | n:N,...] [--long-iterations N] [--resume]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import rl2  # noqa: E402
from jmeta.envs.memory_cue import round_accuracy  # noqa: E402

# Widths with comparable parameter counts at k=4, L=5 (printed and stored in the JSON).
HIDDEN = {"lstm": 64, "gru": 74, "transformer": 28}
QUICK_HIDDEN = {"lstm": 16, "gru": 16, "transformer": 16}


def rl2_config(n: int, cell: str, quick: bool) -> rl2.Config:
    if quick:
        return rl2.Config(num_tasks=8, trial_episodes=1, cell=cell, hidden_size=QUICK_HIDDEN[cell],
                          num_heads=2, num_layers=1, num_minibatches=2, num_epochs=2,
                          learning_rate=3e-3)
    return rl2.Config(num_tasks=32, trial_episodes=1, cell=cell, hidden_size=HIDDEN[cell],
                      num_heads=4, num_layers=2, num_minibatches=2, num_epochs=4,
                      learning_rate=1e-3, gamma=0.99, gae_lambda=0.95, ent_coef=0.01,
                      max_grad_norm=0.5)


def record(metrics, i) -> dict:
    return {"trial_return": float(metrics["trial_return"][i]),
            "entropy": float(metrics["entropy"][i])}


def param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def evaluator(algo, n: int):
    """``run(state, tasks [B], key) -> [B, n]`` answer correctness per round, jitted once per
    agent (the test and ood splits reuse the compilation)."""

    @jax.jit
    def run(state, batch, key):
        num = jax.tree.leaves(batch)[0].shape[0]
        res = jax.vmap(algo.adapt, in_axes=(None, 0, 0))(state, batch, jax.random.split(key, num))
        return jax.vmap(lambda info: round_accuracy(info, n))(res.trajectory.info)

    return lambda state, batch, key: np.asarray(run(state, batch, key))


def summary(acc: np.ndarray) -> dict:
    n = acc.shape[1]
    late = acc[:, n // 2:].mean(axis=1)
    return {"per_round": acc.mean(axis=0).tolist(),
            "per_round_sem": (acc.std(axis=0) / np.sqrt(len(acc))).tolist(),
            "first": float(acc[:, 0].mean()),
            "late": float(late.mean()), "late_sem": float(late.std() / np.sqrt(len(late)))}


def plot(tables, curves, rounds, chance, round_length: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, len(rounds), figsize=(max(5.5, 4.2 * len(rounds)), 6.5),
                             squeeze=False)
    for col, n in enumerate(rounds):
        ax = axes[0, col]
        for agent, row in tables[f"n{n}"].items():
            t = row["test"]
            ax.errorbar(np.arange(1, n + 1), t["per_round"], yerr=t["per_round_sem"], marker="o",
                        ms=3, capsize=2, label=f"{agent} ({row['iterations']} it)")
        ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
        ax.set_ylim(0, 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round (episode) index j in the trial")
        ax.set_ylabel("answer accuracy (test tasks)")
        ax.set_title(f"n={n} rounds of L={round_length}: answer j is j·L−1 steps after the cue",
                     fontsize=8)
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for agent in tables[f"n{n}"]:
            h = curves.get(f"{agent}_n{n}", [])
            if h:
                ax.plot([x["iteration"] for x in h], [x["trial_return"] / n for x in h],
                        label=agent, lw=1)
        ax.axhline(chance, color="gray", ls="--", lw=1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("train accuracy (return / n)")
    fig.suptitle("RL² memories on memory-cue\n(cue shown once, answers paid at the trial's end)",
                 fontsize=9)
    _common.save_figure(fig, path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/rl2_memory.json")
    ap.add_argument("--rounds", default=None, help="trial lengths n in rounds (default 2,8,16)")
    ap.add_argument("--cells", default=None, help="memories (default lstm,gru,transformer)")
    ap.add_argument("--iterations", default=None,
                    help="meta-iterations: one number or n:iters pairs "
                         "(default 2:300,8:600,16:800)")
    ap.add_argument("--long-cell", default="lstm",
                    help="memory given --long-iterations at the longest trial (compute check)")
    ap.add_argument("--long-iterations", type=int, default=None,
                    help="meta-iterations of that extra run (default 5000; quick: 0 = none)")
    ap.add_argument("--num-cues", type=int, default=4)
    ap.add_argument("--round-length", type=int, default=5)
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None, help="default 1000")
    ap.add_argument("--chunk", type=_common.positive_int, default=50)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ckpt-dir", default="benchmarks/out/rl2_memory")
    args = ap.parse_args(argv)

    rounds = [int(x) for x in (args.rounds or ("2" if args.quick else "2,8,16")).split(",")]
    cells = (args.cells or "lstm,gru,transformer").split(",")
    for cell in cells:
        if cell not in rl2.MEMORIES:
            ap.error(f"--cells: {cell!r} is not one of {rl2.MEMORIES}")
    spec = args.iterations or ("2" if args.quick else "2:300,8:600,16:800")
    if ":" in spec:
        iters_by_n = {int(a): int(b) for a, b in (p.split(":") for p in spec.split(","))}
    else:
        iters_by_n = {n: int(spec) for n in rounds}
    missing = [n for n in rounds if n not in iters_by_n]
    if missing:
        ap.error(f"--iterations gives no count for n={missing}")
    test_tasks = args.test_tasks or (32 if args.quick else 1000)
    long_iters = args.long_iterations if args.long_iterations is not None else (
        0 if args.quick else 5000)
    if long_iters and args.long_cell not in rl2.MEMORIES:
        ap.error(f"--long-cell: {args.long_cell!r} is not one of {rl2.MEMORIES}")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    ckpt_dir = Path(args.ckpt_dir) / ("quick" if args.quick else "full")
    chance = 1.0 / args.num_cues

    tables, curves, params, timing = {}, {}, {}, {}
    for n in rounds:
        env, tasks = jmeta.make("memory-cue", num_cues=args.num_cues,
                                round_length=args.round_length, num_rounds=n)
        tables[f"n{n}"] = {}
        sample = jax.jit(lambda t, key: t.sample_batch(key, test_tasks), static_argnums=0)
        # the same tasks (and trial keys) for every agent
        eval_tasks = {split: sample(getattr(tasks, split), jax.random.key(2024))
                      for split in ("test", "ood")}
        runs = [(cell, cell, iters_by_n[n]) for cell in cells]
        if long_iters and n == max(rounds):  # the same memory with more compute
            runs.append((f"{args.long_cell}_long", args.long_cell, long_iters))
        for agent, cell, iterations in runs:
            name = f"{agent}_n{n}"
            algo = rl2.make(rl2_config(n, cell, args.quick), env, tasks)
            chunk = 1 if args.quick else args.chunk
            state, history = _common.train_with_checkpoints(
                algo, iterations, chunk, ckpt_dir, name, args.resume, log, record)
            curves[name] = history
            params[cell] = param_count(state.params)
            # Steady-state time per iteration: chunks after the first (which compiles).
            secs = [h["seconds"] for h in history]
            timing[name] = statistics.median(secs[chunk:] or secs)
            run = evaluator(algo, n)
            tables[f"n{n}"][agent] = {split: summary(run(state, batch, jax.random.key(7)))
                                      for split, batch in eval_tasks.items()}
            tables[f"n{n}"][agent].update(iterations=iterations, train_seconds=float(sum(secs)))
            t = tables[f"n{n}"][agent]["test"]
            log(f"{name}: first-round accuracy {t['first']:.3f}  late accuracy {t['late']:.3f}  "
                f"({params[cell]} params, {timing[name]:.3f} s/iter, {sum(secs):.0f} s)")

    # Sample efficiency: the first iteration at which the trailing 10-iteration mean training
    # return reaches 95 % of the maximum (n correct answers); absent if never reached.
    speed = {}
    for name, history in curves.items():
        n = int(name.rsplit("_n", 1)[1])
        returns = np.array([h["trial_return"] for h in history])
        smooth = np.convolve(returns, np.ones(10) / 10, mode="valid")
        hit = np.flatnonzero(smooth >= 0.95 * n)
        if hit.size:
            iters = int(history[hit[0] + 9]["iteration"])
            speed[name] = {"iterations": iters, "seconds": iters * timing[name]}
    headline = {"chance_accuracy": chance}
    for name, v in speed.items():
        agent, n = name.rsplit("_n", 1)
        headline[f"{agent}_iters_to_95_n{n}"] = v["iterations"]
        headline[f"{agent}_seconds_to_95_n{n}"] = v["seconds"]
    for n in rounds:
        for agent, t in tables[f"n{n}"].items():
            headline[f"{agent}_late_accuracy_n{n}"] = t["test"]["late"]
            headline[f"{agent}_first_accuracy_n{n}"] = t["test"]["first"]
            headline[f"{agent}_ood_late_accuracy_n{n}"] = t["ood"]["late"]
            headline[f"{agent}_sec_per_iter_n{n}"] = timing[f"{agent}_n{n}"]
            headline[f"{agent}_train_s_n{n}"] = t["train_seconds"]
    for cell, count in params.items():
        headline[f"{cell}_params"] = count
    config = {
        "rounds": rounds, "cells": cells, "iterations": iters_by_n, "test_tasks": test_tasks,
        "long_run": {"cell": args.long_cell, "iterations": long_iters, "rounds": max(rounds)}
        if long_iters else None,
        "env": {"name": "memory-cue", "num_cues": args.num_cues,
                "round_length": args.round_length, "feedback": "end",
                "distractor_rate": "U(0.5, 1.0) train/test, 1.0 ood"},
        "late_rounds": "rounds j > n/2 (1-based), i.e. the second half of the trial",
        "rl2": {f"{c}_n{n}": {f: getattr(rl2_config(n, c, args.quick), f)
                              for f in rl2.Config.__dataclass_fields__}
                for n in rounds for c in cells},
        "quick": args.quick,
    }
    _common.write_json(args.out, headline, config, tables=tables, params=params,
                       sec_per_iter=timing, to_95_percent=speed, learning_curves=curves)
    plot(tables, curves, rounds, chance, args.round_length, Path(args.out).with_suffix(".png"))

    print(f"\nanswer accuracy on {test_tasks} test tasks (chance {chance:.2f}); "
          "first = round 1, late = mean over rounds j > n/2, ood = late with distractors "
          "at every step")
    agents = list(dict.fromkeys(a for n in rounds for a in tables[f"n{n}"]))
    print(f"{'memory':18s} {'params':>7s} " + " ".join(
        f"{'n=' + str(n) + ' first':>11s} {'late':>6s} {'ood':>6s} {'s/it':>6s}" for n in rounds))
    for agent in agents:
        cell = agent.removesuffix("_long")
        row = f"{agent:18s} {params[cell]:7d} "
        for n in rounds:
            t = tables[f"n{n}"].get(agent)
            row += (f"{t['test']['first']:11.3f} {t['test']['late']:6.3f} "
                    f"{t['ood']['late']:6.3f} {timing[f'{agent}_n{n}']:6.3f} " if t else
                    f"{'—':>11s} {'—':>6s} {'—':>6s} {'—':>6s} ")
        print(row)
    print("\niterations (and seconds at the median s/iter) until the trailing 10-iteration mean "
          "training return reaches 95 % of n:")
    for name in curves:
        v = speed.get(name)
        print(f"  {name:20s} " + (f"{v['iterations']:6d} it  {v['seconds']:7.1f} s" if v
                                   else "not reached"))
    return headline


if __name__ == "__main__":
    main()
