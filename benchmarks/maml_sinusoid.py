"""MAML-family learning numbers: sinusoid regression (Finn et al. 2017), digits N-way K-shot, memory.

    python benchmarks/maml_sinusoid.py [--quick] [--out PATH.json]

Sinusoid protocol (Finn et al. 2017, §5.1 and App. C): amplitude U[0.1, 5], phase U[0, π],
x U[−5, 5]; MLP 1-40-40-1 ReLU; meta-training with 1 inner SGD step at α = 0.01 on K support points,
the meta-loss on K other points of the same task, Adam 1e-3, meta-batch 25, 70,000 meta-iterations
(the paper's number). Meta-test: 1,000 fresh tasks drawn with a key never used in training; on
each, up to 10 plain SGD steps at α = 0.01 on the same K support points (all K every step), MSE
after each step on 100 separate query points U[−5, 5]; we report the mean over tasks (and a 95 %
interval). Rows: MAML (second order) K=5 and K=10, FOMAML, Reptile (5 inner steps, support set
only), Meta-SGD, and the paper's baseline "pretrained on all tasks" (one network trained on pooled
data from every task with the same budget, then fine-tuned with the same protocol, its step
size picked from a grid on 200 validation tasks, as the paper tunes it automatically). Meta-SGD
adapts with its learned per-parameter rates, which are meta-trained for the one training step;
where repeating them diverges, the JSON says so (null mean, count of non-finite tasks).

Digits: scikit-learn's bundled 8×8 digits, meta-train on classes 0–4 plus their 90°/180°/270°
rotations as new classes (20 classes; Finn et al.'s Omniglot augmentation), meta-test on the
unrotated classes 5–9 (disjoint), 5-way 1-shot and 5-shot, 15 query examples per class; MLP
64-128-128-5 ReLU, 1 inner step at α = 0.4 in training, 3 at test (Finn et al.'s Omniglot recipe),
meta-batch 32, 4,000 meta-iterations. Baselines without meta-learning: "scratch" (random init, same
3 steps), "pretrain" (trained on pooled meta-train episodes, then the same 3 steps); their step
size is picked on meta-train-class validation episodes. Accuracy on 2,000 test episodes.

Memory: ``jax.jit(meta_grad).lower(...).compile().memory_analysis()`` of one sinusoid meta-gradient
(meta-batch 25, K=10) with 1, 5, 10, 20 inner steps, for second order, first order, remat="step"
(``jax.checkpoint`` per step) and remat="full" (backward recomputes from the initial parameters).
"Memory" is argument + output + temp bytes of the executable.

Headline keys (this file): k5_mse_step1/5/10, k10_mse_step1, fomaml_k5_mse_step1,
digits_5way_1shot_acc, digits_5way_5shot_acc, remat_mem_ratio_20_vs_1 (remat="full"), plus
detail keys. Speed keys are in benchmarks/maml_speed.py's JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from jmeta.algorithms import maml  # noqa: E402
from jmeta.algorithms import supervised as sv  # noqa: E402

PAPER = {  # Finn et al. 2017, App. C Table 2 (K=5); published.md
    "maml_k5": {1: 0.67, 5: 0.38, 10: 0.35},
    "pretrain_k5": {1: 2.41, 5: 2.23, 10: 2.19},
}
TRAIN_SEED, TEST_SEED, VAL_SEED = 0, 10_000, 20_000


def train(config: sv.Config, tasks: sv.TaskFamily, iterations: int, seed: int, chunk: int = 5000):
    algo = sv.make(config, tasks)
    state = algo.init(jax.random.key(seed))
    run = jax.jit(algo.train, static_argnames="num_iterations")
    losses, done, t0 = [], 0, time.perf_counter()
    while done < iterations:
        n = min(chunk, iterations - done)
        state, metrics = run(state, num_iterations=n)
        losses.append(np.asarray(metrics["query_loss_after"]))
        done += n
    seconds = time.perf_counter() - t0
    curve = np.concatenate(losses)
    return state, {"seconds": seconds, "train_loss_last_1000": float(curve[-1000:].mean()),
                   "train_loss_curve_every_1000": [float(c.mean()) for c in np.array_split(curve, max(1, len(curve) // 1000))]}


LR_GRID_SINUSOID = (0.001, 0.003, 0.01, 0.03, 0.1)
LR_GRID_DIGITS = (0.05, 0.1, 0.2, 0.4, 0.8)


def tune_lr(cfg, tasks, params, key, grid, steps, metric):
    """Fine-tuning step size for the no-meta-learning baselines, picked on validation tasks
    (a key used neither for training nor for the test tasks): the best mean of ``metric``
    ("loss": lowest, "accuracy": highest) over 1..steps steps. Finn et al. 2017 tune the
    pretrained baseline's step size automatically as well."""
    scores = {}
    for lr in grid:
        ev = sv.evaluate(cfg, tasks, params, key, num_tasks=200, num_steps=steps, inner_lr=lr)
        v = float(np.nanmean(np.asarray(ev[metric])[:, 1:]))
        scores[lr] = v if np.isfinite(v) else (np.inf if metric == "loss" else -np.inf)
    best = (min if metric == "loss" else max)(scores, key=scores.get)
    return best, scores


def _fmt(v) -> str:
    return "diverged" if v is None else f"{v:.3f}"


def summarise(values: np.ndarray) -> dict:
    """mean over tasks per step and the half-width of a 95 % normal interval; a step whose value is
    not finite on some task (diverged) is reported as null, with the count of such tasks."""
    mean = values.mean(0)
    ci = 1.96 * values.std(0, ddof=1) / math.sqrt(values.shape[0])
    clean = lambda v: [float(x) if np.isfinite(x) else None for x in v]  # noqa: E731
    return {"mean": clean(mean), "ci95": clean(ci),
            "non_finite_tasks": (~np.isfinite(values)).sum(0).tolist()}


def sinusoid_rows(quick: bool) -> tuple[dict, dict]:
    iters = 100 if quick else 70_000
    num_test = 100 if quick else 1000
    rows = {
        "maml_k5": (5, sv.Config(method="maml")),
        "maml_k10": (10, sv.Config(method="maml")),
        "fomaml_k5": (5, sv.Config(method="fomaml")),
        "fomaml_k10": (10, sv.Config(method="fomaml")),
        "reptile_k5": (5, sv.Config(method="reptile", num_inner_steps=5)),
        "meta_sgd_k5": (5, sv.Config(method="meta_sgd")),
        "pretrain_k5": (5, sv.Config(method="pretrain")),
        "pretrain_k10": (10, sv.Config(method="pretrain")),
    }
    if quick:
        rows = {k: rows[k] for k in ("maml_k5", "maml_k10", "fomaml_k5")}
    out, states = {}, {}
    for name, (k, cfg) in rows.items():
        state, info = train(cfg, sv.sinusoid(k, k), iters, TRAIN_SEED)
        if cfg.method == "pretrain":
            lr, scores = tune_lr(cfg, sv.sinusoid(k, 100), state.params, jax.random.key(VAL_SEED),
                                 LR_GRID_SINUSOID, 10, "loss")
            info |= {"eval_inner_lr": lr, "val_mse_by_lr": scores}
            cfg = dataclasses.replace(cfg, inner_lr=lr)
        ev = sv.evaluate(cfg, sv.sinusoid(k, 100), state.params, jax.random.key(TEST_SEED),
                         num_tasks=num_test, num_steps=10)
        mse = np.asarray(ev["loss"])
        out[name] = {"K": k, "config": cfg.__dict__ | {"hidden_sizes": list(cfg.hidden_sizes)},
                     "iterations": iters, "test_tasks": num_test, "mse_after_steps": summarise(mse),
                     **info}
        states[name] = (cfg, k, state)
        m = [_fmt(v) for v in out[name]["mse_after_steps"]["mean"]]
        print(f"  {name:14s} MSE 0/1/5/10 steps: {m[0]} / {m[1]} / {m[5]} / {m[10]}"
              f"   ({info['seconds']:.0f} s)", flush=True)
    return out, states


def plot_fits(states: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("maml_k5", "pretrain_k5") if n in states]
    fig, axes = plt.subplots(len(names), 3, figsize=(13, 3.4 * len(names)), squeeze=False)
    grid = jnp.linspace(-5, 5, 200)[:, None]
    for row, name in enumerate(names):
        cfg, k, state = states[name]
        tasks = sv.sinusoid(k, 200)
        algo = sv.make(cfg, tasks)
        adapt = jax.jit(algo.adapt, static_argnames="num_steps")
        net = sv._network(cfg, tasks)
        for col in range(3):
            task = tasks.sample(jax.random.fold_in(jax.random.key(TEST_SEED + 1), col))
            ax = axes[row, col]
            a, p = task.info["amplitude"], task.info["phase"]
            ax.plot(grid[:, 0], a * jnp.sin(grid[:, 0] - p), "k-", lw=2, label="true")
            ax.plot(grid[:, 0], net.apply(state.params.net, grid)[:, 0], "C0:", label="before (0 steps)")
            for steps, style in ((1, "C1--"), (10, "C2-")):
                adapted, _ = adapt(state, task, num_steps=steps)
                ax.plot(grid[:, 0], net.apply(adapted, grid)[:, 0], style, label=f"after {steps} step(s)")
            ax.plot(task.support_x[:, 0], task.support_y[:, 0], "r^", ms=8, label=f"{k} support points")
            ax.set_title(f"{name}, test task {col}: A={float(a):.2f}, φ={float(p):.2f}")
            ax.set_ylim(-6, 6)
        axes[row, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in rows.items():
        m = [np.nan if v is None else v for v in r["mse_after_steps"]["mean"]]
        ax.plot(range(len(m)), m, marker="o", ms=3, label=name)
    for name, pts in PAPER.items():
        ax.plot(list(pts), list(pts.values()), "kx" if "maml" in name else "k+", ms=9,
                label=f"paper {name}")
    ax.set_xlabel("inner gradient steps at meta-test")
    ax.set_ylabel("MSE on 100 query points")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Sinusoid regression, fresh test tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def digits_rows(quick: bool) -> dict:
    iters = 50 if quick else 4000
    episodes = 50 if quick else 2000
    base = dict(hidden_sizes=(128, 128), inner_lr=0.4, num_inner_steps=1, eval_inner_steps=3,
                meta_batch_size=32)
    out = {}
    for shots in (1, 5):
        train_tasks = sv.digits(num_ways=5, num_shots=shots, num_query=15, classes=(0, 1, 2, 3, 4),
                                rotations=True)
        test_tasks = sv.digits(num_ways=5, num_shots=shots, num_query=15, classes=(5, 6, 7, 8, 9))
        for method in ("maml", "fomaml", "pretrain", "scratch"):
            if quick and method in ("fomaml", "pretrain"):
                continue
            cfg = sv.Config(method="pretrain" if method == "scratch" else method, **base)
            if method == "scratch":
                state = sv.make(cfg, train_tasks).init(jax.random.key(TRAIN_SEED))
                info = {"seconds": 0.0}
            else:
                state, info = train(cfg, train_tasks, iters, TRAIN_SEED, chunk=2000)
            if method in ("pretrain", "scratch"):
                lr, scores = tune_lr(cfg, train_tasks, state.params, jax.random.key(VAL_SEED),
                                     (cfg.inner_lr,) if quick else LR_GRID_DIGITS,
                                     cfg.eval_inner_steps, "accuracy")
                info |= {"eval_inner_lr": lr, "val_acc_by_lr": scores}
                cfg = dataclasses.replace(cfg, inner_lr=lr)
            ev = sv.evaluate(cfg, test_tasks, state.params, jax.random.key(TEST_SEED),
                             num_tasks=episodes, num_steps=cfg.eval_inner_steps)
            acc = np.asarray(ev["accuracy"])
            out[f"{method}_5way_{shots}shot"] = {
                "accuracy_after_steps": summarise(acc), "iterations": 0 if method == "scratch" else iters,
                "test_episodes": episodes, **info,
            }
            print(f"  digits {method:8s} 5-way {shots}-shot accuracy after 0/{cfg.eval_inner_steps} "
                  f"steps: {acc[:, 0].mean():.3f} / {acc[:, -1].mean():.3f}", flush=True)
    return out


def memory_rows(quick: bool) -> dict:
    from jmeta.networks.mlp import MLP

    net = MLP((40, 40), 1, "relu")
    params = net.init(jax.random.key(0), jnp.zeros((1, 1)))
    k, batch = 10, 25
    key = jax.random.key(1)
    xs = jax.random.uniform(key, (batch, k, 1), minval=-5, maxval=5)
    support, query = (xs, jnp.sin(xs)), (xs + 0.1, jnp.sin(xs + 0.1))

    def loss(p, b):
        x, y = b
        return jnp.mean((net.apply(p, x) - y) ** 2)

    modes = {"second_order": dict(first_order=False, remat=False),
             "first_order": dict(first_order=True, remat=False),
             "remat_step": dict(first_order=False, remat="step"),
             "remat_full": dict(first_order=False, remat="full")}
    steps_list = (1, 20) if quick else (1, 5, 10, 20)
    out = {}
    if quick:
        del modes["first_order"]
    for mode, kw in modes.items():
        out[mode] = {}
        for steps in steps_list:
            def meta_loss(p, support, query, steps=steps, kw=kw):
                def one(s, q):
                    adapted, _ = maml.adapt(loss, p, s, num_steps=steps, inner_lr=0.01,
                                            reuse_batch=True, **kw)
                    return loss(adapted, q)

                return jnp.mean(jax.vmap(one)(support, query))

            m = jax.jit(jax.grad(meta_loss)).lower(params, support, query).compile().memory_analysis()
            total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            out[mode][steps] = {"temp_bytes": int(m.temp_size_in_bytes), "total_bytes": int(total)}
    return out


def build_headline(rows: dict, digits: dict, memory: dict) -> dict:
    """The flat headline from the detail sections (a pure function of them; keys whose value is
    not finite, e.g. a diverged Meta-SGD row, are left out)."""
    mse = lambda name, s: rows[name]["mse_after_steps"]["mean"][s]  # noqa: E731
    acc = lambda name: digits[name]["accuracy_after_steps"]["mean"][-1]  # noqa: E731
    ratio = lambda mode: memory[mode][20]["total_bytes"] / memory[mode][1]["total_bytes"]  # noqa: E731
    headline = {
        "k5_mse_step1": mse("maml_k5", 1),
        "k5_mse_step5": mse("maml_k5", 5),
        "k5_mse_step10": mse("maml_k5", 10),
        "k10_mse_step1": mse("maml_k10", 1),
        "k10_mse_step5": mse("maml_k10", 5),
        "k10_mse_step10": mse("maml_k10", 10),
        "fomaml_k5_mse_step1": mse("fomaml_k5", 1),
        "digits_5way_1shot_acc": acc("maml_5way_1shot"),
        "digits_5way_5shot_acc": acc("maml_5way_5shot"),
        "digits_5way_1shot_scratch_acc": acc("scratch_5way_1shot"),
        "digits_5way_5shot_scratch_acc": acc("scratch_5way_5shot"),
        "remat_mem_ratio_20_vs_1": ratio("remat_full"),
        "remat_step_mem_ratio_20_vs_1": ratio("remat_step"),
        "second_order_mem_ratio_20_vs_1": ratio("second_order"),
    }
    if "first_order" in memory:
        headline["first_order_mem_ratio_20_vs_1"] = ratio("first_order")
    # rows the full protocol adds (left out of --quick to stay under 2 minutes)
    for key, name, steps in (("fomaml_k5_mse_step5", "fomaml_k5", 5), ("fomaml_k5_mse_step10", "fomaml_k5", 10),
                             ("fomaml_k10_mse_step1", "fomaml_k10", 1), ("reptile_k5_mse_step1", "reptile_k5", 1),
                             ("reptile_k5_mse_step10", "reptile_k5", 10), ("meta_sgd_k5_mse_step1", "meta_sgd_k5", 1),
                             ("pretrain_k5_mse_step1", "pretrain_k5", 1), ("pretrain_k5_mse_step10", "pretrain_k5", 10),
                             ("pretrain_k10_mse_step1", "pretrain_k10", 1)):
        if name in rows:
            headline[key] = mse(name, steps)
    for key, name in (("digits_5way_1shot_fomaml_acc", "fomaml_5way_1shot"),
                      ("digits_5way_5shot_fomaml_acc", "fomaml_5way_5shot"),
                      ("digits_5way_1shot_pretrain_acc", "pretrain_5way_1shot"),
                      ("digits_5way_5shot_pretrain_acc", "pretrain_5way_5shot")):
        if name in digits:
            headline[key] = acc(name)
    return {k: float(v) for k, v in headline.items() if v is not None and math.isfinite(v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke configuration (< 2 min)")
    ap.add_argument("--out", default="benchmarks/out/maml_sinusoid.json")
    args = ap.parse_args()
    out_path = Path(args.out)
    t_start = time.perf_counter()

    print("sinusoid regression", flush=True)
    rows, states = sinusoid_rows(args.quick)
    png = out_path.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_fits(states, png)
    curves_png = out_path.with_name(out_path.stem + "_curves.png")
    plot_curves(rows, curves_png)
    print(f"digits few-shot classification ({time.perf_counter() - t_start:.0f} s)", flush=True)
    digits = digits_rows(args.quick)
    print(f"memory of the compiled meta-gradient ({time.perf_counter() - t_start:.0f} s)", flush=True)
    memory = memory_rows(args.quick)

    headline = build_headline(rows, digits, memory)
    config = {
        "quick": args.quick, "train_seed": TRAIN_SEED, "test_seed": TEST_SEED,
        "sinusoid": {"iterations": rows["maml_k5"]["iterations"], "test_tasks": rows["maml_k5"]["test_tasks"],
                     "query_points": 100, "eval_inner_lr": 0.01, "eval_steps": 10},
        "digits": {"train_classes": [0, 1, 2, 3, 4], "train_rotations": True,
                   "test_classes": [5, 6, 7, 8, 9], "query_per_class": 15},
        "memory": {"meta_batch": 25, "K": 10, "inner_steps": [1, 5, 10, 20]},
    }
    _common.write_json(out_path, headline, config, sinusoid=rows, digits=digits, memory=memory,
                       published=PAPER, png=[str(png), str(curves_png)],
                       wall_seconds=time.perf_counter() - t_start)

    print(f"\nwrote {out_path}, {png}, {curves_png}  ({time.perf_counter() - t_start:.0f} s)")
    print("\nSinusoid MSE after 1 / 5 / 10 steps (mean of test tasks)        paper (K=5)")
    for name, r in rows.items():
        m = [_fmt(v) for v in r["mse_after_steps"]["mean"]]
        ref = PAPER.get(name)
        ref_s = f"{ref[1]:.2f} / {ref[5]:.2f} / {ref[10]:.2f}" if ref else ""
        print(f"  {name:14s} {m[1]:>6s} / {m[5]:>6s} / {m[10]:>6s}            {ref_s}")
    print("Digits 5-way accuracy after adaptation (test classes 5-9)")
    for name, r in digits.items():
        print(f"  {name:22s} {r['accuracy_after_steps']['mean'][-1]:.3f}")
    print("Memory of one meta-gradient (MiB), inner steps 1 / 5 / 10 / 20")
    for mode, r in memory.items():
        vals = " / ".join(f"{r[s]['total_bytes'] / 2**20:6.2f}" if s in r else "   -  " for s in (1, 5, 10, 20))
        print(f"  {mode:14s} {vals}   ratio 20/1 = {r[20]['total_bytes'] / r[1]['total_bytes']:.2f}")


if __name__ == "__main__":
    main()
