"""MAML-TRPO on the MJX tasks: HalfCheetah velocity and direction (Finn et al. 2017, Fig. 5) and
the warehouse robot; the speed of a whole meta-iteration at the pytorch-maml-rl configuration.

Learning. For each task suite, MAML-TRPO (second order, one inner VPG step, linear feature
baseline, GAE λ = 1, γ = 0.99, normalised advantages, max-KL 0.01, 64×64 tanh Gaussian policy,
inner step α = 0.1 as pytorch-maml-rl's HalfCheetah configs; the HalfCheetah suites with MJX's
solver at 4 / 8 iterations, ``--cheetah-solver``, see :data:`CHEETAH_SOLVER`, and the paper's
0.01 s env step, ``--cheetah-frame-skip``, see :data:`CHEETAH_FRAME_SKIP`) is meta-trained for
``--iterations`` meta-iterations (``--outer promp`` swaps the TRPO outer loop for ProMP's: the
LVC inner objective and PPO's clipped outer objective, 5 Adam steps of 1e-3 per iteration, as
Rothfuss et al. 2019) at a CPU-sized protocol (``--num-tasks`` tasks × ``--episodes``
trajectories × H = ``--horizon``; the paper used 40 × 20 × H = 200 for 500+ iterations), then
evaluated with the paper's meta-test protocol on 40 fresh test tasks: 3 VPG steps, each on
``--eval-episodes`` new trajectories, step α then α/2, at the training horizon and, for the
comparison with the paper's H = 200 numbers, again at H = 200 (the same parameters). The task
batch is sharded over ``--devices`` host devices (default: one per core, see :func:`mesh_for`).
Training runs in jitted chunks with a checkpoint after each (``benchmarks/out/maml_rl_mjx/``): a
killed run continues with ``--resume``.

Warehouse: the same table, and the return per friction bin of the test tasks (80 tasks).

Speed (``cheetah_vel_sec_per_iter``): one MAML-TRPO meta-iteration on halfcheetah-vel at
pytorch-maml-rl's configuration (40 tasks × 20 trajectories × H = 100 at gym's frame skip 5, 64×64
tanh, TRPO with 10 CG iterations and 15 line-search steps), the median over 3 iterations after
compilation. The issue's
reference is ~11 s per iteration for a PyTorch implementation on C MuJoCo with 2 sampler
processes on this machine (not rerun here).

    python benchmarks/maml_rl_mjx.py [--quick] [--out PATH.json] [--suites vel,dir,warehouse]
        [--iterations vel=300,dir=200,warehouse=150] [--outer trpo|promp|ppo] [--resume]
        [--skip-speed]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _host_devices  # noqa: E402,F401  (one host device per core; before JAX starts)

import jax
import numpy as np
from jax.sharding import Mesh

import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import maml_rl  # noqa: E402

PAPER = {  # Finn et al. 2017, Fig. 5 (shared/reference/published.md), MAML, H = 200
    "vel": [-129.53, -78.57, -66.62, -60.78],
    "dir": [-50.69, 293.19, 313.48, 315.65],
}
ENV_NAMES = {"vel": "halfcheetah-vel", "dir": "halfcheetah-dir", "warehouse": "warehouse"}
DEFAULT_ITERATIONS = {"vel": 300, "dir": 200, "warehouse": 150}


DEVICES = 1  # set by --devices


def mesh_for(num_tasks: int) -> Mesh | None:
    """The ``"tasks"`` mesh over ``--devices`` host devices (``None`` on one).

    Sharded MJX programs on CPU host devices deadlocked in sessions 4–10 (0 % CPU, never
    returning): XLA:CPU's thread pool had as many threads as there were devices. ``import jmeta``
    now sizes it (``jmeta/_host_threads.py``), and the speed configuration runs on 2 devices in
    9.2 s per meta-iteration against 16.0 s on one (benchmarks/RESULTS.md).
    """
    devices = min(DEVICES, len(jax.devices()))
    if devices < 2 or num_tasks % devices:
        return None
    return Mesh(jax.devices()[:devices], ("tasks",))


CHEETAH_FRAME_SKIP = 1
"""Physics steps (0.01 s each) per HalfCheetah env step in the learning suites: 1, the MAML paper's.

The authors' rllab cheetah steps once per action (rllab's ``MujocoEnv`` takes a frame skip from
the MJCF, and rllab's ``half_cheetah.xml`` sets none), so the paper's H = 200 is 2 s of
simulation. jmeta's env default, 5, is gym's and pytorch-maml-rl's (H = 200 is 10 s). At 5,
second-order MAML-TRPO on halfcheetah-dir at the paper's 40 x 20 x H = 200 showed no adaptation
in 250 iterations; at 1 the post-update return passed +190 within 50 (benchmarks/RESULTS.md,
session 14). The speed measurement keeps pytorch-maml-rl's configuration (frame skip 5)."""


CHEETAH_SOLVER = (4, 8)
"""Newton iterations / line-search iterations of the HalfCheetah suites' training and evaluation.

The MJX default (1 / 4, ``MJXConfig``) is 3.2x faster but changes what is learnable.
``benchmarks/cheetah_solver.py`` runs single-task TRPO (target velocity 2 m/s, 20 x 10 episodes x
H = 100 per iteration, MAML-RL's TRPO) from about -213. After 100 iterations:

* C MuJoCo on the same MJCF: -173 with the MJCF's solver (4 / 50), -176 with 4 / 8, -186 with
  2 / 4, and -211 with 1 / 4, where 27 of 20,000 episodes blew up;
* MJX: -197 at 1 / 4 and -174 at 4 / 8 (benchmarks/RESULTS.md)."""


def env_options(suite: str, args) -> dict:
    """``jmeta.make`` options of a suite: the horizon, and the solver caps for HalfCheetah."""
    options = {"horizon": args.horizon}
    if suite in ("vel", "dir") and args.cheetah_solver != "env":
        iterations, ls_iterations = args.cheetah_solver
        options.update(iterations=iterations, ls_iterations=ls_iterations)
    if suite in ("vel", "dir"):
        options.update(frame_skip=args.cheetah_frame_skip)
    return options


def suite_config(args) -> maml_rl.Config:
    return maml_rl.Config(
        num_tasks=args.num_tasks, num_episodes=args.episodes, inner_lr=args.inner_lr,
        first_order=args.first_order, max_kl=args.max_kl,
        hidden_sizes=(64, 64), activation="tanh", outer=args.outer, eval_steps=3,
        eval_episodes=args.eval_episodes)


def friction_of(tasks_batch) -> np.ndarray:
    """The per-task floor friction of a batch of warehouse tasks."""
    friction = getattr(tasks_batch, "friction", None)
    if friction is None:
        friction = tasks_batch.physics.geom_friction[:, 0, 0]
    return np.asarray(friction)


EVAL_CHUNK = 8  # tasks per evaluation call, see evaluate()


def evaluate(algo, state, tasks, num_tasks: int, key: int = 123):
    """Meta-test on ``num_tasks`` tasks, in calls of :data:`EVAL_CHUNK` tasks (chunk ``c`` draws
    its tasks with ``fold_in(key, c)``).

    Chunks bound the memory of one call. (One call over 80 warehouse tasks used to hang: XLA:CPU's
    thread pool was too small, which ``import jmeta`` now fixes; the chunked evaluation keeps
    earlier runs' numbers reproducible.) The state is put on one device.
    """
    state = jax.device_put(state, jax.devices()[0])
    fn = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))
    chunk = min(EVAL_CHUNK, num_tasks)
    if num_tasks % chunk:
        raise ValueError(f"num_tasks {num_tasks} is not a multiple of {chunk}")
    parts = [fn(algo, state, tasks, jax.random.fold_in(jax.random.key(key), c), chunk)
             for c in range(num_tasks // chunk)]
    ev = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)
    returns = np.asarray(ev.returns)
    finite = np.isfinite(returns)
    summary = jmeta.evaluation.finite_summary(returns)
    both = finite[:, 0] & finite[:, 1]
    gain = returns[both, 1] - returns[both, 0]  # paired, per task: after one step minus before
    return ev, {"mean": summary["mean"].tolist(), "sem": summary["sem"].tolist(),
                "diverged_tasks": summary["non_finite"].tolist(),
                "gain_step1": float(gain.mean()) if gain.size else None,
                "gain_step1_sem": float(gain.std() / np.sqrt(gain.size)) if gain.size else None,
                "returns": [[float(x) if np.isfinite(x) else None for x in row]
                            for row in returns]}


def run_suite(suite: str, args, iterations: int, log) -> dict:
    name = ENV_NAMES[suite]
    config = suite_config(args)
    env, tasks = jmeta.make(name, **env_options(suite, args))
    algo = maml_rl.make(config, env, tasks, mesh=mesh_for(config.num_tasks))

    def record(metrics, i):
        return {"return_pre": float(metrics["return_pre"][i]),
                "return_post": float(metrics["return_post"][i])}

    ckpt_dir = Path(args.ckpt_dir) / ("quick" if args.quick else "full")
    state, history = _common.train_with_checkpoints(
        algo, iterations, args.chunk, ckpt_dir, suite, args.resume, log, record)
    out = {"env": name, "iterations": int(state.iteration), "learning_curve": history,
           "sec_per_iter_median": float(np.median([h["seconds"] for h in history[1:]]))
           if len(history) > 1 else None}
    num_test = args.test_tasks * (2 if suite == "warehouse" else 1)
    ev, out["eval"] = evaluate(algo, state, tasks.test, num_test)
    log(f"{suite}: H={args.horizon} return after 0..3 steps "
        f"{np.round(out['eval']['mean'], 2).tolist()}")
    if suite == "warehouse":
        friction = friction_of(ev.tasks)
        edges = np.linspace(friction.min(), friction.max() + 1e-6, 5)
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (friction >= lo) & (friction < hi)
            r = np.asarray(ev.returns)[sel]
            bins.append({"friction": [float(lo), float(hi)], "tasks": int(sel.sum()),
                         "return_step0": float(np.mean(r[:, 0])) if sel.any() else None,
                         "return_step1": float(np.mean(r[:, 1])) if sel.any() else None})
        out["friction_bins"] = bins
        ood_ev, out["eval_ood"] = evaluate(algo, state, tasks.ood, num_test)
    if args.paper_horizon and args.paper_horizon != args.horizon and suite in PAPER:
        env_h, tasks_h = jmeta.make(name, **{**env_options(suite, args),
                                             "horizon": args.paper_horizon})
        algo_h = maml_rl.make(config, env_h, tasks_h, mesh=mesh_for(config.num_tasks))
        _, out[f"eval_h{args.paper_horizon}"] = evaluate(algo_h, state, tasks_h.test,
                                                        args.test_tasks)
        log(f"{suite}: H={args.paper_horizon} return after 0..3 steps "
            f"{np.round(out[f'eval_h{args.paper_horizon}']['mean'], 2).tolist()}")
    return out


def speed(args, log) -> dict:
    """Seconds per MAML-TRPO meta-iteration at the pytorch-maml-rl configuration."""
    num_tasks, episodes = (4, 4) if args.quick else (40, 20)
    config = maml_rl.Config(num_tasks=num_tasks, num_episodes=episodes, inner_lr=0.1,
                            hidden_sizes=(64, 64), activation="tanh", outer="trpo",
                            cg_iters=10, ls_backtracks=15)
    env, tasks = jmeta.make("halfcheetah-vel", horizon=100)
    mesh = mesh_for(num_tasks)
    algo = maml_rl.make(config, env, tasks, mesh=mesh)
    state = algo.init(jax.random.key(0))
    update = jax.jit(algo.update)
    t0 = time.perf_counter()
    compiled = update.lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state)
    jax.block_until_ready(m)
    times = []
    for _ in range(1 if args.quick else 3):
        t0 = time.perf_counter()
        state, m = compiled(state)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    steps = 2 * num_tasks * episodes * 100
    out = {"sec_per_iter": float(np.median(times)), "times": times, "compile_s": compile_s,
           "num_tasks": num_tasks, "num_episodes": episodes, "horizon": 100,
           "env_steps_per_iter": steps, "env_steps_per_s": steps / float(np.median(times)),
           "devices": mesh.devices.size if mesh is not None else 1}
    log(f"speed: {out['sec_per_iter']:.2f} s per meta-iteration "
        f"({num_tasks}x{episodes}xH100, compile {compile_s:.1f} s)")
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in results if "eval" in results[s]]
    fig, axes = plt.subplots(2, max(len(suites), 1), figsize=(5 * max(len(suites), 1), 8),
                             squeeze=False)
    for j, s in enumerate(suites):
        r = results[s]
        ax = axes[0, j]
        for key, label in (("eval", f"jmeta H={r.get('horizon')}"),
                           ("eval_h200", "jmeta H=200"), ("eval_ood", "jmeta OOD")):
            if key in r:
                ax.errorbar(range(4), r[key]["mean"], yerr=r[key]["sem"], marker="o",
                            label=label)
        if s in PAPER:
            ax.plot(range(4), PAPER[s], "k--", label="paper MAML (H=200)")
        ax.set_title(f"{r['env']}: return after adaptation"); ax.set_xlabel("adaptation steps")
        ax.set_ylabel("mean return (test tasks)"); ax.legend(fontsize=7)
        ax = axes[1, j]
        h = r["learning_curve"]
        ax.plot([x["iteration"] for x in h], [x["return_pre"] for x in h], label="pre-update")
        ax.plot([x["iteration"] for x in h], [x["return_post"] for x in h], label="post-update")
        ax.set_xlabel("meta-iteration"); ax.set_ylabel("train return"); ax.legend(fontsize=7)
    _common.save_figure(fig, path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/maml_rl_mjx.json")
    ap.add_argument("--suites", default=None, help="comma-separated subset of vel,dir,warehouse")
    ap.add_argument("--iterations", default=None,
                    help="per suite, e.g. vel=300,dir=200 (default "
                         + ",".join(f"{k}={v}" for k, v in DEFAULT_ITERATIONS.items()) + ")")
    ap.add_argument("--horizon", type=int, default=None, help="training horizon (default 100)")
    ap.add_argument("--paper-horizon", type=int, default=200,
                    help="also evaluate at this horizon (the paper's; 0: skip)")
    ap.add_argument("--num-tasks", type=int, default=None, help="meta-batch (default 20)")
    ap.add_argument("--episodes", type=int, default=None, help="trajectories per task (10)")
    ap.add_argument("--eval-episodes", type=int, default=None, help="default 20")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None, help="default 40")
    ap.add_argument("--inner-lr", type=float, default=0.1)
    ap.add_argument("--first-order", action="store_true",
                    help="FOMAML-TRPO (first-order meta-gradient) instead of second order")
    ap.add_argument("--max-kl", type=float, default=1e-2, help="TRPO trust region (0.01)")
    ap.add_argument("--outer", choices=maml_rl.OUTER_LOOPS, default="trpo",
                    help="outer loop: trpo (MAML-TRPO, default), promp (ProMP: LVC inner "
                         "objective, clipped outer objective with 5 Adam steps, ProMP's "
                         "defaults) or ppo")
    ap.add_argument("--cheetah-frame-skip", type=_common.positive_int, default=CHEETAH_FRAME_SKIP,
                    help="physics steps (0.01 s) per HalfCheetah env step of the learning suites "
                         f"(default {CHEETAH_FRAME_SKIP}, the MAML paper's; see "
                         "CHEETAH_FRAME_SKIP)")
    ap.add_argument("--cheetah-solver", default=CHEETAH_SOLVER,
                    type=lambda s: s if s == "env" else _common.parse_solver(s),
                    help="ITERATIONS/LS_ITERATIONS of the HalfCheetah suites' MJX solver "
                         f"(default {CHEETAH_SOLVER[0]}/{CHEETAH_SOLVER[1]}, see CHEETAH_SOLVER), "
                         "or 'env' for the env default (1/4); the speed measurement always uses "
                         "the env default")
    ap.add_argument("--chunk", type=_common.positive_int, default=10)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the speed measurement")
    ap.add_argument("--ckpt-dir", default="benchmarks/out/maml_rl_mjx")
    ap.add_argument("--devices", type=int, default=len(jax.devices()),
                    help="host devices to shard the task batch over (default: all, one per core; "
                         "see mesh_for)")
    args = ap.parse_args(argv)
    global DEVICES
    DEVICES = args.devices
    q = args.quick
    args.horizon = args.horizon or (10 if q else 100)
    args.num_tasks = args.num_tasks or (2 if q else 20)
    args.episodes = args.episodes or (2 if q else 10)
    args.eval_episodes = args.eval_episodes or (2 if q else 20)
    args.test_tasks = args.test_tasks or (2 if q else 40)
    if q:
        args.paper_horizon = 0
    suites = [] if args.speed_only else (
        args.suites or ("dir" if q else "vel,dir,warehouse")).split(",")
    unknown = set(suites) - set(ENV_NAMES)
    if unknown:
        ap.error(f"unknown suites {sorted(unknown)}; valid: {', '.join(ENV_NAMES)}")
    iterations = {k: (2 if q else v) for k, v in DEFAULT_ITERATIONS.items()}
    for item in (args.iterations.split(",") if args.iterations else []):
        k, v = item.split("=")
        iterations[k] = int(v)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    results = {}
    for s in suites:
        if ENV_NAMES[s] not in jmeta.envs.names():
            log(f"{s}: env {ENV_NAMES[s]!r} is not registered; skipped")
            continue
        results[s] = run_suite(s, args, iterations[s], log)
        results[s]["horizon"] = args.horizon
    speed_result = None if args.skip_speed else speed(args, log)

    headline = {}
    prefix = {"vel": "cheetah_vel", "dir": "cheetah_dir", "warehouse": "warehouse"}
    for s, r in results.items():
        for i in range(4):
            headline[f"{prefix[s]}_return_step{i}"] = r["eval"]["mean"][i]
        if "eval_h200" in r:
            for i in range(4):
                headline[f"{prefix[s]}_h200_return_step{i}"] = r["eval_h200"]["mean"][i]
    if speed_result:
        headline["cheetah_vel_sec_per_iter"] = speed_result["sec_per_iter"]
    config = {"suites": suites, "iterations": {s: iterations[s] for s in suites},
              "horizon": args.horizon, "paper_horizon": args.paper_horizon,
              "maml": dataclasses.asdict(suite_config(args)), "test_tasks": args.test_tasks,
              "eval_lr": f"alpha={args.inner_lr} then alpha/2", "quick": q,
              "solver": {"halfcheetah": args.cheetah_solver if args.cheetah_solver == "env"
                         else "/".join(map(str, args.cheetah_solver)),
                         "warehouse": "its config's default (newton 6/6, elliptic cones)",
                         "halfcheetah_frame_skip": args.cheetah_frame_skip,
                         "speed_frame_skip": "env default (5, gym's)",
                         "speed": "MJXConfig default (newton, iterations=1, ls_iterations=4)"},
              "devices": args.devices}
    _common.write_json(args.out, headline, config, results=results, speed=speed_result,
                       paper=PAPER)
    if results:
        plot(results, Path(args.out).with_suffix(".png"))

    print(f"\n{'suite':10s} {'H':>4s} {'iters':>5s} {'step 0':>9s} {'step 1':>9s} {'step 2':>9s} "
          f"{'step 3':>9s}   paper (H=200)")
    for s, r in results.items():
        for key, h in (("eval", args.horizon), ("eval_h200", 200), ("eval_ood", "ood")):
            if key in r:
                row = " ".join(f"{x:9.2f}" for x in r[key]["mean"])
                # the paper's numbers are at H = 200, beside whichever row is at 200
                print(f"{s:10s} {str(h):>4s} {r['iterations']:5d} {row}   "
                      f"{PAPER.get(s, '') if h == 200 else ''}")
        for b in r.get("friction_bins", []):
            print(f"  friction [{b['friction'][0]:.2f}, {b['friction'][1]:.2f}) "
                  f"{b['tasks']:3d} tasks: step0 {b['return_step0']}, step1 {b['return_step1']}")
    if speed_result:
        print(f"\ncheetah_vel_sec_per_iter: {speed_result['sec_per_iter']:.2f} s "
              f"(target <= 11 s; PyTorch on C MuJoCo ~11 s on this machine)")
    return headline


if __name__ == "__main__":
    main()
