"""Configs of the MJX tasks: plain dataclasses, importable without MuJoCo.

``jmeta.make`` validates the options here and imports the simulator only when it builds an env,
so ``import jmeta`` stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jmeta.envs.tasks import Range, check_positive_int, check_range

SOLVER_NAMES = ("newton", "cg")


def check_positive_range(field: str, value: Any) -> Range:
    """A ``(low, high)`` range (or a number: a fixed value) with ``0 < low <= high``.

    Raises:
      ValueError: naming ``field``, for a malformed range, ``low > high`` or ``low <= 0``.
    """
    low, high = check_range(field, value)
    if low <= 0:
        raise ValueError(f"{field}: must be > 0, got ({low}, {high})")
    return (low, high)


@dataclasses.dataclass(frozen=True)
class MJXConfig:
    """Options every MJX task accepts (``jmeta.make(name, ...)``).

    Attributes:
      horizon: episode length in env steps.
      frame_skip: physics steps per env step.
      solver: ``"newton"`` or ``"cg"`` (``None``: the MJCF's).
      iterations: solver iterations (``None``: the MJCF's; see the module docstring).
      ls_iterations: line-search iterations (``None``: the MJCF's).
      friction: per-task sliding friction range of every geom (``None``: the MJCF's).
      mass_scale: per-task, per-body mass-and-inertia multiplier range (``None``: 1).
      damping_scale: per-task joint-damping multiplier range (``None``: 1).
      ood_friction, ood_mass_scale, ood_damping_scale: the ``ood`` split's ranges (``None``:
        the train/test range).
    """

    horizon: int = 200
    frame_skip: int = 5
    solver: str | None = "newton"
    iterations: int | None = 1
    ls_iterations: int | None = 4
    friction: Range | None = None
    mass_scale: Range | None = None
    damping_scale: Range | None = None
    ood_friction: Range | None = None
    ood_mass_scale: Range | None = None
    ood_damping_scale: Range | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("horizon", check_positive_int("horizon", self.horizon))
        set_("frame_skip", check_positive_int("frame_skip", self.frame_skip))
        if self.solver is not None and self.solver not in SOLVER_NAMES:
            raise ValueError(f"solver: expected one of {SOLVER_NAMES} or None, got "
                             f"{self.solver!r}")
        for f in ("iterations", "ls_iterations"):
            if getattr(self, f) is not None:
                set_(f, check_positive_int(f, getattr(self, f)))
        for f in ("friction", "mass_scale", "damping_scale", "ood_friction", "ood_mass_scale",
                  "ood_damping_scale"):
            if getattr(self, f) is not None:
                set_(f, check_positive_range(f, getattr(self, f)))
        for f in ("friction", "mass_scale", "damping_scale"):
            if getattr(self, "ood_" + f) is not None and getattr(self, f) is None:
                raise ValueError(f"ood_{f}: needs {f} (the train/test range) too")

    def physics_ranges(self) -> tuple[dict[str, Range], dict[str, Range]]:
        """``(ranges, ood_ranges)`` of the physics fields that are set."""
        ranges, ood = {}, {}
        for f in ("friction", "mass_scale", "damping_scale"):
            if getattr(self, f) is not None:
                ranges[f] = getattr(self, f)
            if getattr(self, "ood_" + f) is not None:
                ood[f] = getattr(self, "ood_" + f)
        return ranges, ood

    def env_kwargs(self) -> dict[str, Any]:
        return dict(frame_skip=self.frame_skip, solver=self.solver, iterations=self.iterations,
                    ls_iterations=self.ls_iterations)


@dataclasses.dataclass(frozen=True)
class HalfCheetahVelConfig(MJXConfig):
    """``jmeta.make("halfcheetah-vel", ...)``: the MJX options plus the velocity range.

    Attributes:
      velocity: train/test target-velocity range (Finn et al. 2017: U[0, 2] m/s).
      ood_velocity: the ``ood`` split's range (default U[2, 3]: faster than any training task).
      ctrl_cost: control-cost weight c of ``-c·|a|²`` (MAML's rllab env: 0.5·0.1 = 0.05).
    """

    velocity: Range = (0.0, 2.0)
    ood_velocity: Range = (2.0, 3.0)
    ctrl_cost: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "velocity", check_range("velocity", self.velocity))
        object.__setattr__(self, "ood_velocity", check_range("ood_velocity", self.ood_velocity))
        object.__setattr__(self, "ctrl_cost", check_non_negative("ctrl_cost", self.ctrl_cost))


@dataclasses.dataclass(frozen=True)
class HalfCheetahDirConfig(MJXConfig):
    """``jmeta.make("halfcheetah-dir", ...)``: the MJX options plus the control cost.

    The task is the direction, forward (+1) or backward (−1) with probability 1/2 each, in every
    split (a binary task has no shifted range: the ``ood`` split differs only through the
    ``ood_*`` physics ranges, if set).

    Attributes:
      ctrl_cost: control-cost weight c of ``-c·|a|²`` (0.05, as halfcheetah-vel).
    """

    ctrl_cost: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "ctrl_cost", check_non_negative("ctrl_cost", self.ctrl_cost))


def check_non_negative(field: str, value: Any) -> float:
    from jmeta.envs.tasks import check_positive_float

    return check_positive_float(field, value, allow_zero=True)
