"""The warehouse MJX task: shapes, rewards by hand (a step and a fall), friction and cargo mass
change the dynamics the way they should, vmap = loop, no recompilation when tasks change, task
ranges per split, and clear errors for bad ranges.

MJX compilation costs 10–20 s per jitted function on 2 CPU cores, so every test runs through one
jitted rollout (traced twice: unbatched and vmapped over a batch of 4 tasks, always 4) of a fixed
length, and builds its tasks with one jitted ``make_params``.
"""

import copy

import chex
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import jmeta
from jmeta.envs.mjx.warehouse import WarehouseParams

T = 24  # env steps per rollout (1.2 s), also the tasks' horizon
BATCH = 4  # every vmapped call uses this batch size, so the vmapped rollout is traced once


@pytest.fixture(scope="module")
def wh():
    return jmeta.make("warehouse", horizon=T)


@pytest.fixture(scope="module")
def draws(wh):
    """256 tasks of each split, from one key (sampled in one jitted call: sampling eagerly
    recomputes the derived constants op by op, ~20 s)."""
    _, tasks = wh
    splits = ("train", "test", "ood")
    sample = jax.jit(lambda key: {s: tasks.with_split(s).sample_batch(key, 256) for s in splits})
    return sample(jax.random.key(0))


def _first(params, n=None):
    return jax.tree.map(lambda x: x[0] if n is None else x[:n], params)


@pytest.fixture(scope="module")
def traces():
    return []


@pytest.fixture(scope="module")
def rollout(wh, traces):
    """``rollout(params, actions [T, 2], shift [3]) -> (obs, qpos, reward, term, trunc, info)``,
    each ``[T, ...]``: reset with a fixed key, move the cargo by ``shift`` (m, world frame; zero
    for an ordinary episode), then step through ``actions``. Not jitted: ``run`` and ``vrun``
    jit it unbatched and vmapped over ``params``."""
    env, _ = wh
    k = env._cargo_qpos

    @chex.assert_max_traces(n=2)  # one unbatched and one vmapped trace, whatever the tasks
    def rollout(params, actions, shift):
        traces.append(params.goal.shape)
        _, state = env.reset(jax.random.key(0), params)
        qpos = state.data.qpos.at[k:k + 3].add(shift)
        state = state.replace(data=state.data.replace(qpos=qpos))

        def body(state, a):
            obs, state, reward, term, trunc, info = env.step(jax.random.key(1), state, a, params)
            return state, (obs, state.data.qpos, reward, term, trunc, info)

        return jax.lax.scan(body, state, actions)[1]

    return rollout


@pytest.fixture(scope="module")
def run(rollout):
    return jax.jit(rollout)


@pytest.fixture(scope="module")
def vrun(rollout):
    return jax.jit(jax.vmap(rollout, in_axes=(0, None, None)))


@pytest.fixture(scope="module")
def make_params(wh):
    env, _ = wh
    return jax.jit(lambda goal, friction, cargo: env.make_params(goal, friction, cargo,
                                                                 horizon=T))


def _stack(*trees):
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def _manoeuvre():
    """Full forward for 8 steps, a hard right turn on the spot for 8, full reverse for 8."""
    return jnp.concatenate([jnp.tile(jnp.array([1.0, 1.0]), (8, 1)),
                            jnp.tile(jnp.array([1.0, -1.0]), (8, 1)),
                            jnp.tile(jnp.array([-1.0, -1.0]), (8, 1))])


def _yaw(obs):
    return np.unwrap(np.arctan2(np.asarray(obs[..., 3]), np.asarray(obs[..., 2])), axis=-1)


def test_spaces_shapes_and_solver(wh, run, make_params):
    env, _ = wh
    assert env.observation_space().shape == (14,)
    space = env.action_space()
    assert space.shape == (2,)
    np.testing.assert_array_equal(space.low, [-1.0, -1.0])
    np.testing.assert_array_equal(space.high, [1.0, 1.0])
    assert env.dt == pytest.approx(0.05)
    opt = env.mj_model.opt
    assert (opt.iterations, opt.ls_iterations) == (6, 6)
    assert opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    goal = jnp.array([1.2, -0.4])
    obs, qpos, reward, term, trunc, info = run(make_params(goal, 0.7, 1.0), jnp.zeros((T, 2)),
                                               jnp.zeros(3))
    assert obs.shape == (T, 14) and obs.dtype == jnp.float32
    assert reward.shape == (T,) and reward.dtype == jnp.float32
    assert term.dtype == jnp.bool_ and trunc.dtype == jnp.bool_
    assert not bool(jnp.any(term))
    assert [bool(t) for t in trunc] == [False] * (T - 1) + [True]
    assert bool(jnp.all(jnp.isfinite(obs)))
    # At rest (zero commands) the robot stays put, level, with the crate centred on the tray.
    np.testing.assert_allclose(obs[-1, 0:2], qpos[-1, 0:2], atol=1e-6)
    assert float(jnp.max(jnp.abs(obs[:, 4:9]))) < 0.02  # velocities and wheel speeds
    assert float(jnp.max(jnp.abs(obs[:, 9:12]))) < 5e-3  # crate offset from its rest position
    assert float(jnp.max(jnp.abs(info["slip"]))) < 0.02


def test_reward_and_observation_by_hand(wh, run, make_params):
    env, _ = wh
    goal = jnp.array([1.0, -0.5])
    params = make_params(goal, 0.7, 2.0)
    actions = jax.random.uniform(jax.random.key(7), (T, 2), minval=-1.5, maxval=1.5)
    obs, qpos, reward, term, trunc, info = run(params, actions, jnp.zeros(3))
    obs, qpos, reward = np.asarray(obs), np.asarray(qpos), np.asarray(reward)
    k = env._cargo_qpos
    clipped = np.clip(np.asarray(actions), -1.0, 1.0)  # out-of-range commands are clipped
    distance = np.linalg.norm(qpos[:, k:k + 2] - np.asarray(goal), axis=1)
    ctrl = 0.01 * np.sum(clipped**2, axis=1)
    assert not bool(jnp.any(term))
    np.testing.assert_allclose(info["distance"], distance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info["ctrl_cost"], ctrl, rtol=1e-5)
    np.testing.assert_allclose(reward, -distance - ctrl, rtol=1e-5, atol=1e-5)
    # observation: position, heading, and the goal in the robot frame
    w, z = qpos[:, 3], qpos[:, 6]  # the base's quaternion is ~ a rotation about z
    yaw = 2 * np.arctan2(z, w)
    np.testing.assert_allclose(obs[:, 0:2], qpos[:, 0:2], atol=1e-6)
    np.testing.assert_allclose(obs[:, 2], np.cos(yaw), atol=2e-3)
    np.testing.assert_allclose(obs[:, 3], np.sin(yaw), atol=2e-3)
    d = np.asarray(goal) - qpos[:, 0:2]
    to_robot = np.stack([np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1],
                         -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]], axis=1)
    np.testing.assert_allclose(obs[:, 12:14], to_robot, atol=5e-3)


def test_cargo_off_the_tray_terminates_with_the_rest_of_the_episode_charged(wh, run,
                                                                            make_params):
    env, _ = wh
    goal = jnp.array([1.5, 0.0])
    # The crate placed 0.4 m ahead of the tray's centre: past the 0.3 m edge.
    obs, qpos, reward, term, trunc, info = run(make_params(goal, 0.7, 0.0), jnp.zeros((T, 2)),
                                               jnp.array([0.4, 0.0, 0.0]))
    k = env._cargo_qpos
    assert bool(term[0]) and bool(info["fallen"][0])
    d = float(np.linalg.norm(np.asarray(qpos[0, k:k + 2]) - np.asarray(goal)))
    assert d == pytest.approx(1.5 - 0.35, abs=0.03)
    # -d, no control cost, then the fall: fall_penalty 10 plus the T - 1 steps left at d
    np.testing.assert_allclose(float(reward[0]), -d - (10.0 + (T - 1) * d), rtol=1e-5)
    # The tray's edge is what counts: 0.25 m off centre is still on the tray.
    term = run(make_params(goal, 0.7, 0.0), jnp.zeros((T, 2)), jnp.array([0.0, 0.25, 0.0]))[3]
    assert not bool(term[0])


def test_friction_and_cargo_mass_change_the_dynamics(vrun, make_params):
    goal = jnp.array([1.0, 0.0])
    tasks = [(0.5, 0.0), (0.9, 0.0), (0.5, 5.0), (0.9, 5.0)]
    params = _stack(*[make_params(goal, f, m) for f, m in tasks])
    obs, qpos, reward, term, trunc, info = vrun(params, _manoeuvre(), jnp.zeros(3))
    slip = np.asarray(info["slip"])
    x_fwd = np.asarray(qpos[:, 7, 0])  # after 8 steps of full forward
    turned = -(_yaw(obs)[:, 15] - _yaw(obs)[:, 7])  # right turn: yaw decreases
    # measured (forward m, turned rad, slip m/s): μ 0.5: 0.259, 1.10, 0.23; μ 0.9: 0.314, 1.38,
    # 0.072; with 5 kg: μ 0.5: 0.248, 1.27, 0.19; μ 0.9: 0.301, 1.29, 0.081
    low, high, low_heavy, high_heavy = range(4)
    for a, b in ((low, high), (low_heavy, high_heavy)):
        # Low friction: the wheels spin more and the robot gets less far.
        assert slip[a, :16].mean() > 1.5 * slip[b, :16].mean()
        assert x_fwd[a] < x_fwd[b] - 0.03
    # ... and turns less (with 5 kg of cargo the servos' torque limits the turn at either μ).
    assert turned[low] < turned[high] - 0.15
    # Cargo mass changes the trajectory too (most where traction is not the limit).
    assert float(jnp.max(jnp.abs(qpos[high] - qpos[high_heavy]))) > 0.01
    assert float(jnp.max(jnp.abs(qpos[low] - qpos[low_heavy]))) > 1e-3
    # The same task and actions give the same trajectory (the difference is physics).
    np.testing.assert_array_equal(vrun(params, _manoeuvre(), jnp.zeros(3))[1], qpos)
    # The crate stays on the tray through the manoeuvre (no launch by the solver).
    assert not bool(jnp.any(term))
    assert float(jnp.max(jnp.abs(obs[..., 11]))) < 0.02


def test_vmap_equals_loop(draws, run, vrun):
    params = _first(draws["train"], BATCH)
    # Smooth commands from rest, compared over the first 8 steps (0.4 s). Float32 rounding
    # differs between the batched and the unbatched program, and contact events (stick–slip of
    # the wheels and the crate) amplify it: measured, the two agree within 5e-5 for 10 steps of
    # these commands (7 of random ±1 commands), then differ by up to 0.02 (0.5). Whether each
    # task's physics reaches its own batch member is checked by the friction test above.
    t = jnp.arange(T)[:, None]
    actions = jnp.sin(t / jnp.array([5.0, 4.0])) * jnp.array([0.6, 0.4])
    batched = vrun(params, actions, jnp.zeros(3))
    for i in range(BATCH):
        single = run(jax.tree.map(lambda x: x[i], params), actions, jnp.zeros(3))
        np.testing.assert_allclose(batched[0][i, :8], single[0][:8], atol=1e-4)  # observations
        np.testing.assert_allclose(batched[2][i, :8], single[2][:8], atol=1e-4)  # rewards
        np.testing.assert_array_equal(batched[3][i], single[3])  # terminations


def test_no_recompilation_when_tasks_change(draws, run, vrun, make_params, traces):
    actions = jnp.zeros((T, 2))
    for split in ("train", "test", "ood"):
        run(_first(draws[split]), actions, jnp.zeros(3))
        vrun(_first(draws[split], BATCH), actions, jnp.zeros(3))
    run(make_params(jnp.array([0.3, 0.3]), 0.31, 7.5), actions, jnp.array([0.1, 0.0, 0.0]))
    assert len(traces) <= 2  # chex.assert_max_traces would also have raised
    assert (run._cache_size(), vrun._cache_size()) == (1, 1)  # one compilation each


def test_task_ranges_per_split(wh, draws):
    env, _ = wh
    floor, left, right = env._friction_geoms
    expected = {"train": ((0.5, 2.0), (0.5, 0.9), (0.0, 5.0)),
                "test": ((0.5, 2.0), (0.5, 0.9), (0.0, 5.0)),
                "ood": ((2.0, 3.0), (0.3, 0.5), (5.0, 8.0))}
    for split, p in draws.items():
        assert isinstance(p, WarehouseParams) and p.horizon == T
        (r_lo, r_hi), (f_lo, f_hi), (m_lo, m_hi) = expected[split]
        radius = np.linalg.norm(np.asarray(p.goal), axis=1)
        assert r_lo - 1e-5 <= radius.min() and radius.max() <= r_hi + 1e-5
        assert f_lo <= float(p.friction.min()) and float(p.friction.max()) <= f_hi
        assert m_lo <= float(p.cargo_mass.min()) and float(p.cargo_mass.max()) <= m_hi
        # the ranges are covered, not a corner of them
        assert radius.max() - radius.min() > 0.8 * (r_hi - r_lo)
        assert float(p.friction.max() - p.friction.min()) > 0.8 * (f_hi - f_lo)
        # the physics is what the scalars say: floor and wheel friction, crate + payload mass
        gf = np.asarray(p.physics.geom_friction)
        for g in (floor, left, right):
            np.testing.assert_allclose(gf[:, g, 0], p.friction, rtol=1e-6)
        others = [g for g in range(env.mj_model.ngeom) if g not in (floor, left, right)]
        np.testing.assert_allclose(gf[:, others, 0],
                                   np.broadcast_to(env.mj_model.geom_friction[others, 0],
                                                   (256, len(others))), rtol=1e-6)
        np.testing.assert_allclose(p.physics.body_mass[:, env._cargo], 0.5 + p.cargo_mass,
                                   rtol=1e-5)
    # held out: the same key gives other tasks in train and test
    assert not np.allclose(draws["train"].goal, draws["test"].goal)
    # the derived constants of a heavy cargo are MuJoCo's own
    physics = jax.tree.map(lambda x: x[0], draws["ood"].physics)
    m = copy.copy(env.mj_model)
    m.body_mass[:] = np.asarray(physics.body_mass)
    m.body_inertia[:] = np.asarray(physics.body_inertia)
    mujoco.mj_setConst(m, mujoco.MjData(m))
    np.testing.assert_allclose(physics.body_subtreemass, m.body_subtreemass, rtol=1e-5)
    np.testing.assert_allclose(physics.body_invweight0, m.body_invweight0, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(physics.dof_invweight0, m.dof_invweight0, rtol=1e-3)


def test_make_with_ranges_and_observation_noise():
    env, tasks = jmeta.make("warehouse", friction=(0.5, 0.9), cargo_mass=(0.0, 5.0),
                            obs_noise=0.02)
    assert env.observation_space().shape == (14,)
    assert tasks.ranges["friction"] == (0.5, 0.9)
    assert tasks.ranges["cargo_mass"] == (0.0, 5.0)
    assert tasks.ranges["obs_noise"] == (0.02, 0.02)
    assert tasks.ood_ranges["cargo_mass"] == (5.0, 8.0)
    options = jmeta.envs.describe("warehouse")
    assert options["cargo_mass"] == (0.0, 5.0) and options["goal_radius"] == (0.5, 2.0)


@pytest.mark.parametrize("overrides, message", [
    (dict(friction=(0.0, 0.5)), "friction: must be > 0"),
    (dict(friction=(-0.2, 0.5)), "friction: must be > 0"),
    (dict(friction=(0.9, 0.5)), "friction: low must be <= high"),
    (dict(ood_friction=(0.0, 0.3)), "ood_friction: must be > 0"),
    (dict(friction=None), "ood_friction: needs friction"),
    (dict(cargo_mass=(-1.0, 2.0)), "cargo_mass: low must be >= 0"),
    (dict(cargo_mass=(3.0, 1.0)), "cargo_mass: low must be <= high"),
    (dict(ood_cargo_mass=(-5.0, 8.0)), "ood_cargo_mass: low must be >= 0"),
    (dict(goal_radius=(2.0, 0.5)), "goal_radius: low must be <= high"),
    (dict(ood_goal_radius=(-1.0, 3.0)), "ood_goal_radius: low must be >= 0"),
    (dict(cargo_mass="heavy"), "cargo_mass: expected a number or a (low, high) pair"),
    (dict(fall_penalty=-1.0), "fall_penalty: expected a finite non-negative number"),
    (dict(ctrl_cost=float("nan")), "ctrl_cost"),
])
def test_bad_ranges_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jmeta.make("warehouse", **overrides)
