"""Rollouts: shapes, padding after episode end, auto-reset, vmap vs loop, jit, determinism."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.networks import make_mlp_policy
from jmeta.rollout import episode_returns, rollout, rollout_batch


def constant_policy(params, carry, obs, key):
    return carry + 1, params, {"seen": obs}


def test_rollout_point_nav_by_hand():
    env, _ = jmeta.make("point-nav", horizon=5)
    goal = jnp.array([0.2, 0.0])
    params = jmeta.envs.point_nav.PointNavParams(goal=goal, horizon=5)
    carry, traj = rollout(env, constant_policy, jnp.array([0.1, 0.0]), params, jax.random.key(0), 5,
                          init_carry=jnp.int32(0))
    # positions 0.1, 0.2 (goal reached: terminated), then padding
    np.testing.assert_allclose(traj.reward[:2], [-0.1, 0.0], atol=1e-6)
    np.testing.assert_array_equal(traj.valid, [True, True, False, False, False])
    np.testing.assert_array_equal(traj.terminated, [False, True, False, False, False])
    np.testing.assert_array_equal(traj.reward[2:], 0.0)
    np.testing.assert_allclose(traj.extras["seen"][1], [0.1, 0.0])  # obs before the 2nd action
    np.testing.assert_allclose(traj.next_obs[1], [0.2, 0.0])
    assert int(carry.policy_carry) == 5  # the policy carry is threaded through every step
    np.testing.assert_allclose(episode_returns(traj), -0.1, atol=1e-6)


def test_rollout_auto_reset_runs_several_episodes():
    env, _ = jmeta.make("point-nav", horizon=3)
    params = jmeta.envs.point_nav.PointNavParams(goal=jnp.array([0.45, 0.45]), horizon=3)
    _, traj = rollout(env, constant_policy, jnp.array([0.1, 0.1]), params, jax.random.key(0), 7,
                      init_carry=jnp.int32(0), auto_reset=True)
    assert bool(traj.valid.all())
    np.testing.assert_array_equal(traj.truncated, [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_allclose(traj.next_obs[2], [0.3, 0.3], rtol=1e-6)  # true final obs
    np.testing.assert_allclose(traj.obs[3], [0.0, 0.0])  # reset obs starts the next episode


def test_rollout_batch_shapes_and_vmap_matches_loop():
    env, tasks = jmeta.make("point-nav", horizon=10)
    policy = make_mlp_policy(env)
    params = policy.init(jax.random.key(0))
    task_batch = tasks.sample_batch(jax.random.key(1), 3)
    key = jax.random.key(2)
    _, traj = rollout_batch(env, policy.act, params, task_batch, key, 10, num_episodes=2)
    assert traj.reward.shape == (3, 2, 10)
    assert traj.obs.shape == (3, 2, 10, 2)
    assert traj.extras["log_prob"].shape == (3, 2, 10)
    task_keys = jax.random.split(key, 3)
    for i in range(3):
        ep_keys = jax.random.split(task_keys[i], 2)
        for j in range(2):
            _, one = rollout(env, policy.act, params, jax.tree.map(lambda x: x[i], task_batch),
                             ep_keys[j], 10)
            np.testing.assert_allclose(traj.reward[i, j], one.reward, rtol=1e-5, atol=1e-6)


def test_rollout_batch_per_task_params():
    env, tasks = jmeta.make("point-nav", horizon=4)
    task_batch = tasks.sample_batch(jax.random.key(1), 2)
    per_task = jnp.array([[0.1, 0.0], [0.0, -0.1]])
    _, traj = rollout_batch(env, constant_policy, per_task, task_batch, jax.random.key(0), 4,
                            init_carry=jnp.int32(0), params_per_task=True)
    np.testing.assert_allclose(traj.action[0, 0, 0], [0.1, 0.0])
    np.testing.assert_allclose(traj.action[1, 0, 0], [0.0, -0.1])


def test_rollout_jit_matches_eager_and_is_deterministic():
    env, tasks = jmeta.make("tabular-mdp")
    policy = make_mlp_policy(env)
    params = policy.init(jax.random.key(0))
    task = tasks.sample(jax.random.key(1))
    run = lambda k: rollout(env, policy.act, params, task, k, 10)[1]  # noqa: E731
    eager = run(jax.random.key(3))
    jitted = jax.jit(run)(jax.random.key(3))
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(jax.jit(run)(jax.random.key(3)), jitted)
    assert not np.array_equal(jax.jit(run)(jax.random.key(4)).action, jitted.action)


def test_rollout_trial_of_bandit_with_categorical_policy():
    env, tasks = jmeta.make("bandit", num_arms=5)
    trial = jmeta.envs.TrialWrapper(env, num_episodes=10)
    policy = make_mlp_policy(trial)
    params = policy.init(jax.random.key(0))
    _, traj = rollout_batch(trial, policy.act, params, tasks.sample_batch(jax.random.key(1), 4),
                            jax.random.key(2), 10, num_episodes=3)
    assert traj.obs.shape == (4, 3, 10, 1 + 5 + 2)
    np.testing.assert_array_equal(traj.info["episode"][0, 0], np.arange(10))
    np.testing.assert_array_equal(traj.terminated[..., -1], True)
    assert bool(traj.valid.all())
    # the recorded log-probs are those of the taken actions under the policy
    np.testing.assert_allclose(traj.extras["log_prob"],
                               policy.log_prob(params, traj.obs, traj.action), rtol=1e-5)
    assert float(traj.extras["log_prob"].max()) < 0.0


def test_rollout_no_recompilation():
    env, tasks = jmeta.make("point-nav")
    policy = make_mlp_policy(env)
    params = policy.init(jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def collect(params, task_batch, key):
        return episode_returns(rollout_batch(env, policy.act, params, task_batch, key, 20,
                                             num_episodes=2)[1])

    for seed in range(3):
        collect(params, tasks.sample_batch(jax.random.key(seed), 4), jax.random.key(seed))


def mean_policy(module):
    """The MLP's mean action (no noise): the same trajectory whatever the keys."""
    def act(params, carry, obs, key):
        mean, _ = module.apply(params, obs)
        return carry + 1, mean, {"seen": obs}
    return act


def test_batched_policy_equals_per_rollout_policy_when_deterministic():
    # Without randomness both paths must give the same trajectories, for episodes that end early
    # (padding), with auto-reset, and with per-task parameters; the carry gets the batch axis.
    env, tasks = jmeta.make("point-nav", horizon=6)
    mlp = make_mlp_policy(env)
    params = mlp.init(jax.random.key(0))
    act = mean_policy(mlp.module)
    task_batch = tasks.sample_batch(jax.random.key(1), 3)
    for auto_reset in (False, True):
        kw = dict(num_episodes=2, init_carry=jnp.int32(0), auto_reset=auto_reset)
        c1, t1 = rollout_batch(env, act, params, task_batch, jax.random.key(2), 9, **kw)
        c2, t2 = rollout_batch(env, act, params, task_batch, jax.random.key(5), 9,
                               batched_policy=True, **kw)
        chex.assert_trees_all_close(t1, t2, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(c1, c2, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(c2.policy_carry, np.full((3, 2), 9))
    per_task = jnp.array([[0.1, 0.0], [0.0, -0.1], [0.05, 0.05]])

    def broadcast_policy(params, carry, obs, key):  # batch-polymorphic constant_policy
        return carry + 1, jnp.broadcast_to(params, obs.shape), {"seen": obs}

    kw = dict(num_episodes=2, init_carry=jnp.int32(0), params_per_task=True)
    _, t1 = rollout_batch(env, broadcast_policy, per_task, task_batch, jax.random.key(0), 6, **kw)
    _, t2 = rollout_batch(env, broadcast_policy, per_task, task_batch, jax.random.key(0), 6,
                          batched_policy=True, **kw)
    chex.assert_trees_all_close(t1, t2)
    np.testing.assert_allclose(t2.action[2, 1, 0], [0.05, 0.05])
    # a policy that is not batch-polymorphic is named as such, not an env shape error
    with pytest.raises(ValueError, match="batched_policy=True: the policy is called on a batch"):
        rollout_batch(env, constant_policy, per_task, task_batch, jax.random.key(0), 6,
                      num_episodes=3, init_carry=jnp.int32(0), params_per_task=True,
                      batched_policy=True)


def test_batched_policy_stochastic_draws_are_deterministic_and_independent():
    env, tasks = jmeta.make("point-nav", horizon=20)
    mlp = make_mlp_policy(env, init_log_std=0.0)
    params = mlp.init(jax.random.key(0))
    task_batch = tasks.sample_batch(jax.random.key(1), 4)

    def run(key):
        return rollout_batch(env, mlp.act, params, task_batch, key, 20, num_episodes=8,
                             auto_reset=True, batched_policy=True)[1]

    t1 = jax.jit(run)(jax.random.key(3))
    chex.assert_trees_all_equal(t1, jax.jit(run)(jax.random.key(3)))
    chex.assert_trees_all_close(t1, run(jax.random.key(3)), rtol=1e-5, atol=1e-6)
    assert t1.action.shape == (4, 8, 20, 2)
    # log-probs are those of the taken actions; the noise differs across rollouts and steps and
    # has unit scale (std 1 at log_std 0): 4·8·20·2 = 1280 draws
    np.testing.assert_allclose(t1.extras["log_prob"], mlp.log_prob(params, t1.obs, t1.action),
                               rtol=1e-4, atol=1e-5)
    mean, _ = mlp.module.apply(params, t1.obs)
    noise = np.asarray(t1.action - mean).reshape(-1)
    assert abs(noise.std() - 1.0) < 0.06 and abs(noise.mean()) < 0.1
    assert len(np.unique(noise.round(6))) == noise.size
