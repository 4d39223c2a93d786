"""Adapter: a gymnax (>= 1.0) environment plus a params sampler becomes a jmeta task distribution.

>>> import gymnax, jax, jax.numpy as jnp
>>> from jmeta.envs.gymnax_adapter import from_gymnax
>>> genv, default = gymnax.make("CartPole-v1")
>>> def sample(key, ranges):  # pole half-length U[ranges["length"]]
...     lo, hi = ranges["length"]
...     length = jax.random.uniform(key, minval=lo, maxval=hi)
...     return default.replace(length=length, polemass_length=default.masspole * length)
>>> env, tasks = from_gymnax(genv, sample, ranges={"length": (0.3, 0.7)},
...                          ood_ranges={"length": (0.8, 1.2)})
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jmeta.envs import spaces
from jmeta.envs.base import Environment
from jmeta.envs.tasks import Range, TaskDistribution, check_range


def _convert_space(space: Any) -> spaces.Space:
    kind = type(space).__name__
    if kind == "Discrete":
        return spaces.Discrete(int(space.n))
    if kind == "Box":
        return spaces.Box(space.low, space.high, space.shape, space.dtype)
    raise ValueError(f"gymnax space {space!r} is not supported (Discrete and Box are)")


class GymnaxEnv(Environment):
    """A gymnax environment under the jmeta API.

    Calls gymnax's ``reset_env``/``step_env`` (no automatic reset), takes ``terminated`` from
    ``step_env`` and ``truncated`` from ``is_truncated`` (the time limit in the params), so time
    limits and terminations stay apart.
    """

    def __init__(self, gymnax_env: Any):
        for method in ("reset_env", "step_env", "is_truncated", "action_space", "observation_space"):
            if not hasattr(gymnax_env, method):
                raise TypeError(
                    f"{type(gymnax_env).__name__} has no {method}(): a gymnax >= 1.0 Environment "
                    "is required"
                )
        self.gymnax_env = gymnax_env
        self.name = f"gymnax:{gymnax_env.name}"

    def reset_env(self, key, params):
        return self.gymnax_env.reset_env(key, params)

    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, info = self.gymnax_env.step_env(key, state, action, params)
        truncated = jnp.logical_and(
            self.gymnax_env.is_truncated(state, params), jnp.logical_not(terminated)
        )
        return obs, state, reward, terminated, truncated, info

    def _params(self, params):
        return self.gymnax_env.default_params if params is None else params

    def action_space(self, params=None):
        return _convert_space(self.gymnax_env.action_space(self._params(params)))

    def observation_space(self, params=None):
        return _convert_space(self.gymnax_env.observation_space(self._params(params)))


def from_gymnax(
    gymnax_env: Any,
    sample_params: Callable[[jax.Array, Mapping[str, Range]], Any],
    ranges: Mapping[str, Any],
    ood_ranges: Mapping[str, Any] | None = None,
) -> tuple[GymnaxEnv, TaskDistribution]:
    """Wraps a gymnax env and a params sampler as a jmeta ``(env, tasks)`` pair.

    Args:
      gymnax_env: a gymnax >= 1.0 ``Environment``.
      sample_params: ``sample_params(key, ranges) -> gymnax EnvParams``, pure and jit-able.
      ranges: the train/test ranges, ``name -> (low, high)``, passed to ``sample_params``.
      ood_ranges: shifted ranges for the ``ood`` split (default: the same as ``ranges``).

    Returns:
      ``(env, tasks)``.
    """
    ranges = {k: check_range(k, v) for k, v in ranges.items()}
    ood_ranges = {k: check_range(f"ood_{k}", v) for k, v in (ood_ranges or {}).items()}
    unknown = set(ood_ranges) - set(ranges)
    if unknown:
        raise ValueError(f"ood_ranges has keys not in ranges: {sorted(unknown)}")
    env = GymnaxEnv(gymnax_env)
    return env, TaskDistribution(env.name, sample_params, ranges, ood_ranges)
