"""Random tabular MDPs, the RL² benchmark of Duan et al. 2016, section 4.2.

Protocol: |S| = 10 states, |A| = 5 actions, episodes of H = 10 steps starting in state 0 (as the
RL² reproductions do). Per task: the reward of (s, a) is N(μ_{s,a}, 1) with μ_{s,a} ~ N(1, 1)
drawn once per task; each transition row P(· | s, a) is drawn from a flat Dirichlet(1, ..., 1).
The observation is the one-hot current state. A trial of n episodes (wrap with
:class:`jmeta.envs.wrappers.TrialWrapper`) is the RL² meta-episode.

Tasks: ``reward_mean_prior`` is the (mean, std) of the normal prior of μ (default (1.0, 1.0));
the ``ood`` split shifts it to ``ood_reward_mean_prior`` (default (0.0, 2.0): lower and more spread-out
reward means). ``dirichlet_alpha`` (default 1.0, flat) is the transition prior's concentration.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.envs.tasks import (
    Range,
    TaskDistribution,
    check_positive_float,
    check_positive_int,
    check_range,
)


@struct.dataclass
class TabularMDPParams:
    """A tabular MDP task.

    Attributes:
      reward_means: ``[S, A]`` mean reward μ of each (state, action).
      transitions: ``[S, A, S]`` next-state probabilities; each row sums to 1.
      reward_std: standard deviation of the reward noise (paper: 1).
      horizon: episode length (static).
    """

    reward_means: jax.Array
    transitions: jax.Array
    reward_std: jax.Array
    horizon: int = struct.field(pytree_node=False, default=10)


@struct.dataclass
class TabularMDPState:
    state: jax.Array  # int32 scalar
    time: jax.Array  # int32 scalar


class TabularMDP(Environment[TabularMDPState, TabularMDPParams]):
    """A random tabular MDP (see module docstring)."""

    name = "tabular-mdp"

    def __init__(self, num_states: int = 10, num_actions: int = 5):
        self.num_states = check_positive_int("num_states", num_states)
        self.num_actions = check_positive_int("num_actions", num_actions)

    def _obs(self, s: jax.Array) -> jax.Array:
        return jax.nn.one_hot(s, self.num_states, dtype=jnp.float32)

    def reset_env(self, key, params):
        state = TabularMDPState(state=jnp.zeros((), jnp.int32), time=jnp.zeros((), jnp.int32))
        return self._obs(state.state), state

    def step_env(self, key, state, action, params):
        k_r, k_s = jax.random.split(key)
        reward = params.reward_means[state.state, action] + params.reward_std * jax.random.normal(k_r)
        probs = params.transitions[state.state, action]
        next_s = jax.random.choice(k_s, self.num_states, p=probs).astype(jnp.int32)
        time = state.time + 1
        truncated = time >= params.horizon
        new_state = TabularMDPState(state=next_s, time=time)
        return self._obs(next_s), new_state, reward, False, truncated, {"state": next_s}

    def action_space(self, params=None):
        return Discrete(self.num_actions)

    def observation_space(self, params=None):
        return Box(0.0, 1.0, (self.num_states,))


@dataclasses.dataclass(frozen=True)
class TabularMDPConfig:
    """Options of ``jmeta.make("tabular-mdp", ...)``.

    Attributes:
      num_states: |S| (paper: 10).
      num_actions: |A| (paper: 5).
      horizon: episode length H (paper: 10).
      reward_mean_prior: (mean, std) of the normal prior of each μ_{s,a} (paper: (1, 1)).
      ood_reward_mean_prior: (mean, std) of that prior for the ``ood`` split.
      reward_std: standard deviation of the per-step reward noise (paper: 1).
      dirichlet_alpha: concentration of the symmetric Dirichlet prior of transitions (paper: 1).
    """

    num_states: int = 10
    num_actions: int = 5
    horizon: int = 10
    reward_mean_prior: Range = (1.0, 1.0)
    ood_reward_mean_prior: Range = (0.0, 2.0)
    reward_std: float = 1.0
    dirichlet_alpha: float = 1.0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in ("num_states", "num_actions", "horizon"):
            set_(f, check_positive_int(f, getattr(self, f)))
        for f in ("reward_mean_prior", "ood_reward_mean_prior"):
            # (mean, std): any finite mean, std >= 0. Not an interval, so no low <= high rule.
            v = getattr(self, f)
            if not isinstance(v, (tuple, list)) or len(v) != 2:
                raise ValueError(f"{f}: expected a (mean, std) pair, got {v!r}")
            mean = check_range(f"{f}[0]", v[0])[0]
            std = check_positive_float(f"{f}[1]", v[1], allow_zero=True)
            set_(f, (mean, std))
        set_("reward_std", check_positive_float("reward_std", self.reward_std, allow_zero=True))
        set_("dirichlet_alpha", check_positive_float("dirichlet_alpha", self.dirichlet_alpha))


def build(config: TabularMDPConfig) -> tuple[TabularMDP, TaskDistribution]:
    env = TabularMDP(config.num_states, config.num_actions)
    S, A, H = config.num_states, config.num_actions, config.horizon
    alpha, reward_std = config.dirichlet_alpha, config.reward_std

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> TabularMDPParams:
        k_mu, k_p = jax.random.split(key)
        mean, std = ranges["reward_mean_prior"]
        mu = mean + std * jax.random.normal(k_mu, (S, A))
        transitions = jax.random.dirichlet(k_p, jnp.full((S,), alpha), shape=(S, A))
        return TabularMDPParams(
            reward_means=mu, transitions=transitions,
            reward_std=jnp.asarray(reward_std, jnp.float32), horizon=H,
        )

    tasks = TaskDistribution(
        env_name=env.name,
        sampler=sampler,
        ranges={"reward_mean_prior": config.reward_mean_prior},
        ood_ranges={"reward_mean_prior": config.ood_reward_mean_prior},
    )
    return env, tasks
