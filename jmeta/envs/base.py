"""The functional environment API (gymnax 1.0 signature, the task in the params).

``reset(key, params) -> (obs, state)`` and
``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``.
An environment object holds only static configuration; everything a task varies lives in the
``params`` pytree, so ``jax.vmap`` over params is ``vmap`` over tasks.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp

from jmeta.envs.spaces import Box, Discrete, Space

TEnvState = TypeVar("TEnvState")
TEnvParams = TypeVar("TEnvParams")

StepResult = tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array, dict[str, Any]]


class Environment(Generic[TEnvState, TEnvParams]):
    """Base class of jmeta environments.

    Subclasses implement ``reset_env``, ``step_env``, ``action_space`` and ``observation_space``.
    The public ``reset``/``step`` check the action at trace time (shape and dtype against
    ``action_space``) and cast rewards and flags to canonical dtypes (float32, bool).
    Episodes do not reset automatically; wrap with :class:`jmeta.envs.wrappers.AutoReset` or use
    ``jmeta.rollout.rollout(..., auto_reset=True)``.
    """

    name: str = "environment"

    def reset(self, key: jax.Array, params: TEnvParams) -> tuple[jax.Array, TEnvState]:
        """Starts an episode of the task ``params``; returns ``(obs, state)``."""
        return self.reset_env(key, params)

    def step(
        self, key: jax.Array, state: TEnvState, action: jax.Array, params: TEnvParams
    ) -> StepResult:
        """Advances one step; returns ``(obs, state, reward, terminated, truncated, info)``."""
        action = check_action(self.name, self.action_space(params), action)
        obs, state, reward, terminated, truncated, info = self.step_env(key, state, action, params)
        return (
            obs,
            state,
            jnp.asarray(reward, jnp.float32),
            jnp.asarray(terminated, jnp.bool_),
            jnp.asarray(truncated, jnp.bool_),
            info,
        )

    # --- to implement -------------------------------------------------------------------------
    def reset_env(self, key: jax.Array, params: TEnvParams) -> tuple[jax.Array, TEnvState]:
        raise NotImplementedError

    def step_env(
        self, key: jax.Array, state: TEnvState, action: jax.Array, params: TEnvParams
    ) -> StepResult:
        raise NotImplementedError

    def action_space(self, params: TEnvParams | None = None) -> Space:
        raise NotImplementedError

    def observation_space(self, params: TEnvParams | None = None) -> Space:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def check_action(env_name: str, space: Space, action: Any) -> jax.Array:
    """Checks an (unbatched) action against ``space`` at trace time.

    Raises:
      ValueError: naming the expected shape and dtype when the action does not match.
    """
    action = jnp.asarray(action)
    if isinstance(space, Discrete):
        if action.shape != () or not jnp.issubdtype(action.dtype, jnp.integer):
            raise ValueError(
                f"{env_name}: action must be an integer scalar of shape () for {space!r}, got "
                f"shape {action.shape} dtype {action.dtype} (vmap over batches; one action per env)"
            )
        return action.astype(jnp.int32)
    if isinstance(space, Box):
        if action.shape != space.shape or not jnp.issubdtype(action.dtype, jnp.floating):
            raise ValueError(
                f"{env_name}: action must be a float array of shape {space.shape} for {space!r}, "
                f"got shape {action.shape} dtype {action.dtype}"
            )
        return action.astype(space.dtype)
    return action
