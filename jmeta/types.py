"""Small shared types: trajectories and policy signatures."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

PRNGKey = jax.Array
PyTree = Any

# policy(params, carry, obs, key) -> (carry, action, extras). ``carry`` is the recurrent state
# (``()`` for feed-forward policies); ``extras`` is any pytree recorded per step (log-prob, value).
Policy = Callable[[PyTree, PyTree, jax.Array, PRNGKey], tuple[PyTree, jax.Array, PyTree]]


class Trajectory(NamedTuple):
    """A rollout, every field with a leading time axis ``[T, ...]`` (more leading axes when batched).

    Attributes:
      obs: observation the action was chosen from, ``[T, *obs_shape]``.
      action: the action taken, ``[T, *action_shape]``.
      reward: ``[T]`` float32.
      terminated: ``[T]`` bool, the episode ended in a terminal state (do not bootstrap).
      truncated: ``[T]`` bool, the episode was cut by a time limit (bootstrap from ``next_obs``).
      next_obs: the observation reached by the step, before any automatic reset, ``[T, *obs_shape]``.
      valid: ``[T]`` bool, the step belongs to an episode (False for padding after the episode ended
        when rollouts do not reset automatically).
      extras: what the policy returned per step (e.g. ``{"log_prob": [T], "value": [T]}``).
      info: the environment's per-step info dict.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    valid: jax.Array
    extras: PyTree
    info: PyTree
