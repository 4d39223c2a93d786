"""Bernoulli multi-armed bandits, the RL² benchmark of Duan et al. 2016, section 4.1.

Protocol: a task is a k-armed bandit whose arm means are drawn i.i.d. from U[0, 1]; each pull is an
episode of length one (reward 1 with the arm's probability, else 0); a trial of n pulls is the RL²
meta-episode (wrap with :class:`jmeta.envs.wrappers.TrialWrapper` ``(env, num_episodes=n)``). The
observation is a constant ``[1]`` zero vector: all information comes from the trial wrapper's
previous action and reward.

Tasks: arm means U[``arm_mean``] (default (0, 1)); the ``ood`` split uses ``ood_arm_mean``
(default (0.5, 1.0): a harder, denser top of the distribution).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.envs.tasks import Range, TaskDistribution, check_positive_int, check_range


@struct.dataclass
class BanditParams:
    """A bandit task.

    Attributes:
      arm_means: ``[num_arms]`` success probabilities.
      horizon: episode length (static): one pull.
    """

    arm_means: jax.Array
    horizon: int = struct.field(pytree_node=False, default=1)


@struct.dataclass
class BanditState:
    time: jax.Array  # int32 scalar


class BernoulliBandit(Environment[BanditState, BanditParams]):
    """k-armed Bernoulli bandit, one pull per episode (see module docstring)."""

    name = "bandit"

    def __init__(self, num_arms: int = 5):
        self.num_arms = check_positive_int("num_arms", num_arms)

    def reset_env(self, key, params):
        return jnp.zeros(1, jnp.float32), BanditState(time=jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        reward = jax.random.bernoulli(key, params.arm_means[action]).astype(jnp.float32)
        state = BanditState(time=state.time + 1)
        # A pull ends its episode: a terminal state, nothing to bootstrap.
        return jnp.zeros(1, jnp.float32), state, reward, True, False, {}

    def action_space(self, params=None):
        return Discrete(self.num_arms)

    def observation_space(self, params=None):
        return Box(0.0, 0.0, (1,))


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    """Options of ``jmeta.make("bandit", ...)``.

    Attributes:
      num_arms: number of arms k (Duan et al.: 5, 10, 50).
      arm_mean: (low, high) of the uniform distribution of each arm's mean (paper: (0, 1)).
      ood_arm_mean: (low, high) of the ``ood`` split.
    """

    num_arms: int = 5
    arm_mean: Range = (0.0, 1.0)
    ood_arm_mean: Range = (0.5, 1.0)

    def __post_init__(self):
        object.__setattr__(self, "num_arms", check_positive_int("num_arms", self.num_arms))
        for f in ("arm_mean", "ood_arm_mean"):
            object.__setattr__(self, f, check_range(f, getattr(self, f), lower=0.0, upper=1.0))


def build(config: BanditConfig) -> tuple[BernoulliBandit, TaskDistribution]:
    env = BernoulliBandit(config.num_arms)
    k = config.num_arms

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> BanditParams:
        lo, hi = ranges["arm_mean"]
        return BanditParams(arm_means=jax.random.uniform(key, (k,), minval=lo, maxval=hi))

    tasks = TaskDistribution(
        env_name=env.name,
        sampler=sampler,
        ranges={"arm_mean": config.arm_mean},
        ood_ranges={"arm_mean": config.ood_arm_mean},
    )
    return env, tasks
