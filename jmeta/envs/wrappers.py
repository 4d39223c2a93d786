"""Wrappers: RL² trials, per-task sensor noise, time limits, automatic resets.

Wrappers that add task fields (observation noise) transform the environment *and* its task
distribution, so the new field is sampled per task like any other.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.envs.tasks import Range, TaskDistribution, check_positive_int, check_range


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """``jnp.where`` over two pytrees of the same structure with a scalar predicate."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class Wrapper(Environment):
    """Base wrapper: forwards everything to ``env``."""

    def __init__(self, env: Environment):
        self.env = env
        self.name = env.name

    def reset_env(self, key, params):
        return self.env.reset(key, params)

    def step_env(self, key, state, action, params):
        return self.env.step(key, state, action, params)

    def action_space(self, params=None):
        return self.env.action_space(params)

    def observation_space(self, params=None):
        return self.env.observation_space(params)

    def __getattr__(self, name):  # expose the wrapped env's attributes (num_arms, catalogue, ...)
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env!r})"


# --- time limit -------------------------------------------------------------------------------
@struct.dataclass
class TimeLimitState:
    env_state: Any
    time: jax.Array


class TimeLimit(Wrapper):
    """Truncates episodes after ``max_steps`` steps (``truncated=True``; ``terminated`` untouched).

    Args:
      env: the environment.
      max_steps: the limit, a positive int.
    """

    def __init__(self, env: Environment, max_steps: int):
        super().__init__(env)
        self.max_steps = check_positive_int("max_steps", max_steps)

    def reset_env(self, key, params):
        obs, state = self.env.reset(key, params)
        return obs, TimeLimitState(state, jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        obs, env_state, reward, term, trunc, info = self.env.step(key, state.env_state, action, params)
        time = state.time + 1
        trunc = jnp.logical_or(trunc, time >= self.max_steps)
        return obs, TimeLimitState(env_state, time), reward, term, trunc, info


# --- automatic reset --------------------------------------------------------------------------
def auto_reset_step(env: Environment, step_key: jax.Array, reset_key: jax.Array, state: Any,
                    action: jax.Array, params: Any):
    """One step of ``env`` that starts a new episode of the same task when the episode ends.

    Returns:
      ``(obs, state, reward, terminated, truncated, info, final_obs)``: ``obs`` and ``state`` are
      the new episode's first ones when the step ended the episode; ``final_obs`` is the true last
      observation (equal to ``obs`` otherwise), for bootstrapping truncated episodes.
    """
    obs, next_state, reward, term, trunc, info = env.step(step_key, state, action, params)
    done = jnp.logical_or(term, trunc)
    reset_obs, reset_state = env.reset(reset_key, params)
    final_obs = obs
    obs = jnp.where(done, reset_obs, obs)
    next_state = _select(done, reset_state, next_state)
    return obs, next_state, reward, term, trunc, info, final_obs


class AutoReset(Wrapper):
    """Starts a new episode of the same task when one ends (for fixed-length vectorised rollouts).

    The returned observation is then the new episode's first one; the last observation of the
    finished episode is in ``info["final_obs"]`` (always present, equal to ``obs`` otherwise), so
    truncated episodes can still bootstrap from it. (``jmeta.rollout.rollout(auto_reset=True)``
    uses :func:`auto_reset_step` directly with pre-split keys.)
    """

    def step_env(self, key, state, action, params):
        k_step, k_reset = jax.random.split(key)
        obs, state, reward, term, trunc, info, final_obs = auto_reset_step(
            self.env, k_step, k_reset, state, action, params
        )
        return obs, state, reward, term, trunc, {**info, "final_obs": final_obs}


# --- observation noise ------------------------------------------------------------------------
@struct.dataclass
class NoisyParams:
    """Task params with a per-task sensor-noise scale.

    Attributes:
      env_params: the wrapped env's task.
      obs_noise: standard deviation of the Gaussian noise added to every observation.
    """

    env_params: Any
    obs_noise: jax.Array


class ObservationNoise(Wrapper):
    """Adds ``N(0, obs_noise²)`` noise to observations; ``obs_noise`` is a task field.

    Use :func:`with_observation_noise` to get the matching task distribution. The true state is
    unaffected; only what the agent observes is noisy (sensor noise).
    """

    def _noisy(self, key, obs, params):
        return obs + params.obs_noise * jax.random.normal(key, obs.shape, obs.dtype)

    def reset_env(self, key, params):
        k_env, k_noise = jax.random.split(key)
        obs, state = self.env.reset(k_env, params.env_params)
        return self._noisy(k_noise, obs, params), state

    def step_env(self, key, state, action, params):
        k_env, k_noise = jax.random.split(key)
        obs, state, reward, term, trunc, info = self.env.step(k_env, state, action, params.env_params)
        return self._noisy(k_noise, obs, params), state, reward, term, trunc, info

    def action_space(self, params=None):
        return self.env.action_space(None if params is None else params.env_params)

    def observation_space(self, params=None):
        return self.env.observation_space(None if params is None else params.env_params)


def with_observation_noise(
    env: Environment, tasks: TaskDistribution, scale: Any, ood_scale: Any = None
) -> tuple[ObservationNoise, TaskDistribution]:
    """Wraps ``env`` with per-task sensor noise and extends ``tasks`` with its scale.

    Args:
      env, tasks: an environment and its task distribution.
      scale: noise standard deviation, a number (fixed) or a ``(low, high)`` range sampled per task.
      ood_scale: the ``ood`` split's range (default: ``scale``).

    Returns:
      ``(noisy_env, tasks)`` where tasks sample :class:`NoisyParams`.
    """
    scale = check_range("obs_noise", scale, lower=0.0)
    ood_scale = scale if ood_scale is None else check_range("ood_obs_noise", ood_scale, lower=0.0)
    inner = tasks.sampler

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> NoisyParams:
        k_task, k_noise = jax.random.split(key)
        lo, hi = ranges["obs_noise"]
        return NoisyParams(
            env_params=inner(k_task, ranges),
            obs_noise=jax.random.uniform(k_noise, minval=lo, maxval=hi),
        )

    noisy = TaskDistribution(
        env_name=tasks.env_name,
        sampler=sampler,
        ranges={**tasks.ranges, "obs_noise": scale},
        ood_ranges={**tasks.ood_ranges, "obs_noise": ood_scale},
        split=tasks.split,
    )
    return ObservationNoise(env), noisy


# --- RL² trials -------------------------------------------------------------------------------
@struct.dataclass
class TrialState:
    """State of an RL² trial.

    Attributes:
      env_state: the wrapped env's state in the current episode.
      episode: index of the current episode in the trial, int32.
      prev_action: the previous action (int32 scalar, or ``[action_dim]`` for boxes).
      prev_reward: the previous reward, float32.
      prev_done: whether the previous step ended an episode, bool.
    """

    env_state: Any
    episode: jax.Array
    prev_action: jax.Array
    prev_reward: jax.Array
    prev_done: jax.Array


class TrialWrapper(Wrapper):
    """Turns an env into RL² trials: ``num_episodes`` episodes of the *same* task (Duan et al. 2016).

    Between episodes the env is reset but the task (``params``) never changes. The observation is
    ``[inner obs (flattened), previous action (one-hot for discrete actions), previous reward,
    done flag]``, where the done flag is 1 on the first observation of every episode after the first
    (i.e. the previous step ended an episode) so a recurrent agent can tell episodes apart while its
    hidden state, reset only at trial start, carries what it learned about the task.

    The step that ends the last episode returns ``terminated=True``: the trial is the meta-episode
    and nothing follows it (never a time-limit truncation). ``info`` adds ``episode`` (index of the
    episode the step belongs to) and ``episode_done`` (the step ended an episode).

    Args:
      env: the environment.
      num_episodes: episodes per trial, a positive int.
    """

    def __init__(self, env: Environment, num_episodes: int):
        super().__init__(env)
        self.num_episodes = check_positive_int("num_episodes", num_episodes)

    def _action_dim(self, params) -> int:
        space = self.env.action_space(params)
        return space.n if isinstance(space, Discrete) else math.prod(space.shape)

    def _encode_action(self, action, params):
        space = self.env.action_space(params)
        if isinstance(space, Discrete):
            return jax.nn.one_hot(action, space.n, dtype=jnp.float32)
        return jnp.reshape(action, (-1,)).astype(jnp.float32)

    def _obs(self, inner_obs, action_enc, reward, done):
        return jnp.concatenate([
            jnp.reshape(inner_obs, (-1,)).astype(jnp.float32),
            action_enc,
            jnp.reshape(reward, (1,)).astype(jnp.float32),
            jnp.reshape(done, (1,)).astype(jnp.float32),
        ])

    def reset_env(self, key, params):
        inner_obs, env_state = self.env.reset(key, params)
        space = self.env.action_space(params)
        prev_action = jnp.zeros(space.shape, space.dtype)
        state = TrialState(
            env_state=env_state,
            episode=jnp.zeros((), jnp.int32),
            prev_action=prev_action,
            prev_reward=jnp.zeros((), jnp.float32),
            prev_done=jnp.zeros((), jnp.bool_),
        )
        zeros = jnp.zeros(self._action_dim(params), jnp.float32)
        return self._obs(inner_obs, zeros, 0.0, False), state

    def step_env(self, key, state, action, params):
        k_step, k_reset = jax.random.split(key)
        inner_obs, env_state, reward, term, trunc, info = self.env.step(
            k_step, state.env_state, action, params
        )
        episode_done = jnp.logical_or(term, trunc)
        reset_obs, reset_state = self.env.reset(k_reset, params)  # same task: same params
        inner_obs = jnp.where(episode_done, reset_obs, inner_obs)
        env_state = _select(episode_done, reset_state, env_state)
        trial_done = jnp.logical_and(episode_done, state.episode + 1 >= self.num_episodes)
        new_state = TrialState(
            env_state=env_state,
            episode=state.episode + episode_done.astype(jnp.int32),
            prev_action=action,
            prev_reward=reward,
            prev_done=episode_done,
        )
        obs = self._obs(inner_obs, self._encode_action(action, params), reward, episode_done)
        info = {**info, "episode": state.episode, "episode_done": episode_done}
        return obs, new_state, reward, trial_done, False, info

    def observation_space(self, params=None):
        inner = self.env.observation_space(params)
        size = math.prod(inner.shape) + self._action_dim(params) + 2
        return Box(-jnp.inf, jnp.inf, (size,))


# --- task in the observation (oracle baselines) -----------------------------------------------
class TaskInObservation(Wrapper):
    """Appends task features to every observation: the "oracle" of Finn et al. 2017 (the policy
    is told the task, e.g. the goal, so it needs no adaptation).

    Args:
      env: the environment.
      features: ``features(params) -> [feature_dim]`` float vector describing the task.
      feature_dim: its length.
    """

    def __init__(self, env: Environment, features, feature_dim: int):
        super().__init__(env)
        self.features = features
        self.feature_dim = check_positive_int("feature_dim", feature_dim)

    def _augment(self, obs, params):
        f = jnp.reshape(jnp.asarray(self.features(params), jnp.float32), (-1,))
        if f.shape != (self.feature_dim,):
            raise ValueError(f"task features have shape {f.shape}, expected ({self.feature_dim},)")
        return jnp.concatenate([jnp.reshape(obs, (-1,)).astype(jnp.float32), f])

    def reset_env(self, key, params):
        obs, state = self.env.reset(key, params)
        return self._augment(obs, params), state

    def step_env(self, key, state, action, params):
        obs, state, reward, term, trunc, info = self.env.step(key, state, action, params)
        return self._augment(obs, params), state, reward, term, trunc, info

    def observation_space(self, params=None):
        inner = self.env.observation_space(params)
        size = math.prod(inner.shape) + self.feature_dim
        return Box(-jnp.inf, jnp.inf, (size,))


# --- action rescaling (rllab's ``normalize``) ---------------------------------------------------
class RescaleAction(Wrapper):
    """Exposes a ``Box`` action space as ``[-1, 1]^d`` and maps actions affinely onto the wrapped
    env's box: ``a_env = low + (clip(a, -1, 1) + 1) / 2 · (high - low)``.

    This is the action half of rllab's ``normalize`` wrapper, which the MAML authors' code wraps
    around every environment: a Gaussian policy with unit initial std then explores a tenth of
    point-nav's ``[-0.1, 0.1]²`` box per unit of std rather than saturating it.

    Args:
      env: an environment whose action space is a ``Box`` with finite bounds.

    Raises:
      ValueError: the action space is not a Box or has an infinite bound.
    """

    def __init__(self, env: Environment):
        super().__init__(env)
        space = env.action_space()
        if not isinstance(space, Box):
            raise ValueError(f"RescaleAction needs a Box action space; {env.name} has {space!r}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"RescaleAction needs finite action bounds; {env.name} has {space!r}")
        self._low = np.asarray(space.low, np.float32)
        self._high = np.asarray(space.high, np.float32)

    def step_env(self, key, state, action, params):
        unit = jnp.clip(action, -1.0, 1.0)
        scaled = self._low + (unit + 1.0) * 0.5 * (self._high - self._low)
        return self.env.step(key, state, scaled.astype(jnp.float32), params)

    def action_space(self, params=None):
        return Box(-1.0, 1.0, self._low.shape)
