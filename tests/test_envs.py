"""Environments: hand-computed transitions, API shape, jit/vmap parity, determinism, splits."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.envs.point_nav import PointNavParams, sample_square_annulus
from jmeta.envs.bandit import BanditParams
from jmeta.envs.tabular_mdp import TabularMDPParams

ALL_ENVS = ["bandit", "cold-start-rec", "load-balancing", "memory-cue", "point-nav",
            "tabular-mdp"]
# MJX tasks have their own test files (tests/test_mjx*.py): compiling MuJoCo physics is too slow
# to run every generic test below on each of them.
MJX_ENVS = ["ant-dir", "ant-dir-2d", "ant-goal", "ant-vel", "halfcheetah-dir", "halfcheetah-vel",
            "warehouse"]


def test_names_lists_every_env():
    assert jmeta.envs.names() == sorted(ALL_ENVS + MJX_ENVS)


# --- point-nav ------------------------------------------------------------------------------
def test_point_nav_step_by_hand():
    env, _ = jmeta.make("point-nav")
    params = PointNavParams(goal=jnp.array([0.3, -0.4]))
    obs, state = env.reset(jax.random.key(0), params)
    np.testing.assert_allclose(obs, [0.0, 0.0])
    # (0.5, 0.05) is clipped to (0.1, 0.05): pos = (0.1, 0.05); distance to (0.3, -0.4) is
    # sqrt(0.2² + 0.45²) = sqrt(0.2425).
    obs, state, reward, term, trunc, info = env.step(
        jax.random.key(1), state, jnp.array([0.5, 0.05]), params
    )
    np.testing.assert_allclose(obs, [0.1, 0.05], rtol=1e-6)
    np.testing.assert_allclose(reward, -np.sqrt(0.2425), rtol=1e-6)
    assert not term and not trunc
    assert state.time == 1


def test_point_nav_terminates_at_goal_and_truncates_at_horizon():
    env, _ = jmeta.make("point-nav", horizon=3)
    params = PointNavParams(goal=jnp.array([0.1, 0.0]), horizon=3)
    _, state = env.reset(jax.random.key(0), params)
    _, state, reward, term, trunc, _ = env.step(jax.random.key(1), state, jnp.array([0.1, 0.0]), params)
    assert bool(term) and not bool(trunc)
    np.testing.assert_allclose(reward, 0.0, atol=1e-7)
    params = PointNavParams(goal=jnp.array([0.4, 0.4]), horizon=3)
    _, state = env.reset(jax.random.key(0), params)
    flags = []
    for t in range(3):
        _, state, _, term, trunc, _ = env.step(jax.random.key(t), state, jnp.zeros(2), params)
        flags.append((bool(term), bool(trunc)))
    assert flags == [(False, False), (False, False), (False, True)]


def test_point_nav_task_ranges():
    _, tasks = jmeta.make("point-nav")
    goals = tasks.sample_batch(jax.random.key(0), 2000).goal
    assert goals.shape == (2000, 2)
    assert float(jnp.max(jnp.abs(goals))) <= 0.5
    assert float(jnp.max(jnp.abs(goals))) > 0.45  # the whole box is used
    ood = tasks.ood.sample_batch(jax.random.key(0), 2000).goal
    linf = jnp.max(jnp.abs(ood), axis=1)
    assert float(linf.min()) >= 0.5 - 1e-6 and float(linf.max()) <= 1.0 + 1e-6
    # goal_radius override: the box shrinks.
    _, small = jmeta.make("point-nav", goal_radius=0.2)
    assert float(jnp.max(jnp.abs(small.sample_batch(jax.random.key(0), 500).goal))) <= 0.2


def test_square_annulus_is_uniform_in_area():
    # The fraction of points with L∞ radius below r in [a, b] is (r² - a²) / (b² - a²).
    pts = jax.vmap(lambda k: sample_square_annulus(k, 0.5, 1.0))(
        jax.random.split(jax.random.key(0), 20000)
    )
    linf = np.asarray(jnp.max(jnp.abs(pts), axis=1))
    frac = np.mean(linf < 0.75)
    np.testing.assert_allclose(frac, (0.75**2 - 0.25) / (1.0 - 0.25), atol=0.015)


# --- bandit ---------------------------------------------------------------------------------
def test_bandit_pull_by_hand():
    env, _ = jmeta.make("bandit", num_arms=3)
    params = BanditParams(arm_means=jnp.array([0.0, 1.0, 0.5]))
    _, state = env.reset(jax.random.key(0), params)
    for k in range(5):
        _, _, r0, term, trunc, _ = env.step(jax.random.key(k), state, jnp.int32(0), params)
        _, _, r1, _, _, _ = env.step(jax.random.key(k), state, jnp.int32(1), params)
        assert float(r0) == 0.0 and float(r1) == 1.0
        assert bool(term) and not bool(trunc)  # one pull is one episode
    pulls = jax.vmap(lambda k: env.step(k, state, jnp.int32(2), params)[2])(
        jax.random.split(jax.random.key(1), 4000)
    )
    np.testing.assert_allclose(float(pulls.mean()), 0.5, atol=0.03)


def test_bandit_tasks_and_splits():
    _, tasks = jmeta.make("bandit", num_arms=10)
    means = tasks.sample_batch(jax.random.key(0), 1000).arm_means
    assert means.shape == (1000, 10)
    assert float(means.min()) >= 0.0 and float(means.max()) <= 1.0
    np.testing.assert_allclose(float(means.mean()), 0.5, atol=0.02)
    ood = tasks.ood.sample_batch(jax.random.key(0), 1000).arm_means
    assert float(ood.min()) >= 0.5


# --- tabular MDP ----------------------------------------------------------------------------
def test_tabular_mdp_rows_sum_to_one_and_prior():
    _, tasks = jmeta.make("tabular-mdp")
    p = tasks.sample_batch(jax.random.key(0), 200)
    assert p.transitions.shape == (200, 10, 5, 10)
    np.testing.assert_allclose(p.transitions.sum(-1), 1.0, rtol=1e-5)
    assert float(p.transitions.min()) >= 0.0
    np.testing.assert_allclose(float(p.reward_means.mean()), 1.0, atol=0.05)  # μ ~ N(1, 1)
    np.testing.assert_allclose(float(p.reward_means.std()), 1.0, atol=0.05)


def test_tabular_mdp_transition_by_hand():
    env, _ = jmeta.make("tabular-mdp", num_states=3, num_actions=2, horizon=2)
    T = jnp.zeros((3, 2, 3)).at[:, :, 2].set(1.0).at[0, 1].set(jnp.array([0.0, 1.0, 0.0]))
    params = TabularMDPParams(
        reward_means=jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        transitions=T, reward_std=jnp.float32(0.0), horizon=2,
    )
    obs, state = env.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(obs, [1.0, 0.0, 0.0])  # starts in state 0
    obs, state, r, term, trunc, _ = env.step(jax.random.key(1), state, jnp.int32(1), params)
    np.testing.assert_array_equal(obs, [0.0, 1.0, 0.0])  # P(1 | 0, 1) = 1
    assert float(r) == 2.0 and not bool(term) and not bool(trunc)
    obs, state, r, term, trunc, _ = env.step(jax.random.key(2), state, jnp.int32(0), params)
    np.testing.assert_array_equal(obs, [0.0, 0.0, 1.0])
    assert float(r) == 3.0 and not bool(term) and bool(trunc)  # H = 2 reached


# --- cold-start recommendation ----------------------------------------------------------------
def test_cold_start_click_model_by_hand():
    env, tasks = jmeta.make("cold-start-rec", num_items=4, embedding_dim=2, click_scale=2.0,
                            click_bias=-1.0)
    params = tasks.sample(jax.random.key(0))
    v = np.asarray(env.catalogue)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    expected = 1 / (1 + np.exp(-(2.0 * v @ np.asarray(params.user) - 1.0)))
    np.testing.assert_allclose(env.click_probs(params), expected, rtol=1e-5)
    _, state = env.reset(jax.random.key(0), params)
    obs, _, click, _, _, info = env.step(jax.random.key(1), state, jnp.int32(2), params)
    np.testing.assert_allclose(obs[:2], v[2])
    assert float(obs[2]) == float(click) and float(click) in (0.0, 1.0)
    np.testing.assert_allclose(info["click_prob"], expected[2], rtol=1e-5)


def test_cold_start_catalogue_fixed_across_tasks_and_builds():
    env1, tasks = jmeta.make("cold-start-rec")
    env2, _ = jmeta.make("cold-start-rec")
    np.testing.assert_array_equal(env1.catalogue, env2.catalogue)
    users = tasks.sample_batch(jax.random.key(0), 500).user
    norms = jnp.linalg.norm(users, axis=1)
    assert float(norms.min()) >= 0.5 - 1e-5 and float(norms.max()) <= 1.5 + 1e-5
    ood_norms = jnp.linalg.norm(tasks.ood.sample_batch(jax.random.key(0), 500).user, axis=1)
    assert float(ood_norms.min()) >= 1.5 - 1e-5


# --- properties shared by every env -------------------------------------------------------
def _random_episode(env, params, key, steps):
    obs, state = env.reset(key, params)
    rewards = []
    for t in range(steps):
        k_a, k_s = jax.random.split(jax.random.fold_in(key, t))
        action = env.action_space(params).sample(k_a)
        obs, state, r, *_ = env.step(k_s, state, action, params)
        rewards.append(r)
    return obs, jnp.stack(rewards)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_spaces_and_obs_shapes(name):
    env, tasks = jmeta.make(name)
    params = tasks.sample(jax.random.key(0))
    obs, state = env.reset(jax.random.key(1), params)
    assert obs.shape == env.observation_space(params).shape
    assert obs.dtype == jnp.float32
    a = env.action_space(params).sample(jax.random.key(2))
    assert bool(env.action_space(params).contains(a))
    obs, *_ = env.step(jax.random.key(3), state, a, params)
    assert obs.shape == env.observation_space(params).shape


@pytest.mark.parametrize("name", ALL_ENVS)
def test_step_jit_matches_no_jit(name):
    env, tasks = jmeta.make(name)
    params = tasks.sample(jax.random.key(0))
    _, state = env.reset(jax.random.key(1), params)
    a = env.action_space(params).sample(jax.random.key(2))
    eager = env.step(jax.random.key(3), state, a, params)
    jitted = jax.jit(env.step)(jax.random.key(3), state, a, params)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_vmap_over_tasks_matches_loop(name):
    env, tasks = jmeta.make(name)
    batch = tasks.sample_batch(jax.random.key(0), 3)
    keys = jax.random.split(jax.random.key(1), 3)
    run = lambda p, k: _random_episode(env, p, k, 4)  # noqa: E731
    vm = jax.vmap(run)(batch, keys)
    for i in range(3):
        one = run(jax.tree.map(lambda x: x[i], batch), keys[i])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], vm), one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_no_recompilation_on_second_call(name):
    env, tasks = jmeta.make(name)
    chex.clear_trace_counter()  # counters are keyed by function name, shared across params

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, action, params):
        return env.step(key, state, action, params)

    for seed in range(3):
        params = tasks.sample(jax.random.key(seed))
        _, state = env.reset(jax.random.key(seed), params)
        step(jax.random.key(seed), state, env.action_space(params).sample(jax.random.key(seed)),
             params)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_deterministic_under_fixed_key(name):
    env, tasks = jmeta.make(name)
    run = jax.jit(lambda k: _random_episode(env, tasks.sample(k), k, 3))
    chex.assert_trees_all_equal(run(jax.random.key(7)), run(jax.random.key(7)))


@pytest.mark.parametrize("name", ALL_ENVS)
def test_splits_differ(name):
    _, tasks = jmeta.make(name)
    key = jax.random.key(0)
    train, test, ood = (tasks.train.sample(key), tasks.test.sample(key), tasks.ood.sample(key))
    leaves = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    assert not np.allclose(leaves(train), leaves(test))
    assert not np.allclose(leaves(train), leaves(ood))
    assert tasks.test.ranges == tasks.train.ranges
    assert tasks.ood.active_ranges != tasks.train.active_ranges
    # the same split and key give the same task (pure sampler)
    chex.assert_trees_all_equal(tasks.test.sample(key), tasks.test.sample(key))


def test_sample_is_jittable_and_pure():
    _, tasks = jmeta.make("point-nav")
    f = jax.jit(tasks.test.sample)
    chex.assert_trees_all_equal(f(jax.random.key(3)), tasks.test.sample(jax.random.key(3)))
