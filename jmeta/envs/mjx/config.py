"""Configs of the MJX tasks: plain dataclasses, importable without MuJoCo.

``jmeta.make`` validates the options here and imports the simulator only when it builds an env,
so ``import jmeta`` stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jmeta.envs.tasks import Range, check_positive_float, check_positive_int, check_range

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
      iterations: solver iterations (``None``: the MJCF's). The default cap (1, with 4
        line-search iterations) is for throughput. On HalfCheetah it halves single-task TRPO's
        learning speed, and C MuJoCo at the same cap blows up. Learning runs there should use
        4 / 8, which learns like the MJCF's 4 / 50 and costs 3.2x the 1 / 4 step in MJX on CPU
        (``benchmarks/cheetah_solver.py``).
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
    """``value`` as a float if finite and >= 0, else a ``ValueError`` naming ``field``."""
    return check_positive_float(field, value, allow_zero=True)


# --- Ant (jmeta.envs.mjx.ant; the protocols and their sources are in that module's docstring) ---
@dataclasses.dataclass(frozen=True)
class AntConfig(MJXConfig):
    """Options every Ant task accepts: the MJX options plus the reward and termination terms.

    Attributes:
      ctrl_cost: weight c of ``-c·|a|²``.
      contact_cost: weight of ``-Σ clip(cfrc_ext, -1, 1)²`` (0.5·1e-3 in every source).
      survive_reward: bonus added every step (any finite number).
      healthy_z: ``(low, high)`` torso heights outside which the episode terminates (``None``:
        never terminates).
      contact_forces: observe and charge the clipped external contact forces (``False``: as the
        gym ports on mujoco-py 2.x saw them, all zero, openai/gym#1541; and cheaper).
    """

    ctrl_cost: float = 0.005
    contact_cost: float = 5e-4
    survive_reward: float = 0.05
    healthy_z: Range | None = (0.2, 1.0)
    contact_forces: bool = True

    def __post_init__(self):
        import math

        super().__post_init__()
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("ctrl_cost", check_non_negative("ctrl_cost", self.ctrl_cost))
        set_("contact_cost", check_non_negative("contact_cost", self.contact_cost))
        sr = self.survive_reward
        if isinstance(sr, bool) or not isinstance(sr, (int, float)) or not math.isfinite(sr):
            raise ValueError(f"survive_reward: expected a finite number, got {sr!r}")
        set_("survive_reward", float(sr))
        if self.healthy_z is not None:
            set_("healthy_z", check_range("healthy_z", self.healthy_z))
        if not isinstance(self.contact_forces, bool):
            raise ValueError(f"contact_forces: expected True or False, got {self.contact_forces!r}")


@dataclasses.dataclass(frozen=True)
class AntVelConfig(AntConfig):
    """``jmeta.make("ant-vel", ...)``: target velocity (Finn et al. 2017, MAML's rllab
    ``ant_env_rand.py``).

    Attributes:
      velocity: train/test target-velocity range (MAML: U[0, 3] m/s).
      ood_velocity: the ``ood`` split's range (default U[3, 4]: faster than any training task).
      survive_reward: 1.05: MAML's ``+1.0`` on the velocity term plus its survive reward 0.05.
    """

    velocity: Range = (0.0, 3.0)
    ood_velocity: Range = (3.0, 4.0)
    survive_reward: float = 1.05

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "velocity", check_range("velocity", self.velocity))
        object.__setattr__(self, "ood_velocity", check_range("ood_velocity", self.ood_velocity))


@dataclasses.dataclass(frozen=True)
class AntDirConfig(AntConfig):
    """``jmeta.make("ant-dir", ...)``: forward (+1) or backward (−1) along x, p = 1/2 each, in
    every split (MAML's rllab ``ant_env_rand_direc.py``); the ``ood`` split differs only through
    the ``ood_*`` physics ranges, if set."""


@dataclasses.dataclass(frozen=True)
class AntDir2DConfig(AntConfig):
    """``jmeta.make("ant-dir-2d", ...)``: a direction in the plane (ProMP's
    ``AntRandDirec2DEnv``); reward = torso velocity projected on it.

    Attributes:
      angle: train/test range of the direction's angle θ (radians; ProMP: U[0, 2π)).
      ood_angle: the ``ood`` split's range (``None``: the train range; e.g. ``angle=(0, 4.71),
        ood_angle=(4.71, 6.28)`` holds out a sector).
      ctrl_cost, survive_reward, healthy_z: ProMP's 0.5, 1.0 and [0, 1].
    """

    angle: Range = (0.0, 6.283185307179586)  # [0, 2π)
    ood_angle: Range | None = None
    ctrl_cost: float = 0.5
    survive_reward: float = 1.0
    healthy_z: Range | None = (0.0, 1.0)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "angle", check_range("angle", self.angle))
        if self.ood_angle is not None:
            object.__setattr__(self, "ood_angle", check_range("ood_angle", self.ood_angle))


@dataclasses.dataclass(frozen=True)
class AntGoalConfig(AntConfig):
    """``jmeta.make("ant-goal", ...)``: reach a goal position (ProMP's ``AntRandGoalEnv``);
    reward ``-|xy - goal|₁``.

    Attributes:
      goal_radius: train/test goals are uniform (by area) in the annulus ``low ≤ |g| ≤ high``
        (ProMP: the disc of radius 3, ``(0, 3)``).
      ood_goal_radius: the ``ood`` split's annulus (default ``(3, 4)``: farther out).
      ctrl_cost, survive_reward, healthy_z: ProMP's 0.1, 0 and no termination.
    """

    goal_radius: Range = (0.0, 3.0)
    ood_goal_radius: Range = (3.0, 4.0)
    ctrl_cost: float = 0.1
    survive_reward: float = 0.0
    healthy_z: Range | None = None

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "goal_radius",
                           check_range("goal_radius", self.goal_radius, lower=0.0))
        object.__setattr__(self, "ood_goal_radius",
                           check_range("ood_goal_radius", self.ood_goal_radius, lower=0.0))


# --- Warehouse (jmeta.envs.mjx.warehouse; the protocol is in that module's docstring) ----------
@dataclasses.dataclass(frozen=True)
class WarehouseConfig(MJXConfig):
    """``jmeta.make("warehouse", ...)``: a differential-drive robot carries a cargo box to a goal.

    ``friction`` is MJXConfig's field with a warehouse meaning and default: the absolute sliding
    friction of the floor and the wheels (not of every geom), ``(0.5, 0.9)`` per task.
    ``mass_scale`` scales the robot's bodies only; the cargo's mass comes from ``cargo_mass``.

    Attributes:
      friction: train/test floor/wheel friction range (> 0; ``None``: the MJCF's 0.7, then set
        ``ood_friction=None`` too).
      ood_friction: the ``ood`` split's range (default ``(0.3, 0.5)``: more slippery).
      cargo_mass: train/test payload added to the 0.5 kg crate, kg (≥ 0; default ``(0, 5)``).
      ood_cargo_mass: the ``ood`` split's payload range (default ``(5, 8)``: heavier).
      goal_radius: train/test goals are uniform (by area) in the annulus ``low ≤ |g| ≤ high``
        around the start, m (default ``(0.5, 2.0)``).
      ood_goal_radius: the ``ood`` split's annulus (default ``(2.0, 3.0)``: farther out).
      ctrl_cost: weight c of ``-c·|a|²`` (≥ 0).
      fall_penalty: fixed penalty when the cargo falls off the tray (≥ 0), on top of the rest of
        the episode charged at the fallen cargo's distance.
      iterations, ls_iterations: 6 and 6, above MJXConfig's 1 and 4: with fewer, MJX's solve of
        the crate resting on the tray does not converge and the crate hops or is launched (the
        measurements are in ``assets/warehouse.xml``).
    """

    iterations: int | None = 6
    ls_iterations: int | None = 6
    friction: Range | None = (0.5, 0.9)
    ood_friction: Range | None = (0.3, 0.5)
    cargo_mass: Range = (0.0, 5.0)
    ood_cargo_mass: Range = (5.0, 8.0)
    goal_radius: Range = (0.5, 2.0)
    ood_goal_radius: Range = (2.0, 3.0)
    ctrl_cost: float = 0.01
    fall_penalty: float = 10.0

    def __post_init__(self):
        super().__post_init__()
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in ("cargo_mass", "ood_cargo_mass", "goal_radius", "ood_goal_radius"):
            set_(f, check_range(f, getattr(self, f), lower=0.0))
        set_("ctrl_cost", check_non_negative("ctrl_cost", self.ctrl_cost))
        set_("fall_penalty", check_non_negative("fall_penalty", self.fall_penalty))
