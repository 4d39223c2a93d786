"""Adapter: a brax environment plus a randomisation function becomes a jmeta task distribution.

A task is a set of ``brax.base.System`` field overrides (``BraxParams.sys``: ``tree_replace``
path → array, e.g. ``{"geom_friction": [ngeom, 3], "body_mass": [nbody]}``), drawn per task by
``randomize_fn(key, sys, ranges)``. ``reset`` and ``step`` apply them with
``sys.tree_replace(params.sys)`` and run the brax env's own ``reset``/``step`` on a shallow copy of
the env that holds the task's System, so ``jax.vmap`` over params simulates every task with its
own physics, tasks are re-sampled every meta-iteration, and nothing recompiles. (Brax's
``DomainRandomizationVmapWrapper`` samples one batch of Systems at construction and swaps
``env.sys`` in and out with a context manager, brax#446; the shared env object is never mutated
here.)

>>> import brax.envs, jax
>>> from jmeta.envs.brax_adapter import from_brax
>>> benv = brax.envs.get_environment("inverted_pendulum", backend="mjx")
>>> def randomize(key, sys, ranges):  # pole mass ~ U(ranges["pole_mass"])
...     mass = jax.random.uniform(key, minval=ranges["pole_mass"][0],
...                               maxval=ranges["pole_mass"][1])
...     return {"body_mass": sys.body_mass.at[2].set(mass)}
>>> env, tasks = from_brax(benv, randomize, {"pole_mass": (2.0, 8.0)},
...                        ood_ranges={"pole_mass": (10.0, 15.0)}, horizon=200)
>>> tasks.sample(jax.random.key(0)).sys["body_mass"].shape
(3,)

Derived constants. MuJoCo derives some fields from the masses (``body_subtreemass``,
``body_invweight0``, ``dof_invweight0``); a ``randomize_fn`` that changes masses should set those
too if the model's constraints depend on them (a brax System is an ``mjx.Model``, so
:func:`jmeta.envs.mjx.base.derived_constants` computes them). Which fields a backend reads is the
backend's business: the ``mjx`` backend reads the ``mjx.Model`` fields (``body_mass``,
``geom_friction``, ...); the ``generalized`` one brax's own (``link.inertia.mass``, ...).

Episodes. jmeta counts the steps and truncates at ``horizon``. Pass the bare env
(``brax.envs.get_environment``), not ``brax.envs.create``, whose ``AutoResetWrapper`` would start
new episodes inside ``step`` and whose ``VmapWrapper`` batches; those, ``EvalWrapper`` and
``DomainRandomizationVmapWrapper`` are refused. An ``EpisodeWrapper`` is accepted: its time limit
(``done`` with ``info["truncation"]``) becomes a truncation, not a termination.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import brax.envs
import jax
import jax.numpy as jnp
from brax.base import System
from brax.envs.wrappers import training as brax_training
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box
from jmeta.envs.tasks import Range, TaskDistribution, check_positive_int, check_range

_REFUSED_WRAPPERS = {
    brax_training.AutoResetWrapper: "it starts new episodes inside step (jmeta resets: "
                                    "jmeta.envs.AutoReset or rollout(..., auto_reset=True))",
    brax_training.VmapWrapper: "it batches the env (jmeta vmaps over tasks itself)",
    brax_training.DomainRandomizationVmapWrapper: "it samples its Systems once, at construction "
                                                  "(brax#446); randomize_fn samples per task",
    brax_training.EvalWrapper: "it expects a batched env",
}

RandomizeFn = Callable[[jax.Array, System, Mapping[str, Range]], Any]


@struct.dataclass
class BraxParams:
    """A brax task.

    Attributes:
      sys: the task's System overrides, ``tree_replace`` path → array (each the shape of the
        field it replaces).
      horizon: episode length (static).
    """

    sys: dict[str, jax.Array]
    horizon: int = struct.field(pytree_node=False, default=1000)


@struct.dataclass
class BraxState:
    """A brax env's state under jmeta: brax's ``State`` and the step count."""

    env_state: brax.envs.State
    time: jax.Array  # int32 scalar


def _unwrap_checked(brax_env: Any) -> brax.envs.Env:
    if not isinstance(brax_env, brax.envs.Env):
        raise ValueError(f"brax_env: expected a brax.envs.Env (e.g. brax.envs.get_environment("
                         f"'inverted_pendulum', backend='mjx')), got {type(brax_env).__name__}")
    env = brax_env
    while isinstance(env, brax.envs.Wrapper):
        for cls, why in _REFUSED_WRAPPERS.items():
            if isinstance(env, cls):
                raise ValueError(f"brax_env: {cls.__name__} is not supported: {why}; pass the "
                                 "bare env (brax.envs.get_environment, not brax.envs.create)")
        env = env.env
    if not isinstance(getattr(env, "sys", None), System):
        raise ValueError(f"brax_env: {type(env).__name__} has no brax System (.sys); a "
                         "brax.envs.PipelineEnv is required")
    return env


def _with_sys(env: brax.envs.Env, sys: System) -> brax.envs.Env:
    """A shallow copy of ``env`` (and of each wrapper above it) whose System is ``sys``."""
    new = copy.copy(env)
    if isinstance(env, brax.envs.Wrapper):
        new.env = _with_sys(env.env, sys)
    else:
        new.sys = sys
    return new


def _fresh_containers(tree):
    """``tree`` with new dicts and dataclasses around the same leaves: brax envs update
    ``state.metrics``/``state.info`` in place, which must not reach the caller's state."""
    return jax.tree.map(lambda x: x, tree)


class BraxEnv(Environment):
    """A brax ``Env`` under the jmeta API, its System overridden per task (module docstring).

    Actions are in ``[-1, 1]`` (brax's convention), observations a flat array.
    """

    def __init__(self, brax_env: Any):
        self.unwrapped = _unwrap_checked(brax_env)
        self.brax_env = brax_env
        self.sys = self.unwrapped.sys
        self.name = f"brax:{type(self.unwrapped).__name__}"
        obs = jax.eval_shape(brax_env.reset, jax.random.key(0)).obs
        if not hasattr(obs, "shape") or len(obs.shape) != 1:
            raise ValueError(f"brax_env: observations must be a flat array, got {obs!r}")
        self._obs_shape = tuple(obs.shape)

    def task_sys(self, params: BraxParams) -> System:
        """The task's System (``tree_replace`` of its overrides; traced, vmappable)."""
        return self.sys.tree_replace(params.sys)

    def task_env(self, params: BraxParams) -> brax.envs.Env:
        """A shallow copy of the brax env that simulates the task ``params``."""
        return _with_sys(self.brax_env, self.task_sys(params))

    def reset_env(self, key, params):
        env_state = self.task_env(params).reset(key)
        return env_state.obs, BraxState(env_state, jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        env_state = self.task_env(params).step(_fresh_containers(state.env_state), action)
        time = state.time + 1
        done = env_state.done > 0
        brax_truncation = (env_state.info["truncation"] > 0 if "truncation" in env_state.info
                           else jnp.zeros((), jnp.bool_))
        terminated = done & ~brax_truncation
        truncated = ((time >= params.horizon) | brax_truncation) & ~terminated
        return (env_state.obs, BraxState(env_state, time), env_state.reward, terminated, truncated,
                dict(env_state.metrics))

    def action_space(self, params=None):
        return Box(-1.0, 1.0, (self.unwrapped.action_size,))

    def observation_space(self, params=None):
        return Box(-jnp.inf, jnp.inf, self._obs_shape)


def _resolve(sys: System, path: str):
    node = sys
    for part in path.split("."):
        if not part or not hasattr(node, part):
            raise ValueError(f"randomize_fn: {path!r} is not a field of the brax System (paths as "
                             "sys.tree_replace takes them, e.g. 'body_mass', 'geom_friction', "
                             "'dof_damping', 'opt.timestep')")
        node = getattr(node, part)
    if not hasattr(node, "shape"):
        raise ValueError(f"randomize_fn: {path!r} names a {type(node).__name__}, not an array "
                         "field of the brax System")
    return node


def _overrides(sys: System, out: Any) -> dict[str, jax.Array]:
    """The System field overrides that ``randomize_fn`` returned (a dict, or a System whose
    changed leaves are found by identity: ``tree_replace``/``replace`` keep the others)."""
    if isinstance(out, System):
        old, treedef = jax.tree_util.tree_flatten_with_path(sys)
        new, new_treedef = jax.tree_util.tree_flatten_with_path(out)
        if treedef != new_treedef:
            raise ValueError("randomize_fn: the returned System has a different structure from "
                             "brax_env.sys; change fields with sys.tree_replace({...})")
        out = {jax.tree_util.keystr(p)[1:]: b for (p, a), (_, b) in zip(old, new) if a is not b}
    elif not isinstance(out, Mapping):
        raise ValueError("randomize_fn: must return a brax System or a dict of System field "
                         f"overrides (path -> array), got {type(out).__name__}")
    if not out:
        raise ValueError("randomize_fn: changed no System field, so every task would be the same")
    result = {}
    for path, value in out.items():
        if not isinstance(path, str):
            raise ValueError(f"randomize_fn: override keys must be str paths, got {path!r}")
        field = _resolve(sys, path)
        value = jnp.asarray(value, field.dtype)
        if value.shape != field.shape:
            raise ValueError(f"randomize_fn: {path!r} has shape {value.shape}, the System's has "
                             f"{tuple(field.shape)} (return one task's fields, unbatched)")
        result[path] = value
    return result


def from_brax(
    brax_env: Any,
    randomize_fn: RandomizeFn,
    ranges: Mapping[str, Any],
    ood_ranges: Mapping[str, Any] | None = None,
    horizon: int = 1000,
) -> tuple[BraxEnv, TaskDistribution]:
    """Wraps a brax env and a System randomisation as a jmeta ``(env, tasks)`` pair.

    Args:
      brax_env: a brax ``PipelineEnv`` (any backend), e.g.
        ``brax.envs.get_environment("halfcheetah", backend="mjx")``; wrappers other than the
        refused ones (module docstring) are kept.
      randomize_fn: ``randomize_fn(key, sys, ranges) -> System | dict``: one task's System
        (``sys.tree_replace({...})``) or its field overrides (``{"body_mass": [nbody], ...}``),
        pure and jit-able, unbatched. ``ranges`` are the active split's ranges.
      ranges: the train/test ranges, ``name -> (low, high)``, passed to ``randomize_fn``.
      ood_ranges: shifted ranges for the ``ood`` split (missing keys: ``ranges``').
      horizon: episode length; reaching it is a truncation.

    Returns:
      ``(env, tasks)``; ``tasks.sample(key)`` is a :class:`BraxParams`.

    Raises:
      ValueError: an unsupported env or wrapper, a malformed range, ``ood_ranges`` keys not in
        ``ranges``, a bad horizon, or a ``randomize_fn`` whose output is not a System/dict of
        existing fields with their shapes (checked at construction with ``jax.eval_shape``).
    """
    env = BraxEnv(brax_env)
    if not callable(randomize_fn):
        raise ValueError(f"randomize_fn: expected a function (key, sys, ranges) -> System | dict,"
                         f" got {randomize_fn!r}")
    ranges = {k: check_range(k, v) for k, v in ranges.items()}
    ood_ranges = {k: check_range(f"ood_{k}", v) for k, v in (ood_ranges or {}).items()}
    unknown = set(ood_ranges) - set(ranges)
    if unknown:
        raise ValueError(f"ood_ranges has keys not in ranges: {sorted(unknown)}")
    horizon = check_positive_int("horizon", horizon)
    sys = env.sys

    def sampler(key: jax.Array, active: Mapping[str, Range]) -> BraxParams:
        return BraxParams(sys=_overrides(sys, randomize_fn(key, sys, active)), horizon=horizon)

    tasks = TaskDistribution(env.name, sampler, ranges, ood_ranges)
    for split in (tasks, tasks.ood):  # validate the output's fields and shapes, cheaply
        jax.eval_shape(split.sample, jax.random.key(0))
    return env, tasks


__all__ = ["BraxEnv", "BraxParams", "BraxState", "from_brax"]
