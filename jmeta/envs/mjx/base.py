"""The MJX environment base: one ``mjx.Model``, the task's physics applied inside ``step``.

An :class:`MJXEnv` loads an MJCF once (``mujoco.MjModel``) and keeps one ``mjx.Model``. A task's
physics (geom friction, body masses and inertias, joint damping) is an array field of the task
params (:class:`Physics`) and is written into the model with ``model.tree_replace(...)`` at every
``reset``/``step``, so ``jax.vmap`` over params simulates every task with its own physics, the
physics is re-sampled every meta-iteration, and nothing recompiles. (Brax's domain-randomisation
wrapper samples a batched model once, at construction, brax#446; jmeta samples per task.)

Derived constants. MuJoCo's compiler derives some model fields from the masses (``mj_setConst``).
The ones MJX reads at run time are recomputed in JAX by :func:`derived_constants` whenever the
masses change (once per task, at sampling time, not per step):

* ``body_subtreemass`` (sum of the masses in each body's subtree; subtree velocities, sensors);
* ``body_invweight0`` and ``dof_invweight0`` (the mean diagonal of ``J M⁻¹ Jᵀ`` at ``qpos0``:
  MuJoCo scales the constraint regularisation, i.e. contact and joint-limit softness, by them).

``actuator_acc0`` (used only by position actuators declared with ``dampratio``) is *not*
recomputed: jmeta's models drive their joints with motors and velocity servos, never
``dampratio``; a custom model that uses it keeps the nominal-mass damping when masses vary.
``tests/test_mjx.py`` checks all three recomputed fields against MuJoCo's own ``mj_setConst``.

Solver settings. ``solver``, ``iterations`` and ``ls_iterations`` override the MJCF's. On CPU the
constraint solver dominates an MJX step; capping it at ``iterations=1, ls_iterations=4`` is an
order of magnitude faster than the MJCF defaults at batch ≥ 64, at a measured loss of accuracy
(``benchmarks/mjx_throughput.py`` reports both; ``benchmarks/RESULTS.md``). The loss matters for
learning. On HalfCheetah, single-task TRPO learns about half as fast at 1 / 4 as at the MJCF's
4 / 50, and C MuJoCo at 1 / 4 blows up. 4 / 8 learns like 4 / 50
(``benchmarks/cheetah_solver.py``).

Divergence. The simulation occasionally blows up (seen with the default capped solver in MAML-TRPO
on halfcheetah-dir: one post-adaptation episode in 200 reached velocities of 2·10⁶, then NaN;
whether the MJCF's own solver settings avoid it was not measured).
A step whose state is not finite or whose ``|qvel|`` exceeds ``max_qvel`` terminates the episode
with reward 0 and a zero observation (``info["diverged"]`` says so), as mujoco_playground's envs
terminate on NaN, so no inf/NaN reaches advantages, baselines or gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

with contextlib.redirect_stdout(io.StringIO()):  # mjx prints that its optional GPU backend,
    from mujoco import mjx  # Warp, is not installed; jmeta uses the JAX implementation

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box
from jmeta.envs.mjx.config import SOLVER_NAMES
from jmeta.envs.tasks import Range, check_positive_int

SOLVERS = {"newton": mujoco.mjtSolver.mjSOL_NEWTON, "cg": mujoco.mjtSolver.mjSOL_CG}
assert tuple(SOLVERS) == SOLVER_NAMES


def asset_path(name: str) -> str:
    """Path of an MJCF: jmeta's own (``jmeta/envs/mjx/assets``) or, for ``half_cheetah.xml`` and
    ``ant.xml``, the copies that the ``brax`` package ships (no download at run time)."""
    own = os.path.join(os.path.dirname(__file__), "assets", name)
    if os.path.exists(own):
        return own
    import brax

    shipped = os.path.join(os.path.dirname(brax.__file__), "envs", "assets", name)
    if os.path.exists(shipped):
        return shipped
    raise FileNotFoundError(f"no MJCF named {name!r} in jmeta's or brax's assets")


def load_model(xml: str) -> mujoco.MjModel:
    """Compiles the MJCF at ``xml``.

    ``<compiler settotalmass=...>`` (brax's ``half_cheetah.xml`` has it) is deprecated in MuJoCo
    ≥ 3.3 and makes the compiler write a warning to ``MUJOCO_LOG.TXT`` in the working directory
    on every load; it is applied here instead as MuJoCo itself does (``mj_setTotalmass``, which
    scales every mass and inertia, then ``mj_setConst``), giving the same model.
    """
    import re

    with open(xml) as f:
        text = f.read()
    match = re.search(r'\ssettotalmass="([^"]+)"', text)
    if match is None:
        return mujoco.MjModel.from_xml_path(xml)
    model = mujoco.MjModel.from_xml_string(text[:match.start()] + text[match.end():])
    mujoco.mj_setTotalmass(model, float(match.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


# --- per-task physics ---------------------------------------------------------------------------
@struct.dataclass
class Physics:
    """A task's physics: the ``mjx.Model`` fields it overrides (all arrays, one set per task).

    Build it with :meth:`MJXEnv.physics` (which recomputes the derived constants), not by hand.

    Attributes:
      geom_friction: ``[ngeom, 3]`` (sliding, torsional, rolling) friction of each geom; a
        contact uses the element-wise maximum of its two geoms'.
      body_mass: ``[nbody]`` masses (kg).
      body_inertia: ``[nbody, 3]`` principal inertias.
      dof_damping: ``[nv]`` joint damping.
      body_subtreemass, body_invweight0, dof_invweight0: derived from the masses
        (:func:`derived_constants`).
    """

    geom_friction: jax.Array
    body_mass: jax.Array
    body_inertia: jax.Array
    dof_damping: jax.Array
    body_subtreemass: jax.Array
    body_invweight0: jax.Array
    dof_invweight0: jax.Array

    def apply(self, model: mjx.Model) -> mjx.Model:
        """``model`` with this physics (``tree_replace``; traced, vmappable)."""
        return model.tree_replace({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def derived_constants(model: mjx.Model, body_mass: jax.Array, body_inertia: jax.Array):
    """``(body_subtreemass, body_invweight0, dof_invweight0)`` for new masses, as ``mj_setConst``.

    ``invweight0`` is the mean diagonal of ``J M⁻¹ Jᵀ`` at ``qpos0``: per body the translational
    and rotational halves of the Jacobian at the body's centre of mass (each at least
    ``mjMINVAL``; 0 for bodies welded to the world), per dof the diagonal of ``M⁻¹`` (averaged
    over the translational and rotational dofs of a free joint and over a ball joint's dofs).
    """
    m = model.tree_replace({"body_mass": body_mass, "body_inertia": body_inertia})
    nbody = m.nbody
    parent = np.asarray(m.body_parentid)
    subtree = body_mass
    for b in range(nbody - 1, 0, -1):  # children have larger ids than their parents
        subtree = subtree.at[parent[b]].add(subtree[b])

    d = mjx.make_data(m).replace(qpos=jnp.asarray(m.qpos0))
    d = mjx.kinematics(m, d)
    d = mjx.com_pos(m, d)
    d = mjx.crb(m, d)
    minv = jnp.linalg.inv(mjx.full_m(m, d))

    weld = np.asarray(m.body_weldid)
    rows = []
    for b in range(nbody):
        if b == 0 or weld[b] == 0:
            rows.append(jnp.zeros(2))
            continue
        jacp, jacr = mjx.jac(m, d, d.xipos[b], b)  # [nv, 3] each
        tp = jnp.trace(jacp.T @ minv @ jacp) / 3.0
        tr = jnp.trace(jacr.T @ minv @ jacr) / 3.0
        rows.append(jnp.maximum(mujoco.mjMINVAL, jnp.stack([tp, tr])))
    body_invweight0 = jnp.stack(rows)

    diag = jnp.diagonal(minv)
    dof = diag
    jnt_type, jnt_dofadr = np.asarray(m.jnt_type), np.asarray(m.jnt_dofadr)
    for j in range(m.njnt):
        a = int(jnt_dofadr[j])
        if jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            dof = dof.at[a:a + 3].set(jnp.mean(diag[a:a + 3]))
            dof = dof.at[a + 3:a + 6].set(jnp.mean(diag[a + 3:a + 6]))
        elif jnt_type[j] == mujoco.mjtJoint.mjJNT_BALL:
            dof = dof.at[a:a + 3].set(jnp.mean(diag[a:a + 3]))
    return subtree, body_invweight0, dof


# --- the env ------------------------------------------------------------------------------------
@struct.dataclass
class MJXState:
    """An MJX env's state: the simulator's ``mjx.Data`` and the step count."""

    data: mjx.Data
    time: jax.Array  # int32 scalar


class MJXEnv(Environment):
    """Base of MJX environments (see module docstring).

    Subclasses set ``name``, implement ``observation(data, params)`` and ``reward(data_before, data_after, action,
    params) -> (reward, terminated, info)`` and may override ``init_qpos_qvel(key, params)`` (the
    reset distribution; default gym's reset noise). The task params must have a ``physics`` field
    (:class:`Physics` or ``None``) and a static ``horizon``.

    Args:
      xml: MJCF path.
      frame_skip: physics steps per env step.
      solver: ``"newton"`` or ``"cg"``; ``None`` keeps the MJCF's.
      iterations, ls_iterations: solver iteration caps; ``None`` keeps the MJCF's.
      max_qvel: a step whose ``|qvel|`` exceeds this (or whose state is not finite) has
        diverged: the episode terminates with reward 0 and a zero observation, and
        ``info["diverged"]`` is set.
    """

    name = "mjx"

    def __init__(self, xml: str, frame_skip: int = 5, solver: str | None = None,
                 iterations: int | None = None, ls_iterations: int | None = None,
                 max_qvel: float = 1000.0):
        self.max_qvel = float(max_qvel)
        self.frame_skip = check_positive_int("frame_skip", frame_skip)
        mj_model = load_model(xml)
        if solver is not None:
            if solver not in SOLVERS:
                raise ValueError(f"solver: expected one of {tuple(SOLVERS)}, got {solver!r}")
            mj_model.opt.solver = SOLVERS[solver]
        if iterations is not None:
            mj_model.opt.iterations = check_positive_int("iterations", iterations)
        if ls_iterations is not None:
            mj_model.opt.ls_iterations = check_positive_int("ls_iterations", ls_iterations)
        self.xml = xml
        self.mj_model = mj_model
        self.model = mjx.put_model(mj_model)
        self.dt = float(mj_model.opt.timestep) * self.frame_skip
        self._data0 = mjx.make_data(self.model)

    # --- physics ---------------------------------------------------------------------------------
    def nominal_physics(self) -> Physics:
        """The MJCF's own physics as a :class:`Physics` (constants as MuJoCo compiled them)."""
        m = self.mj_model
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return Physics(
            geom_friction=f32(m.geom_friction), body_mass=f32(m.body_mass),
            body_inertia=f32(m.body_inertia), dof_damping=f32(m.dof_damping),
            body_subtreemass=f32(m.body_subtreemass), body_invweight0=f32(m.body_invweight0),
            dof_invweight0=f32(m.dof_invweight0))

    def physics(self, *, friction: jax.Array | None = None, mass_scale: jax.Array | None = None,
                damping_scale: jax.Array | None = None, body_mass: jax.Array | None = None,
                geom_friction: jax.Array | None = None) -> Physics:
        """A task's :class:`Physics` from multipliers of the MJCF's values, with the derived
        constants recomputed (pure, jit-able).

        Args:
          friction: sliding friction of every geom (scalar) or ``[ngeom]``.
          mass_scale: multiplier of mass and inertia, scalar or ``[nbody]``.
          damping_scale: multiplier of every dof's damping (scalar or ``[nv]``).
          body_mass: absolute ``[nbody]`` masses, applied after ``mass_scale`` (inertias scale
            with the mass ratio, i.e. the body's shape is kept).
          geom_friction: absolute ``[ngeom, 3]`` friction, overrides ``friction``.
        """
        p = self.nominal_physics()
        gf = p.geom_friction
        if friction is not None:
            gf = gf.at[:, 0].set(jnp.broadcast_to(friction, gf.shape[:1]))
        if geom_friction is not None:
            gf = jnp.asarray(geom_friction, jnp.float32)
        mass, inertia = p.body_mass, p.body_inertia
        if mass_scale is not None:
            s = jnp.broadcast_to(mass_scale, mass.shape)
            mass, inertia = mass * s, inertia * s[:, None]
        if body_mass is not None:
            body_mass = jnp.asarray(body_mass, jnp.float32)
            ratio = jnp.where(mass > 0, body_mass / jnp.where(mass > 0, mass, 1.0), 1.0)
            mass, inertia = body_mass, inertia * ratio[:, None]
        damping = p.dof_damping
        if damping_scale is not None:
            damping = damping * jnp.broadcast_to(damping_scale, damping.shape)
        if mass_scale is None and body_mass is None:
            subtree, biw, diw = p.body_subtreemass, p.body_invweight0, p.dof_invweight0
        else:
            subtree, biw, diw = derived_constants(self.model, mass, inertia)
        return Physics(geom_friction=gf, body_mass=mass, body_inertia=inertia,
                       dof_damping=damping, body_subtreemass=subtree, body_invweight0=biw,
                       dof_invweight0=diw)

    def sample_physics(self, key: jax.Array, ranges: Mapping[str, Range]) -> Physics | None:
        """Samples :class:`Physics` from the ranges ``friction``, ``mass_scale`` (per body) and
        ``damping_scale`` present in ``ranges``; ``None`` when none is."""
        if not any(k in ranges for k in ("friction", "mass_scale", "damping_scale")):
            return None
        kf, km, kd = jax.random.split(key, 3)
        u = lambda k, r, shape=(): jax.random.uniform(k, shape, minval=r[0], maxval=r[1])  # noqa
        return self.physics(
            friction=u(kf, ranges["friction"]) if "friction" in ranges else None,
            mass_scale=(u(km, ranges["mass_scale"], (self.mj_model.nbody,))
                        if "mass_scale" in ranges else None),
            damping_scale=u(kd, ranges["damping_scale"]) if "damping_scale" in ranges else None)

    def task_model(self, params) -> mjx.Model:
        """The ``mjx.Model`` of the task ``params`` (the base model if it has no physics)."""
        physics = getattr(params, "physics", None)
        return self.model if physics is None else physics.apply(self.model)

    # --- API -------------------------------------------------------------------------------------
    def reset_env(self, key, params):
        model = self.task_model(params)
        qpos, qvel = self.init_qpos_qvel(key, params)
        data = self._data0.replace(qpos=qpos, qvel=qvel)
        data = mjx.forward(model, data)
        return self.observation(data, params), MJXState(data, jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        model = self.task_model(params)
        ctrl = self.control(action)
        data0 = state.data

        def physics_step(data, _):
            return mjx.step(model, data), None

        data, _ = jax.lax.scan(physics_step, data0.replace(ctrl=ctrl), None,
                               length=self.frame_skip)
        reward, terminated, info = self.reward(data0, data, ctrl, params)
        obs = self.observation(data, params)
        # A diverged simulation (seen with the capped default solver: joint velocities of 1e6,
        # then NaN) ends the episode, as mujoco_playground's envs end on NaN;
        # the reward and observation of that step are zeroed so no inf/NaN reaches the learner.
        diverged = jnp.logical_not(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(
            jnp.isfinite(data.qvel))) | (jnp.max(jnp.abs(data.qvel)) > self.max_qvel)
        reward = jnp.where(diverged, 0.0, reward)
        obs = jnp.where(diverged, 0.0, obs)
        info = {**info, "diverged": diverged}
        time = state.time + 1
        truncated = time >= params.horizon
        return obs, MJXState(data, time), reward, terminated | diverged, truncated, info

    def control(self, action: jax.Array) -> jax.Array:
        """The action clipped to the actuators' ``ctrlrange`` (what MuJoCo applies and what the
        control cost is charged on, as rllab's ``normalize`` wrapper did for the MAML paper)."""
        lo, hi = self._ctrl_range()
        return jnp.clip(action, lo, hi)

    def _ctrl_range(self):
        r = np.asarray(self.mj_model.actuator_ctrlrange, np.float32)
        return r[:, 0], r[:, 1]

    def action_space(self, params=None):
        lo, hi = self._ctrl_range()
        return Box(lo, hi, (self.mj_model.nu,))

    def observation_space(self, params=None):
        dim = self.observation(self._data0, None).shape
        return Box(-jnp.inf, jnp.inf, dim)

    # --- to implement ----------------------------------------------------------------------------
    def init_qpos_qvel(self, key, params):
        """The reset distribution; default gym's locomotion envs':
        ``qpos0 + U(-0.1, 0.1)`` and ``qvel ~ 0.1·N(0, 1)``."""
        kq, kv = jax.random.split(key)
        m = self.mj_model
        qpos = jnp.asarray(m.qpos0, jnp.float32) + jax.random.uniform(
            kq, (m.nq,), minval=-0.1, maxval=0.1)
        return qpos, 0.1 * jax.random.normal(kv, (m.nv,))

    def observation(self, data: mjx.Data, params) -> jax.Array:
        raise NotImplementedError

    def reward(self, data_before: mjx.Data, data: mjx.Data, action: jax.Array, params):
        raise NotImplementedError


@struct.dataclass
class TargetParams:
    """A task of the locomotion suites: one target plus optional per-task physics.

    Attributes:
      target: what the task asks for (a target velocity, a direction ±1, a unit direction
        ``[2]`` or a goal position ``[2]``; each env's docstring says which).
      physics: the task's :class:`Physics`, or ``None`` for the MJCF's own.
      horizon: episode length (static).
    """

    target: jax.Array
    physics: Physics | None = None
    horizon: int = struct.field(pytree_node=False, default=200)


def target_tasks(env: MJXEnv, config, target_sampler, ranges: Mapping[str, Range],
                 ood_ranges: Mapping[str, Range]):
    """The :class:`~jmeta.envs.tasks.TaskDistribution` of :class:`TargetParams` tasks.

    Args:
      env: the env (samples the physics from the config's physics ranges).
      config: its :class:`~jmeta.envs.mjx.config.MJXConfig` (horizon, physics ranges).
      target_sampler: ``target_sampler(key, active_ranges) -> target``.
      ranges, ood_ranges: the target's train/test and ood ranges.
    """
    from jmeta.envs.tasks import TaskDistribution

    physics_ranges, physics_ood = config.physics_ranges()
    horizon = config.horizon

    def sampler(key: jax.Array, active: Mapping[str, Range]) -> TargetParams:
        k_task, k_phys = jax.random.split(key)
        return TargetParams(target=target_sampler(k_task, active),
                            physics=env.sample_physics(k_phys, active), horizon=horizon)

    return TaskDistribution(env_name=env.name, sampler=sampler,
                            ranges={**ranges, **physics_ranges},
                            ood_ranges={**ood_ranges, **physics_ood})


__all__: Sequence[str] = ["MJXEnv", "MJXState", "Physics", "TargetParams", "target_tasks",
                          "asset_path", "derived_constants"]
