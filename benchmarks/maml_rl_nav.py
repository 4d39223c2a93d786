"""MAML-RL on 2D navigation (point-nav, H=100): the adaptation table of Finn et al. 2017, Fig. 5.

Methods, each meta-trained for ``--iterations`` meta-iterations (meta-batch 20 tasks, 20
trajectories per task and step) and then evaluated with the paper's meta-test protocol on 40 fresh
test tasks: 3 vanilla policy-gradient steps, each on 40 new trajectories, step α then α/2:

* ``trpo``: MAML-TRPO, second order (the paper's method);
* ``promp``: ProMP (LVC inner objective, clipped outer objective, inner KL penalty);
* ``fomaml``: first-order MAML with the TRPO outer loop;
* ``pretrained``: one policy trained with TRPO on all tasks, no meta-learning, then fine-tuned;
* ``random``: a freshly initialised policy, fine-tuned;
* ``oracle``: a policy that observes the goal, trained with TRPO on all tasks (no adaptation).

Protocol choices (also written into the JSON), following the authors' code
(``maml_examples/maml_trpo_point.py``) where the paper is silent: reward −L2 distance; actions
rescaled from ``[-1, 1]²`` onto the ``[-0.1, 0.1]²`` box as rllab's ``normalize`` wrapper does
(:class:`jmeta.envs.RescaleAction`; ``--action-scaling raw`` feeds the policy's action to the
env's clip directly, as pytorch-maml-rl does); a 100×100 ReLU Gaussian policy with unit initial
std; inner step size α = 0.5 (the authors' evaluated checkpoint; the paper text says 0.1); linear
feature baseline, GAE λ = 1, γ = 0.99, normalised advantages, TRPO max-KL 0.01.

Training runs in jitted chunks with a checkpoint after each (``benchmarks/out/maml_rl_nav/``), so a
killed run continues with ``--resume``.

    python benchmarks/maml_rl_nav.py [--quick] [--out PATH.json] [--iterations N] [--resume]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import maml_rl  # noqa: E402
from jmeta.envs import RescaleAction, TaskInObservation  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
PAPER = {  # Finn et al. 2017, Fig. 5 / App. C (shared/reference/published.md)
    "trpo": [-40.41, -11.68, -3.33, -3.23],
    "pretrained": [-40.81, -19.73, -11.72, -8.47],
    "random": [-82.66, -57.96, -53.84, -46.81],
    "oracle": [-2.29],
}
METHODS = ("trpo", "promp", "fomaml", "pretrained", "oracle", "random")


def method_config(method: str, quick: bool, inner_lr: float,
                  hidden_sizes: tuple[int, ...] = (100, 100),
                  activation: str = "relu") -> maml_rl.Config:
    common = dict(inner_lr=inner_lr, eval_steps=3, eval_episodes=40, hidden_sizes=hidden_sizes,
                  activation=activation)
    if quick:
        common.update(num_tasks=4, num_episodes=4, eval_episodes=8)
    if method in ("trpo", "random"):
        return maml_rl.Config(**common)
    if method == "fomaml":
        return maml_rl.Config(first_order=True, **common)
    if method == "promp":
        return maml_rl.Config(outer="promp", **common)
    if method in ("pretrained", "oracle"):
        return maml_rl.Config(pretrain=True, **common)
    raise ValueError(method)


def build(method: str, config: maml_rl.Config, action_scaling: str = "rllab"):
    env, tasks = jmeta.make("point-nav")
    if action_scaling == "rllab":
        env = RescaleAction(env)
    if method == "oracle":
        env = TaskInObservation(env, lambda p: p.goal, 2)
    return maml_rl.make(config, env, tasks), tasks


def nav_record(metrics, i) -> dict:
    return {"return_pre": float(metrics["return_pre"][i]),
            "return_post": float(metrics["return_post"][i])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/maml_rl_nav.json")
    ap.add_argument("--iterations", type=int, default=None,
                    help="meta-iterations (default 500); with --resume, a method already "
                         "trained further is evaluated as it is (results record its count)")
    ap.add_argument("--inner-lr", type=float, default=0.5)
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated subset of {','.join(METHODS)} (quick: trpo,random)")
    ap.add_argument("--chunk", type=_common.positive_int, default=10,
                    help="meta-iterations per jitted chunk")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None, help="default 40")
    ap.add_argument("--action-scaling", choices=("rllab", "raw"), default="rllab",
                    help="rllab: policy acts in [-1,1]² rescaled to the env's box (authors' code)")
    ap.add_argument("--hidden", default="100,100", help="policy hidden sizes (authors: 100,100)")
    ap.add_argument("--activation", default="relu", help="policy activation (authors: relu)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ckpt-dir", default="benchmarks/out/maml_rl_nav")
    args = ap.parse_args(argv)

    iterations = args.iterations or (3 if args.quick else 500)
    test_tasks = args.test_tasks or (4 if args.quick else 40)
    methods = [m for m in (args.methods or ("trpo,random" if args.quick else ",".join(METHODS)))
               .split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; valid: {', '.join(METHODS)}")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    ckpt_dir = Path(args.ckpt_dir) / ("quick" if args.quick else "full")

    results, curves = {}, {}
    hidden = tuple(int(h) for h in args.hidden.split(","))
    configs = {m: method_config(m, args.quick, args.inner_lr, hidden, args.activation)
               for m in methods}
    for method in methods:
        config = configs[method]
        algo, tasks = build(method, config, args.action_scaling)
        if method == "random":
            state, history = algo.init(jax.random.key(0)), []
        else:
            state, history = _common.train_with_checkpoints(
                algo, iterations, args.chunk, ckpt_dir, method, args.resume, log, nav_record)
        evaluate = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))
        ev = evaluate(algo, state, tasks.test, jax.random.key(123), test_tasks)
        returns = np.asarray(ev.returns)  # [tasks, steps + 1]
        # Diverged tasks are counted and left out of the statistics (finite_summary).
        summary = jmeta.evaluation.finite_summary(returns)
        results[method] = {
            "mean": summary["mean"].tolist(), "std": summary["std"].tolist(),
            "sem": summary["sem"].tolist(), "diverged_tasks": summary["non_finite"].tolist(),
            "iterations": int(state.iteration),
            "sec_per_iter_median": float(np.median([h["seconds"] for h in history]))
            if history else None,
        }
        curves[method] = history
        log(f"{method}: return after 0..3 steps {np.round(summary['mean'], 2).tolist()}, diverged tasks "
            f"{results[method]['diverged_tasks']}")

    headline = {}
    if "trpo" in results:
        for i in range(4):
            headline[f"return_step{i}"] = results["trpo"]["mean"][i]
    if "promp" in results:
        headline["promp_return_step1"] = results["promp"]["mean"][1]
    if "fomaml" in results:
        headline["fomaml_return_step1"] = results["fomaml"]["mean"][1]
    config = {
        "env": "point-nav", "horizon": 100, "reward": "-L2 distance (authors' code)",
        "action_scaling": args.action_scaling, "iterations": iterations,
        "test_tasks": test_tasks, "eval_trajectories_per_step": 40 if not args.quick else 8,
        "eval_lr": f"alpha={args.inner_lr} then alpha/2",
        "methods": {m: dataclass_dict(c) for m, c in configs.items()},
        "quick": args.quick,
    }
    _common.write_json(args.out, headline, config, results=results, learning_curves=curves,
                       paper=PAPER)
    plot(results, curves, Path(args.out).with_suffix(".png"))

    print(f"\n{'method':12s} {'iters':>5s} {'step 0':>9s} {'step 1':>9s} {'step 2':>9s} "
          f"{'step 3':>9s}   paper")
    for m, r in results.items():
        row = " ".join(f"{x:9.2f}" for x in r["mean"])
        diverged = f"  (diverged: {r['diverged_tasks']})" if any(r["diverged_tasks"]) else ""
        print(f"{m:12s} {r['iterations']:5d} {row}   {PAPER.get(m, '')}{diverged}")
    print("targets (TRPO-MAML): step 1 >= -11.7, step 3 >= -3.3")
    return headline


def dataclass_dict(config) -> dict:
    import dataclasses
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def plot(results, curves, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}  # the same colour in both panels
    for m, r in results.items():
        steps = np.arange(len(r["mean"]))
        ax1.errorbar(steps, r["mean"], yerr=r["sem"], marker="o", color=colors[m],
                     label=f"jmeta {m}")
    paper_csv = REFERENCE / "maml_rl_figure5.csv"
    if paper_csv.exists():
        rows = [r for r in csv.DictReader(paper_csv.open()) if r["task"].startswith("2D nav")]
        for method, label in (("maml", "paper MAML"), ("sens0", "paper pretrained")):
            pts = sorted((int(r["grad_steps"]), float(r["mean_return"])) for r in rows
                         if r["method"] == method and int(r["grad_steps"]) <= 3)
            if pts:
                ax1.plot(*zip(*pts), "k--" if method == "maml" else "k:", label=label)
    ax1.set_xlabel("adaptation steps"); ax1.set_ylabel("mean return (40 test tasks)")
    ax1.set_title("point-nav: return after adaptation"); ax1.legend(fontsize=7)
    for m, h in curves.items():
        if h:
            ax2.plot([x["iteration"] for x in h], [x["return_post"] for x in h], color=colors[m],
                     label=m)
    ax2.set_xlabel("meta-iteration"); ax2.set_ylabel("post-adaptation return (train tasks)")
    ax2.set_title("learning curves"); ax2.legend(fontsize=7)
    _common.save_figure(fig, path)


if __name__ == "__main__":
    main()
