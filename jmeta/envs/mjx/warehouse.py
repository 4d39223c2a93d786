"""The warehouse task: a differential-drive robot carries a cargo box to a goal, in MJX.

This is jmeta's own task (the seed's warehouse robot), not a task from a paper. Protocol:

* model: ``assets/warehouse.xml``, written for MJX (its comments give the reasons and the
  measurements behind each choice). A 10.15 kg base (chassis, tray, a rear caster and a front
  anti-tip caster, both nearly frictionless) on two 0.1 m sphere wheels, 0.4 m apart, driven by
  velocity servos (torque ``5·(10·ctrl − ω)`` N·m clipped to ±6 N·m, so ``ctrl = 1`` is 1 m/s
  ground speed); a 0.2 m cargo crate (0.5 kg empty) rests, free, on a 0.6 m × 0.6 m tray
  (crate–tray friction 0.5). Timestep 0.01 s, Euler, elliptic friction cones, Newton with 6
  iterations and 6 line-search iterations (:class:`WarehouseConfig`'s defaults, above
  MJXConfig's 1 and 4, with which the crate hops off the tray); ``frame_skip`` 5, so an env
  step is 0.05 s and the default 200-step episode is 10 s. Only wheel–floor, caster–floor and
  crate–tray contacts exist (at most 8).
* task (:class:`WarehouseParams`), drawn per task and fixed for the episode:

  - goal: a 2D point in the annulus ``goal_radius`` (default radius in [0.5, 2.0] m) around the
    start, uniform over its area (radius ``sqrt(U(r_lo², r_hi²))``, angle ``U(−π, π)``);
    ``ood``: ``ood_goal_radius`` [2.0, 3.0] m, farther than any training goal;
  - friction: the sliding friction μ of the floor and the wheels, absolute, ``U[0.5, 0.9]``
    (``ood``: ``U[0.3, 0.5]``). A wheel–floor contact uses μ (MuJoCo takes the larger of the two
    geoms'); the casters are nearly frictionless (0.01) and the crate–tray friction stays 0.5.
    The wheels push with up to 60 N each, more than μN for every task of the default ranges, so
    a hard start or turn spins them (the ``slip`` in ``info``), more at low μ, and the robot
    accelerates and turns more slowly;
  - cargo mass: payload added to the empty crate's 0.5 kg, ``U[0, 5]`` kg (``ood``
    ``U[5, 8]``). The range is added mass so that an empty crate (0 kg payload) is not a
    massless body, which MuJoCo cannot simulate. The crate's inertia scales with its mass.

  ``friction``, ``mass_scale`` and ``damping_scale`` are MJXConfig's generic ranges: the
  warehouse reads ``friction`` as the floor/wheel μ above (default ``(0.5, 0.9)``, not ``None``)
  and applies ``mass_scale`` (per body) to the robot's bodies only; the cargo's mass is set by
  ``cargo_mass``.
* the cargo is a free body, not welded: it slides when the base accelerates harder than the
  crate–tray friction allows (0.5 g), which at high floor friction a bang-bang policy does; it
  creeps a few cm per hard manoeuvre and falls once its centre is past the tray's edge, 0.3 m
  from the centre. Welding it would make the cargo mass a plain payload and remove the
  trade-off between speed and keeping the load; below 0.5 g of acceleration the crate does not
  slide at all and it takes many hard manoeuvres to lose it, so learning stays possible.
* reset: the base at the origin ± 2 cm, heading ``U(−0.1, 0.1)`` rad, at rest, the crate at the
  tray's centre (``qpos`` noise only; the task is never drawn in ``reset``).
* observation (14), positions in m, velocities in m/s and rad/s, vectors in the robot frame
  (x forward, y left) unless noted:
  ``[base x, y (world); cos θ, sin θ; base vx, vy; yaw rate; left, right wheel rim speed ω·r;
  cargo offset from the tray's centre (x, y, z − rest height); goal − base (x, y)]``.
* action (2): left and right wheel speed commands in ``[−1, 1]`` (clipped).
* reward, with d = ‖cargo_xy − goal‖ after the step::

      r = −d − ctrl_cost·|a|²                                  (ctrl_cost 0.01)
          − fallen · (fall_penalty + (H − t)·d)                (fall_penalty 10)

  ``fallen``: the crate's centre has left the tray (more than 0.3 m from its centre along either
  tray axis) or dropped 5 cm below its rest height; the episode then *terminates*. ``H − t``
  is the number of steps left in the episode, so a fall costs what the rest of the episode
  would have with the crate lying where it fell, plus ``fall_penalty``: dropping the crate is
  always at least ``fall_penalty`` worse than stopping where it is (with negative per-step
  rewards and a bare penalty, ending the episode early could pay).
* truncation at ``horizon`` (default 200).

``info``: ``distance`` (d), ``ctrl_cost``, ``fallen``, ``slip`` (mean over the wheels of
``|ω·r − v_contact|``, m/s) and the base's ``diverged``.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jmeta.envs.mjx.base import MJXEnv, Physics, asset_path
from jmeta.envs.mjx.config import WarehouseConfig
from jmeta.envs.tasks import Range, TaskDistribution

WHEEL_RADIUS = 0.1  # m
HALF_TRACK = 0.2  # m, wheel distance from the base's centre line
TRAY_CENTRE = (-0.05, 0.0, 0.12)  # the tray's top centre in the base frame (m)
CARGO_HALF = 0.1  # the crate's half-size (m)
TRAY_HALF = 0.3  # the tray's half-size (m): the crate has fallen once its centre is past it
DROP = 0.05  # m below its rest height at which the crate counts as fallen


@struct.dataclass
class WarehouseParams:
    """A warehouse task. Build it with :meth:`Warehouse.make_params`, which keeps the
    informational ``friction``/``cargo_mass`` and the simulated ``physics`` consistent.

    Attributes:
      goal: ``[2]`` goal of the cargo in the world frame (m); the robot starts at the origin.
      friction: floor/wheel sliding friction μ (scalar; what ``physics`` was built from).
      cargo_mass: payload added to the 0.5 kg crate (kg, scalar; what ``physics`` was built
        from).
      physics: the task's :class:`Physics` (the simulator reads only this).
      horizon: episode length (static).
    """

    goal: jax.Array
    friction: jax.Array
    cargo_mass: jax.Array
    physics: Physics
    horizon: int = struct.field(pytree_node=False, default=200)


class Warehouse(MJXEnv):
    """The warehouse robot (see module docstring).

    Args:
      ctrl_cost: weight c of the control cost ``−c·|a|²``.
      fall_penalty: fixed penalty when the cargo falls (on top of the rest-of-episode cost).
      **kwargs: :class:`MJXEnv` options (frame skip, solver settings).
    """

    name = "warehouse"

    def __init__(self, ctrl_cost: float = 0.01, fall_penalty: float = 10.0, **kwargs):
        super().__init__(asset_path("warehouse.xml"), **kwargs)
        m = self.mj_model
        self.ctrl_cost = float(ctrl_cost)
        self.fall_penalty = float(fall_penalty)
        self._cargo = m.body("cargo").id
        self._friction_geoms = np.array([m.geom(g).id for g in ("floor", "left_wheel",
                                                                "right_wheel")])
        self._crate_mass = float(m.body_mass[self._cargo])
        self._base_qpos = int(m.jnt_qposadr[m.joint("root").id])
        self._cargo_qpos = int(m.jnt_qposadr[m.joint("cargo").id])
        self._wheel_qvel = np.array([m.jnt_dofadr[m.joint(j).id]
                                     for j in ("left_wheel", "right_wheel")])
        self._base_z0 = float(m.qpos0[self._base_qpos + 2])
        self._rest_z = TRAY_CENTRE[2] + CARGO_HALF  # the crate's centre above the base origin

    # --- tasks -----------------------------------------------------------------------------------
    def make_params(self, goal: jax.typing.ArrayLike, friction: jax.typing.ArrayLike | None = None,
                    cargo_mass: jax.typing.ArrayLike = 0.0,
                    mass_scale: jax.typing.ArrayLike | None = None,
                    damping_scale: jax.typing.ArrayLike | None = None,
                    horizon: int = 200) -> WarehouseParams:
        """A task (pure, jit-able; recomputes the derived constants of the masses).

        Args:
          goal: ``[2]`` goal of the cargo (m, world frame).
          friction: floor/wheel sliding friction μ (``None``: the MJCF's 0.7).
          cargo_mass: payload on top of the 0.5 kg crate (kg, ≥ 0).
          mass_scale: multiplier of the robot's masses and inertias, scalar or ``[nbody]``
            (the cargo entry is ignored).
          damping_scale: multiplier of the joint damping.
          horizon: episode length.
        """
        nominal = self.nominal_physics()
        if friction is None:
            friction = nominal.geom_friction[self._friction_geoms[0], 0]
        friction = jnp.asarray(friction, jnp.float32)
        cargo_mass = jnp.asarray(cargo_mass, jnp.float32)
        geom_friction = nominal.geom_friction.at[self._friction_geoms, 0].set(friction)
        mass = nominal.body_mass
        if mass_scale is not None:
            mass = mass * jnp.broadcast_to(mass_scale, mass.shape)
        body_mass = mass.at[self._cargo].set(self._crate_mass + cargo_mass)
        physics = self.physics(geom_friction=geom_friction, mass_scale=mass_scale,
                               body_mass=body_mass, damping_scale=damping_scale)
        return WarehouseParams(goal=jnp.asarray(goal, jnp.float32), friction=friction,
                               cargo_mass=cargo_mass, physics=physics, horizon=horizon)

    # --- MJXEnv ----------------------------------------------------------------------------------
    def init_qpos_qvel(self, key, params):
        kp, ky = jax.random.split(key)
        m = self.mj_model
        xy = jax.random.uniform(kp, (2,), minval=-0.02, maxval=0.02)
        yaw = jax.random.uniform(ky, minval=-0.1, maxval=0.1)
        quat = jnp.stack([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
        c, s = jnp.cos(yaw), jnp.sin(yaw)
        tx, ty, _ = TRAY_CENTRE
        base = jnp.concatenate([xy, jnp.array([self._base_z0])])
        cargo = base + jnp.stack([c * tx - s * ty, s * tx + c * ty, self._rest_z])
        qpos = jnp.asarray(m.qpos0, jnp.float32)
        b, k = self._base_qpos, self._cargo_qpos
        qpos = qpos.at[b:b + 3].set(base).at[b + 3:b + 7].set(quat)
        qpos = qpos.at[k:k + 3].set(cargo).at[k + 3:k + 7].set(quat)
        return qpos, jnp.zeros(m.nv, jnp.float32)

    # Positions come from qpos, not xpos/xmat: after mjx.step those still hold the kinematics
    # of the last substep's start, qpos the state the step ends in.
    def _frame(self, data):
        """The base's planar pose: ``(xy [2], cos θ, sin θ, to_robot)``, θ the heading of the
        base's forward axis projected on the floor and ``to_robot(v)`` rotating a world-frame
        planar vector into the robot frame."""
        b = self._base_qpos
        w, qx, qy, qz = (data.qpos[b + 3 + i] for i in range(4))
        fx, fy = 1 - 2 * (qy**2 + qz**2), 2 * (qx * qy + w * qz)  # the rotated x axis
        norm = jnp.maximum(jnp.hypot(fx, fy), 1e-6)
        c, s = fx / norm, fy / norm

        def to_robot(v):
            return jnp.stack([c * v[0] + s * v[1], -s * v[0] + c * v[1]])

        return data.qpos[b:b + 2], c, s, to_robot

    def _cargo_xyz(self, data):
        return data.qpos[self._cargo_qpos:self._cargo_qpos + 3]

    def _cargo_offset(self, data):
        """The crate's centre relative to its rest position on the tray, robot frame ``[3]``."""
        _, _, _, to_robot = self._frame(data)
        b = self._base_qpos
        rel = self._cargo_xyz(data) - data.qpos[b:b + 3]
        planar = to_robot(rel[:2]) - jnp.array(TRAY_CENTRE[:2])
        return jnp.concatenate([planar, (rel[2] - self._rest_z)[None]])

    def _wheel_slip(self, data):
        """Mean over the wheels of ``|ω·r − v|``, v the base's forward speed at the wheel."""
        _, _, _, to_robot = self._frame(data)
        b = self._base_qpos
        v = to_robot(data.qvel[b:b + 2])  # free joint: linear velocity in the world frame
        yaw_rate = data.qvel[b + 5]  # angular velocity in the body frame
        rim = data.qvel[self._wheel_qvel] * WHEEL_RADIUS
        ground = jnp.stack([v[0] - yaw_rate * HALF_TRACK, v[0] + yaw_rate * HALF_TRACK])
        return jnp.mean(jnp.abs(rim - ground))

    def observation(self, data, params):
        xy, c, s, to_robot = self._frame(data)
        b = self._base_qpos
        v = to_robot(data.qvel[b:b + 2])
        yaw_rate = data.qvel[b + 5:b + 6]
        rim = data.qvel[self._wheel_qvel] * WHEEL_RADIUS
        goal = jnp.zeros(2) if params is None else params.goal
        return jnp.concatenate([xy, jnp.stack([c, s]), v, yaw_rate, rim,
                                self._cargo_offset(data), to_robot(goal - xy)])

    def _fallen(self, data):
        off = self._cargo_offset(data)
        return (jnp.max(jnp.abs(off[:2])) > TRAY_HALF) | (off[2] < -DROP)

    def reward(self, data_before, data, action, params):
        distance = jnp.linalg.norm(self._cargo_xyz(data)[:2] - params.goal)
        ctrl = self.ctrl_cost * jnp.sum(action**2)
        fallen = self._fallen(data)
        steps = jnp.round(data.time / self.dt)  # env steps taken, this one included
        remaining = jnp.maximum(params.horizon - steps, 0.0)
        penalty = jnp.where(fallen, self.fall_penalty + remaining * distance, 0.0)
        info = {"distance": distance, "ctrl_cost": ctrl, "fallen": fallen,
                "slip": self._wheel_slip(data)}
        return -distance - ctrl - penalty, fallen, info


def _annulus(key: jax.Array, radius: Range) -> jax.Array:
    """A point uniform over the area of the annulus ``radius[0] <= |p| <= radius[1]``."""
    kr, ka = jax.random.split(key)
    lo, hi = radius
    r = jnp.sqrt(jax.random.uniform(kr, minval=lo**2, maxval=hi**2))
    angle = jax.random.uniform(ka, minval=-jnp.pi, maxval=jnp.pi)
    return r * jnp.stack([jnp.cos(angle), jnp.sin(angle)])


def build(config: WarehouseConfig):
    """``jmeta.make("warehouse", ...)``: the env and its task distribution."""
    env = Warehouse(ctrl_cost=config.ctrl_cost, fall_penalty=config.fall_penalty,
                    **config.env_kwargs())
    physics_ranges, physics_ood = config.physics_ranges()
    ranges = {"goal_radius": config.goal_radius, "cargo_mass": config.cargo_mass,
              **physics_ranges}
    ood_ranges = {"goal_radius": config.ood_goal_radius, "cargo_mass": config.ood_cargo_mass,
                  **physics_ood}
    nbody, horizon = env.mj_model.nbody, config.horizon

    def sampler(key: jax.Array, active: Mapping[str, Range]) -> WarehouseParams:
        kg, kf, kc, km, kd = jax.random.split(key, 5)
        u = lambda k, r, shape=(): jax.random.uniform(k, shape, minval=r[0], maxval=r[1])  # noqa
        return env.make_params(
            goal=_annulus(kg, active["goal_radius"]),
            friction=u(kf, active["friction"]) if "friction" in active else None,
            cargo_mass=u(kc, active["cargo_mass"]),
            mass_scale=u(km, active["mass_scale"], (nbody,)) if "mass_scale" in active else None,
            damping_scale=u(kd, active["damping_scale"]) if "damping_scale" in active else None,
            horizon=horizon)

    return env, TaskDistribution(env_name=env.name, sampler=sampler, ranges=ranges,
                                 ood_ranges=ood_ranges)
