"""The gymnax adapter on CartPole with the pole length as the task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gymnax = pytest.importorskip("gymnax", reason="gymnax is in the dev extra; install .[dev]")

from jmeta.envs.gymnax_adapter import from_gymnax  # noqa: E402
from jmeta.envs.spaces import Box, Discrete  # noqa: E402
from jmeta.rollout import rollout_batch  # noqa: E402


def make_cartpole():
    genv, default = gymnax.make("CartPole-v1")

    def sample(key, ranges):
        lo, hi = ranges["length"]
        length = jax.random.uniform(key, minval=lo, maxval=hi)
        return default.replace(length=length, polemass_length=default.masspole * length)

    return genv, default, from_gymnax(genv, sample, {"length": (0.3, 0.7)}, {"length": (0.8, 1.2)})


def test_gymnax_cartpole_tasks_and_steps_match_gymnax():
    genv, default, (env, tasks) = make_cartpole()
    assert env.name == "gymnax:CartPole-v1"
    assert isinstance(env.action_space(), Discrete) and env.action_space().n == 2
    assert isinstance(env.observation_space(), Box)
    lengths = tasks.sample_batch(jax.random.key(0), 200).length
    assert 0.3 <= float(lengths.min()) and float(lengths.max()) <= 0.7
    assert float(tasks.ood.sample_batch(jax.random.key(0), 200).length.min()) >= 0.8
    params = tasks.sample(jax.random.key(1))
    obs, state = env.reset(jax.random.key(2), params)
    g_obs, g_state = genv.reset_env(jax.random.key(2), params)
    np.testing.assert_allclose(obs, g_obs)
    obs, state, r, term, trunc, _ = env.step(jax.random.key(3), state, jnp.int32(1), params)
    g_obs, g_state, g_r, g_done, _ = genv.step_env(jax.random.key(3), g_state, 1, params)
    np.testing.assert_allclose(obs, g_obs, rtol=1e-6)
    assert float(r) == float(g_r) and bool(term) == bool(g_done)


def test_gymnax_time_limit_is_truncation_not_termination():
    genv, default, (env, tasks) = make_cartpole()
    params = tasks.sample(jax.random.key(0)).replace(max_steps_in_episode=3)
    _, traj = rollout_batch(env, lambda p, c, o, k: (c, jnp.int32(0) + (o[2] > 0), {}), None,
                            jax.tree.map(lambda x: jnp.asarray(x)[None], params), jax.random.key(1), 3)
    # a balancing controller survives 3 steps: the episode ends by the time limit
    np.testing.assert_array_equal(traj.truncated[0, 0], [False, False, True])
    np.testing.assert_array_equal(traj.terminated[0, 0], [False, False, False])
