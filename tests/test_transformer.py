"""Transformer memory agent: the cached step loop equals the whole-trial masked attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.algorithms import rl2
from jmeta.networks import TransformerActorCritic
from jmeta.networks.transformer import sinusoidal


def _net(context, discrete=True):
    return TransformerActorCritic(action_dim=3, discrete=discrete, d_model=16, num_heads=4,
                                  num_layers=2, context=context)


def _step_loop(net, params, obs):
    def step(carry, o):
        carry, dist, value = net.apply(params, carry, o)
        return carry, (dist, value)
    return jax.lax.scan(step, net.initial_carry(), obs)[1]


@pytest.mark.parametrize("context", [4, 12])  # a window shorter than the trial, and the whole
def test_cached_steps_equal_the_full_sequence_forward(context):
    net = _net(context)
    obs = jax.random.normal(jax.random.key(0), (12, 5))
    params = net.init(jax.random.key(1), net.initial_carry(), obs[0])
    logits_seq, values_seq = net.apply(params, obs, method=TransformerActorCritic.sequence)
    logits_step, values_step = _step_loop(net, params, obs)
    np.testing.assert_allclose(logits_step, logits_seq, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(values_step, values_seq, rtol=1e-4, atol=1e-5)
    # batched carry (a vmapped rollout) gives the same numbers
    batched = jax.vmap(lambda o: _step_loop(net, params, o))(jnp.stack([obs, obs]))
    np.testing.assert_allclose(batched[1][1], values_seq, rtol=1e-4, atol=1e-5)


def test_window_forgets_exactly_after_context_steps():
    # Changing step 0's input changes outputs at steps < context and nothing after.
    net = _net(4)
    obs = jax.random.normal(jax.random.key(0), (10, 5))
    params = net.init(jax.random.key(1), net.initial_carry(), obs[0])
    _, v1 = net.apply(params, obs, method=TransformerActorCritic.sequence)
    _, v2 = net.apply(params, obs.at[0].add(3.0), method=TransformerActorCritic.sequence)
    changed = np.abs(np.asarray(v1 - v2)) > 1e-6
    # 2 layers: information travels at most context − 1 steps per layer
    assert changed[:4].all() and not changed[7:].any()


def test_gaussian_head_and_positions():
    net = _net(8, discrete=False)
    obs = jnp.ones((3, 5))
    params = net.init(jax.random.key(1), net.initial_carry(), obs[0])
    (mean, log_std), value = net.apply(params, obs, method=TransformerActorCritic.sequence)
    assert mean.shape == (3, 3) and log_std.shape == (3, 3) and value.shape == (3,)
    enc = sinusoidal(jnp.array([0, 1]), 6)
    np.testing.assert_allclose(enc[0], [0, 0, 0, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(enc[1, 0], np.sin(1.0), rtol=1e-6)


def test_rl2_with_transformer_runs_and_matches_its_rollout():
    env, tasks = jmeta.make("bandit", num_arms=3)
    comp = rl2.make_components(rl2.Config(cell="transformer", num_tasks=4, trial_episodes=6,
                                          hidden_size=8, num_heads=2, num_layers=1,
                                          num_minibatches=2, num_epochs=1), env, tasks)
    state = comp.algorithm.init(jax.random.key(0))
    traj, _ = comp.collect(state.params, tasks.sample(jax.random.key(1)), jax.random.key(2))
    logits, values = comp.unroll(state.params, traj.obs)
    np.testing.assert_allclose(values, traj.extras["value"], rtol=1e-4, atol=1e-5)
    logp = jax.nn.log_softmax(logits)[jnp.arange(6), traj.action]
    np.testing.assert_allclose(logp, traj.extras["log_prob"], rtol=1e-4, atol=1e-5)
    state, metrics = jax.jit(comp.algorithm.update)(state)
    assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(context=0), "context"),
    (dict(num_heads=3), "does not divide"),
    (dict(num_layers=0), "num_layers"),
])
def test_bad_transformer_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerActorCritic(action_dim=2, d_model=16, **kwargs).initial_carry()
    with pytest.raises(ValueError, match=message):
        rl2.Config(cell="transformer", hidden_size=16,
                   **{("num_heads" if k == "num_heads" else k): v for k, v in kwargs.items()})
