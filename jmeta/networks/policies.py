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


def gaussian_sample(dist: tuple[jax.Array, jax.Array], key: jax.Array) -> jax.Array:
    """A draw from ``N(mean, exp(log_std)²)``, ``dist = (mean, log_std)``."""
    mean, log_std = dist
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


def gaussian_entropy(dist: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Entropy of the diagonal Gaussian ``dist = (mean, log_std)``, summed over the last axis."""
    return jnp.sum(dist[1] + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


def categorical_sample(logits: jax.Array, key: jax.Array) -> jax.Array:
    """An int32 draw from the categorical ``logits`` ``[..., n]``."""
    return jax.random.categorical(key, logits).astype(jnp.int32)


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the categorical ``logits`` ``[..., n]``."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


class DistributionFns(NamedTuple):
    """Distribution-level functions of a policy head's output ``dist`` (``(mean, log_std)`` for
    :data:`GAUSSIAN`, logits for :data:`CATEGORICAL`): ``sample(dist, key)``,
    ``log_prob(dist, action)`` and ``entropy(dist)``."""

    sample: Callable
    log_prob: Callable
    entropy: Callable


GAUSSIAN = DistributionFns(gaussian_sample, lambda d, a: gaussian_log_prob(d[0], d[1], a),
                           gaussian_entropy)
CATEGORICAL = DistributionFns(categorical_sample, categorical_log_prob, categorical_entropy)


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
            dist = module.apply(params, obs)
            action = gaussian_sample(dist, key)
            return carry, action, {"log_prob": GAUSSIAN.log_prob(dist, action)}

        def log_prob(params, obs, action):
            mean, log_std = module.apply(params, obs)
            return gaussian_log_prob(mean, log_std, action)

    elif isinstance(space, Discrete):
        module = CategoricalMLP(space.n, tuple(hidden_sizes), activation)

        def act(params, carry, obs, key):
            logits = module.apply(params, obs)
            action = categorical_sample(logits, key)
            return carry, action, {"log_prob": categorical_log_prob(logits, action)}

        def log_prob(params, obs, action):
            return categorical_log_prob(module.apply(params, obs), action)

    else:
        raise ValueError(f"{env.name}: no MLP policy for action space {space!r}")

    return MLPPolicy(module, lambda key: module.init(key, dummy), act, log_prob)
