"""Meta-overfitting study (issue 9): train on a narrow task range, meta-test on held-out tasks of
that range and on shifted ones, with and without the seed's counters (task-range widening and
sensor noise during meta-training), for MAML-RL and RL².

Environment: point-nav (``jmeta.make("point-nav")``), horizon ``H`` (default 50), reward −L2
distance, the goal is the task and is not observed; observations are the agent's position plus
the task's sensor noise (``obs_noise``, :class:`jmeta.envs.wrappers.ObservationNoise`).

Every variant meta-trains on

* goals uniform in ``[-r, r]²`` with ``r = 0.2 + w`` (the narrow range is ``r = 0.2``; ``w`` is
  the task widening), and
* per-task sensor noise ``σ ~ U(0, s)`` (``s`` the sensor-noise level; 0: clean),

and is meta-tested on the *same* tasks as every other variant (``jax.random.key(123)``):

* ``train``: its own training distribution (what it was fit to);
* ``test``: held-out goals of the narrow range ``[-0.2, 0.2]²``, no sensor noise;
* ``ood``: a small shift of both: goals in the L∞ annulus ``0.3 ≤ ‖g‖∞ ≤ 0.5`` and sensor
  noise 0.05 on every observation.

Variants: ``none`` (w = s = 0), and for each level ν in ``--levels`` (default 0.1, 0.2):
``widen`` (w = ν), ``sensor`` (s = ν), ``both`` (w = s = ν). The widened range at ν = 0.2
(``r = 0.4``) overlaps the ood annulus by design: covering more of the task space is what
widening does. Each variant is trained from ``--seeds`` seeds (default 3) at once
(``jax.vmap`` over the training states, one compilation per variant); numbers are the mean over
seeds of the mean over 40 tasks, ± the s.e.m. over seeds (the seed-to-seed spread is the noise
that decides whether a counter helps). Every variant is evaluated with the same tasks and keys
(``jmeta.evaluate``'s draw with ``EVAL_KEY``) by one jitted ``algo.adapt`` per algorithm.
``--quick`` (the test suite's smoke run, numbers meaningless) trains only ``none`` and
``both_0.2``, tiny networks, 2 iterations.

Returns reported: MAML-RL (MAML-TRPO, 20 tasks × 10 trajectories, 32×32 tanh policy, inner step
0.5) after 1 adaptation step (``maml_*``; the step-0 return is in the JSON too); RL² (GRU-64
actor-critic, PPO over trials of 2 episodes, actions rescaled from [−1, 1]²) in the last episode
of the trial (``rl2_*``). The gap is ``test − ood``. Headline: ``ood_return_no_noise`` /
``ood_return_noise`` are MAML's ood return of ``none`` and of ``both`` at the highest level;
``rl2_…`` the same for RL². After each variant its results are written to ``OUT.partial.json``,
so a killed run continues with ``--resume`` (finished variants are skipped).

    python benchmarks/meta_overfitting.py [--quick] [--out PATH.json] [--resume]
        [--algos maml,rl2] [--levels 0.1,0.2] [--seeds 3] [--iterations maml=150,rl2=300]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import maml_rl, rl2  # noqa: E402
from jmeta.envs import RescaleAction  # noqa: E402

NARROW = 0.2  # half-width of the narrow goal box
OOD_GOALS = (0.3, 0.5)  # L∞ annulus of the shifted goals
OOD_SENSOR = 0.05  # sensor noise std of the shifted tasks
EVAL_KEY = 123


def algo_config(name: str, quick: bool):
    if name == "maml":
        if quick:
            return maml_rl.Config(num_tasks=4, num_episodes=2, inner_lr=0.5, hidden_sizes=(8,))
        return maml_rl.Config(num_tasks=20, num_episodes=10, inner_lr=0.5, hidden_sizes=(32, 32))
    if quick:
        return rl2.Config(num_tasks=4, trial_episodes=2, hidden_size=8, num_minibatches=2,
                          num_epochs=1, ent_coef=0.0, reward_scale=0.05)
    # as benchmarks/rl2_nav.py, with trials of 2 episodes of H steps (rewards scaled by ~10/2H)
    return rl2.Config(num_tasks=32, trial_episodes=2, cell="gru", hidden_size=64,
                      num_minibatches=4, num_epochs=4, learning_rate=1e-3, gamma=0.99,
                      gae_lambda=0.95, ent_coef=0.0, max_grad_norm=0.5, reward_scale=0.1)


def variants(levels: list[float]) -> dict[str, tuple[float, float]]:
    """name -> (widening w, sensor-noise level s)."""
    out = {"none": (0.0, 0.0)}
    for v in levels:
        out.update({f"widen_{v:g}": (v, 0.0), f"sensor_{v:g}": (0.0, v),
                    f"both_{v:g}": (v, v)})
    return out


def make_env(horizon: int, widen: float, sensor: float):
    """The training env and tasks of a variant; its ``ood`` split is the shared shifted one."""
    return jmeta.make("point-nav", horizon=horizon, goal_radius=NARROW + widen,
                      ood_goal_radius=OOD_GOALS, obs_noise=(0.0, sensor),
                      ood_obs_noise=OOD_SENSOR)


def build(name: str, config, env, tasks):
    if name == "maml":
        return maml_rl.make(config, env, tasks)
    return rl2.make(config, RescaleAction(env), tasks)


def summarize(returns: np.ndarray, column: int) -> dict:
    """``returns`` [seeds, tasks, K+1] -> mean over seeds of the task means, s.e.m. over seeds."""
    per_seed = returns[:, :, column].mean(axis=1)
    sem = float(per_seed.std(ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else None
    return {"mean": float(per_seed.mean()), "sem": sem, "per_seed": per_seed.tolist()}


def make_evaluator(algo):
    """``(states [seeds], tasks [N]) -> returns [seeds, N, K+1]``: ``algo.adapt`` vmapped over
    tasks then seeds, jitted once. Adaptation does not depend on the training distribution, so
    one evaluator (built on the shared eval env) serves every variant of an algorithm."""
    def one_seed(state, task_batch, keys):
        return jax.vmap(algo.adapt, in_axes=(None, 0, 0))(state, task_batch, keys).returns

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def eval_batches(tasks, eval_tasks, n: int) -> dict:
    """The tasks of each split, drawn as ``jmeta.evaluate`` draws them with ``EVAL_KEY``."""
    k_tasks, k_adapt = jax.random.split(jax.random.key(EVAL_KEY))
    keys = jax.random.split(k_adapt, n)
    return {split: (dist.sample_batch(k_tasks, n), keys) for split, dist in
            (("train", tasks.train), ("test", eval_tasks.test), ("ood", eval_tasks.ood))}


def run_variant(name: str, config, horizon: int, widen: float, sensor: float, iterations: int,
                chunk: int, seeds: int, test_tasks: int, eval_tasks, evaluator, log) -> dict:
    env, tasks = make_env(horizon, widen, sensor)
    algo = build(name, config, env, tasks)
    states = jax.vmap(algo.init)(jax.random.split(jax.random.key(0), seeds))
    train = jax.jit(jax.vmap(algo.train, in_axes=(0, None)), static_argnums=1)
    curve, t0 = [], time.perf_counter()
    done = 0
    while done < iterations:
        n = min(chunk, iterations - done)
        states, metrics = train(states, n)
        key = "return_post" if name == "maml" else "trial_return"
        curve += np.asarray(metrics[key]).mean(axis=0).tolist()  # [n], mean over seeds
        done += n
    train_s = time.perf_counter() - t0

    column = 1 if name == "maml" else -1  # after one step / the trial's last episode
    out = {"widen": widen, "sensor": sensor, "train_goal_radius": NARROW + widen,
           "iterations": iterations, "train_s": train_s, "curve": curve}
    for split, (task_batch, keys) in eval_batches(tasks, eval_tasks, test_tasks).items():
        returns = np.asarray(evaluator(states, task_batch, keys))  # [seeds, tasks, K+1]
        out[split] = summarize(returns, column)
        out[split]["curve"] = returns.mean(axis=(0, 1)).tolist()
    out["gap"] = out["test"]["mean"] - out["ood"]["mean"]
    log(f"{name} {widen=:g} {sensor=:g}: train {out['train']['mean']:.2f}, test "
        f"{out['test']['mean']:.2f}, ood {out['ood']['mean']:.2f} ± {out['ood']['sem'] or 0:.2f} "
        f"(gap {out['gap']:.2f}), {train_s:.0f} s")
    return out


def plot(results: dict, levels: list[float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(results)
    fig, axes = plt.subplots(2, len(algos), figsize=(5.5 * len(algos), 8), squeeze=False)
    for j, a in enumerate(algos):
        r = results[a]
        ax = axes[0, j]
        for kind in ("widen", "sensor", "both"):
            xs = [0.0] + [v for v in levels if f"{kind}_{v:g}" in r]
            rows = [r["none"]] + [r[f"{kind}_{v:g}"] for v in xs[1:]]
            ax.errorbar(xs, [x["ood"]["mean"] for x in rows],
                        yerr=[x["ood"]["sem"] or 0 for x in rows], marker="o", label=kind)
        ax.set_xlabel("countermeasure level ν (widening w = ν, sensor noise s = ν)")
        ax.set_ylabel("ood return")
        ax.set_title(f"{a}: ood return vs countermeasure level")
        ax.legend(fontsize=7)
        ax = axes[1, j]
        names = list(r)
        x = np.arange(len(names))
        for k, split in enumerate(("train", "test", "ood")):
            ax.bar(x + (k - 1) * 0.27, [r[n][split]["mean"] for n in names], 0.27,
                   yerr=[r[n][split]["sem"] or 0 for n in names], label=split)
        ax.set_xticks(x, names, rotation=45, fontsize=7)
        ax.set_ylabel("return")
        ax.set_title(f"{a}: train / test / ood")
        ax.legend(fontsize=7)
    _common.save_figure(fig, path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/meta_overfitting.json")
    ap.add_argument("--algos", default="maml,rl2")
    ap.add_argument("--levels", default=None, help="comma-separated ν (default 0.1,0.2)")
    ap.add_argument("--variants", default=None,
                    help="comma-separated subset, e.g. none,both_0.2 (default: all; --quick: "
                         "none and both at the highest level)")
    ap.add_argument("--seeds", type=int, default=None, help="default 3")
    ap.add_argument("--iterations", default=None, help="per algo, default maml=150,rl2=300")
    ap.add_argument("--horizon", type=int, default=None, help="default 50")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None, help="default 40")
    ap.add_argument("--chunk", type=_common.positive_int, default=25)
    ap.add_argument("--resume", action="store_true",
                    help="skip the variants already in OUT.partial.json")
    args = ap.parse_args(argv)
    q = args.quick
    algos = args.algos.split(",")
    unknown = set(algos) - {"maml", "rl2"}
    if unknown:
        ap.error(f"--algos: unknown {sorted(unknown)}; valid: maml, rl2")
    levels = [float(x) for x in (args.levels or ("0.2" if q else "0.1,0.2")).split(",")]
    seeds = args.seeds or (2 if q else 3)
    horizon = args.horizon or (10 if q else 50)
    test_tasks = args.test_tasks or (4 if q else 40)
    iterations = {"maml": 2 if q else 150, "rl2": 2 if q else 300}
    for item in (args.iterations.split(",") if args.iterations else []):
        k, v = item.split("=")
        iterations[k] = int(v)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    out_path = Path(args.out)
    partial = out_path.with_suffix(".partial.json")
    results = json.loads(partial.read_text()) if args.resume and partial.exists() else {}
    eval_env, eval_tasks = make_env(horizon, 0.0, 0.0)
    grid = variants(levels)
    if args.variants or q:
        keep = (args.variants or f"none,both_{max(levels):g}").split(",")
        unknown = set(keep) - set(grid)
        if unknown:
            ap.error(f"--variants: unknown {sorted(unknown)}; valid: {', '.join(grid)}")
        grid = {k: v for k, v in grid.items() if k in keep}
    for a in algos:
        config = algo_config(a, q)
        evaluator = make_evaluator(build(a, config, eval_env, eval_tasks))
        results.setdefault(a, {})
        for v, (widen, sensor) in grid.items():
            if v in results[a]:
                log(f"{a} {v}: done (resumed)")
                continue
            results[a][v] = run_variant(a, config, horizon, widen, sensor, iterations[a],
                                        args.chunk, seeds, test_tasks, eval_tasks, evaluator,
                                        log)
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(results))

    top = f"both_{max(levels):g}"
    headline = {}
    for a in algos:
        prefix = "" if a == "maml" else "rl2_"
        r = results[a]
        headline[f"{prefix}ood_return_no_noise"] = r["none"]["ood"]["mean"]
        headline[f"{prefix}ood_return_noise"] = r[top]["ood"]["mean"]
        headline[f"{prefix}test_return_no_noise"] = r["none"]["test"]["mean"]
        headline[f"{prefix}test_return_noise"] = r[top]["test"]["mean"]
        for v in grid:
            headline[f"{prefix}ood_return_{v}"] = r[v]["ood"]["mean"]
            headline[f"{prefix}test_return_{v}"] = r[v]["test"]["mean"]
    config = {
        "env": "point-nav", "horizon": horizon, "narrow_goal_radius": NARROW,
        "ood": {"goal_linf_annulus": OOD_GOALS, "sensor_noise": OOD_SENSOR},
        "test": {"goal_radius": NARROW, "sensor_noise": 0.0}, "levels": levels,
        "variants": {k: {"widen": w, "sensor": s} for k, (w, s) in grid.items()},
        "seeds": seeds, "test_tasks": test_tasks, "eval_key": EVAL_KEY,
        "iterations": {a: iterations[a] for a in algos}, "quick": q,
        "algos": {a: dataclasses.asdict(algo_config(a, q)) for a in algos},
        "column": {"maml": "after 1 adaptation step", "rl2": "last episode of the trial"},
    }
    _common.write_json(out_path, headline, config, results=results)
    plot(results, levels, out_path.with_suffix(".png"))

    for a in algos:
        print(f"\n{a} ({config['column'][a]}; mean over {seeds} seeds ± s.e.m.)")
        print(f"{'variant':<12} {'train':>14} {'test':>14} {'ood':>14} {'gap':>8}")
        for v, r in results[a].items():
            cells = [f"{r[s]['mean']:8.2f} ± {r[s]['sem'] or 0:4.2f}" for s in
                     ("train", "test", "ood")]
            print(f"{v:<12} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} {r['gap']:8.2f}")
    return headline


if __name__ == "__main__":
    main()
