"""Task distributions: pure samplers of ``EnvParams`` with train / test / ood splits.

A task *is* an environment's ``EnvParams``. A :class:`TaskDistribution` samples one with a pure,
jit-able ``sample(key)``. Its ranges are declarative (``name -> (low, high)``), validated on
construction and shown by ``jmeta.envs.describe``.

Splits:
  * ``train``: the meta-training distribution.
  * ``test``: held out: the same ranges, drawn from a key stream disjoint from ``train`` (the key is
    folded with the split's salt), so the same key never yields the same task in both splits and no
    test task was seen in training. (For continuous task spaces, repeats have probability zero.)
  * ``ood``: shifted ranges (``ood_ranges``), e.g. goals farther out, for meta-overfitting studies.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import numpy as np

Range = tuple[float, float]
SPLITS = ("train", "test", "ood")
_SPLIT_SALT = {"train": 0, "test": 1, "ood": 2}


def check_range(
    field: str,
    value: Any,
    *,
    lower: float | None = None,
    upper: float | None = None,
    scalar_means: Callable[[float], Range] | None = None,
) -> Range:
    """Validates a ``(low, high)`` range and returns it as a tuple of floats.

    Args:
      field: the name used in error messages.
      value: a ``(low, high)`` pair, or a number (then ``scalar_means(number)`` gives the range;
        by default a fixed value ``(x, x)``).
      lower, upper: bounds the range must lie within (inclusive).
      scalar_means: how a single number is read.

    Raises:
      ValueError: wrong type, non-finite values, ``low > high`` or out of bounds.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        value = scalar_means(float(value)) if scalar_means else (float(value), float(value))
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
               for v in value)
    ):
        raise ValueError(
            f"{field}: expected a number or a (low, high) pair of numbers, got {value!r}"
        )
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{field}: range must be finite, got ({low}, {high})")
    if low > high:
        raise ValueError(f"{field}: low must be <= high, got ({low}, {high})")
    if lower is not None and low < lower:
        raise ValueError(f"{field}: low must be >= {lower}, got ({low}, {high})")
    if upper is not None and high > upper:
        raise ValueError(f"{field}: high must be <= {upper}, got ({low}, {high})")
    return (low, high)


def check_positive_int(field: str, value: Any) -> int:
    """Returns ``value`` if it is a positive int, else raises a ``ValueError`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{field}: expected a positive int, got {value!r}")
    return int(value)


def check_positive_float(field: str, value: Any, *, allow_zero: bool = False) -> float:
    """Returns ``value`` as a float if finite and > 0 (>= 0 with ``allow_zero``), else raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{field}: expected a number, got {value!r}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not math.isfinite(value) or not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{field}: expected a finite {kind} number, got {value!r}")
    return value


Sampler = Callable[[jax.Array, Mapping[str, Range]], Any]


@dataclasses.dataclass(frozen=True)
class TaskDistribution:
    """A pure, jit-able distribution over tasks (``EnvParams``).

    Attributes:
      env_name: the environment the tasks belong to.
      sampler: ``sampler(key, ranges) -> EnvParams``, pure.
      ranges: the train/test task-distribution parameters, ``name -> pair``: a ``(low, high)``
        range for most fields (each env's docstring says which are otherwise, e.g. a
        ``(mean, std)`` prior). Validated by the env's config before they get here.
      ood_ranges: the shifted parameters of the ``ood`` split (same keys as ``ranges`` or a
        subset; missing keys fall back to ``ranges``).
      split: ``"train"``, ``"test"`` or ``"ood"``.

    >>> import jax, jmeta
    >>> env, tasks = jmeta.make("point-nav")
    >>> goal = tasks.test.sample(jax.random.key(0)).goal
    """

    env_name: str
    sampler: Sampler = dataclasses.field(repr=False)
    ranges: Mapping[str, Range]
    ood_ranges: Mapping[str, Range]
    split: str = "train"

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        object.__setattr__(self, "ranges", dict(self.ranges))
        object.__setattr__(self, "ood_ranges", dict(self.ood_ranges))

    def __hash__(self) -> int:  # hashable, so it can be a static argument of jax.jit
        return hash((self.env_name, self.sampler, tuple(sorted(self.ranges.items())),
                     tuple(sorted(self.ood_ranges.items())), self.split))

    @property
    def active_ranges(self) -> dict[str, Range]:
        """The ranges this split samples from."""
        if self.split == "ood":
            return {**self.ranges, **self.ood_ranges}
        return dict(self.ranges)

    def sample(self, key: jax.Array) -> Any:
        """Samples one task (``EnvParams``). Pure and jit-able."""
        key = jax.random.fold_in(key, _SPLIT_SALT[self.split])
        return self.sampler(key, self.active_ranges)

    def sample_batch(self, key: jax.Array, num_tasks: int) -> Any:
        """Samples ``num_tasks`` tasks, stacked along a leading ``[num_tasks]`` axis."""
        num_tasks = check_positive_int("num_tasks", num_tasks)
        return jax.vmap(self.sample)(jax.random.split(key, num_tasks))

    def with_split(self, split: str) -> "TaskDistribution":
        return dataclasses.replace(self, split=split)

    @property
    def train(self) -> "TaskDistribution":
        return self.with_split("train")

    @property
    def test(self) -> "TaskDistribution":
        return self.with_split("test")

    @property
    def ood(self) -> "TaskDistribution":
        return self.with_split("ood")


def unwrap_params(params: Any, cls: type) -> Any:
    """The ``cls`` instance inside ``params``, looking through wrapper params' ``env_params``
    (observation noise, ...); ``None`` when there is none."""
    while params is not None and not isinstance(params, cls):
        params = getattr(params, "env_params", None)
    return params


def task_horizon(tasks: TaskDistribution, option: str = "num_steps") -> int:
    """The static episode length (``horizon``) of ``tasks``' params, looking through wrapper
    params (``env_params``) such as observation noise.

    Raises:
      ValueError: the params have no static ``horizon``; the message names ``option``, the
        setting that gives the length instead.
    """
    params = tasks.sample(jax.random.key(0))
    while params is not None:
        horizon = getattr(params, "horizon", None)
        if isinstance(horizon, int):
            return horizon
        params = getattr(params, "env_params", None)
    raise ValueError(f"{option}: the tasks have no static 'horizon'; set it explicitly")
