"""Rollouts: one ``lax.scan`` per episode batch, vmapped over tasks × episodes.

One rollout serves every algorithm: a policy is ``policy(params, carry, obs, key) -> (carry,
action, extras)`` where ``carry`` is a recurrent state (``()`` for feed-forward policies) and
``extras`` any per-step pytree (log-probabilities, values) recorded in the trajectory.

>>> import jax, jmeta
>>> from jmeta.rollout import rollout
>>> env, tasks = jmeta.make("point-nav")
>>> def policy(params, carry, obs, key):
...     return carry, jax.random.uniform(key, (2,), minval=-0.1, maxval=0.1), {}
>>> _, traj = rollout(env, policy, None, tasks.sample(jax.random.key(0)), jax.random.key(1), 100)
>>> traj.reward.shape
(100,)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.tasks import check_positive_int
from jmeta.envs.wrappers import auto_reset_step
from jmeta.types import Policy, PyTree, Trajectory


@struct.dataclass
class RolloutCarry:
    """What a rollout's scan carries from step to step (returned at the end).

    Attributes:
      env_state: the environment state.
      obs: the current observation.
      policy_carry: the policy's recurrent state.
      done: the episode has ended (only without automatic resets; later steps are padding).
    """

    env_state: Any
    obs: jax.Array
    policy_carry: PyTree
    done: jax.Array


def _transition(env, env_params, auto_reset, carry, policy_carry, action, extras, k_step, k_auto):
    """One env step of one rollout after the policy has acted: ``(next carry, Trajectory step)``."""
    if auto_reset:
        next_obs, env_state, reward, term, trunc, info, final_obs = auto_reset_step(
            env, k_step, k_auto, carry.env_state, action, env_params
        )
        valid = jnp.ones((), jnp.bool_)
        done = carry.done
    else:
        next_obs, env_state, reward, term, trunc, info = env.step(
            k_step, carry.env_state, action, env_params
        )
        final_obs = next_obs
        valid = jnp.logical_not(carry.done)
        reward = jnp.where(valid, reward, 0.0)
        term = jnp.logical_and(term, valid)
        trunc = jnp.logical_and(trunc, valid)
        done = jnp.logical_or(carry.done, jnp.logical_or(term, trunc))
    step = Trajectory(
        obs=carry.obs, action=action, reward=reward, terminated=term, truncated=trunc,
        next_obs=final_obs, valid=valid, extras=extras, info=info,
    )
    return RolloutCarry(env_state, next_obs, policy_carry, done), step


def rollout(
    env: Environment,
    policy: Policy,
    policy_params: PyTree,
    env_params: PyTree,
    key: jax.Array,
    num_steps: int,
    *,
    init_carry: PyTree = (),
    auto_reset: bool = False,
) -> tuple[RolloutCarry, Trajectory]:
    """Runs ``num_steps`` steps of ``policy`` in the task ``env_params`` from a fresh reset.

    Args:
      env: the environment.
      policy: ``policy(params, carry, obs, key) -> (carry, action, extras)``.
      policy_params: the policy's parameters.
      env_params: the task.
      key: PRNG key.
      num_steps: number of steps T (static).
      init_carry: the policy's initial recurrent state (``()`` for feed-forward policies).
      auto_reset: when an episode ends, start a new one of the same task (the policy carry is
        *not* reset: reset it in the policy from ``obs`` if needed; RL² trials never reset it).
        Without it, steps after the end are padding: ``valid=False``, reward 0, flags False.

    Returns:
      ``(final carry, trajectory)`` with trajectory fields of shape ``[T, ...]``.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    k_reset, k_policy, k_env, k_auto = jax.random.split(key, 4)
    obs, env_state = env.reset(k_reset, env_params)
    carry0 = RolloutCarry(env_state, obs, init_carry, jnp.zeros((), jnp.bool_))
    # Per-step keys are derived inside the scan with one ``fold_in`` each (one threefry hash), so
    # XLA drops the keys nobody reads (most envs ignore their step and reset keys): on CPU the
    # key derivation, not the policy or the env, dominated a vectorised rollout's cost when all
    # keys were split ahead of the scan.
    def _env_step(carry: RolloutCarry, t: jax.Array):
        policy_carry, action, extras = policy(
            policy_params, carry.policy_carry, carry.obs, jax.random.fold_in(k_policy, t))
        return _transition(env, env_params, auto_reset, carry, policy_carry, action, extras,
                           jax.random.fold_in(k_env, t), jax.random.fold_in(k_auto, t))

    return jax.lax.scan(_env_step, carry0, jnp.arange(num_steps, dtype=jnp.uint32))


def rollout_batch(
    env: Environment,
    policy: Policy,
    policy_params: PyTree,
    env_params: PyTree,
    key: jax.Array,
    num_steps: int,
    *,
    num_episodes: int = 1,
    init_carry: PyTree = (),
    auto_reset: bool = False,
    params_per_task: bool = False,
    batched_policy: bool = False,
) -> tuple[RolloutCarry, Trajectory]:
    """Rollouts of a batch of tasks, several independent episodes (or trials) each.

    By default every rollout is :func:`rollout` under ``vmap``: each draws its own policy key per
    step, so a rollout's trajectory depends only on its own key, not on the batch it is in. With
    ``batched_policy=True`` the scan runs over time outside the batch and the policy is called once
    per step on the whole batch (``obs`` ``[num_tasks * num_episodes, ...]``, one key for all), as
    brax and purejaxrl do: one random draw of the batch's shape instead of one key derivation plus
    one draw per rollout: for a 64×64 MLP on point-nav on 2 CPU cores, 5.6 against 4.8 M env-steps/s
    at the best batch size, though not faster at every size (``benchmarks/env_throughput.py``,
    ``benchmarks/RESULTS.md``). The policy must then be batch-polymorphic (flax ``Dense``
    layers and the samplers of :mod:`jmeta.networks.policies` are; a recurrent carry gets the
    batch axis in front of ``init_carry``'s shape). The trajectories have the same distribution
    and layout, but different draws for the same key than the default.

    Args:
      env, policy, key, num_steps, init_carry, auto_reset: as in :func:`rollout`.
      policy_params: shared by all tasks, or with a leading ``[num_tasks]`` axis when
        ``params_per_task`` (e.g. each task's adapted MAML parameters).
      env_params: tasks stacked along a leading ``[num_tasks]`` axis.
      num_episodes: independent rollouts per task (static).
      params_per_task: whether ``policy_params`` has a task axis.
      batched_policy: call the policy once per step on the whole batch (see above); with
        ``params_per_task`` it is called on each task's ``[num_episodes, ...]`` batch under
        ``vmap`` with one key per task.

    Returns:
      ``(final carries, trajectories)``, every leaf ``[num_tasks, num_episodes, T, ...]``.
    """
    num_episodes = check_positive_int("num_episodes", num_episodes)
    num_tasks = jax.tree.leaves(env_params)[0].shape[0]
    if batched_policy:
        return _rollout_batch_batched_policy(
            env, policy, policy_params, env_params, key, check_positive_int("num_steps", num_steps),
            num_tasks, num_episodes, init_carry, auto_reset, params_per_task)

    def one_task(p_params, e_params, task_key):
        keys = jax.random.split(task_key, num_episodes)
        return jax.vmap(
            lambda k: rollout(env, policy, p_params, e_params, k, num_steps,
                              init_carry=init_carry, auto_reset=auto_reset)
        )(keys)

    in_axes = (0 if params_per_task else None, 0, 0)
    return jax.vmap(one_task, in_axes=in_axes)(
        policy_params, env_params, jax.random.split(key, num_tasks)
    )


def _rollout_batch_batched_policy(env, policy, policy_params, env_params, key, num_steps,
                                  num_tasks, num_episodes, init_carry, auto_reset,
                                  params_per_task):
    """``rollout_batch(batched_policy=True)``: scan over time of (batched policy, vmapped env)."""
    batch = (num_tasks, num_episodes)
    k_reset, k_policy, k_env, k_auto = jax.random.split(key, 4)
    per_rollout = lambda f: jax.vmap(jax.vmap(f, in_axes=(0, None)), in_axes=(0, 0))  # noqa: E731
    obs, env_state = per_rollout(env.reset)(jax.random.split(k_reset, batch), env_params)
    policy_carry = jax.tree.map(lambda x: jnp.broadcast_to(x, batch + jnp.shape(x)), init_carry)
    carry0 = RolloutCarry(env_state, obs, policy_carry, jnp.zeros(batch, jnp.bool_))

    def checked(lead):
        def call(p_params, carry, obs, k):
            out = policy(p_params, carry, obs, k)
            bad = [x.shape for x in jax.tree.leaves(out) if jnp.shape(x)[:1] != (lead,)]
            if bad:
                raise ValueError(
                    f"batched_policy=True: the policy is called on a batch of {lead} "
                    f"observations {obs.shape} and must return carry, action and extras with "
                    f"that leading axis; got leaves of shapes {bad}")
            return out
        return call

    def act(carry, obs, k):
        if params_per_task:
            return jax.vmap(checked(num_episodes))(policy_params, carry, obs,
                                                   jax.random.split(k, num_tasks))
        flat = lambda x: x.reshape((num_tasks * num_episodes,) + x.shape[2:])  # noqa: E731
        unflat = lambda x: x.reshape(batch + x.shape[1:])  # noqa: E731
        out = checked(num_tasks * num_episodes)(policy_params, jax.tree.map(flat, carry),
                                                flat(obs), k)
        return jax.tree.map(unflat, out)

    def transition(e_params, carry, policy_carry, action, extras, k_step, k_auto):
        return _transition(env, e_params, auto_reset, carry, policy_carry, action, extras,
                           k_step, k_auto)

    def _step(carry: RolloutCarry, t: jax.Array):
        policy_carry, action, extras = act(carry.policy_carry, carry.obs,
                                           jax.random.fold_in(k_policy, t))
        k_step = jax.random.split(jax.random.fold_in(k_env, t), batch)
        k_auto_t = jax.random.split(jax.random.fold_in(k_auto, t), batch)
        return jax.vmap(jax.vmap(transition, in_axes=(None, 0, 0, 0, 0, 0, 0)),
                        in_axes=(0, 0, 0, 0, 0, 0, 0))(
            env_params, carry, policy_carry, action, extras, k_step, k_auto_t)

    final, traj = jax.lax.scan(_step, carry0, jnp.arange(num_steps, dtype=jnp.uint32))
    return final, jax.tree.map(lambda x: jnp.moveaxis(x, 0, 2), traj)


def episode_returns(traj: Trajectory) -> jax.Array:
    """Undiscounted return of each rollout: the sum of valid rewards over the time axis (-1 of
    ``reward``), e.g. ``[num_tasks, num_episodes]`` for a batched trajectory."""
    return jnp.sum(jnp.where(traj.valid, traj.reward, 0.0), axis=-1)
