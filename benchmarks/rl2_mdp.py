"""RL² on random tabular MDPs (Duan et al. 2016, Table 2), beside random play and PSRL.

Tasks: 10 states, 5 actions, episodes of H=10 steps; rewards N(μ, 1) with μ ~ N(1, 1) per
(state, action); transitions from a flat Dirichlet per (state, action). For each trial length n
(episodes per trial) and each memory (``--cells``: by default the layer-normalised GRU-256 with its
own critic core, ``default_cells``; or the GRU-256, the LSTM-256 or the Transformer agent),
RL² is trained for ``--iterations`` meta-iterations, then every agent plays one trial on the same
1000 test tasks: RL², random actions, posterior sampling (PSRL), certainty-equivalent greedy and
ε-greedy (``jmeta.baselines.mdp``; ε tuned on training tasks, as Duan et al. tuned theirs).
Reported: the mean total reward per trial (sum over its n episodes) and its SEM, and each
agent's mean return per episode of the trial (``per_episode`` in the JSON's tables).

    python benchmarks/rl2_mdp.py [--quick] [--out PATH.json] [--episodes 10,25] [--cells lngru,gru]
        [--num-tasks N] [--gamma G] [--gae-lambda L] [--learning-rate LR] [--ent-coef C]
        [--num-tasks-schedule IT:N,...]  # the PPO overrides are for probes; the schedule switches
                                         # to N trials per iteration from iteration IT on
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from rl2_bandits import default_reward_scale, plot, record  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import rl2  # noqa: E402
from jmeta.baselines import mdp  # noqa: E402

PAPER = {  # Duan et al. 2016, Table 2 (shared/reference/published.md)
    10: {"random": 100.1, "psrl": 138.1, "greedy": 134.8, "epsilon_greedy": 132.8, "rl2": 156.2},
    25: {"random": 250.2, "psrl": 408.8, "greedy": 368.8, "epsilon_greedy": 377.3, "rl2": 445.7},
    50: {"random": 499.7, "psrl": 904.4, "greedy": 769.3, "epsilon_greedy": 823.3, "rl2": 936.1},
    75: {"random": 749.9, "psrl": 1417.1, "greedy": 1172.9, "epsilon_greedy": 1293.9,
         "rl2": 1428.8},
    100: {"random": 999.4, "psrl": 1939.5, "greedy": 1578.5, "epsilon_greedy": 1778.2,
          "rl2": 1913.7},
}
TARGETS = {10: 155.0, 25: 440.0}
EPSILONS = (0.01, 0.03, 0.1, 0.2)  # the epsilon_greedy grid


def tune_epsilon(tasks, n: int, quick: bool) -> float:
    """The ε of ``epsilon_greedy`` with the best mean total reward on training tasks."""
    params = tasks.train.sample_batch(jax.random.key(99), 50 if quick else 500)
    scores = jax.jit(jax.vmap(lambda e: jnp.mean(mdp.evaluate(
        "epsilon_greedy", params, jax.random.key(98), n, epsilon=e))))(jnp.asarray(EPSILONS))
    return EPSILONS[int(np.argmax(np.asarray(scores)))]


HORIZON = 10  # steps per episode of jmeta.make("tabular-mdp")


# The memory and PPO details at n = 10 since session 16 and at n = 25 since session 19
# (benchmarks/RESULTS.md): the layer-normalised GRU of Lingle's PyTorch RL² with its own critic
# core and PPO clipping 0.1 (the bandit script's n = 100 setting; the schedules of that one are
# untested here).
CELL_SETTING = dict(cell="lngru", separate_critic=True, clip_eps=0.1)


def default_cells(n: int, quick: bool) -> list[str]:
    """The memories trained at trial length ``n`` without ``--cells``."""
    return ["gru" if quick else CELL_SETTING["cell"]]


def rl2_config(n: int, cell: str | None, quick: bool, reward_scale: float | None = None,
               **overrides) -> rl2.Config:
    """The configuration for trials of ``n`` episodes; ``cell`` (``None``: the length's own)
    replaces only the memory (the separate critic core, for recurrent memories, and the
    clipping of ``CELL_SETTING`` stay); ``overrides`` (probes) replace any field."""
    # With the rewards unscaled (value targets ~60), 300 iterations at n=10 stayed at random
    # play (~100); scaled by 0.1 they reached ~112 by iteration 125 (2026-11-25 probe).
    scale = default_reward_scale(n * HORIZON) if reward_scale is None else reward_scale
    if quick:
        return rl2.Config(**{**dict(
            num_tasks=8, trial_episodes=n, cell=cell or "gru", hidden_size=16, num_heads=2,
            num_layers=1, num_minibatches=2, num_epochs=2, learning_rate=3e-3,
            reward_scale=scale),
            **overrides})
    # The best measured setting (benchmarks/RESULTS.md): Adam 3e-4 with entropy 0.03 kept the
    # policy exploring where Adam 1e-3 / 0.01 plateaued at 110-120 (n=10) and stayed at random
    # play (n=25); 256 trials at n=10 (124.2 after 2,400 iterations), 64 at n=25 (297.6 after
    # 1,500). Since session 16 n <= 10 trains CELL_SETTING (the GRU setting otherwise; 124.2 at
    # 2,400 iterations for the GRU; CELL_SETTING 137.0 at 2,400, and since session 17 4,000
    # iterations: 146.6, 147.1 on 5,000 tasks; Adam 6e-4 or entropy 0.01 late: no faster; since
    # session 20 440 more with 1,024 trials, TRIALS_SCHEDULE: 150.7; since session 21 120 more at
    # Adam 1e-4, LEARNING_RATE_SCHEDULE), and
    # since session 19 n = 25 too (the GRU: 297.6 after 1,500 iterations; CELL_SETTING: 338.6
    # after 1,500 and 346.3 after 2,000 on the same test tasks; session 20: 390.3 after 4,250
    # iterations; γ = 1 from 2,750: no gain in 250 iterations; since session 21 3,000 iterations,
    # then 800 with 256 trials, TRIALS_SCHEDULE).
    setting = _common.with_memory(CELL_SETTING, cell)
    return rl2.Config(**{**dict(
        num_tasks=256 if n <= 10 else 64, trial_episodes=n,
        hidden_size=256 if setting["cell"] != "transformer" else 64, num_heads=4, num_layers=2,
        num_minibatches=4, num_epochs=4, learning_rate=3e-4, gamma=0.99, gae_lambda=0.3,
        ent_coef=0.03, max_grad_norm=0.5, reward_scale=scale,
        learning_rate_schedule=LEARNING_RATE_SCHEDULE.get(n, ()), **setting), **overrides})


DEFAULT_ITERATIONS = {10: 4560, 25: 3800}  # the runs in benchmarks/RESULTS.md
FALLBACK_ITERATIONS = 1500  # any other n


# From meta-iteration IT on, N trials per iteration: ``{n: ((IT, N), ...)}``. At n = 10 the
# 4,000-iteration state (146.6) trained on with 4x the trials reached 150.7 on the same test tasks
# 440 iterations later (sessions 18-20, benchmarks/RESULTS.md); the same 440 iterations with 256
# trials gained less per trial and per hour. At n = 25 the 3,000-iteration state trained on with
# 256 trials passed the 64-trial run's 4,250-iteration state (392.0 on 5,000 paired tasks) by
# iteration 3,500 and reached 402.7 at 3,800, +10.7 +- 0.8 (sessions 20-21).
TRIALS_SCHEDULE: dict[int, tuple[tuple[int, int], ...]] = {10: ((4000, 1024),), 25: ((3000, 256),)}

# rl2.Config.learning_rate_schedule per trial length. At n = 10, Adam 1e-4 from the 4,440-iteration
# state gained +0.83 +- 0.28 on 5,000 paired tasks in 120 iterations, where the last 120 at 3e-4
# had gained +0.19 +- 0.29 (session 21, benchmarks/RESULTS.md).
LEARNING_RATE_SCHEDULE: dict[int, tuple[tuple[int, float], ...]] = {10: ((4440, 1e-4),)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/rl2_mdp.json")
    ap.add_argument("--episodes", default=None, help="trial lengths n (default 10,25)")
    ap.add_argument("--cells", default=None,
                    help="memories to train (default: lngru); each keeps the separate "
                         "critic core (recurrent memories) and the "
                         "clipping 0.1 unless --no-separate-critic / --clip-eps say otherwise")
    ap.add_argument("--iterations", type=int, default=None,
                    help="meta-iterations for every n (default "
                         + ", ".join(f"{v} at n={n}" for n, v in DEFAULT_ITERATIONS.items())
                         + f", else {FALLBACK_ITERATIONS})")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None, help="default 1000")
    ap.add_argument("--chunk", type=_common.positive_int, default=50)
    ap.add_argument("--keep-every", type=_common.positive_int, default=None, metavar="N",
                    help="also keep the state every N iterations under CKPT_DIR/.../kept/")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--reward-scale", type=float, default=None,
                    help="rl2.Config.reward_scale (default min(1, 10 / trial steps))")
    _common.add_rl2_probe_args(ap, {
        "gamma": "0.99", "gae_lambda": "0.3",
        "num_tasks": f"256 at n <= 10, else 64; {_common.describe_schedules(TRIALS_SCHEDULE)}",
        "learning_rate": "3e-4; the schedule: "
                         + _common.describe_schedules(LEARNING_RATE_SCHEDULE),
        "ent_coef": "0.03",
        "hidden_size": "256 (Transformer: 64)"})
    ap.add_argument("--ckpt-dir", default="benchmarks/out/rl2_mdp")
    args = ap.parse_args(argv)
    overrides = _common.rl2_probe_overrides(args)

    episodes = [int(x) for x in (args.episodes or ("2" if args.quick else "10,25")).split(",")]
    iterations = {n: args.iterations
                  or (4 if args.quick else DEFAULT_ITERATIONS.get(n, FALLBACK_ITERATIONS))
                  for n in episodes}
    test_tasks = args.test_tasks or (50 if args.quick else 1000)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    ckpt_dir = Path(args.ckpt_dir) / ("quick" if args.quick else "full")
    env, tasks = jmeta.make("tabular-mdp")

    batch_phases = {n: _common.num_tasks_schedule(args, n, TRIALS_SCHEDULE) for n in episodes}
    tables, curves, baseline_options = {}, {}, {}
    cells_by_n = {n: args.cells.split(",") if args.cells else default_cells(n, args.quick)
                  for n in episodes}
    for n in episodes:
        table = {}
        eval_tasks = None
        for cell in cells_by_n[n]:
            name = f"{cell}_n{n}"
            config = rl2_config(n, cell, args.quick, args.reward_scale, **overrides)
            algo = rl2.make(config, env, tasks)
            phases = _common.rl2_batch_phases(config, env, tasks, batch_phases[n])
            state, history = _common.train_with_checkpoints(
                algo, iterations[n], 2 if args.quick else args.chunk, ckpt_dir, name, args.resume,
                log, record, keep_every=args.keep_every, phases=phases)
            ev = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))(
                algo, state, tasks.test, jax.random.key(2024), test_tasks)
            eval_tasks = ev.tasks  # the same key: the same test tasks for every agent
            table[f"rl2_{cell}"] = np.asarray(ev.returns)  # [tasks, n] episode returns
            curves[name] = history
        options = {"epsilon_greedy": {"epsilon": tune_epsilon(tasks, n, args.quick)}}
        baseline_options[f"n{n}"] = options
        for strategy in mdp.STRATEGIES:
            table[strategy] = np.asarray(jax.jit(
                lambda p, k, s=strategy: mdp.evaluate_episodes(s, p, k, n,
                                                               **options.get(s, {})))(
                    eval_tasks, jax.random.key(7)))
        tables[f"n{n}"] = {a: {**_common.mean_sem(v.sum(axis=-1)),
                               "per_episode": v.mean(axis=0).tolist()}
                           for a, v in table.items()}
        log(f"n={n}: " + "  ".join(f"{a} {v['mean']:.1f}" for a, v in tables[f"n{n}"].items()))

    headline = {}
    for n in episodes:
        t = tables[f"n{n}"]
        cells = cells_by_n[n]
        for cell in cells:
            prefix = "" if cell == cells[0] else f"{cell}_"
            headline[f"{prefix}n{n}_total_reward"] = t[f"rl2_{cell}"]["mean"]
        headline[f"psrl_n{n}_total_reward"] = t["psrl"]["mean"]
        headline[f"greedy_n{n}_total_reward"] = t["greedy"]["mean"]
        headline[f"epsilon_greedy_n{n}_total_reward"] = t["epsilon_greedy"]["mean"]
        headline[f"random_n{n}_total_reward"] = t["random"]["mean"]
    config = {"episodes": episodes, "cells": {f"n{n}": c for n, c in cells_by_n.items()},
              "iterations": iterations,
              "num_tasks_schedule": {f"n{n}": batch_phases[n] for n in episodes},
              "test_tasks": test_tasks, "env": "tabular-mdp (10 states, 5 actions, H=10)",
              "rl2": {f"{c}_n{n}": dataclasses.asdict(
                  rl2_config(n, c, args.quick, args.reward_scale, **overrides))
                      for n in episodes for c in cells_by_n[n]},
              "baseline_options": baseline_options,
              "quick": args.quick}
    _common.write_json(args.out, headline, config, tables=tables, learning_curves=curves,
                       paper={f"n{n}": v for n, v in PAPER.items()})
    plot(curves, Path(args.out).with_suffix(".png"), "RL² on tabular MDPs")

    for n in episodes:
        cells = cells_by_n[n]
        agents = [f"rl2_{c}" for c in cells] + list(mdp.STRATEGIES)
        print(f"\n{'n':>9s} " + " ".join(f"{a:>14s}" for a in agents))
        t = tables[f"n{n}"]
        print(f"{n:4d} jmeta " + " ".join(f"{t[a]['mean']:14.1f}" for a in agents)
              + (f"  (target RL² >= {TARGETS[n]})" if n in TARGETS else ""))
        if n in PAPER:
            paper = {**PAPER[n], f"rl2_{cells[0]}": PAPER[n]["rl2"]}
            print(f"{n:4d} paper " + " ".join(
                f"{paper[a]:14.1f}" if a in paper else f"{'':14s}" for a in agents))
        print("  return per episode of the trial:")
        for a in agents:
            print(f"  {a:>14s} " + " ".join(f"{v:5.1f}" for v in t[a]["per_episode"]))
    return headline


if __name__ == "__main__":
    main()
