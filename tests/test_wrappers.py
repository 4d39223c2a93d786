"""Wrappers: RL² trial semantics, per-task observation noise, time limit, auto-reset."""

import chex
import pytest
import jax
import jax.numpy as jnp
import numpy as np

import jmeta
from jmeta.envs import AutoReset, RescaleAction, TimeLimit, TrialWrapper
from jmeta.envs.bandit import BanditParams
from jmeta.envs.point_nav import PointNavParams


def test_trial_wrapper_bandit_by_hand():
    env, _ = jmeta.make("bandit", num_arms=3)
    trial = TrialWrapper(env, num_episodes=3)
    params = BanditParams(arm_means=jnp.array([0.0, 1.0, 0.0]))
    obs, state = trial.reset(jax.random.key(0), params)
    # [inner obs (1), one-hot prev action (3), prev reward, done]
    np.testing.assert_array_equal(obs, [0, 0, 0, 0, 0, 0])
    obs, state, r, term, trunc, info = trial.step(jax.random.key(1), state, jnp.int32(1), params)
    np.testing.assert_array_equal(obs, [0, 0, 1, 0, 1, 1])
    assert float(r) == 1.0 and not bool(term) and not bool(trunc)
    assert int(info["episode"]) == 0 and bool(info["episode_done"])
    obs, state, r, term, _, info = trial.step(jax.random.key(2), state, jnp.int32(0), params)
    np.testing.assert_array_equal(obs, [0, 1, 0, 0, 0, 1])
    assert int(info["episode"]) == 1 and not bool(term)
    obs, state, r, term, trunc, info = trial.step(jax.random.key(3), state, jnp.int32(2), params)
    assert int(info["episode"]) == 2
    assert bool(term) and not bool(trunc)  # the trial (meta-episode) ends after 3 episodes
    # the task never changed
    chex.assert_trees_all_equal(params.arm_means, jnp.array([0.0, 1.0, 0.0]))


def test_trial_wrapper_keeps_task_and_marks_episode_ends():
    env, tasks = jmeta.make("point-nav", horizon=4)
    trial = TrialWrapper(env, num_episodes=2)
    params = PointNavParams(goal=jnp.array([0.45, 0.45]), horizon=4)
    obs, state = trial.reset(jax.random.key(0), params)
    assert obs.shape == trial.observation_space(params).shape == (2 + 2 + 2,)
    dones, episodes, terms, positions = [], [], [], []
    for t in range(8):
        a = jnp.array([0.1, 0.05])
        obs, state, r, term, trunc, info = trial.step(jax.random.key(t), state, a, params)
        np.testing.assert_allclose(obs[2:4], a)  # previous action
        np.testing.assert_allclose(obs[4], r)  # previous reward
        dones.append(float(obs[5]))
        episodes.append(int(info["episode"]))
        terms.append(bool(term))
        positions.append(np.asarray(obs[:2]))
    assert dones == [0, 0, 0, 1, 0, 0, 0, 1]
    assert episodes == [0, 0, 0, 0, 1, 1, 1, 1]
    assert terms == [False] * 7 + [True]
    # after the episode boundary the point is back at the origin (same task, new episode)
    np.testing.assert_allclose(positions[3], [0.0, 0.0])
    np.testing.assert_allclose(positions[4], [0.1, 0.05], rtol=1e-6)


def test_observation_noise_scale_is_a_task_field():
    env, tasks = jmeta.make("point-nav", obs_noise=(0.0, 0.5))
    batch = tasks.sample_batch(jax.random.key(0), 500)
    assert batch.obs_noise.shape == (500,)
    assert 0.0 <= float(batch.obs_noise.min()) and float(batch.obs_noise.max()) <= 0.5
    assert tasks.ranges["obs_noise"] == (0.0, 0.5)
    # zero noise reproduces the clean env exactly; noise of scale s has std s.
    clean, _ = jmeta.make("point-nav")
    p = jmeta.envs.NoisyParams(env_params=batch.env_params, obs_noise=jnp.zeros(500))
    p1 = jax.tree.map(lambda x: x[0], p)
    noisy_obs, _ = env.reset(jax.random.key(1), p1)
    np.testing.assert_array_equal(noisy_obs, clean.reset(jax.random.key(1), p1.env_params)[0])
    p2 = p1.replace(obs_noise=jnp.float32(0.3))
    obs = jax.vmap(lambda k: env.reset(k, p2)[0])(jax.random.split(jax.random.key(2), 4000))
    np.testing.assert_allclose(float(obs.std()), 0.3, rtol=0.05)


def test_time_limit_truncates():
    env, tasks = jmeta.make("point-nav")
    env = TimeLimit(env, max_steps=2)
    params = PointNavParams(goal=jnp.array([0.4, 0.4]))
    _, state = env.reset(jax.random.key(0), params)
    _, state, _, term, trunc, _ = env.step(jax.random.key(1), state, jnp.zeros(2), params)
    assert not bool(trunc)
    _, state, _, term, trunc, _ = env.step(jax.random.key(2), state, jnp.zeros(2), params)
    assert bool(trunc) and not bool(term)


def test_auto_reset_restarts_and_reports_final_obs():
    env, _ = jmeta.make("point-nav", horizon=2)
    env = AutoReset(env)
    params = PointNavParams(goal=jnp.array([0.4, 0.4]), horizon=2)
    _, state = env.reset(jax.random.key(0), params)
    a = jnp.array([0.1, 0.1])
    obs, state, _, _, trunc, info = env.step(jax.random.key(1), state, a, params)
    np.testing.assert_allclose(obs, [0.1, 0.1])
    np.testing.assert_allclose(info["final_obs"], obs)
    obs, state, _, _, trunc, info = env.step(jax.random.key(2), state, a, params)
    assert bool(trunc)
    np.testing.assert_allclose(obs, [0.0, 0.0])  # a new episode
    np.testing.assert_allclose(info["final_obs"], [0.2, 0.2])
    assert int(state.time) == 0


def test_rescale_action_maps_unit_box_onto_env_box_by_hand():
    env, _ = jmeta.make("point-nav")
    wrapped = RescaleAction(env)
    assert wrapped.action_space().low.tolist() == [-1.0, -1.0]
    assert wrapped.action_space().high.tolist() == [1.0, 1.0]
    task = PointNavParams(goal=jnp.array([0.3, -0.2]))
    obs, state = wrapped.reset(jax.random.key(0), task)
    # a = (0.5, -2.0): 0.5 -> -0.1 + 1.5/2 * 0.2 = 0.05; -2.0 is clipped to -1 -> -0.1.
    obs, state, reward, *_ = wrapped.step(jax.random.key(1), state, jnp.array([0.5, -2.0]), task)
    np.testing.assert_allclose(obs, [0.05, -0.1], atol=1e-6)
    np.testing.assert_allclose(reward, -np.hypot(0.05 - 0.3, -0.1 + 0.2), rtol=1e-6)


def test_rescale_action_rejects_discrete_and_unbounded_spaces():
    env, _ = jmeta.make("bandit")
    with pytest.raises(ValueError, match="needs a Box action space"):
        RescaleAction(env)

    class Unbounded(jmeta.envs.Wrapper):
        def action_space(self, params=None):
            return jmeta.envs.Box(-np.inf, np.inf, (2,))

    nav, _ = jmeta.make("point-nav")
    with pytest.raises(ValueError, match="needs finite action bounds"):
        RescaleAction(Unbounded(nav))


def test_make_rescale_actions_option():
    import jmeta

    env, _ = jmeta.make("point-nav", rescale_actions=True)
    space = env.action_space()
    assert float(space.low.min()) == -1.0 and float(space.high.max()) == 1.0
    assert "rescale_actions" in jmeta.envs.describe("point-nav")
    with pytest.raises(ValueError, match="rescale_actions: expected True or False"):
        jmeta.make("point-nav", rescale_actions="yes")
    with pytest.raises(ValueError, match="RescaleAction needs a Box action space"):
        jmeta.make("bandit", rescale_actions=True)
