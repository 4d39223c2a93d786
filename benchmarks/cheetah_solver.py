"""Does the MJX solver cap change what TRPO can learn on HalfCheetah? C MuJoCo against MJX.

Single-task TRPO, exactly MAML-RL's outer step without meta-learning (``maml_rl.Config(pretrain=True)``:
64×64 tanh Gaussian policy, linear feature baseline per group of episodes, GAE λ = 1, γ = 0.99,
normalised advantages, max-KL 0.01, 10 CG iterations, 15 line-search steps), on one task:
HalfCheetah running at a target velocity of 2 m/s (jmeta's ``halfcheetah-vel`` reward
``-|v - 2| - 0.05·|a|²``, its observation and reset, brax's ``half_cheetah.xml``, frame skip 5,
H = 100), 20 groups × 10 episodes per iteration.

The same learner runs on two simulators:

* **C MuJoCo** (``mujoco.mj_step`` on one ``MjData`` per episode, the policy jitted in JAX) at the
  solver caps of ``--c-solvers`` (Newton iterations / line-search iterations; 4/50 is the MJCF's
  own setting);
* **MJX** through ``jmeta.make("halfcheetah-vel", iterations=, ls_iterations=)`` at
  ``--mjx-solvers`` (1/4 is ``MJXConfig``'s default).

Reported per setting: the mean return of the last 10 iterations (``--iterations``, default 100),
the learning curve, seconds per iteration, and for C MuJoCo the episodes that blew up (MuJoCo's
bad-acceleration warning, after which it resets the state itself, a non-finite state, or
``|qvel| > 1000``, the bound at which jmeta's MJX env ends an episode as diverged); such an
episode ends there, with reward 0 from that step, as a diverged MJX episode does.

    python benchmarks/cheetah_solver.py [--quick] [--out PATH.json] [--iterations 100]
        [--c-solvers 4/50,4/8,2/4,1/4] [--mjx-solvers 1/4,4/8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import maml_rl, pg, trpo  # noqa: E402
from jmeta.envs.mjx.base import asset_path, load_model  # noqa: E402
from jmeta.types import Trajectory  # noqa: E402

TARGET = 2.0      # m/s
MAX_QVEL = 1000.0  # jmeta's MJXEnv.max_qvel


def make_config(args) -> maml_rl.Config:
    return maml_rl.Config(num_tasks=args.groups, num_episodes=args.episodes, pretrain=True,
                          hidden_sizes=(64, 64), activation="tanh")


def c_mujoco_run(solver: tuple[int, int], args, log) -> dict:
    """TRPO on C MuJoCo with ``solver`` = (iterations, ls_iterations)."""
    m = load_model(asset_path("half_cheetah.xml"))
    m.opt.iterations, m.opt.ls_iterations = solver
    # blow-ups are counted below; keep MuJoCo from printing them and appending MUJOCO_LOG.TXT
    mujoco.set_mju_user_warning(lambda msg: None)
    frame_skip, horizon = 5, args.horizon
    torso = m.body("torso").id
    env, _ = jmeta.make("halfcheetah-vel", horizon=horizon, velocity=(TARGET, TARGET))
    config = make_config(args)
    policy = maml_rl.make_policy(config, env)
    params = policy.init(jax.random.key(args.seed))
    groups, episodes = config.num_tasks, config.num_episodes
    n = groups * episodes
    datas = [mujoco.MjData(m) for _ in range(n)]
    rng = np.random.default_rng(args.seed)
    act = jax.jit(lambda p, o, k: policy.sample(policy.dist(p, o), k))

    def observe(d):
        return np.concatenate([d.qpos[1:], d.qvel, d.xpos[torso]]).astype(np.float32)

    def collect(params, key):
        for d in datas:  # jmeta's reset: qpos0 + U(-0.1, 0.1), qvel ~ 0.1·N(0, 1)
            mujoco.mj_resetData(m, d)
            d.qpos[:] = m.qpos0 + rng.uniform(-0.1, 0.1, m.nq)
            d.qvel[:] = 0.1 * rng.standard_normal(m.nv)
            mujoco.mj_forward(m, d)
        obs_dim = observe(datas[0]).shape[0]
        obs = np.zeros((n, horizon, obs_dim), np.float32)
        next_obs = np.zeros_like(obs)
        actions = np.zeros((n, horizon, m.nu), np.float32)
        rewards = np.zeros((n, horizon), np.float32)
        valid = np.ones((n, horizon), bool)
        terminated = np.zeros((n, horizon), bool)
        blown = np.zeros(n, bool)
        o = np.stack([observe(d) for d in datas])
        for t in range(horizon):
            key, k = jax.random.split(key)
            a = np.asarray(act(params, o, k))
            ctrl = np.clip(a, -1.0, 1.0)
            for i, d in enumerate(datas):
                if blown[i]:
                    continue
                x0 = d.qpos[0]
                bad = d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number
                d.ctrl[:] = ctrl[i]
                for _ in range(frame_skip):
                    mujoco.mj_step(m, d)
                # MuJoCo resets the state itself (and warns) when the accelerations blow up
                reset = d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > bad
                if reset or not (np.all(np.isfinite(d.qvel))
                                 and np.max(np.abs(d.qvel)) <= MAX_QVEL):
                    blown[i] = True  # ends like jmeta's diverged episode: reward 0, terminal
                    terminated[i, t] = True
                    valid[i, t + 1:] = False
                    continue
                v = (d.qpos[0] - x0) / (frame_skip * m.opt.timestep)
                rewards[i, t] = -abs(v - TARGET) - 0.05 * np.sum(ctrl[i] ** 2)
            nxt = np.stack([observe(d) if not blown[i] else np.zeros(obs_dim, np.float32)
                            for i, d in enumerate(datas)])
            obs[:, t], actions[:, t], next_obs[:, t] = o, a, nxt
            o = nxt
        truncated = np.zeros((n, horizon), bool)
        truncated[:, -1] = ~blown
        shape = lambda x: jnp.asarray(x).reshape((groups, episodes) + x.shape[1:])  # noqa: E731
        traj = Trajectory(obs=shape(obs), action=shape(actions), reward=shape(rewards),
                          terminated=shape(terminated), truncated=shape(truncated),
                          next_obs=shape(next_obs), valid=shape(valid), extras={}, info={})
        return traj, int(blown.sum()), key

    @jax.jit
    def update(params, traj):
        adv = jax.vmap(lambda tr: pg.normalize_advantages(pg.advantages_with_linear_baseline(
            tr, config.gamma, config.gae_lambda, config.baseline_reg)[0], tr.valid))(traj)
        old = jax.lax.stop_gradient(policy.dist(params, traj.obs))
        old_logp = policy.log_prob(old, traj.action)

        def loss_and_kl(p):
            d = policy.dist(p, traj.obs)
            loss = pg.trpo_surrogate_loss(policy.log_prob(d, traj.action), old_logp, adv,
                                          traj.valid)
            return loss, pg.masked_mean(policy.kl(old, d), traj.valid)

        return trpo.trpo_step(lambda p: loss_and_kl(p)[0], lambda p: loss_and_kl(p)[1], params,
                              max_kl=config.max_kl, cg_iters=config.cg_iters,
                              cg_damping=config.cg_damping, backtrack_ratio=config.ls_ratio,
                              max_backtracks=config.ls_backtracks, loss_and_kl_fn=loss_and_kl)

    key = jax.random.key(args.seed + 1)
    curve, blown_total, times = [], 0, []
    for it in range(args.iterations):
        t0 = time.perf_counter()
        traj, blown, key = collect(params, key)
        curve.append(float(jnp.mean(jnp.sum(traj.reward, -1))))
        blown_total += blown
        params, _ = update(params, traj)
        times.append(time.perf_counter() - t0)
        if (it + 1) % 10 == 0 or it + 1 == args.iterations:
            log(f"C MuJoCo {solver[0]}/{solver[1]}: iteration {it + 1} return "
                f"{np.mean(curve[-10:]):8.1f}  blown-up episodes so far {blown_total}")
    return {"simulator": "c_mujoco", "solver": list(solver), "curve": curve,
            "final_return": float(np.mean(curve[-10:])), "blown_up_episodes": blown_total,
            "episodes": args.iterations * n, "sec_per_iter": float(np.median(times))}


def mjx_run(solver: tuple[int, int], args, log) -> dict:
    """The same TRPO through jmeta on the MJX env with ``solver``."""
    env, tasks = jmeta.make("halfcheetah-vel", horizon=args.horizon, velocity=(TARGET, TARGET),
                            iterations=solver[0], ls_iterations=solver[1])
    algo = maml_rl.make(make_config(args), env, tasks)
    state = algo.init(jax.random.key(args.seed))
    train = jax.jit(algo.train, static_argnames="num_iterations")
    curve, times = [], []
    chunk = min(10, args.iterations)
    while len(curve) < args.iterations:
        k = min(chunk, args.iterations - len(curve))
        t0 = time.perf_counter()
        state, metrics = train(state, num_iterations=k)
        curve += [float(x) for x in np.asarray(metrics["return_pre"])]
        times.append((time.perf_counter() - t0) / k)
        log(f"MJX {solver[0]}/{solver[1]}: iteration {len(curve)} return "
            f"{np.mean(curve[-10:]):8.1f}")
    return {"simulator": "mjx", "solver": list(solver), "curve": curve,
            "final_return": float(np.mean(curve[-10:])),
            "sec_per_iter": float(np.median(times[1:] if len(times) > 1 else times))}


def parse_solvers(text: str, ap) -> list[tuple[int, int]]:
    """A comma-separated list of ``ITERATIONS/LS_ITERATIONS`` (``''``: none)."""
    try:
        return [_common.parse_solver(item) for item in filter(None, text.split(","))]
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/cheetah_solver.json")
    ap.add_argument("--iterations", type=int, default=None, help="default 100")
    ap.add_argument("--c-solvers", default=None,
                    help="comma-separated, '' for none (default 4/50,4/8,2/4,1/4)")
    ap.add_argument("--mjx-solvers", default=None,
                    help="comma-separated, '' for none (default 1/4,4/8)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    q = args.quick
    args.iterations = args.iterations or (2 if q else 100)
    args.groups, args.episodes, args.horizon = (2, 2, 10) if q else (20, 10, 100)
    default_c, default_mjx = ("4/8", "1/4") if q else ("4/50,4/8,2/4,1/4", "1/4,4/8")
    c_solvers = parse_solvers(default_c if args.c_solvers is None else args.c_solvers, ap)
    mjx_solvers = parse_solvers(default_mjx if args.mjx_solvers is None else args.mjx_solvers, ap)
    if not c_solvers and not mjx_solvers:
        ap.error("nothing to run: --c-solvers and --mjx-solvers are both empty")
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    runs = [c_mujoco_run(s, args, log) for s in c_solvers]
    runs += [mjx_run(s, args, log) for s in mjx_solvers]
    headline = {f"{r['simulator']}_{r['solver'][0]}_{r['solver'][1]}_final_return":
                r["final_return"] for r in runs}
    headline.update({f"c_mujoco_{r['solver'][0]}_{r['solver'][1]}_blown_up_episodes":
                     r["blown_up_episodes"] for r in runs if r["simulator"] == "c_mujoco"})
    config = {"iterations": args.iterations, "groups": args.groups, "episodes": args.episodes,
              "horizon": args.horizon, "target_velocity": TARGET, "seed": args.seed,
              "trpo": "maml_rl.Config(pretrain=True) defaults", "quick": q}
    _common.write_json(args.out, headline, config, runs=runs)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        ax.plot(np.arange(1, len(r["curve"]) + 1), r["curve"],
                label=f"{r['simulator']} {r['solver'][0]}/{r['solver'][1]}")
    ax.set_xlabel("TRPO iteration")
    ax.set_ylabel(f"return (H={args.horizon})")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -300))
    ax.legend()
    ax.set_title("HalfCheetah, target velocity 2 m/s: TRPO by simulator and solver cap")
    _common.save_figure(fig, Path(args.out).with_suffix(".png"))

    print(f"\n{'simulator':10s} {'solver':>7s} {'final return':>13s} {'blown up':>9s} "
          f"{'s/iter':>7s}")
    for r in runs:
        print(f"{r['simulator']:10s} {r['solver'][0]:>3d}/{r['solver'][1]:<3d} "
              f"{r['final_return']:13.1f} {str(r.get('blown_up_episodes', '-')):>9s} "
              f"{r['sec_per_iter']:7.2f}")
    return headline


if __name__ == "__main__":
    main()
