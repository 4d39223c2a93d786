"""Ant tasks (ant-vel, ant-dir, ant-dir-2d, ant-goal): shapes, rewards by hand, termination on a
constructed unhealthy state, contact forces against MuJoCo's own ``mj_rnePostConstraint``, vmap =
loop, task ranges of every split, clear errors.

Compiling the Ant's MJX step costs several seconds on 2 CPU cores, so the tests share two jitted
functions of one ant-vel env (``one_step``, unbatched and vmapped) and check the other tasks'
rewards and observations on the data it simulates (every Ant task has the same model; only the
reward and observation functions differ, and those are jitted alone, which is cheap).
"""

import copy

import chex
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import jmeta
from jmeta.envs.mjx.ant import AntParams
from jmeta.envs.mjx.base import MJXState, mjx

STEPS = 3
ACTION = np.array([0.3, -2.0, 0.0, 0.0, -0.2, 0.0, 0.0, 0.1], np.float32)  # -2 is clipped
CLIPPED = np.clip(ACTION, -1.0, 1.0)
TORSO = 1  # body id of the torso (the free joint's qpos[:3] is its position)


@pytest.fixture(scope="module")
def envs():
    return {
        "ant-vel": jmeta.make("ant-vel", horizon=STEPS, friction=(0.8, 1.2)),
        "ant-dir": jmeta.make("ant-dir", horizon=STEPS),
        "ant-dir-2d": jmeta.make("ant-dir-2d", horizon=STEPS, angle=(0.0, 4.5),
                                 ood_angle=(4.5, 6.0)),
        "ant-goal": jmeta.make("ant-goal", horizon=STEPS),
    }


@pytest.fixture(scope="module")
def one_step(envs):
    """``run(params, qpos, qvel, time) -> (state0, cfrc_ext0, step outputs, reset)``: one
    ant-vel step of ``ACTION`` from the given state, and the ``(obs, state)`` of
    ``env.reset(key(0))``; jitted once (the unbatched and the vmapped trace)."""
    env, _ = envs["ant-vel"]

    @jax.jit
    @chex.assert_max_traces(n=2)
    def run(params, qpos, qvel, time):
        reset = env.reset(jax.random.key(0), params)
        model = env.task_model(params)
        data0 = mjx.forward(model, reset[1].data.replace(qpos=qpos, qvel=qvel))
        state0 = MJXState(data0, time)
        cfrc0 = mjx.rne_postconstraint(model, data0)._impl.cfrc_ext
        step = env.step(jax.random.key(1), state0, jnp.asarray(ACTION), params)
        return state0, cfrc0, step, reset

    return run


def _standing(mj_model):
    """The ant at rest on its four feet: brax's ``init_qpos`` (ankles bent ±1 rad) after 1 s of
    MuJoCo with no control, so the feet press on the floor and the contact forces are not 0."""
    d = mujoco.MjData(mj_model)
    d.qpos[:] = [0, 0, 0.55, 1, 0, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1]
    for _ in range(100):
        mujoco.mj_step(mj_model, d)
    return jnp.asarray(d.qpos, jnp.float32), jnp.asarray(d.qvel, jnp.float32)


def _low():
    """Upside down (feet up, nothing touches the floor: the torso does not collide) with the
    torso at 0.1 m, below the healthy range, falling freely."""
    qpos = np.array([0, 0, 0.1, 0, 1, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1], np.float32)
    return jnp.asarray(qpos), jnp.zeros(14, jnp.float32)


@pytest.fixture(scope="module")
def healthy_step(envs, one_step):
    env, tasks = envs["ant-vel"]
    params = tasks.sample(jax.random.key(3)).replace(target=jnp.float32(1.5))
    return params, one_step(params, *_standing(env.mj_model), jnp.int32(0))


def test_spaces_shapes_reset_and_truncation(envs, healthy_step, one_step):
    dims = {"ant-vel": 123, "ant-dir": 123, "ant-dir-2d": 111, "ant-goal": 113}
    for name, (env, _) in envs.items():
        assert env.name == name
        assert env.observation_space().shape == (dims[name],)
        assert env.action_space().shape == (8,)
        assert env.dt == pytest.approx(0.05)
    env, _ = jmeta.make("ant-goal", contact_forces=False)
    assert env.observation_space().shape == (113 - 84,)

    env, _ = envs["ant-vel"]
    params, (_, _, (obs, state, reward, term, trunc, info), (obs0, state0)) = healthy_step
    assert obs.shape == obs0.shape == (123,) and obs.dtype == obs0.dtype == jnp.float32
    assert reward.shape == () and reward.dtype == jnp.float32
    assert term.dtype == trunc.dtype == jnp.bool_ and info["velocity"].shape == (2,)
    assert int(state.time) == 1 and int(state0.time) == 0
    # gym's reset: qpos0 + U(-0.1, 0.1) (normalised quaternion), small velocities
    qpos0 = np.asarray(env.mj_model.qpos0)
    q = np.asarray(state0.data.qpos)
    assert np.all(np.abs(np.delete(q - qpos0, [3, 4, 5, 6])) <= 0.1 + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(q[3:7]), 1.0, rtol=1e-5)
    assert 0 < float(jnp.abs(state0.data.qvel).max()) < 0.5
    np.testing.assert_allclose(obs0[:13], q[2:], rtol=1e-6)
    # the time limit is a truncation, not a termination
    qpos, qvel = _standing(env.mj_model)
    last = one_step(params, qpos, qvel, jnp.int32(STEPS - 1))[2]
    assert bool(last[4]) and not bool(last[3])


def test_velocity_reward_costs_and_observation_by_hand(healthy_step):
    params, (state0, _, (obs, new, reward, term, trunc, info), _) = healthy_step
    v = (np.asarray(new.data.qpos[:2]) - np.asarray(state0.data.qpos[:2])) / 0.05
    cfrc = np.asarray(obs[27:111])  # the observation's clipped contact forces
    assert np.all(np.abs(cfrc) <= 1.0) and np.count_nonzero(cfrc) > 0
    ctrl = 0.005 * float(np.sum(CLIPPED**2))
    contact = 5e-4 * float(np.sum(cfrc**2))
    np.testing.assert_allclose(info["velocity"], v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(info["ctrl_cost"]), ctrl, rtol=1e-6)
    np.testing.assert_allclose(float(info["contact_cost"]), contact, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(reward), -abs(v[0] - 1.5) - ctrl - contact + 1.05,
                               rtol=1e-4, atol=1e-5)
    assert not bool(term) and not bool(trunc)
    d = new.data
    np.testing.assert_allclose(obs[:13], d.qpos[2:])
    np.testing.assert_allclose(obs[13:27], d.qvel)
    np.testing.assert_allclose(obs[111:120], d.xmat[TORSO].reshape(-1))
    np.testing.assert_allclose(obs[120:], d.xpos[TORSO])


def test_other_tasks_rewards_and_observations_by_hand(envs, healthy_step):
    vel_params, (state0, _, (vel_obs, new, _, _, _, _), _) = healthy_step
    d0, d1 = state0.data, new.data
    v = (np.asarray(d1.qpos[:2]) - np.asarray(d0.qpos[:2])) / 0.05
    cfrc = np.asarray(vel_obs[27:111])
    contact = 5e-4 * float(np.sum(cfrc**2))
    ctrl = jnp.asarray(CLIPPED)
    physics = vel_params.physics  # the model the data were simulated with
    u = np.array([np.cos(2.0), np.sin(2.0)], np.float32)
    goal = np.array([1.0, -2.0], np.float32)
    cases = {  # name: (target, expected task reward, ctrl weight, survive)
        "ant-dir": (-1.0, -v[0], 0.005, 0.05),
        "ant-dir-2d": (u, float(u @ v), 0.5, 1.0),
        "ant-goal": (goal, -float(np.sum(np.abs(np.asarray(d1.qpos[:2]) - goal))), 0.1, 0.0),
    }
    for name, (target, task_reward, w, survive) in cases.items():
        env, _ = envs[name]
        params = AntParams(target=jnp.asarray(target, jnp.float32), physics=physics,
                           horizon=STEPS)
        reward, term, info = jax.jit(env.reward)(d0, d1, ctrl, params)
        expected = task_reward - w * float(np.sum(CLIPPED**2)) - contact + survive
        np.testing.assert_allclose(float(reward), expected, rtol=1e-4, atol=1e-5, err_msg=name)
        assert not bool(term), name
        obs = jax.jit(env.observation)(d1, params)
        assert obs.shape == env.observation_space().shape, name
        start = 0 if name == "ant-goal" else 2
        np.testing.assert_allclose(obs[:15 - start], d1.qpos[start:], err_msg=name)
        np.testing.assert_allclose(obs[15 - start:29 - start], d1.qvel, err_msg=name)
        np.testing.assert_allclose(obs[29 - start:113 - start], cfrc, rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_termination_on_unhealthy_states(envs, one_step):
    env, tasks = envs["ant-vel"]
    params = tasks.sample(jax.random.key(0))
    qpos, qvel = _low()
    state0, _, (_, low, reward, term, trunc, _), _ = one_step(params, qpos, qvel,
                                                              jnp.int32(0))
    assert float(low.data.qpos[2]) < 0.2 and bool(term) and not bool(trunc)
    assert np.isfinite(float(reward))  # the terminal step is still rewarded (survive included)
    high = qpos.at[2].set(1.5).at[3:5].set(jnp.array([1.0, 0.0]))  # upright, 1.5 m up
    assert bool(one_step(params, high, qvel, jnp.int32(0))[2][3])
    healthy_qpos, healthy_qvel = _standing(env.mj_model)
    nan = one_step(params, healthy_qpos, healthy_qvel.at[0].set(jnp.nan), jnp.int32(0))[2]
    assert bool(nan[3])  # a non-finite state ends the episode
    # the other tasks' healthy ranges on the same low data: dir [0.2, 1] ends, dir-2d [0, 1]
    # (ProMP) and goal (never) go on
    ctrl = jnp.asarray(CLIPPED)
    for name, ends in (("ant-dir", True), ("ant-dir-2d", False), ("ant-goal", False)):
        e, _ = envs[name]
        p = AntParams(target=jnp.asarray(1.0 if name == "ant-dir" else [1.0, 0.0]), horizon=STEPS)
        assert bool(jax.jit(e.reward)(state0.data, low.data, ctrl, p)[1]) == ends, name


def test_contact_forces_equal_mujoco(envs, one_step):
    """MJX's ``rne_postconstraint`` after ``forward`` against MuJoCo's ``mj_forward`` +
    ``mj_rnePostConstraint`` on the ant standing on its four feet (same solver settings)."""
    env, tasks = envs["ant-vel"]
    params = tasks.sample(jax.random.key(0))
    qpos, qvel = _standing(env.mj_model)
    _, cfrc0, _, _ = one_step(params, qpos, qvel, jnp.int32(0))
    m = copy.copy(env.mj_model)
    m.geom_friction[:] = np.asarray(params.physics.geom_friction)
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = np.asarray(qpos), np.asarray(qvel)
    mujoco.mj_forward(m, d)
    mujoco.mj_rnePostConstraint(m, d)
    feet = [b for b in range(m.nbody) if np.any(d.cfrc_ext[b] != 0)]
    assert len(feet) == 4  # the four foot bodies touch the floor
    np.testing.assert_allclose(cfrc0, d.cfrc_ext, rtol=2e-3, atol=2e-3)


def test_vmap_over_tasks_equals_loop_and_no_recompilation(envs, one_step):
    env, tasks = envs["ant-vel"]
    batch = tasks.sample_batch(jax.random.key(5), 3)
    qpos, qvel = _standing(env.mj_model)
    n = 3
    args = (jnp.tile(qpos, (n, 1)), jnp.tile(qvel, (n, 1)), jnp.zeros(n, jnp.int32))
    vmapped = jax.jit(jax.vmap(one_step))(batch, *args)
    for i in range(n):
        one = one_step(jax.tree.map(lambda x: x[i], batch), qpos, qvel, jnp.int32(0))
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(vmapped)):
            np.testing.assert_allclose(a, b[i], rtol=2e-4, atol=2e-5)
    # the tasks differ (targets and friction), so do their rewards
    assert len(set(np.round(np.asarray(vmapped[2][2]), 5))) == n


def test_task_ranges_of_every_split(envs):
    key = jax.random.key(0)
    n = 2000
    _, tasks = envs["ant-vel"]
    v = tasks.sample_batch(key, n).target
    assert 0.0 <= float(v.min()) and float(v.max()) <= 3.0 and float(v.max()) > 2.9
    assert not np.allclose(v, tasks.test.sample_batch(key, n).target)
    ood = tasks.ood.sample_batch(key, n).target
    assert 3.0 <= float(ood.min()) and float(ood.max()) <= 4.0
    assert tasks.ranges == {"velocity": (0.0, 3.0), "friction": (0.8, 1.2)}

    _, tasks = envs["ant-dir"]
    for split in (tasks.train, tasks.test, tasks.ood):
        d = np.asarray(split.sample_batch(key, 200).target)
        assert set(d.tolist()) == {-1.0, 1.0}

    _, tasks = envs["ant-dir-2d"]
    for split, (lo, hi) in ((tasks.train, (0.0, 4.5)), (tasks.test, (0.0, 4.5)),
                            (tasks.ood, (4.5, 6.0))):
        u = np.asarray(split.sample_batch(key, n).target)
        np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-5)
        theta = np.mod(np.arctan2(u[:, 1], u[:, 0]), 2 * np.pi)
        assert lo - 1e-4 <= theta.min() and theta.max() <= hi + 1e-4
    _, default = jmeta.make("ant-dir-2d")
    u = np.asarray(default.ood.sample_batch(key, n).target)  # no ood_angle: the full circle
    assert (u[:, 0] < -0.9).any() and (u[:, 0] > 0.9).any() and (u[:, 1] < -0.9).any()

    _, tasks = envs["ant-goal"]
    g = np.asarray(tasks.sample_batch(key, n).target)
    r = np.linalg.norm(g, axis=1)
    assert r.max() <= 3.0 + 1e-5
    assert abs(np.mean(r < 1.5) - 0.25) < 0.04  # uniform by area: P(r < R/2) = 1/4
    assert abs(np.mean(g[:, 0] > 0) - 0.5) < 0.05 and abs(np.mean(g[:, 1] > 0) - 0.5) < 0.05
    r_test = np.linalg.norm(tasks.test.sample_batch(key, n).target, axis=1)
    assert r_test.max() <= 3.0 + 1e-5 and not np.allclose(r, r_test)
    r_ood = np.linalg.norm(tasks.ood.sample_batch(key, n).target, axis=1)
    assert 3.0 - 1e-5 <= r_ood.min() and r_ood.max() <= 4.0 + 1e-5


@pytest.mark.parametrize("name, overrides, message", [
    ("ant-vel", {"velocity": (3.0, 1.0)}, "velocity: low must be <= high"),
    ("ant-vel", {"ood_velocity": "fast"}, "ood_velocity: expected a number or a (low, high)"),
    ("ant-goal", {"goal_radius": (-1.0, 3.0)}, "goal_radius: low must be >= 0.0"),
    ("ant-goal", {"ood_goal_radius": (4.0, float("inf"))}, "ood_goal_radius: range must be"),
    ("ant-dir-2d", {"angle": (1.0, 0.0)}, "angle: low must be <= high"),
    ("ant-dir-2d", {"ood_angle": (0.0,)}, "ood_angle: expected a number or a (low, high)"),
    ("ant-dir", {"healthy_z": (1.0, 0.2)}, "healthy_z: low must be <= high"),
    ("ant-dir", {"ctrl_cost": -0.1}, "ctrl_cost: expected a finite non-negative number"),
    ("ant-vel", {"contact_cost": "x"}, "contact_cost: expected a number"),
    ("ant-vel", {"survive_reward": float("nan")}, "survive_reward: expected a finite number"),
    ("ant-goal", {"contact_forces": 1}, "contact_forces: expected True or False"),
    ("ant-dir", {"ood_friction": (0.5, 1.0)}, "ood_friction: needs friction"),
    ("ant-vel", {"goal_radius": (0.0, 1.0)}, "unknown override(s) 'goal_radius'"),
])
def test_bad_options_name_the_field(name, overrides, message):
    with pytest.raises(ValueError) as err:
        jmeta.make(name, **overrides)
    assert message in str(err.value)
