"""Server load balancing (issue 9): mean job latency of routing policies on new server pools.

The env is ``jmeta.make("load-balancing", num_servers=5, horizon=H)``: a task is a pool of 5
servers with service rates drawn i.i.d. from U[0.2, 2] (unknown to the agent), jobs arrive as a
Poisson process at utilisation 0.8 with Exponential(1) sizes, and each step routes one job;
latency = a job's waiting + service time (FIFO), read from the env's ``info["latency"]`` for
every policy (the same physical quantity; the env's reward is its negative, unshaped).

Protocol (same tasks, same keys, same jobs). ``--test-tasks`` pools from ``tasks.test`` (never
trained on); pool ``i`` gets key ``k_i``, and every policy plays the same *evaluation trial* on it:
``TrialWrapper(env, K)`` rolled out with ``k_i`` for ``K·H`` steps (``K = --episodes``, default 3
episodes of H jobs). Arrival times and job sizes depend only on the key, never on the routing, so
every policy routes exactly the same job stream (the JSON's ``checks`` verify it). Reported: the
mean latency per job over the trial's K episodes (and per episode).

* ``round_robin``, ``jsq`` (least queued work, random ties), ``power_of_two``, ``random`` and the
  ``oracle`` (knows the rates: shortest expected delay), :mod:`jmeta.baselines.load_balancing`;
  they read the first N + 2 entries of the trial observation (the env's own observation).
* ``maml`` (MAML-TRPO, categorical MLP policy, ``jmeta.algorithms.maml_rl``): meta-trained on
  ``tasks.train``; at meta-test, per pool, ``algo.adapt`` (the library's protocol: VPG steps on
  fresh support rollouts of ``eval_episodes`` episodes of the pool, step size α then α/2) gives
  θ1 (``eval_steps=1``) and θ2 (``eval_steps=2``); θ0 (no adaptation), θ1 and θ2 then each play
  the evaluation trial. The support rollouts are extra experience on the pool that the baselines
  do not get (the oracle gets the rates instead); ``maml_adapt_returns_latency`` is the latency
  implied by ``adapt``'s own returns on its support rollouts (−return / H), a consistency check.
* ``rl2`` (RL², GRU actor-critic, ``jmeta.algorithms.rl2``, ``trial_episodes = K``): meta-trained
  on trials of ``tasks.train``; at meta-test ``algo.adapt`` plays the evaluation trial itself
  (``rl2.adapt(state, pool, k_i)`` rolls out the same TrialWrapper with the same key): the latency
  of episode 1, 2, ... K shows adaptation within the trial (its hidden state carries over).

``latency_meta_rl_adapted`` is the best of MAML after 1 or 2 steps and RL²'s last episode; the JSON
names which (``meta_rl_adapted_source``); picked on the test pools themselves, so it is a slightly
optimistic summary of the meta-RL side.

Full run (~15 min of one core): H = 50, MAML-TRPO 64×64 tanh for ``--maml-iterations`` 1000
(20 pools × 10 episodes of 50 jobs per iteration; meta-test support: 10 episodes per step), RL²
GRU-64 for ``--rl2-iterations`` 3000 (32 trials of 3 × 50 jobs per iteration), 200 test pools.
``--quick`` (the test suite's smoke run): H = 20, tiny networks, a few iterations, 16 pools; its
numbers mean nothing. Training runs in jitted chunks with a checkpoint after each
(``benchmarks/out/load_balancing/``), so a killed run continues with ``--resume``.

    python benchmarks/load_balancing.py [--quick] [--out PATH.json] [--resume]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.algorithms import maml_rl, rl2  # noqa: E402
from jmeta.baselines import load_balancing as lb  # noqa: E402
from jmeta.envs import TrialWrapper  # noqa: E402
from jmeta.rollout import rollout  # noqa: E402

BASELINES = ("random", "round_robin", "jsq", "power_of_two", "oracle")
NUM_SERVERS = 5


def maml_config(quick: bool) -> maml_rl.Config:
    common = dict(policy="categorical", outer="trpo", gamma=0.95, gae_lambda=1.0,
                  inner_lr=0.1, eval_steps=2)
    if quick:
        return maml_rl.Config(num_tasks=4, num_episodes=2, hidden_sizes=(8,), eval_episodes=2,
                              cg_iters=3, ls_backtracks=3, **common)
    return maml_rl.Config(num_tasks=20, num_episodes=10, hidden_sizes=(64, 64),
                          eval_episodes=10, **common)


def rl2_config(quick: bool, episodes: int) -> rl2.Config:
    if quick:
        return rl2.Config(num_tasks=4, trial_episodes=episodes, cell="gru", hidden_size=8,
                          num_minibatches=2, num_epochs=1, reward_scale=0.1)
    return rl2.Config(num_tasks=32, trial_episodes=episodes, cell="gru", hidden_size=64,
                      num_minibatches=4, num_epochs=4, learning_rate=1e-3, gamma=0.95,
                      gae_lambda=0.95, ent_coef=0.01, reward_scale=0.1, max_grad_norm=0.5)


def per_episode_latency(traj, episodes: int) -> jax.Array:
    """``[..., K]`` mean latency of each trial episode from ``info`` (``latency``, ``episode``)."""
    onehot = jax.nn.one_hot(traj.info["episode"], episodes) * traj.valid[..., None]
    total = jnp.sum(traj.info["latency"][..., None] * onehot, axis=-2)
    return total / jnp.maximum(jnp.sum(onehot, axis=-2), 1.0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/load_balancing.json")
    ap.add_argument("--maml-iterations", type=int, default=None, help="default 1000 (quick 1)")
    ap.add_argument("--rl2-iterations", type=int, default=None, help="default 3000 (quick 3)")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None,
                    help="default 200 (quick 16)")
    ap.add_argument("--horizon", type=int, default=None, help="jobs per episode (default 50, "
                                                             "quick 20)")
    ap.add_argument("--episodes", type=int, default=3, help="episodes of the evaluation trial")
    ap.add_argument("--chunk", type=_common.positive_int, default=100,
                    help="meta-iterations per jitted chunk")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ckpt-dir", default="benchmarks/out/load_balancing")
    args = ap.parse_args(argv)
    q = args.quick

    maml_iters = _common.pick(q, args.maml_iterations, 1, 1000)
    rl2_iters = _common.pick(q, args.rl2_iterations, 3, 3000)
    n_test = _common.pick(q, args.test_tasks, 16, 200)
    horizon = _common.pick(q, args.horizon, 20, 50)
    k_eps = args.episodes
    for name, v in (("--maml-iterations", maml_iters), ("--rl2-iterations", rl2_iters)):
        if v < 0:
            ap.error(f"{name} must be >= 0, got {v}")
    for name, v in (("--test-tasks", n_test), ("--horizon", horizon), ("--episodes", k_eps),
                    ("--chunk", args.chunk)):
        if v < 1:
            ap.error(f"{name} must be >= 1, got {v}")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    ckpt_dir = Path(args.ckpt_dir) / ("quick" if q else "full")
    phase = _common.Phases(log)

    env, tasks = jmeta.make("load-balancing", num_servers=NUM_SERVERS, horizon=horizon)
    trial_env = TrialWrapper(env, k_eps)
    steps = k_eps * horizon
    pools = {split: getattr(tasks, split).sample_batch(jax.random.key(2024), n_test)
             for split in ("test", "ood")}
    keys = jax.random.split(jax.random.key(7), n_test)

    def trial(policy, policy_params, pool, key, carry=lb.INIT_CARRY):
        return rollout(trial_env, policy, policy_params, pool, key, steps, init_carry=carry)[1]

    # --- baselines ----------------------------------------------------------------------------
    @jax.jit
    def baselines(pools):
        out = {}
        for s in BASELINES:
            act = lb.make_policy(s, NUM_SERVERS)
            traj = jax.vmap(lambda p, k: trial(act, p.rates, p, k))(pools, keys)
            out[s] = (per_episode_latency(traj, k_eps), traj.obs[..., NUM_SERVERS:NUM_SERVERS + 2])
        return out

    base = {split: baselines(p) for split, p in pools.items()}
    jobs = base["test"]["jsq"][1]  # [n_test, K·H, 2] job sizes and Δ, for the stream checks
    per_ep = {split: {s: np.asarray(v[0]) for s, v in b.items()} for split, b in base.items()}
    same_stream = max(float(jnp.max(jnp.abs(v[1] - jobs))) for v in base["test"].values())
    phase("baselines")

    # --- MAML-RL ------------------------------------------------------------------------------
    cfg_maml = maml_config(q)
    comp = maml_rl.make_components(cfg_maml, env, tasks)
    algo_maml, policy = comp.algorithm, comp.policy
    algo_maml1 = maml_rl.make(maml_rl.Config(**{**vars_of(cfg_maml), "eval_steps": 1}),
                              env, tasks)
    state_maml, hist_maml = _common.train_with_checkpoints(
        algo_maml, maml_iters, max(maml_iters, 1) if q else args.chunk, ckpt_dir, "maml",
        args.resume, log, lambda m, i: {"return_pre": float(m["return_pre"][i]),
                                        "return_post": float(m["return_post"][i])})
    phase("MAML training")
    obs_dim = NUM_SERVERS + 2

    def maml_act(params, carry, obs, key):
        return carry, policy.sample(policy.dist(params, obs[:obs_dim]), key), {}

    @jax.jit
    def maml_eval(state, pools, adapt_keys):
        def one(pool, k_adapt, k_trial):
            th1 = algo_maml1.adapt(state, pool, k_adapt).params
            res2 = algo_maml.adapt(state, pool, k_adapt)
            lat = [per_episode_latency(trial(maml_act, th, pool, k_trial, ()), k_eps)
                   for th in (state.params, th1, res2.params)]
            return jnp.stack(lat), -res2.returns / horizon
        return jax.vmap(one)(pools, adapt_keys, keys)

    adapt_keys = jax.random.split(jax.random.key(99), n_test)
    maml_out = {split: maml_eval(state_maml, p, adapt_keys) for split, p in pools.items()}
    for split, (lat, _) in maml_out.items():
        for s in range(3):
            per_ep[split][f"maml_step{s}"] = np.asarray(lat[:, s])
    maml_adapt_lat = np.asarray(maml_out["test"][1]).mean(axis=0)
    phase("MAML evaluation")

    # --- RL² -----------------------------------------------------------------------------------
    cfg_rl2 = rl2_config(q, k_eps)
    algo_rl2 = rl2.make(cfg_rl2, env, tasks)
    state_rl2, hist_rl2 = _common.train_with_checkpoints(
        algo_rl2, rl2_iters, max(rl2_iters, 1) if q else args.chunk, ckpt_dir, "rl2",
        args.resume, log, lambda m, i: {"trial_return": float(m["trial_return"][i])})
    phase("RL² training")

    @jax.jit
    def rl2_eval(state, pools):
        traj = jax.vmap(algo_rl2.adapt, in_axes=(None, 0, 0))(state, pools, keys).trajectory
        return per_episode_latency(traj, k_eps), traj.obs[..., NUM_SERVERS:NUM_SERVERS + 2]

    rl2_out = {split: rl2_eval(state_rl2, p) for split, p in pools.items()}
    for split, (lat, _) in rl2_out.items():
        per_ep[split]["rl2"] = np.asarray(lat)
    rl2_same_stream = float(jnp.max(jnp.abs(rl2_out["test"][1] - jobs)))
    phase("RL² evaluation")

    # --- summary ------------------------------------------------------------------------------
    def summary(split):
        """Mean ± SEM over pools, per episode, and paired differences (same pools and jobs:
        the per-pool difference to JSQ, and to MAML's θ0 for the adapted MAML policies)."""
        out = {}
        order = list(BASELINES) + ["maml_step0", "maml_step1", "maml_step2", "rl2"]
        jsq = per_ep[split]["jsq"].mean(axis=1)
        for name in order:
            lat = per_ep[split][name]  # [n_test, K]
            per_task = lat.mean(axis=1)
            out[name] = {**_common.mean_sem(per_task), "per_episode": lat.mean(axis=0).tolist(),
                         "minus_jsq": _common.mean_sem(per_task - jsq)}
            if name.startswith("maml_step"):
                step0 = per_ep[split]["maml_step0"].mean(axis=1)
                out[name]["minus_step0"] = _common.mean_sem(per_task - step0)
        last = per_ep[split]["rl2"]
        out["rl2"]["last_minus_first_episode"] = _common.mean_sem(last[:, -1] - last[:, 0])
        return out

    results = {split: summary(split) for split in pools}
    test = results["test"]
    headline = {f"latency_{s}": test[s]["mean"] for s in BASELINES}
    for s in range(3):
        headline[f"latency_maml_step{s}"] = test[f"maml_step{s}"]["mean"]
    for e in range(k_eps):
        headline[f"latency_rl2_episode{e + 1}"] = test["rl2"]["per_episode"][e]
    candidates = {"maml_step1": headline["latency_maml_step1"],
                  "maml_step2": headline["latency_maml_step2"],
                  f"rl2_episode{k_eps}": headline[f"latency_rl2_episode{k_eps}"]}
    finite = {k: v for k, v in candidates.items() if np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else "maml_step1"
    headline["latency_meta_rl_adapted"] = candidates[best]
    for s in ("jsq", "oracle"):
        headline[f"ood_latency_{s}"] = results["ood"][s]["mean"]
    headline["ood_latency_maml_step2"] = results["ood"]["maml_step2"]["mean"]
    headline[f"ood_latency_rl2_episode{k_eps}"] = results["ood"]["rl2"]["per_episode"][-1]

    def fields(c):
        return {f: getattr(c, f) for f in type(c).__dataclass_fields__}

    config = {
        "env": {"name": "load-balancing", **jmeta.envs.describe("load-balancing"),
                "num_servers": NUM_SERVERS, "horizon": horizon},
        "test_tasks": n_test, "task_key": 2024, "trial_key": 7, "adapt_key": 99,
        "evaluation_trial_episodes": k_eps,
        "maml": {**fields(cfg_maml), "iterations": maml_iters},
        "rl2": {**fields(cfg_rl2), "iterations": rl2_iters},
        "quick": q,
    }
    wall = phase.wall()
    _common.write_json(
        args.out, headline, config, meta_rl_adapted_source=best, methods=results,
        checks={"baselines_same_job_stream_max_abs_diff": same_stream,
                "rl2_same_job_stream_max_abs_diff": rl2_same_stream,
                "maml_adapt_returns_latency": maml_adapt_lat.tolist()},
        learning_curves={"maml": hist_maml, "rl2": hist_rl2},
        training={"maml_s": float(sum(h["seconds"] for h in hist_maml)),
                  "rl2_s": float(sum(h["seconds"] for h in hist_rl2))},
        wall_s=wall, phases_s=phase.seconds)
    plot(results, hist_maml, hist_rl2, horizon, k_eps, Path(args.out).with_suffix(".png"))

    print(f"\nload balancing, {NUM_SERVERS} servers, {n_test} pools, trial of {k_eps} × "
          f"{horizon} jobs (mean latency per job ± SEM over pools)")
    print(f"{'policy':16s} {'test':>15s} {'ood':>8s}   per episode (test)")
    for name in test:
        r, o = test[name], results["ood"][name]
        eps = " ".join(f"{x:6.3f}" for x in r["per_episode"])
        print(f"{name:16s} {r['mean']:8.3f} ± {r['sem']:.3f} {o['mean']:8.3f}   {eps}")
    for name in ("maml_step1", "maml_step2", "rl2"):
        d = test[name]["minus_jsq"]
        print(f"paired {name} − jsq: {d['mean']:+.3f} ± {d['sem']:.3f}", end="; ")
    d = test["maml_step2"]["minus_step0"]
    print(f"maml_step2 − step0: {d['mean']:+.3f} ± {d['sem']:.3f}")
    print(f"latency_meta_rl_adapted = {headline['latency_meta_rl_adapted']:.3f} ({best}); "
          f"same job stream max |Δ| {max(same_stream, rl2_same_stream):.1e}; wall {wall:.0f} s")
    return headline


def vars_of(cfg) -> dict:
    return {f: getattr(cfg, f) for f in type(cfg).__dataclass_fields__}


def plot(results, hist_maml, hist_rl2, horizon: int, k_eps: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(results["test"])
    x = np.arange(len(names))
    for off, split in ((-0.2, "test"), (0.2, "ood")):
        ax.bar(x + off, [results[split][n]["mean"] for n in names], 0.4,
               yerr=[results[split][n]["sem"] for n in names], label=split)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean latency per job")
    ax.set_yscale("log")
    ax.set_title("Load balancing: latency on new pools")
    ax.legend(fontsize=8)
    if hist_maml:
        ax2.plot([h["iteration"] for h in hist_maml],
                 [-h["return_post"] / horizon for h in hist_maml], label="MAML post-step")
    if hist_rl2:
        ax2.plot([h["iteration"] for h in hist_rl2],
                 [-h["trial_return"] / (horizon * k_eps) for h in hist_rl2], label="RL² trial")
    ax2.set_xlabel("meta-iteration")
    ax2.set_ylabel("training latency per job")
    ax2.set_title("meta-training")
    ax2.legend(fontsize=8)
    _common.save_figure(fig, path)


if __name__ == "__main__":
    main()
