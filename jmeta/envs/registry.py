"""``jmeta.make(name, **overrides) -> (env, tasks)`` and the registry of named environments."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import importlib

from jmeta.envs import bandit, cold_start_rec, load_balancing, memory_cue, point_nav, tabular_mdp
from jmeta.envs.mjx import config as mjx_config
from jmeta.envs.base import Environment
from jmeta.envs.tasks import TaskDistribution
from jmeta.envs.wrappers import RescaleAction, with_observation_noise

Builder = Callable[[Any], tuple[Environment, TaskDistribution]]

_REGISTRY: dict[str, tuple[type, Builder]] = {}

# Options ``make`` takes for every env on top of its config's fields (they wrap the env).
WRAPPER_OPTIONS = ("obs_noise", "ood_obs_noise", "rescale_actions")


def register(name: str, config_cls: type, builder: Builder) -> None:
    """Registers ``builder(config_cls(**overrides)) -> (env, tasks)`` under ``name``."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = (config_cls, builder)


def names() -> list[str]:
    """The registered environment names, sorted."""
    return sorted(_REGISTRY)


def config_class(name: str) -> type:
    """The config dataclass of ``name`` (its fields are the overrides ``make`` accepts)."""
    _check_name(name)
    return _REGISTRY[name][0]


def describe(name: str) -> dict[str, Any]:
    """Options of ``name`` with their defaults (``obs_noise`` is accepted by every env)."""
    cls = config_class(name)
    options = {f.name: f.default for f in dataclasses.fields(cls)}
    options["obs_noise"] = None
    options["rescale_actions"] = False
    return options


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}; valid names: {', '.join(names())}")


def make(name: str, *, obs_noise: Any = None, ood_obs_noise: Any = None,
         rescale_actions: bool = False, **overrides: Any):
    """Builds a registered environment and its task distribution.

    Args:
      name: one of :func:`names`.
      obs_noise: optional per-task sensor noise std, a number or a ``(low, high)`` range sampled
        per task (wraps the env with :class:`jmeta.envs.wrappers.ObservationNoise`).
      ood_obs_noise: the ``ood`` split's noise range (default: ``obs_noise``).
      rescale_actions: the policy acts in ``[-1, 1]^d`` and actions are mapped onto the env's
        box (:class:`jmeta.envs.wrappers.RescaleAction`, the action half of rllab's
        ``normalize``, as the MAML authors' code wraps every env); Box action spaces only.
      **overrides: fields of the env's config (see :func:`describe`), e.g. ``goal_radius=0.5``,
        ``num_arms=10``, ``friction=(0.5, 0.9)``.

    Returns:
      ``(env, tasks)``: the environment and its :class:`TaskDistribution` (``tasks.train``,
      ``tasks.test``, ``tasks.ood``).

    Raises:
      ValueError: unknown name (lists the valid names), unknown override (lists the valid
        ones) or an invalid value (names the field).

    >>> env, tasks = make("bandit", num_arms=10)
    """
    _check_name(name)
    config_cls, builder = _REGISTRY[name]
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown override(s) {', '.join(map(repr, unknown))} for environment {name!r}; "
            f"valid: {', '.join(valid + list(WRAPPER_OPTIONS))}"
        )
    if not isinstance(rescale_actions, bool):
        raise ValueError(f"rescale_actions: expected True or False, got {rescale_actions!r}")
    env, tasks = builder(config_cls(**overrides))
    if rescale_actions:
        env = RescaleAction(env)
    if obs_noise is not None:
        env, tasks = with_observation_noise(env, tasks, obs_noise, ood_obs_noise)
    elif ood_obs_noise is not None:
        raise ValueError("ood_obs_noise needs obs_noise (the train/test noise range) too")
    return env, tasks


register("bandit", bandit.BanditConfig, bandit.build)
register("tabular-mdp", tabular_mdp.TabularMDPConfig, tabular_mdp.build)
register("point-nav", point_nav.PointNavConfig, point_nav.build)
register("cold-start-rec", cold_start_rec.ColdStartConfig, cold_start_rec.build)
register("memory-cue", memory_cue.MemoryCueConfig, memory_cue.build)
register("load-balancing", load_balancing.LoadBalancingConfig, load_balancing.build)


def _lazy(module: str, builder: str) -> Builder:
    """A builder that imports ``module`` (MuJoCo and MJX) only when the env is built."""

    def build(config):
        return getattr(importlib.import_module(module), builder)(config)

    return build


register("halfcheetah-vel", mjx_config.HalfCheetahVelConfig,
         _lazy("jmeta.envs.mjx.halfcheetah", "build_vel"))
register("halfcheetah-dir", mjx_config.HalfCheetahDirConfig,
         _lazy("jmeta.envs.mjx.halfcheetah", "build_dir"))
register("ant-vel", mjx_config.AntVelConfig, _lazy("jmeta.envs.mjx.ant", "build_vel"))
register("ant-dir", mjx_config.AntDirConfig, _lazy("jmeta.envs.mjx.ant", "build_dir"))
register("ant-dir-2d", mjx_config.AntDir2DConfig, _lazy("jmeta.envs.mjx.ant", "build_dir_2d"))
register("ant-goal", mjx_config.AntGoalConfig, _lazy("jmeta.envs.mjx.ant", "build_goal"))
register("warehouse", mjx_config.WarehouseConfig, _lazy("jmeta.envs.mjx.warehouse", "build"))
