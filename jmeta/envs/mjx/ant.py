"""Ant meta-RL tasks of MAML (Finn et al. 2017) and ProMP (Rothfuss et al. 2019), in MJX.

Model: the ``ant.xml`` that the ``brax`` package ships, brax's copy of gym's (which the gym ports
of MAML and ProMP load): the same torso on a free joint, four two-link legs, 8 motors with gear
150, ``ctrlrange`` [-1, 1] and 0.01 s timestep, but only the four feet collide with the floor
(gym: every geom) and 4 solver iterations. Frame skip 5, so an env step is 0.05 s as
in gym. Reset as gym's ``AntEnv``: ``qpos0 + U(-0.1, 0.1)`` (the torso 0.75 m up, every joint at 0;
the quaternion gets the noise too and MuJoCo normalises it), ``qvel ~ 0.1·N(0, 1)``. Velocities are
``Δqpos / dt`` of the torso's free joint over the env step (gym's ``get_body_com("torso")``
difference; rllab read the instantaneous torso-subtree CoM velocity instead). The control cost is
charged on the action clipped to ``ctrlrange`` (see :meth:`MJXEnv.control`).

Every reward is ``task_reward - ctrl_cost·|a|² - contact_cost·Σ clip(cfrc_ext, -1, 1)² +
survive_reward``; an episode terminates when ``qpos``/``qvel`` are not finite or the torso height
``qpos[2]`` leaves ``healthy_z`` (``None``: never), and is truncated at ``horizon`` (MAML: 200;
ProMP's run scripts: 100).

* ``ant-vel`` (MAML ``ant_env_rand.py``, pytorch-maml-rl ``AntVelEnv``): v* ~ U[0, 3];
  task reward ``-|v_x - v*|``; ctrl 0.005, contact 5e-4, survive 1.05 [1], healthy z [0.2, 1.0];
* ``ant-dir`` (MAML ``ant_env_rand_direc.py``, pytorch-maml-rl ``AntDirEnv``): d = ±1 with
  p = 1/2 each; ``d·v_x``; ctrl 0.005, contact 5e-4, survive 0.05, healthy z [0.2, 1.0];
* ``ant-dir-2d`` (ProMP ``ant_rand_direc_2d.py``): u = (cos θ, sin θ), θ ~ U[0, 2π) (ProMP
  normalises a Gaussian: the same law); ``u·v_xy``; ctrl 0.5, contact 5e-4, survive 1.0,
  healthy z [0, 1] (ProMP's ``1.0 >= state[2] >= 0.``);
* ``ant-goal`` (ProMP ``ant_rand_goal.py``): g uniform in the disc of radius 3 (``r = 3·sqrt(U)``);
  ``-|xy - g|₁`` (L1, as ProMP); ctrl 0.1, contact 5e-4, survive 0, no termination (ProMP's
  ``done = False``: with a negative reward, termination would pay the agent to fall).

[1] MAML's ``-|v - v*| + 1.0`` ("make it happy, not suicidal") plus its survive reward 0.05.

Sources: github.com/cbfinn/maml_rl ``rllab/envs/mujoco/ant_env_rand{,_direc}.py``;
github.com/tristandeleu/pytorch-maml-rl ``maml_rl/envs/mujoco/ant.py`` (the gym port, whose
constants and observations ``ant-vel``/``ant-dir`` follow); github.com/jonasrothfuss/ProMP
``meta_policy_search/envs/mujoco_envs/ant_rand_{direc_2d,goal}.py``. MAML's ``ctrl_cost``
``0.5·1e-2·|a/scaling|²`` is 0.005·|a|² for the [-1, 1] range.

Observations (with ``contact_forces=True``, the default):

* ``ant-vel``, ``ant-dir`` (123, pytorch-maml-rl): ``qpos[2:]`` (13), ``qvel`` (14), clipped
  ``cfrc_ext`` (14 bodies × 6 = 84), the torso's rotation matrix (9) and position (3);
* ``ant-dir-2d`` (111, ProMP): ``qpos[2:]``, ``qvel``, clipped ``cfrc_ext``;
* ``ant-goal`` (113, ProMP): ``qpos`` (with x, y: the goal is a position), ``qvel``, clipped
  ``cfrc_ext``.

Contact forces. MJX does not fill ``cfrc_ext`` during ``step`` (neither does MuJoCo ≥ 2.0: it
calls ``mj_rnePostConstraint`` only for force sensors); jmeta calls ``mjx.rne_postconstraint`` on
the state after the frame skip, as MuJoCo 1.x did by default for MAML's rllab runs. (The gym
ports, ProMP's and pytorch-maml-rl's, read ``cfrc_ext`` without that call: zeros on MuJoCo ≥ 2.0,
openai/gym#1541.) ``contact_forces=False`` drops the 84 entries from the observation and the
contact cost from the reward. With it on, a step costs no measurable extra time (ant-vel, batch
64, 2 CPU cores: 7.3 ms against 7.7 ms without). The forces are read from MJX's private
``Data._impl.cfrc_ext`` (MJX exposes no public accessor); ``tests/test_mjx_ant.py`` checks them
against MuJoCo's ``mj_rnePostConstraint``.

ood splits: ``ant-vel`` ``v* ~ U[3, 4]`` (faster than any training task); ``ant-goal`` goals in the
annulus ``3 ≤ |g| ≤ 4`` (farther out); ``ant-dir`` only through ``ood_*`` physics ranges;
``ant-dir-2d`` through ``ood_angle`` (e.g. train on ``angle=(0, 4.71)``, test on
``ood_angle=(4.71, 6.28)``, a held-out sector). Per-task physics (``friction=``,
``mass_scale=``, ``damping_scale=``) comes from :class:`jmeta.envs.mjx.base.MJXEnv`.

>>> import jax, jmeta
>>> env, tasks = jmeta.make("ant-goal", horizon=100)
>>> tasks.ood.sample(jax.random.key(0)).target.shape
(2,)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.envs.mjx.base import MJXEnv, TargetParams, asset_path, mjx, target_tasks
from jmeta.envs.mjx.config import (AntConfig, AntDir2DConfig, AntDirConfig, AntGoalConfig,
                                   AntVelConfig)
from jmeta.envs.spaces import Box
from jmeta.envs.tasks import Range

TASKS = ("vel", "dir", "dir-2d", "goal")


AntParams = TargetParams
"""An Ant task: ``target`` is the target velocity v* (``vel``, scalar), the direction ±1
(``dir``, scalar), a unit direction vector (``dir-2d``, ``[2]``) or a goal position (``goal``,
``[2]``)."""


class Ant(MJXEnv):
    """The Ant with a velocity, direction, 2-D direction or goal task (see module docstring).

    Args:
      task: one of ``"vel"``, ``"dir"``, ``"dir-2d"``, ``"goal"``.
      ctrl_cost: weight of ``|a|²``.
      contact_cost: weight of ``Σ clip(cfrc_ext, -1, 1)²``.
      survive_reward: bonus added every step.
      healthy_z: ``(low, high)`` torso heights outside which the episode terminates; ``None``:
        it never terminates.
      contact_forces: observe and charge the clipped external contact forces.
      **kwargs: :class:`MJXEnv` options (frame skip, solver settings).
    """

    def __init__(self, task: str = "vel", *, ctrl_cost: float = 0.005, contact_cost: float = 5e-4,
                 survive_reward: float = 0.05, healthy_z: Range | None = (0.2, 1.0),
                 contact_forces: bool = True, **kwargs):
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        super().__init__(asset_path("ant.xml"), **kwargs)
        self.task = task
        self.name = f"ant-{task}"
        self.ctrl_cost = float(ctrl_cost)
        self.contact_cost = float(contact_cost)
        self.survive_reward = float(survive_reward)
        self.healthy_z = None if healthy_z is None else tuple(map(float, healthy_z))
        self.contact_forces = bool(contact_forces)
        self._torso = self.mj_model.body("torso").id

    def clipped_contact_forces(self, data: mjx.Data, params) -> jax.Array:
        """``clip(cfrc_ext, -1, 1)``, ``[nbody, 6]``, computed by ``mjx.rne_postconstraint``
        on the task's model (``[nbody, 0]`` without ``contact_forces``)."""
        if not self.contact_forces:
            return jnp.zeros((self.mj_model.nbody, 0))
        data = mjx.rne_postconstraint(self.task_model(params), data)
        return jnp.clip(data._impl.cfrc_ext, -1.0, 1.0)

    def observation(self, data, params):
        qpos, qvel = data.qpos, data.qvel
        cfrc = self.clipped_contact_forces(data, params).reshape(-1)
        if self.task in ("vel", "dir"):
            return jnp.concatenate([qpos[2:], qvel, cfrc, data.xmat[self._torso].reshape(-1),
                                    data.xpos[self._torso]])
        if self.task == "dir-2d":
            return jnp.concatenate([qpos[2:], qvel, cfrc])
        return jnp.concatenate([qpos, qvel, cfrc])

    def observation_space(self, params=None):
        m = self.mj_model
        dim = m.nv + (6 * m.nbody if self.contact_forces else 0)
        dim += {"vel": m.nq - 2 + 12, "dir": m.nq - 2 + 12, "dir-2d": m.nq - 2, "goal": m.nq}[
            self.task]
        return Box(-jnp.inf, jnp.inf, (dim,))

    def reward(self, data_before, data, action, params):
        velocity = (data.qpos[:2] - data_before.qpos[:2]) / self.dt  # torso (x, y) velocity
        if self.task == "vel":
            task_reward = -jnp.abs(velocity[0] - params.target)
        elif self.task == "dir":
            task_reward = params.target * velocity[0]
        elif self.task == "dir-2d":
            task_reward = jnp.dot(params.target, velocity)
        else:
            task_reward = -jnp.sum(jnp.abs(data.qpos[:2] - params.target))
        ctrl = self.ctrl_cost * jnp.sum(action**2)
        contact = self.contact_cost * jnp.sum(self.clipped_contact_forces(data, params)**2)
        reward = task_reward - ctrl - contact + self.survive_reward
        if self.healthy_z is None:
            terminated = jnp.zeros((), jnp.bool_)
        else:
            low, high = self.healthy_z
            z = data.qpos[2]
            finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))
            terminated = ~(finite & (z >= low) & (z <= high))
        info = {"velocity": velocity, "task_reward": task_reward, "ctrl_cost": ctrl,
                "contact_cost": contact}
        return reward, terminated, info


def _env(task: str, config: AntConfig) -> Ant:
    return Ant(task, ctrl_cost=config.ctrl_cost, contact_cost=config.contact_cost,
               survive_reward=config.survive_reward, healthy_z=config.healthy_z,
               contact_forces=config.contact_forces, **config.env_kwargs())


def _uniform(key, bounds, shape=()):
    return jax.random.uniform(key, shape, minval=bounds[0], maxval=bounds[1])


def build_vel(config: AntVelConfig):
    env = _env("vel", config)
    return env, target_tasks(env, config, lambda k, active: _uniform(k, active["velocity"]),
                       {"velocity": config.velocity}, {"velocity": config.ood_velocity})


def build_dir(config: AntDirConfig):
    env = _env("dir", config)

    def target(key, active):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)

    return env, target_tasks(env, config, target, {}, {})


def build_dir_2d(config: AntDir2DConfig):
    env = _env("dir-2d", config)

    def target(key, active):  # θ ~ U(angle); ProMP's normalised Gaussian is θ ~ U[0, 2π)
        theta = _uniform(key, active["angle"])
        return jnp.stack([jnp.cos(theta), jnp.sin(theta)])

    ood = {} if config.ood_angle is None else {"angle": config.ood_angle}
    return env, target_tasks(env, config, target, {"angle": config.angle}, ood)


def build_goal(config: AntGoalConfig):
    env = _env("goal", config)

    def target(key, active):  # uniform over the annulus' area (ProMP: r = 3·sqrt(U), r0 = 0)
        k_angle, k_radius = jax.random.split(key)
        r0, r1 = active["goal_radius"]
        theta = jax.random.uniform(k_angle, minval=0.0, maxval=2 * np.pi)
        r = jnp.sqrt(jax.random.uniform(k_radius, minval=r0**2, maxval=r1**2))
        return r * jnp.stack([jnp.cos(theta), jnp.sin(theta)])

    return env, target_tasks(env, config, target, {"goal_radius": config.goal_radius},
                       {"goal_radius": config.ood_goal_radius})


__all__ = ["Ant", "AntParams", "build_dir", "build_dir_2d", "build_goal", "build_vel"]
