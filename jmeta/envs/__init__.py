"""Functional environments and task distributions (shared/DESIGN.md §3)."""

from jmeta.envs.base import Environment, check_action
from jmeta.envs.registry import config_class, describe, make, names, register
from jmeta.envs.spaces import Box, Discrete, Space
from jmeta.envs.tasks import TaskDistribution, check_positive_float, check_positive_int, check_range
from jmeta.envs.wrappers import (
    AutoReset,
    auto_reset_step,
    NoisyParams,
    ObservationNoise,
    RescaleAction,
    TaskInObservation,
    TimeLimit,
    TrialWrapper,
    Wrapper,
    with_observation_noise,
)

__all__ = [
    "AutoReset",
    "Box",
    "Discrete",
    "Environment",
    "NoisyParams",
    "ObservationNoise",
    "RescaleAction",
    "Space",
    "TaskDistribution",
    "TaskInObservation",
    "TimeLimit",
    "TrialWrapper",
    "Wrapper",
    "check_action",
    "check_positive_float",
    "check_positive_int",
    "check_range",
    "config_class",
    "describe",
    "make",
    "names",
    "register",
    "auto_reset_step",
    "with_observation_noise",
]
