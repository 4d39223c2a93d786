"""RL² on 2D navigation beside MAML: return per episode of a 4-episode trial vs. after 0..3 steps.

The task distribution and the test tasks are those of ``benchmarks/maml_rl_nav.py``: point-nav
(H=100, goal U[−0.5, 0.5]², reward −L2 distance), actions rescaled from ``[-1, 1]²`` onto the
``[-0.1, 0.1]²`` box (:class:`jmeta.envs.RescaleAction`, the MAML authors' protocol), and the 40
test tasks ``jmeta.evaluate`` draws from ``tasks.test`` with ``jax.random.key(123)``.

RL² (``jmeta.algorithms.rl2``): a GRU actor-critic (Gaussian head) trained with PPO over trials
of 4 episodes of one task; at meta-test it plays one trial per test task and the return of each
of its 4 episodes is reported. MAML's row (return after 0, 1, 2, 3 policy-gradient steps) is read
from ``--maml-json`` (the output of ``maml_rl_nav.py``, evaluated on the same 40 test tasks with
the same key); it is printed as missing, never invented, when that file is absent.

The experience behind each column differs, and the table says so: RL²'s episode k comes after
k − 1 episodes (100 steps each) of the task; MAML's step k after k gradient steps of 40
trajectories each (4,000 steps per step).

Training runs in jitted chunks with a checkpoint after each (``benchmarks/out/rl2_nav/``), so a
killed run continues with ``--resume``.

    python benchmarks/rl2_nav.py [--quick] [--out PATH.json] [--iterations N] [--resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import rl2  # noqa: E402
from jmeta.envs import RescaleAction  # noqa: E402

TRIAL_EPISODES = 4
EVAL_KEY = 123  # maml_rl_nav.py's evaluation key: the same 40 test tasks


def rl2_config(quick: bool, hidden: int) -> rl2.Config:
    if quick:
        return rl2.Config(num_tasks=4, trial_episodes=TRIAL_EPISODES, hidden_size=16,
                          num_minibatches=2, num_epochs=2, learning_rate=3e-3, ent_coef=0.0,
                          reward_scale=0.025)
    # Trials are 400 steps: rewards scaled by 10/400 keep the value targets near unit scale (as
    # rl2_bandits / rl2_mdp do); no entropy bonus on the Gaussian head (continuous-control PPO).
    return rl2.Config(num_tasks=32, trial_episodes=TRIAL_EPISODES, cell="gru", hidden_size=hidden,
                      num_minibatches=4, num_epochs=4, learning_rate=1e-3, gamma=0.99,
                      gae_lambda=0.95, ent_coef=0.0, max_grad_norm=0.5, reward_scale=0.025)


def record(metrics, i) -> dict:
    return {"trial_return": float(metrics["trial_return"][i]),
            "episode_returns": np.asarray(metrics["episode_returns"][i]).tolist()}


def maml_rows(path: Path) -> dict:
    """MAML-RL methods' mean return after 0..3 steps from maml_rl_nav.py's JSON ({} if absent)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    rows = {}
    for method in ("trpo", "fomaml", "promp"):
        r = data.get("results", {}).get(method)
        if r:
            rows[method] = {"mean": r["mean"], "sem": r["sem"], "iterations": r["iterations"],
                            "quick": data.get("config", {}).get("quick")}
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/rl2_nav.json")
    ap.add_argument("--iterations", type=int, default=None, help="default 500")
    ap.add_argument("--hidden", type=int, default=128, help="GRU width (default 128)")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None,
                    help="default 40 (as maml_rl_nav)")
    ap.add_argument("--chunk", type=_common.positive_int, default=25)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ckpt-dir", default="benchmarks/out/rl2_nav")
    ap.add_argument("--maml-json", default="benchmarks/results/maml_rl_nav.json")
    args = ap.parse_args(argv)

    iterations = args.iterations or (2 if args.quick else 500)
    test_tasks = args.test_tasks or (4 if args.quick else 40)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    ckpt_dir = Path(args.ckpt_dir) / ("quick" if args.quick else "full")

    env, tasks = jmeta.make("point-nav")
    config = rl2_config(args.quick, args.hidden)
    algo = rl2.make(config, RescaleAction(env), tasks)
    state, history = _common.train_with_checkpoints(
        algo, iterations, 1 if args.quick else args.chunk, ckpt_dir, "gru", args.resume, log,
        record)
    ev = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))(
        algo, state, tasks.test, jax.random.key(EVAL_KEY), test_tasks)
    returns = np.asarray(ev.returns)  # [tasks, episodes]
    rl2_row = {"mean": returns.mean(axis=0).tolist(),
               "sem": (returns.std(axis=0) / np.sqrt(len(returns))).tolist(),
               "iterations": int(state.iteration)}
    maml = maml_rows(Path(args.maml_json))

    headline = {f"rl2_return_episode{i + 1}": rl2_row["mean"][i] for i in range(TRIAL_EPISODES)}
    for method, r in maml.items():
        for i, x in enumerate(r["mean"]):
            headline[f"maml_{method}_return_step{i}"] = x
    run_config = {
        "env": "point-nav + RescaleAction", "trial_episodes": TRIAL_EPISODES,
        "test_tasks": test_tasks, "eval_key": EVAL_KEY, "iterations": iterations,
        "rl2": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
        "maml_source": str(args.maml_json) if maml else None, "quick": args.quick,
        "experience": "RL² episode k: after k-1 episodes of 100 steps; MAML step k: after k "
                      "gradient steps on 40 trajectories (4,000 steps) each",
    }
    _common.write_json(args.out, headline, run_config, rl2=rl2_row, maml=maml,
                       learning_curve=history)
    plot(rl2_row, maml, history, Path(args.out).with_suffix(".png"))

    print(f"\npoint-nav, {test_tasks} test tasks (key {EVAL_KEY})")
    print(f"{'method':14s} {'iters':>5s} " + " ".join(f"{'k=' + str(i):>9s}" for i in range(4)))
    print(f"{'RL² episode k+1':14s} {rl2_row['iterations']:5d} "
          + " ".join(f"{x:9.2f}" for x in rl2_row["mean"]))
    for method, r in maml.items():
        print(f"{'MAML ' + method + ' step k':14s} {r['iterations']:5d} "
              + " ".join(f"{x:9.2f}" for x in r["mean"]))
    if not maml:
        print(f"MAML: no results at {args.maml_json} (run benchmarks/maml_rl_nav.py first)")
    return headline


def plot(rl2_row, maml, history, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    k = np.arange(TRIAL_EPISODES)
    ax1.errorbar(k, rl2_row["mean"], yerr=rl2_row["sem"], marker="o",
                 label="RL² (episode k+1 of the trial)")
    for method, r in maml.items():
        ax1.errorbar(np.arange(len(r["mean"])), r["mean"], yerr=r["sem"], marker="s",
                     linestyle="--", label=f"MAML-{method} (after k steps)")
    ax1.set_xticks(k)
    ax1.set_xlabel("k: episodes seen (RL²) / gradient steps (MAML, 40 trajectories each)")
    ax1.set_ylabel("mean return (test tasks)")
    ax1.set_title("point-nav: adaptation")
    ax1.legend(fontsize=7)
    if history:
        ax2.plot([h["iteration"] for h in history],
                 [h["trial_return"] / TRIAL_EPISODES for h in history])
    ax2.set_xlabel("meta-iteration")
    ax2.set_ylabel("mean episode return in a trial (train tasks)")
    ax2.set_title("RL² meta-training")
    _common.save_figure(fig, path)


if __name__ == "__main__":
    main()
