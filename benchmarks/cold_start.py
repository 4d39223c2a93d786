"""Cold-start recommendation (issue 6): CTR on interactions 6–20 after 5 support interactions.

The env is ``jmeta.make("cold-start-rec")``: a user is a task (a latent preference vector u), the
catalogue of 50 items is fixed, each interaction recommends one item and the user clicks with
probability ``σ(4·u·v + (−1))``; a session is 20 interactions. The first 5 interactions of a new
user are the support set, interactions 6–20 the query. Every method plays the *same* test users
(``--test-users``, default 1000, from ``tasks.test``) with the *same* per-user keys (user ``i``
gets ``jax.random.split(key, N)[i]``); reported: the mean CTR on interactions 1–5 and 6–20 (± SEM
over users) and the CTR at every interaction (PNG).

Methods and their exact protocols:

* ``popularity`` (no adaptation): recommends, at every interaction, the item with the highest
  mean click probability over 10,000 *training* users (``tasks.train``, never the test users),
  :mod:`jmeta.baselines.recommend`.
* ``rl2`` (adaptation by forward pass): a GRU actor-critic trained with RL² (PPO over whole
  trials) on training users, a trial being one 20-interaction session (``trial_episodes=1``). At
  meta-test it plays the session with ``algo.adapt``, sampling from its policy; the recurrent state
  carries what interactions 1–5 revealed into 6–20 (it keeps adapting after 5, by design).
* ``maml`` (one gradient step): a categorical MLP policy meta-trained with MAML-TRPO
  (``jmeta.algorithms.maml_rl``) whose inner step sees exactly what a new user gives at test time:
  one 5-interaction session (``num_episodes=1`` on users with ``horizon=5``), advantages = the
  click of each interaction (γ = 0) normalised over the 5 interactions (the linear feature
  baseline is switched off in effect with a ridge of 1e6: with 22 features and 5 points it
  would interpolate the returns and leave no advantage). Meta-test, per user: (1) θ plays
  interactions 1–5 (the support, drawn exactly as ``maml_rl.adapt`` with ``eval_steps=1,
  eval_episodes=1`` draws its support rollout); (2) one VPG step of size ``inner_lr`` on those 5
  interactions gives θ' (the JSON's ``maml_adapt_matches_library`` is the max |θ' − θ'_library| of
  ``algo.adapt`` on the same users and keys); (3) θ' continues *the same session* (same user,
  the env state after interaction 5) for interactions 6–20. ``maml_rl`` cannot express step (3)
  itself: its meta-training post-update rollouts (the outer objective) are fresh 5-interaction
  sessions of the same user, not the continuation; a feed-forward policy sees only the last item
  and its click, so the two differ only in the first observation. ``maml (0 steps)`` is the same
  session continued by θ (no gradient step), to show what the step itself buys.
* ``oracle``: knows the user vector and recommends its argmax-click-probability item at every
  interaction (the expected-CTR upper bound).

Adaptation latency per user (µs, jitted, median of ``--latency-repeats`` calls after
compilation, batch of 1 and of 1024 users; inputs already on the device): from the 5 logged
support interactions to the adapted model and the recommendation for interaction 6. RL²: the
GRU forward pass over the 6 observations that precede interaction 6 (the zero start and the 5
interactions' item and click), then the argmax item. MAML: the inner step (advantages,
``jax.grad`` of the VPG loss, the SGD update of all parameters), then the adapted policy's
argmax item. Batches of 1024 reuse the test users' support data cyclically when there are fewer.

Full run: RL² GRU-128 for 3000 meta-iterations (64 users each), MAML-TRPO with a 64×64 tanh
policy for 1000 meta-iterations (100 users each). ``--quick`` is the test suite's smoke run: a
GRU-16 for 20 iterations, a 16×16 MAML policy evaluated at its initialisation (0 meta-iterations:
compiling the MAML-TRPO update alone would take a third of the budget), 64 test users; its
numbers mean nothing. Training runs in jitted chunks with a checkpoint after each
(``benchmarks/out/cold_start/``), so a killed run continues with ``--resume``.

    python benchmarks/cold_start.py [--quick] [--out PATH.json] [--resume]
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
from jmeta.algorithms import maml, maml_rl, pg, rl2  # noqa: E402
from jmeta.baselines import recommend  # noqa: E402
from jmeta.envs.tasks import task_horizon  # noqa: E402
from jmeta.rollout import rollout  # noqa: E402

SUPPORT = 5  # interactions a new user gives before the query
METHODS = ("popularity", "rl2", "maml_0step", "maml", "oracle")
LABELS = {"popularity": "popularity", "rl2": "RL² (forward pass)", "maml_0step": "MAML (0 steps)",
          "maml": "MAML (1 step)", "oracle": "oracle"}
LATENCY_BATCHES = (1, 1024)


def rl2_config(quick: bool) -> rl2.Config:
    if quick:
        return rl2.Config(num_tasks=16, trial_episodes=1, cell="gru", hidden_size=16,
                          num_minibatches=2, num_epochs=2, learning_rate=3e-3, gae_lambda=0.3)
    return rl2.Config(num_tasks=64, trial_episodes=1, cell="gru", hidden_size=128,
                      num_minibatches=4, num_epochs=4, learning_rate=1e-3, gae_lambda=0.3,
                      gamma=0.99, ent_coef=0.01, max_grad_norm=0.5)


def maml_config(quick: bool, inner_lr: float) -> maml_rl.Config:
    common = dict(num_episodes=1, inner_steps=1, inner_lr=inner_lr, outer="trpo",
                  policy="categorical", gamma=0.0, gae_lambda=1.0, baseline_reg=1e6,
                  normalize_advantages=True, eval_steps=1, eval_episodes=1)
    if quick:
        return maml_rl.Config(num_tasks=8, hidden_sizes=(16, 16), **common)
    return maml_rl.Config(num_tasks=100, hidden_sizes=(64, 64), **common)


def rl2_record(metrics, i) -> dict:
    return {"trial_return": float(metrics["trial_return"][i]),
            "entropy": float(metrics["entropy"][i])}


def maml_record(metrics, i) -> dict:
    return {"return_pre": float(metrics["return_pre"][i]),
            "return_post": float(metrics["return_post"][i])}


def summarize(clicks: np.ndarray, click_probs: np.ndarray) -> dict:
    """Mean CTR (1–5, 6–20 ± SEM, per interaction) of ``[N, 20]`` clicks, and the expected CTR
    (mean click probability of the recommended items, a lower-variance estimate)."""
    ctr_q = np.asarray(recommend.window_ctr(clicks, SUPPORT + 1, clicks.shape[-1]))
    ctr_s = np.asarray(recommend.window_ctr(clicks, 1, SUPPORT))
    n = clicks.shape[0]
    return {
        "ctr_1_5": float(ctr_s.mean()), "ctr_1_5_sem": float(ctr_s.std() / np.sqrt(n)),
        "ctr_6_20": float(ctr_q.mean()), "ctr_6_20_sem": float(ctr_q.std() / np.sqrt(n)),
        "expected_ctr_1_5": float(click_probs[:, :SUPPORT].mean()),
        "expected_ctr_6_20": float(click_probs[:, SUPPORT:].mean()),
        "ctr_per_interaction": clicks.mean(axis=0).tolist(),
    }


def time_latency(fn, params, inputs, batch: int, repeats: int) -> tuple[dict, object]:
    """µs per user of ``fn(params, x)``, ``x`` the first ``batch`` rows of ``inputs`` (cycled)
    (jitted; compiled before timing), and the output of the first call."""
    n = jax.tree.leaves(inputs)[0].shape[0]
    idx = jnp.arange(batch) % n
    x = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), inputs)
    jax.block_until_ready(x)
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(params, x))
    compile_s = time.perf_counter() - t0
    median, times = _common.time_call(lambda: fn(params, x), repeats)
    return {"batch": batch, "us_per_user": median / batch * 1e6, "us_per_call": median * 1e6,
            "compile_s": compile_s, "times_s": times}, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/cold_start.json")
    ap.add_argument("--rl2-iterations", type=int, default=None, help="default 3000 (quick 20)")
    ap.add_argument("--maml-iterations", type=int, default=None,
                    help="default 1000 (quick 0: MAML is evaluated at its initialisation, since "
                         "compiling the MAML-TRPO update alone would take a third of the quick "
                         "budget)")
    ap.add_argument("--maml-inner-lr", type=float, default=0.1, help="MAML inner step size α")
    ap.add_argument("--test-users", type=int, default=None, help="default 1000 (quick 64)")
    ap.add_argument("--popularity-users", type=int, default=None,
                    help="training users the popularity is estimated from (default 10000)")
    ap.add_argument("--latency-repeats", type=int, default=None, help="default 30 (quick 5)")
    ap.add_argument("--chunk", type=_common.positive_int, default=100,
                    help="meta-iterations per jitted chunk")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--ckpt-dir", default="benchmarks/out/cold_start")
    args = ap.parse_args(argv)

    q = args.quick

    rl2_iters = _common.pick(q, args.rl2_iterations, 20, 3000)
    maml_iters = _common.pick(q, args.maml_iterations, 0, 1000)
    n_test = _common.pick(q, args.test_users, 64, 1000)
    n_pop = _common.pick(q, args.popularity_users, 1000, 10000)
    repeats = _common.pick(q, args.latency_repeats, 5, 30)
    chunk_rl2 = max(rl2_iters, 1) if q else args.chunk
    chunk_maml = max(maml_iters, 1) if q else args.chunk
    for name, v in (("--rl2-iterations", rl2_iters), ("--maml-iterations", maml_iters)):
        if v < 0:
            ap.error(f"{name} must be >= 0, got {v}")
    for name, v in (("--test-users", n_test), ("--popularity-users", n_pop),
                    ("--latency-repeats", repeats), ("--chunk", args.chunk)):
        if v < 1:
            ap.error(f"{name} must be >= 1, got {v}")
    if not args.maml_inner_lr > 0:
        ap.error(f"--maml-inner-lr must be > 0, got {args.maml_inner_lr}")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    ckpt_dir = Path(args.ckpt_dir) / ("quick" if q else "full")
    phase = _common.Phases(log)

    env, tasks = jmeta.make("cold-start-rec")
    horizon = task_horizon(tasks)
    # MAML's support sessions: the same users (same sampler and catalogue), 5 interactions long.
    _, tasks_support = jmeta.make("cold-start-rec", horizon=SUPPORT)

    # --- the test users, their keys (shared by every method), popularity and oracle --------
    k_eval = jax.random.key(7)
    keys = jax.random.split(k_eval, n_test)
    results, raw = {}, {}

    @jax.jit
    def baselines(k_test, k_pop):
        users = tasks.test.sample_batch(k_test, n_test)
        train_users = tasks.train.sample_batch(k_pop, n_pop)
        popularity = recommend.popularity_scores(recommend.user_click_probs(env, train_users))
        pop = recommend.evaluate("popularity", env, users, k_eval, popularity=popularity)
        orc = recommend.evaluate("oracle", env, users, k_eval)
        return users, popularity, pop, orc

    users, popularity, pop, orc = baselines(jax.random.key(2024), jax.random.key(11))
    for name, s in (("popularity", pop), ("oracle", orc)):
        raw[name] = (np.asarray(s.clicks), np.asarray(s.click_probs))
    popularity = np.asarray(popularity)
    log(f"popularity: item {int(popularity.argmax())}, mean click prob over {n_pop} training "
        f"users {popularity.max():.3f} (items range {popularity.min():.3f}–{popularity.max():.3f})")
    phase("popularity and oracle")

    # --- RL² -------------------------------------------------------------------------------
    cfg_rl2 = rl2_config(q)
    comp_rl2 = rl2.make_components(cfg_rl2, env, tasks)
    algo_rl2 = comp_rl2.algorithm
    state_rl2, hist_rl2 = _common.train_with_checkpoints(
        algo_rl2, rl2_iters, chunk_rl2, ckpt_dir, "rl2", args.resume, log, rl2_record)
    phase("RL² training")

    @jax.jit
    def rl2_eval(state, users, keys):
        traj = jax.vmap(algo_rl2.adapt, in_axes=(None, 0, 0))(state, users, keys).trajectory
        return traj.reward, traj.info["click_prob"], traj.obs, traj.action, traj.extras["log_prob"]

    clicks, probs, rl2_obs, rl2_actions, rl2_logp = rl2_eval(state_rl2, users, keys)
    raw["rl2"] = (np.asarray(clicks), np.asarray(probs))
    net = comp_rl2.network

    def rl2_adapt_one(params, obs_seq):
        """GRU over the observations before interactions 1..6 → (state, item for 6)."""
        def step(carry, o):
            carry, logits, _ = net.apply(params, carry, o)
            return carry, logits
        carry, logits = jax.lax.scan(step, net.initial_carry(), obs_seq)
        return carry, jnp.argmax(logits[-1]).astype(jnp.int32), logits[-1]

    rl2_adapt = jax.jit(jax.vmap(rl2_adapt_one, in_axes=(None, 0)))
    rl2_support = rl2_obs[:, :SUPPORT + 1]
    phase("RL² evaluation")
    timed = [time_latency(rl2_adapt, state_rl2.params, rl2_support, b, repeats)
             for b in LATENCY_BATCHES]
    rl2_latency = [t[0] for t in timed]
    # Consistency of the timed function with the rollout: the log-prob of the item actually
    # recommended at interaction 6 (the largest batch's first rows are users 0, 1, ...).
    n_rows = min(n_test, LATENCY_BATCHES[-1])
    logits6 = timed[-1][1][2][:n_rows]
    rl2_check = float(jnp.max(jnp.abs(
        jnp.take_along_axis(jax.nn.log_softmax(logits6), rl2_actions[:n_rows, SUPPORT, None],
                            -1)[:, 0] - rl2_logp[:n_rows, SUPPORT])))
    phase("RL² latency")

    # --- MAML ------------------------------------------------------------------------------
    cfg_maml = maml_config(q, args.maml_inner_lr)
    comp_maml = maml_rl.make_components(cfg_maml, env, tasks_support)
    algo_maml, policy = comp_maml.algorithm, comp_maml.policy
    state_maml, hist_maml = _common.train_with_checkpoints(
        algo_maml, maml_iters, chunk_maml, ckpt_dir, "maml", args.resume, log, maml_record)
    phase("MAML training")

    def maml_act(params, carry, obs, key):  # maml_rl's rollout policy
        return carry, policy.sample(policy.dist(params, obs), key), {}

    def vpg(params, batch):  # maml_rl's meta-test inner loss
        logp = policy.log_prob(policy.dist(params, batch.obs), batch.action)
        return pg.vpg_loss(logp, batch.advantages, batch.valid)

    def inner_step(theta, support):
        """One VPG step on one user's support session ``[1, SUPPORT]`` (maml_rl's to_batch)."""
        adv, _ = pg.advantages_with_linear_baseline(support, cfg_maml.gamma, cfg_maml.gae_lambda,
                                                    cfg_maml.baseline_reg)
        if cfg_maml.normalize_advantages:
            adv = pg.normalize_advantages(adv, support.valid)
        d = policy.dist(theta, support.obs)
        batch = jax.lax.stop_gradient(maml_rl.Batch(
            obs=support.obs, action=support.action, valid=support.valid, advantages=adv,
            old_dist=d, old_log_prob=policy.log_prob(d, support.action)))
        theta1, _ = maml.adapt(vpg, theta, batch, num_steps=1, inner_lr=cfg_maml.inner_lr,
                               reuse_batch=True)
        return theta1

    def continue_session(params, user, env_state, obs, key, num_steps):
        """The policy ``params`` plays the next ``num_steps`` interactions of a session."""
        def step(carry, t):
            state, obs = carry
            k_act, k_env = jax.random.split(jax.random.fold_in(key, t))
            item = policy.sample(policy.dist(params, obs), k_act)
            obs, state, click, _, _, info = env.step(k_env, state, item, user)
            return (state, obs), (click, info["click_prob"])
        _, (clicks, probs) = jax.lax.scan(step, (env_state, obs),
                                          jnp.arange(num_steps, dtype=jnp.uint32))
        return clicks, probs

    def maml_user(theta, user, key):
        # Keys as maml_rl.adapt (eval_steps=1, eval_episodes=1) draws them.
        k_support, k_query = jax.random.split(key, 2)
        final, support = jax.vmap(lambda kk: rollout(
            env, maml_act, theta, user.replace(horizon=SUPPORT), kk, SUPPORT))(
            jax.random.split(k_support, 1))
        theta1 = inner_step(theta, support)
        state5, obs5 = jax.tree.map(lambda x: x[0], (final.env_state, final.obs))
        rest = horizon - SUPPORT
        adapted = continue_session(theta1, user, state5, obs5, k_query, rest)
        unadapted = continue_session(theta, user, state5, obs5, k_query, rest)
        first = (support.reward[0], support.info["click_prob"][0])
        return first, adapted, unadapted, support, theta1

    n_check = min(8, n_test)

    @jax.jit
    def maml_eval(state, users, keys):
        first, adapted, unadapted, support, theta1 = jax.vmap(
            maml_user, in_axes=(None, 0, 0))(state.params, users, keys)
        few = jax.tree.map(lambda x: x[:n_check], (users.replace(horizon=SUPPORT), keys))
        lib = jax.vmap(algo_maml.adapt, in_axes=(None, 0, 0))(state, *few).params
        diff = jnp.max(jnp.stack([jnp.max(jnp.abs(a[:n_check] - b)) for a, b in
                                  zip(jax.tree.leaves(theta1), jax.tree.leaves(lib))]))
        return first, adapted, unadapted, support, diff

    first, adapted, unadapted, maml_support, maml_check = maml_eval(state_maml, users, keys)
    for name, rest in (("maml", adapted), ("maml_0step", unadapted)):
        raw[name] = (np.concatenate([np.asarray(first[0]), np.asarray(rest[0])], axis=1),
                     np.concatenate([np.asarray(first[1]), np.asarray(rest[1])], axis=1))
    phase("MAML evaluation")

    def maml_adapt_one(theta, support):
        """Inner step on the logged support → (θ', item for interaction 6)."""
        theta1 = inner_step(theta, support)
        return theta1, jnp.argmax(policy.dist(theta1, support.next_obs[0, -1])).astype(jnp.int32)

    maml_adapt = jax.jit(jax.vmap(maml_adapt_one, in_axes=(None, 0)))
    maml_latency = [time_latency(maml_adapt, state_maml.params, maml_support, b, repeats)[0]
                    for b in LATENCY_BATCHES]
    phase("MAML latency")

    # --- tables, JSON, PNG -------------------------------------------------------------------
    for name in METHODS:
        results[name] = summarize(*raw[name])
    lat = {"rl2": rl2_latency, "maml": maml_latency}
    headline = {f"{m}_ctr_6_20": results[m]["ctr_6_20"]
                for m in ("popularity", "rl2", "maml", "oracle")}
    for m in ("rl2", "maml"):
        for r in lat[m]:
            headline[f"{m}_latency_us_b{r['batch']}"] = r["us_per_user"]
    headline.update({f"{m}_ctr_1_5": results[m]["ctr_1_5"]
                     for m in ("popularity", "rl2", "maml", "oracle")})
    headline["maml_0step_ctr_6_20"] = results["maml_0step"]["ctr_6_20"]

    def fields(c):
        return {f: getattr(c, f) for f in type(c).__dataclass_fields__}

    config = {
        "env": {"name": "cold-start-rec", **jmeta.envs.describe("cold-start-rec")},
        "support_interactions": SUPPORT, "query_interactions": f"{SUPPORT + 1}-{horizon}",
        "test_users": n_test, "test_split": "test", "test_users_key": 2024, "eval_key": 7,
        "popularity_training_users": n_pop,
        "rl2": {**fields(cfg_rl2), "iterations": rl2_iters,
                "protocol": "one 20-interaction trial per user (trial_episodes=1), actions "
                            "sampled from the policy; CTR 6-20 = clicks of steps 6..20"},
        "maml": {**fields(cfg_maml), "iterations": maml_iters,
                 "meta_train_tasks": "users with horizon 5: inner step on one 5-interaction "
                                     "session, outer objective on a fresh 5-interaction session",
                 "protocol": "theta plays interactions 1-5 (support); one VPG step (inner_lr) on "
                             "them; the adapted policy continues the same session (same user, "
                             "env state after interaction 5) for interactions 6-20; actions "
                             "sampled"},
        "latency": {"batches": list(LATENCY_BATCHES), "repeats": repeats,
                    "rl2": "jit(vmap(GRU scan over the 6 observations before interaction 6 + "
                           "argmax item))",
                    "maml": "jit(vmap(one inner VPG step on the 5 logged interactions + argmax "
                            "item of the adapted policy))"},
        "quick": q,
    }
    wall = phase.wall()
    _common.write_json(
        args.out, headline, config, methods=results, latency=lat,
        popularity={"item": int(popularity.argmax()), "scores": popularity.tolist()},
        checks={"maml_adapt_matches_library": float(maml_check),
                "rl2_latency_fn_logprob_max_err": rl2_check},
        training={"rl2_s": float(sum(h["seconds"] for h in hist_rl2)),
                  "maml_s": float(sum(h["seconds"] for h in hist_maml))},
        learning_curves={"rl2": hist_rl2, "maml": hist_maml}, wall_s=wall, phases_s=phase.seconds)
    plot(results, hist_rl2, hist_maml, horizon, Path(args.out).with_suffix(".png"))

    print(f"\ncold-start recommendation, {n_test} test users, support = interactions 1-{SUPPORT}")
    print(f"{'method':18s} {'CTR 1-5':>8s} {'CTR 6-20 ± SEM':>17s} {'E[CTR] 6-20':>12s} "
          f"{'latency µs/user b1':>19s} {'b1024':>8s}")
    for m in METHODS:
        r = results[m]
        key = "rl2" if m == "rl2" else "maml" if m == "maml" else None
        lat_s = (f"{lat[key][0]['us_per_user']:19.1f} {lat[key][1]['us_per_user']:8.2f}"
                 if key else f"{'-':>19s} {'-':>8s}")
        print(f"{LABELS[m]:18s} {r['ctr_1_5']:8.3f} {r['ctr_6_20']:9.3f} ± {r['ctr_6_20_sem']:.3f} "
              f"{r['expected_ctr_6_20']:12.3f} {lat_s}")
    print(f"checks: MAML θ' vs maml_rl.adapt max |Δ| {float(maml_check):.2e}; RL² latency fn "
          f"log-prob max |Δ| {rl2_check:.2e}; wall {wall:.0f} s")
    return headline


def plot(results, hist_rl2, hist_maml, horizon: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, horizon + 1)
    for m in METHODS:
        ax.plot(x, results[m]["ctr_per_interaction"], marker="o", ms=3, label=LABELS[m],
                ls="--" if m == "maml_0step" else "-")
    ax.axvspan(0.5, SUPPORT + 0.5, color="0.9", zorder=0)
    ax.text(SUPPORT / 2 + 0.5, ax.get_ylim()[1], "support", ha="center", va="top", fontsize=8)
    ax.set_xlabel("interaction")
    ax.set_ylabel("CTR (test users)")
    ax.set_xticks(x)
    ax.set_title("Cold-start recommendation: CTR per interaction")
    ax.legend(fontsize=7)
    if hist_rl2:
        ax2.plot([h["iteration"] for h in hist_rl2],
                 [h["trial_return"] / horizon for h in hist_rl2], label="RL² (train CTR 1-20)")
    if hist_maml:
        ax2.plot([h["iteration"] for h in hist_maml],
                 [h["return_post"] / SUPPORT for h in hist_maml],
                 label="MAML post-step (train, 5 interactions)")
    ax2.set_xlabel("meta-iteration")
    ax2.set_ylabel("CTR (training users)")
    ax2.set_title("meta-training")
    ax2.legend(fontsize=7)
    _common.save_figure(fig, path)


if __name__ == "__main__":
    main()
