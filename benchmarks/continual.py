"""Continual meta-learning with task replay: MAML-RL or RL² on point-nav through 3 task groups.

Protocol (every number below is written into the JSON's ``"config"``):

* Task groups (stages A, B, C), L∞ goal-radius bands of 2D navigation (``point-nav``, actions
  rescaled from ``[-1, 1]²`` onto the ``[-0.1, 0.1]²`` box): A = goals far out
  (``goal_radius=0.4:0.5``), B = mid (``0.2:0.3``), C = at the origin (``0:0.1``). They conflict:
  the far goals need long fast moves, C rewards staying put; a policy meta-trained last on C starts
  its adaptation from "stay near the origin" and one policy-gradient step does not undo it.
  (point-nav's task distribution has one range, ``goal_radius``; the env has no goal-angle range
  for quadrant groups.)
* Two arms at **equal compute**, the same seeds: ``no_replay`` (``replay_ratio=0``) and
  ``replay`` (``replay_ratio``, default 0.3, of each meta-iteration's ``num_tasks`` tasks drawn
  from a reservoir buffer of earlier stages' tasks, :mod:`jmeta.continual`). Both train
  ``iterations`` meta-iterations per stage on ``num_tasks`` tasks per iteration; the first stage
  is identical in both (the buffer holds no earlier-stage task yet).
* After each stage, the meta-test protocol on every group: ``eval_tasks`` held-out test tasks
  of the group (the same tasks and keys after every stage and in both arms), one VPG adaptation
  step on ``eval_episodes`` trajectories (step ``inner_lr``), then the mean return of the adapted
  policy; with ``--algo rl2``, the return in the last episode of a trial of ``trial_episodes``
  episodes (the hidden state adapts). ``R[g, s]`` = that return on group g after stage s,
  averaged over seeds.
* ``--algo maml`` (default): MAML-TRPO, 20 tasks × 10 trajectories per iteration, 32×32 policy,
  80 iterations per stage. ``--algo rl2``: a GRU-64 actor-critic, PPO over trials of 2 episodes,
  32 trials per iteration, 150 iterations per stage (RL² needs more, cheaper iterations).
* Forgetting (of group A): ``F = R[A, A] − R[A, C]``, the drop of A's post-adaptation return from
  right after training on A to after training on B and C (returns are negative distances, so a
  positive F is a loss). ``forgetting_no_replay`` and ``forgetting_replay`` are F of each arm
  (mean over seeds; the per-seed values are in the JSON), ``forgetting_reduction`` =
  ``1 − F_replay / F_no_replay`` (the issue's target: ≥ 0.5). ``forgetting_b_*``: the same for
  group B (``R[B, B] − R[B, C]``). ``return_{arm}_{g}_after_{s}`` are the ``R[g, s]``.

The script prints the table of ``R`` and writes ``benchmarks/results/continual.json`` and a PNG
of the return on each group after each stage.

    python benchmarks/continual.py [--quick] [--out PATH.json] [--algo maml|rl2] [--iterations N]
        [--seeds S] [--replay-ratio R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta import continual  # noqa: E402
from jmeta.algorithms import maml_rl, rl2  # noqa: E402

GROUPS = "goal_radius=0.4:0.5;goal_radius=0.2:0.3;goal_radius=0:0.1"
NAMES = ("A", "B", "C")
ARMS = ("no_replay", "replay")


def settings(args) -> dict:
    if args.algo == "maml":
        full = dict(horizon=20, iterations=80, seeds=5, num_tasks=20, num_episodes=10,
                    hidden_sizes=(32, 32), eval_tasks=40, eval_episodes=20)
        quick = dict(horizon=10, iterations=10, seeds=1, num_tasks=10, num_episodes=5,
                     hidden_sizes=(16,), eval_tasks=10, eval_episodes=5)
    else:
        full = dict(horizon=20, iterations=150, seeds=5, num_tasks=32, trial_episodes=2,
                    hidden_size=64, eval_tasks=40)
        quick = dict(horizon=10, iterations=5, seeds=1, num_tasks=10, trial_episodes=2,
                     hidden_size=8, eval_tasks=10)
    s = quick if args.quick else full
    s["algo"] = args.algo
    if args.iterations is not None:
        s["iterations"] = args.iterations
    if args.seeds is not None:
        s["seeds"] = args.seeds
    s.update(groups=args.groups, replay_ratio=args.replay_ratio,
             replay_capacity=args.replay_capacity, rescale_actions=True)
    if args.algo == "maml":
        s.update(inner_lr=args.inner_lr, outer="trpo", eval_steps=1)
    return s


def algo_config(s: dict):
    """The algorithm's ``Config`` and ``make`` for ``s["algo"]``."""
    if s["algo"] == "maml":
        return maml_rl.Config(num_tasks=s["num_tasks"], num_episodes=s["num_episodes"],
                              hidden_sizes=s["hidden_sizes"], inner_lr=s["inner_lr"],
                              outer=s["outer"], eval_steps=s["eval_steps"],
                              eval_episodes=s["eval_episodes"]), maml_rl.make
    # as benchmarks/rl2_nav.py (GRU, PPO over whole trials; rewards scaled to ~unit returns)
    return rl2.Config(num_tasks=s["num_tasks"], trial_episodes=s["trial_episodes"], cell="gru",
                      hidden_size=s["hidden_size"], num_minibatches=4 if s["num_tasks"] >= 16
                      else 2, num_epochs=4, learning_rate=1e-3, gamma=0.99, gae_lambda=0.95,
                      ent_coef=0.0, max_grad_norm=0.5, reward_scale=0.1), rl2.make


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None,
                    help="default benchmarks/results/continual.json (rl2: continual_rl2.json)")
    ap.add_argument("--algo", choices=("maml", "rl2"), default="maml")
    ap.add_argument("--iterations", type=int, default=None, help="meta-iterations per stage")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--groups", default=GROUPS, help="task groups (jmeta.continual syntax)")
    ap.add_argument("--replay-ratio", type=float, default=0.3)
    ap.add_argument("--replay-capacity", type=int, default=100)
    ap.add_argument("--inner-lr", type=float, default=0.5)
    args = ap.parse_args(argv)
    args.out = args.out or ("benchmarks/results/continual.json" if args.algo == "maml" else
                            "benchmarks/results/continual_rl2.json")
    s = settings(args)
    t_start = time.perf_counter()

    env, tasks = jmeta.make("point-nav", horizon=s["horizon"],
                            rescale_actions=s["rescale_actions"])
    groups = continual.check_task_groups(tasks, continual.parse_task_groups(s["groups"]))
    num_groups = len(groups)
    names = NAMES[:num_groups] if num_groups <= len(NAMES) else tuple(
        f"G{g}" for g in range(num_groups))
    cfg, make = algo_config(s)
    base = make(cfg, env, tasks)

    # the held-out test tasks of every group, fixed for all stages, arms and seeds: [G * n]
    n_eval = s["eval_tasks"]
    test = [continual.group_tasks(tasks, g).test.sample_batch(jax.random.key(1000 + i), n_eval)
            for i, g in enumerate(groups)]
    test = jax.tree.map(lambda *xs: jnp.concatenate(xs), *test)
    eval_keys = jax.random.split(jax.random.key(2000), num_groups * n_eval)

    @jax.jit
    def eval_groups(train_state):
        """Mean return after one adaptation step (RL²: in the trial's last episode) on each
        group's test tasks: [G]."""
        res = jax.vmap(base.adapt, in_axes=(None, 0, 0))(train_state, test, eval_keys)
        return jnp.mean(res.returns[:, -1].reshape(num_groups, n_eval), axis=1)

    # R[arm][seed, g, s]
    R = {arm: np.zeros((s["seeds"], num_groups, num_groups)) for arm in ARMS}
    timing = {}
    for arm in ARMS:
        ratio = s["replay_ratio"] if arm == "replay" else 0.0
        ccfg = continual.ContinualConfig(groups, iterations_per_stage=s["iterations"],
                                         replay_ratio=ratio,
                                         replay_capacity=s["replay_capacity"])
        algo = continual.make(lambda t: make(cfg, env, t), tasks, ccfg,
                              num_tasks=cfg.num_tasks)
        train = jax.jit(algo.train, static_argnames="num_iterations")
        t0 = time.perf_counter()
        for seed in range(s["seeds"]):
            state = algo.init(jax.random.key(seed))
            for stage in range(num_groups):
                state, metrics = train(state, num_iterations=s["iterations"])
                assert int(np.asarray(metrics["stage"])[-1]) == stage
                R[arm][seed, :, stage] = np.asarray(eval_groups(state.train_state))
            print(f"{arm} seed {seed}: R[A, :] = {np.round(R[arm][seed, 0], 2)}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        timing[arm] = time.perf_counter() - t0

    def forgetting(arm, g):  # per seed: R[g, g] - R[g, last]
        return R[arm][:, g, g] - R[arm][:, g, num_groups - 1]

    headline = {}
    for arm in ARMS:
        headline[f"forgetting_{arm}"] = float(np.mean(forgetting(arm, 0)))
    f0, f1 = headline["forgetting_no_replay"], headline["forgetting_replay"]
    headline["forgetting_reduction"] = float(1.0 - f1 / f0) if f0 != 0 else float("nan")
    if num_groups > 2:
        for arm in ARMS:
            headline[f"forgetting_b_{arm}"] = float(np.mean(forgetting(arm, 1)))
    for arm in ARMS:
        mean = R[arm].mean(axis=0)
        for g in range(num_groups):
            for st in range(num_groups):
                headline[f"return_{arm}_{names[g]}_after_{names[st]}"] = float(mean[g, st])
    if not np.isfinite(headline["forgetting_reduction"]):
        headline.pop("forgetting_reduction")

    config = {**s, "group_names": list(names),
              "replay_count": continual.replay_count(s["replay_ratio"], s["num_tasks"]),
              "buffer": "reservoir", "forgetting": "R[A, A] - R[A, last stage], mean over seeds",
              "command": " ".join(["python benchmarks/continual.py", *(argv if argv is not None
                                                                       else sys.argv[1:])])}
    detail = {
        "returns": {arm: R[arm].tolist() for arm in ARMS},
        "returns_axes": "[seed, group evaluated, after stage]",
        "forgetting_per_seed": {arm: forgetting(arm, 0).tolist() for arm in ARMS},
        "train_seconds": timing,
        "wall_seconds": time.perf_counter() - t_start,
    }
    out = _common.write_json(args.out, headline, config, **detail)
    plot(R, names, Path(args.out).with_suffix(".png"))

    what = ("MAML-RL", "return after 1 adaptation step") if s["algo"] == "maml" else (
        "RL²", "return in the trial's last episode")
    print(f"\n{what[0]} on point-nav, {num_groups} task groups x {s['iterations']} iterations, "
          f"{s['seeds']} seed(s): {what[1]} (mean over seeds)")
    header = ["arm", "group"] + [f"after {n}" for n in names]
    rows = [[arm, f"{names[g]} ({continual.format_task_groups([groups[g]])})"]
            + [f"{R[arm][:, g, st].mean():.2f}" for st in range(num_groups)]
            for arm in ARMS for g in range(num_groups)]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    sd = {arm: np.std(forgetting(arm, 0)) for arm in ARMS}
    print(f"forgetting of A (R[A,A] - R[A,{names[-1]}]): no replay {f0:.2f} "
          f"± {sd['no_replay']:.2f}, replay {f1:.2f} ± {sd['replay']:.2f} (sd over seeds); "
          f"reduction {headline.get('forgetting_reduction', float('nan')):.0%}; "
          f"wall {detail['wall_seconds']:.0f} s")
    return out


def plot(R, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_groups = len(names)
    fig, axes = plt.subplots(1, num_groups, figsize=(3.2 * num_groups, 3.0), sharey=True)
    for g, ax in enumerate(np.atleast_1d(axes)):
        for arm, style in zip(ARMS, ("o--", "s-")):
            mean = R[arm][:, g].mean(axis=0)
            sd = R[arm][:, g].std(axis=0)
            ax.errorbar(range(num_groups), mean, yerr=sd, fmt=style, capsize=3, label=arm)
        ax.set_xticks(range(num_groups), [f"after {n}" for n in names])
        ax.set_title(f"return on group {names[g]}")
    np.atleast_1d(axes)[0].set_ylabel("return after adaptation")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    _common.save_figure(fig, path)


if __name__ == "__main__":
    main()
