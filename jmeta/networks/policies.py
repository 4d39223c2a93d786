"""MLP policies for continuous (Gaussian) and discrete (categorical) actions.

Each ``make_*`` returns ``(init, policy)``: ``init(key) -> params`` and a rollout policy
``policy(params, carry, obs, key) -> (carry, action, {"log_prob": ...})`` (see
:mod:`jmeta.rollout`), plus the module itself for log-probabilities of given actions.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.networks.mlp import MLP


class GaussianMLP(nn.Module):
    """Diagonal Gaussian policy: MLP mean, state-independent learned log-std (MAML/rllab style).

    Attributes:
      action_dim: action dimension.
      hidden_sizes: hidden widths (default 64×64).
      activation: hidden activation.
      init_log_std: initial log standard deviation.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = MLP(self.hidden_sizes, self.action_dim, self.activation, kernel_init_scale=0.01)(obs)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        return mean, jnp.broadcast_to(log_std, mean.shape)


class CategoricalMLP(nn.Module):
    """Categorical policy: MLP logits over ``num_actions``."""

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, self.num_actions, self.activation, kernel_init_scale=0.01)(obs)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """Log-density of ``action`` under ``N(mean, exp(log_std)²)``, summed over the last axis."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """Log-probability of integer ``action`` ``[...]`` under categorical ``logits`` ``[..., n]``."""
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), -1)[..., 0]


class MLPPolicy(NamedTuple):
    """An MLP policy for an environment.

    Attributes:
      module: the flax module (``GaussianMLP`` or ``CategoricalMLP``).
      init: ``init(key) -> params``.
      act: rollout policy ``act(params, carry, obs, key) -> (carry, action, {"log_prob"})``.
      log_prob: ``log_prob(params, obs, action) -> [...]`` log-probability of given actions.
    """

    module: nn.Module
    init: Callable
    act: Callable
    log_prob: Callable


def make_mlp_policy(
    env: Environment, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
    init_log_std: float = 0.0,
) -> MLPPolicy:
    """Builds a Gaussian (Box actions) or categorical (Discrete actions) MLP policy for ``env``."""
    space = env.action_space()
    obs_shape = env.observation_space().shape
    dummy = jnp.zeros(obs_shape, jnp.float32)
    if isinstance(space, Box):
        module = GaussianMLP(space.shape[0], tuple(hidden_sizes), activation, init_log_std)

        def act(params, carry, obs, key):
            mean, log_std = module.apply(params, obs)
            action = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
            return carry, action, {"log_prob": gaussian_log_prob(mean, log_std, action)}

        def log_prob(params, obs, action):
            mean, log_std = module.apply(params, obs)
            return gaussian_log_prob(mean, log_std, action)

    elif isinstance(space, Discrete):
        module = CategoricalMLP(space.n, tuple(hidden_sizes), activation)

        def act(params, carry, obs, key):
            logits = module.apply(params, obs)
            action = jax.random.categorical(key, logits).astype(jnp.int32)
            return carry, action, {"log_prob": categorical_log_prob(logits, action)}

        def log_prob(params, obs, action):
            return categorical_log_prob(module.apply(params, obs), action)

    else:
        raise ValueError(f"{env.name}: no MLP policy for action space {space!r}")

    return MLPPolicy(module, lambda key: module.init(key, dummy), act, log_prob)
