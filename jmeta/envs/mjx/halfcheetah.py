"""HalfCheetah meta-RL tasks of Finn et al. 2017 (MAML), section 5.3, in MJX.

Protocol (the MAML authors' rllab ``half_cheetah_env_rand.py`` / ``..._rand_direc.py`` and
pytorch-maml-rl's ``HalfCheetahVelEnv``/``HalfCheetahDirEnv``):

* model: gym's ``half_cheetah.xml`` as the ``brax`` package ships it (the same bodies, joints,
  gears and 0.01 s timestep; brax enables collisions only for the head, thighs and feet against
  the floor, and sets 4 solver iterations); frame skip 5, so an env step is 0.05 s, as gym and
  pytorch-maml-rl. The MAML authors' rllab cheetah has no frame skip (rllab's ``MujocoEnv``
  reads one from the MJCF, whose ``half_cheetah.xml`` sets none, so it steps once per action):
  an env step there is 0.01 s and the paper's H = 200 is 2 s of simulation, not 10. Pass
  ``frame_skip=1`` for that protocol;
* observation (20): ``qpos[1:]`` (8), ``qvel`` (9) and the torso's position (3);
* action (6): torques in ``[-1, 1]``; out-of-range actions are clipped (rllab's ``normalize``)
  and the control cost is charged on the clipped action;
* ``halfcheetah-vel``: task = target velocity v* ~ U[0, 2];
  reward ``-|v - v*| - 0.05·|a|²`` with ``v = Δx_root / dt``;
* ``halfcheetah-dir``: task = direction d ∈ {−1, +1}; reward ``d·v - 0.05·|a|²``;
* reset: ``qpos0 + U(-0.1, 0.1)``, ``qvel ~ 0.1·N(0, 1)`` (gym's reset noise); no termination;
  truncation at ``horizon`` (paper: 200).

Per-task physics (``friction=``, ``mass_scale=``, ``damping_scale=``) comes from
:class:`jmeta.envs.mjx.base.MJXEnv`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jmeta.envs.mjx.base import MJXEnv, TargetParams, asset_path, target_tasks
from jmeta.envs.mjx.config import HalfCheetahDirConfig, HalfCheetahVelConfig


HalfCheetahParams = TargetParams
"""A HalfCheetah task: ``target`` is the target velocity (``vel``) or the direction ±1 (``dir``)."""


class HalfCheetah(MJXEnv):
    """HalfCheetah with a velocity or direction task (see module docstring).

    Args:
      task: ``"vel"`` or ``"dir"``.
      ctrl_cost: weight of the control cost.
      **kwargs: :class:`MJXEnv` options (frame skip, solver settings).
    """

    def __init__(self, task: str = "vel", ctrl_cost: float = 0.05, **kwargs):
        if task not in ("vel", "dir"):
            raise ValueError(f"task: expected 'vel' or 'dir', got {task!r}")
        super().__init__(asset_path("half_cheetah.xml"), **kwargs)
        self.task = task
        self.name = f"halfcheetah-{task}"
        self.ctrl_cost = float(ctrl_cost)
        self._torso = self.mj_model.body("torso").id

    def observation(self, data, params):
        return jnp.concatenate([data.qpos[1:], data.qvel, data.xpos[self._torso]])

    def reward(self, data_before, data, action, params):
        velocity = (data.qpos[0] - data_before.qpos[0]) / self.dt
        ctrl = self.ctrl_cost * jnp.sum(action**2)
        if self.task == "vel":
            task_reward = -jnp.abs(velocity - params.target)
        else:
            task_reward = params.target * velocity
        info = {"velocity": velocity, "ctrl_cost": ctrl}
        return task_reward - ctrl, jnp.zeros((), jnp.bool_), info


def build_vel(config: HalfCheetahVelConfig):
    env = HalfCheetah("vel", ctrl_cost=config.ctrl_cost, **config.env_kwargs())

    def target(key, active):
        lo, hi = active["velocity"]
        return jax.random.uniform(key, minval=lo, maxval=hi)

    return env, target_tasks(env, config, target, {"velocity": config.velocity},
                               {"velocity": config.ood_velocity})


def build_dir(config: HalfCheetahDirConfig):
    env = HalfCheetah("dir", ctrl_cost=config.ctrl_cost, **config.env_kwargs())

    def target(key, active):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)

    return env, target_tasks(env, config, target, {}, {})
