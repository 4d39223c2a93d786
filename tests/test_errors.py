"""Every bad input a user can type gives a clear error; each message is asserted."""

import jax
import jax.numpy as jnp
import pytest

import jmeta
from jmeta.rollout import rollout


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError) as err:
        jmeta.make("point_nav")
    assert str(err.value) == ("unknown environment 'point_nav'; valid names: "
                              + ", ".join(jmeta.envs.names()))
    for name in ("bandit", "point-nav", "halfcheetah-vel", "ant-goal", "warehouse"):
        assert name in str(err.value)


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ValueError, match=r"unknown override\(s\) 'goal_radiu' for environment "
                                         r"'point-nav'; valid: goal_radius, ood_goal_radius"):
        jmeta.make("point-nav", goal_radiu=0.5)


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("bandit", {"arm_mean": (0.9, 0.1)}, r"arm_mean: low must be <= high, got \(0.9, 0.1\)"),
        ("bandit", {"arm_mean": (0.0, 1.5)}, r"arm_mean: high must be <= 1.0"),
        ("bandit", {"arm_mean": (0.0, float("nan"))}, r"arm_mean: range must be finite"),
        ("bandit", {"arm_mean": "0:1"}, r"arm_mean: expected a number or a \(low, high\) pair"),
        ("bandit", {"arm_mean": (0.0, 1.0, 2.0)}, r"arm_mean: expected a number or a \(low, high\)"),
        ("bandit", {"num_arms": 0}, r"num_arms: expected a positive int, got 0"),
        ("bandit", {"num_arms": 2.5}, r"num_arms: expected a positive int, got 2.5"),
        ("point-nav", {"horizon": -3}, r"horizon: expected a positive int, got -3"),
        ("point-nav", {"goal_radius": -0.5}, r"goal_radius: expected a finite positive number"),
        ("point-nav", {"ood_goal_radius": (1.0, 0.5)}, r"ood_goal_radius: low must be <= high"),
        ("tabular-mdp", {"num_states": 0}, r"num_states: expected a positive int"),
        ("tabular-mdp", {"reward_mean_prior": (1.0, -1.0)},
         r"reward_mean_prior\[1\]: expected a finite non-negative number"),
        ("tabular-mdp", {"dirichlet_alpha": 0.0}, r"dirichlet_alpha: expected a finite positive"),
        ("cold-start-rec", {"num_items": -1}, r"num_items: expected a positive int"),
        ("cold-start-rec", {"user_norm": (-1.0, 1.0)}, r"user_norm: low must be >= 0.0"),
        ("cold-start-rec", {"catalogue_seed": -2}, r"catalogue_seed: expected a non-negative int"),
        ("point-nav", {"obs_noise": (0.2, 0.1)}, r"obs_noise: low must be <= high"),
        ("point-nav", {"obs_noise": -0.1}, r"obs_noise: low must be >= 0.0"),
        ("point-nav", {"ood_obs_noise": 0.1}, r"ood_obs_noise needs obs_noise"),
    ],
)
def test_bad_override_values(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        jmeta.make(name, **overrides)


def test_action_of_wrong_shape_is_caught_at_trace_time():
    env, tasks = jmeta.make("point-nav")
    params = tasks.sample(jax.random.key(0))
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"point-nav: action must be a float array of shape "
                                         r"\(2,\) .* got shape \(3,\)"):
        jax.jit(env.step)(jax.random.key(1), state, jnp.zeros(3), params)


def test_action_of_wrong_dtype_is_caught():
    env, tasks = jmeta.make("bandit", num_arms=4)
    params = tasks.sample(jax.random.key(0))
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"bandit: action must be an integer scalar of shape \(\) "
                                         r"for Discrete\(4\), got shape \(\) dtype float32"):
        env.step(jax.random.key(1), state, jnp.float32(1.0), params)
    with pytest.raises(ValueError, match=r"got shape \(4,\) dtype int32"):
        env.step(jax.random.key(1), state, jnp.zeros(4, jnp.int32), params)


def test_non_positive_counts():
    env, tasks = jmeta.make("point-nav")
    with pytest.raises(ValueError, match=r"num_tasks: expected a positive int, got 0"):
        tasks.sample_batch(jax.random.key(0), 0)
    with pytest.raises(ValueError, match=r"num_steps: expected a positive int, got 0"):
        rollout(env, lambda p, c, o, k: (c, jnp.zeros(2), {}), None,
                tasks.sample(jax.random.key(0)), jax.random.key(0), 0)
    with pytest.raises(ValueError, match=r"num_episodes: expected a positive int, got -1"):
        jmeta.envs.TrialWrapper(env, num_episodes=-1)
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'ood'\)"):
        tasks.with_split("validation")


def test_space_errors():
    with pytest.raises(ValueError, match=r"Discrete space size must be a positive int, got 0"):
        jmeta.envs.Discrete(0)
    with pytest.raises(ValueError, match=r"Box low must be <= high"):
        jmeta.envs.Box(1.0, 0.0, (2,))
