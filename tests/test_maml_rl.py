"""MAML-RL: estimators, TRPO/ProMP outer loops, compile-once, a short learning run, bad configs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.algorithms import maml_rl, pg

TINY = dict(num_tasks=2, num_episodes=3, num_steps=12, hidden_sizes=(8, 8), eval_steps=2,
            eval_episodes=3)


def nav(**overrides):
    return jmeta.make("point-nav", **overrides)


def test_lvc_gradient_equals_vpg_gradient_and_ppo_equals_trpo_at_ratio_one():
    # ProMP's LVC objective and PPO's clipped objective are surrogates whose gradient at the
    # behaviour policy (ratio 1) is the policy gradient.
    env, tasks = nav()
    policy = maml_rl.make_policy(maml_rl.Config(hidden_sizes=(8,)), env)
    params = policy.init(jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (50, 2))
    d = policy.dist(params, obs)
    actions = policy.sample(d, jax.random.key(2))
    adv = jax.random.normal(jax.random.key(3), (50,))
    valid = jnp.ones(50, bool)
    old_logp = policy.log_prob(d, actions)

    def logp(p):
        return policy.log_prob(policy.dist(p, obs), actions)

    g_vpg = jax.grad(lambda p: pg.vpg_loss(logp(p), adv, valid))(params)
    g_lvc = jax.grad(lambda p: -jnp.mean(jnp.exp(logp(p) - jax.lax.stop_gradient(logp(p))) * adv))(
        params)
    g_ppo = jax.grad(lambda p: -pg.ppo_clip_objective(jnp.exp(logp(p) - old_logp), adv, 0.2,
                                                      valid))(params)
    chex.assert_trees_all_close(g_lvc, g_vpg, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(g_ppo, g_vpg, rtol=1e-5, atol=1e-7)
    # LVC's Hessian differs from VPG's by the E[∇logπ ∇logπᵀ A] sampling term: not identical.
    flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])  # noqa: E731
    v = jax.tree.map(jnp.ones_like, params)
    h_vpg = jax.jvp(jax.grad(lambda p: pg.vpg_loss(logp(p), adv, valid)), (params,), (v,))[1]
    h_lvc = jax.jvp(jax.grad(
        lambda p: -jnp.mean(jnp.exp(logp(p) - jax.lax.stop_gradient(logp(p))) * adv)),
        (params,), (v,))[1]
    assert not np.allclose(flat(h_vpg), flat(h_lvc), rtol=1e-3)


@pytest.mark.parametrize("first_order,inner_steps", [(False, 1), (True, 1), (False, 2)])
def test_gauss_newton_fisher_equals_exact_hessian_of_the_kl(first_order, inner_steps):
    # With two inner steps J = S_1 S_0 is not symmetric although each S_i is: this checks that
    # Jᵀ is applied as S_0 S_1 (the reverse order).
    env, tasks = nav()
    comp = maml_rl.make_components(
        maml_rl.Config(first_order=first_order, inner_steps=inner_steps, **TINY), env, tasks)
    params = comp.policy.init(jax.random.key(0))
    task_batch = tasks.sample_batch(jax.random.key(1), 2)
    pre, post, _ = jax.vmap(comp.task_data, in_axes=(None, 0, 0))(
        params, task_batch, jax.random.split(jax.random.key(2), 2))
    v = jax.tree.map(lambda x: jax.random.normal(jax.random.key(3), x.shape), params)
    gn = jax.jit(lambda p, v: comp.gauss_newton_fvp(p, pre, post)(v))(params, v)
    exact = jax.jit(lambda p, v: jax.jvp(jax.grad(lambda q: comp.loss_and_kl(q, pre, post)[1]),
                                         (p,), (v,))[1])(params, v)
    chex.assert_trees_all_close(gn, exact, rtol=2e-3, atol=1e-6)
    # the KL and its gradient vanish at the behaviour parameters
    kl, g = jax.value_and_grad(lambda q: comp.loss_and_kl(q, pre, post)[1])(params)
    assert abs(float(kl)) < 1e-6
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(g)) < 1e-5


def test_first_and_second_order_meta_gradients_differ_by_the_hessian_term():
    # One task, one inner step θ' = θ − α ∇L_pre(θ). Second order: g = (I − α H_pre) g' with g'
    # the outer gradient at θ'; first order: g = g'. So g_fo − g_so = α H_pre g' exactly.
    env, tasks = nav()
    alpha = 0.3
    grads = {}
    for first_order in (False, True):
        config = maml_rl.Config(first_order=first_order, inner_lr=alpha,
                                **{**TINY, "num_tasks": 1})
        comp = maml_rl.make_components(config, env, tasks)
        params = comp.policy.init(jax.random.key(0))
        task = tasks.sample_batch(jax.random.key(1), 1)
        pre, post, _ = jax.vmap(comp.task_data, in_axes=(None, 0, 0))(
            params, task, jax.random.split(jax.random.key(2), 1))
        grads[first_order] = jax.grad(lambda p: comp.loss_and_kl(p, pre, post)[0])(params)
    pre1 = jax.tree.map(lambda x: x[0, 0], pre)  # task 0, inner step 0

    def inner_loss(p):
        logp = comp.policy.log_prob(comp.policy.dist(p, pre1.obs), pre1.action)
        return pg.vpg_loss(logp, pre1.advantages, pre1.valid)

    g_outer = grads[True]  # first order: the outer gradient evaluated at θ'
    h_term = jax.jvp(jax.grad(inner_loss), (params,), (g_outer,))[1]
    diff = jax.tree.map(lambda a, b: a - b, grads[True], grads[False])
    chex.assert_trees_all_close(diff, jax.tree.map(lambda h: alpha * h, h_term),
                                rtol=1e-3, atol=1e-6)
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(h_term)) > 1e-4


@pytest.mark.parametrize("outer", ["trpo", "promp", "ppo"])
def test_one_jitted_meta_iteration_compiles_once(outer):
    env, tasks = nav()
    algo = maml_rl.make(maml_rl.Config(outer=outer, num_outer_steps=2, **TINY), env, tasks)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state):
        return algo.update(state)

    state = algo.init(jax.random.key(0))
    for _ in range(3):
        state, metrics = update(state)
    assert int(state.iteration) == 3
    assert np.isfinite(float(metrics["loss_after"]))


def test_trpo_step_respects_max_kl_in_maml():
    env, tasks = nav()
    algo = maml_rl.make(maml_rl.Config(max_kl=1e-3, **TINY), env, tasks)
    _, m = jax.jit(algo.update)(algo.init(jax.random.key(1)))
    assert float(m["kl"]) <= 1e-3
    assert float(m["loss_after"]) < float(m["loss_before"])


def test_adapt_protocol_shapes_and_determinism():
    env, tasks = nav()
    algo = maml_rl.make(maml_rl.Config(**TINY), env, tasks)
    state = algo.init(jax.random.key(0))
    task = tasks.test.sample(jax.random.key(5))
    r1 = jax.jit(algo.adapt)(state, task, jax.random.key(6))
    r2 = jax.jit(algo.adapt)(state, task, jax.random.key(6))
    assert r1.returns.shape == (3,)
    chex.assert_trees_all_equal(r1, r2)
    ev = jmeta.evaluate(algo, state, tasks.test, jax.random.key(0), num_tasks=3)
    assert ev.returns.shape == (3, 3) and ev.mean.shape == (3,)


def test_categorical_policy_on_discrete_env():
    env, tasks = jmeta.make("tabular-mdp")
    algo = maml_rl.make(maml_rl.Config(**TINY), env, tasks)
    state, m = jax.jit(algo.update)(algo.init(jax.random.key(0)))
    assert np.isfinite(float(m["return_post"]))


def test_short_point_nav_run_adapts():
    # Seeded, small batch: after meta-training, one inner step clearly improves the return.
    env, tasks = nav()
    config = maml_rl.Config(num_tasks=10, num_episodes=10, inner_lr=0.5, hidden_sizes=(32, 32),
                            eval_steps=1, eval_episodes=10, num_steps=50)
    algo = maml_rl.make(config, env, tasks)
    state = algo.init(jax.random.key(2))
    state, metrics = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=15)
    ev = jmeta.evaluate(algo, state, tasks.test, jax.random.key(3), num_tasks=10)
    before, after = (float(x) for x in ev.mean)
    assert after > before + 3.0, (before, after)
    assert float(metrics["return_post"][-3:].mean()) > float(metrics["return_post"][:3].mean())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"inner_steps": 0}, r"inner_steps: expected a positive int, got 0"),
        ({"max_kl": 0.0}, r"max_kl: expected a finite positive number, got 0.0"),
        ({"max_kl": -1.0}, r"max_kl: expected a finite positive number"),
        ({"outer": "sgd"}, r"outer: expected one of \('trpo', 'promp', 'ppo'\), got 'sgd'"),
        ({"gamma": 1.5}, r"gamma: expected a number in \[0, 1\], got 1.5"),
        ({"ls_ratio": 1.0}, r"ls_ratio: expected a number in \(0, 1\)"),
        ({"fisher": "diag"}, r"fisher: expected 'gauss-newton' or 'exact'"),
    ],
)
def test_bad_configs(overrides, message):
    with pytest.raises(ValueError, match=message):
        maml_rl.Config(**overrides)


def test_discrete_policy_on_continuous_env_is_refused():
    env, tasks = nav()
    with pytest.raises(ValueError, match=r"policy: 'categorical' needs a Discrete action space; "
                                         r"point-nav has Box"):
        maml_rl.make(maml_rl.Config(policy="categorical"), env, tasks)
    env, tasks = jmeta.make("bandit")
    with pytest.raises(ValueError, match=r"policy: 'gaussian' needs a Box action space; bandit"):
        maml_rl.make(maml_rl.Config(policy="gaussian"), env, tasks)


def test_finite_summary_leaves_diverged_tasks_out():
    from jmeta.evaluation import finite_summary

    s = finite_summary([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0]])
    np.testing.assert_allclose(s["mean"], [3.0, 3.0])
    np.testing.assert_allclose(s["std"], [np.sqrt(8 / 3), 1.0])
    np.testing.assert_allclose(s["sem"], [np.sqrt(8 / 3) / np.sqrt(3), 1.0 / np.sqrt(2)])
    np.testing.assert_array_equal(s["non_finite"], [0, 1])
