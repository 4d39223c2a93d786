"""MJX base and HalfCheetah tasks: per-task physics changes the dynamics, derived constants equal
MuJoCo's, rewards by hand, vmap = loop, no recompilation when tasks change, clear errors.

MJX compilation costs 10–20 s per jitted function on 2 CPU cores, so the tests share a few jitted
functions through module-scoped fixtures and use horizons of a few steps.
"""

import copy

import chex
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import jmeta
from jmeta.envs.mjx.base import derived_constants
from jmeta.envs.mjx.halfcheetah import HalfCheetahParams

STEPS = 4


@pytest.fixture(scope="module")
def cheetah():
    env, tasks = jmeta.make("halfcheetah-vel", horizon=STEPS, friction=(0.5, 0.9),
                            mass_scale=(0.8, 1.2), damping_scale=(0.9, 1.1))
    return env, tasks


@pytest.fixture(scope="module")
def jitted(cheetah):
    """``(reset, step)`` of the cheetah env, jitted once for the module."""
    env, _ = cheetah
    return jax.jit(env.reset), jax.jit(env.step)


@pytest.fixture(scope="module")
def run_actions(cheetah):
    """``run(params, actions [T, 6]) -> (obs [T], qpos [T], reward [T], info)``, jitted once;
    the reset key is fixed so only the task and actions differ between calls."""
    env, _ = cheetah

    @jax.jit
    @chex.assert_max_traces(n=3)  # unbatched, vmapped and physics=None, whatever the tasks
    def run(params, actions):
        _, state = env.reset(jax.random.key(0), params)

        def body(state, a):
            obs, state, reward, term, trunc, info = env.step(jax.random.key(1), state, a, params)
            return state, (obs, state.data.qpos, reward, term, trunc, info)

        return jax.lax.scan(body, state, actions)[1]

    return run


def _actions(seed=0):
    return jax.random.uniform(jax.random.key(seed), (STEPS, 6), minval=-1.0, maxval=1.0)


def test_spaces_and_shapes(cheetah, run_actions):
    env, tasks = cheetah
    assert env.observation_space().shape == (20,)
    assert env.action_space().shape == (6,)
    assert env.dt == pytest.approx(0.05)
    obs, qpos, reward, term, trunc, info = run_actions(tasks.sample(jax.random.key(0)), _actions())
    assert obs.shape == (STEPS, 20) and obs.dtype == jnp.float32
    assert reward.shape == (STEPS,) and reward.dtype == jnp.float32
    assert not bool(jnp.any(term))
    assert [bool(t) for t in trunc] == [False] * (STEPS - 1) + [True]
    assert bool(jnp.all(jnp.isfinite(obs)))


def test_velocity_reward_and_control_cost_by_hand(cheetah, jitted):
    env, tasks = cheetah
    reset, step = jitted
    params = tasks.sample(jax.random.key(3)).replace(target=jnp.float32(1.5))
    _, state = reset(jax.random.key(0), params)
    action = jnp.array([0.5, -2.0, 0.1, 0.0, 1.0, -0.3])  # -2.0 is clipped to -1.0
    obs, new, reward, term, trunc, info = step(jax.random.key(1), state, action, params)
    v = (float(new.data.qpos[0]) - float(state.data.qpos[0])) / 0.05
    clipped = np.array([0.5, -1.0, 0.1, 0.0, 1.0, -0.3])
    ctrl = 0.05 * float(np.sum(clipped**2))
    np.testing.assert_allclose(float(info["velocity"]), v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(info["ctrl_cost"]), ctrl, rtol=1e-6)
    np.testing.assert_allclose(float(reward), -abs(v - 1.5) - ctrl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new.data.ctrl, clipped, rtol=1e-6)
    # observation: qpos[1:], qvel, torso position
    np.testing.assert_allclose(obs[:8], new.data.qpos[1:])
    np.testing.assert_allclose(obs[8:17], new.data.qvel)
    np.testing.assert_allclose(obs[17:], new.data.xpos[env.mj_model.body("torso").id])


def test_direction_reward_by_hand():
    env, tasks = jmeta.make("halfcheetah-dir", horizon=STEPS)
    directions = tasks.sample_batch(jax.random.key(0), 200).target
    assert set(np.unique(np.asarray(directions))) == {-1.0, 1.0}
    assert 60 < int(jnp.sum(directions > 0)) < 140
    params = HalfCheetahParams(target=jnp.float32(-1.0), horizon=STEPS)
    _, state = jax.jit(env.reset)(jax.random.key(0), params)
    action = jnp.full((6,), 0.2)
    _, new, reward, *_ = jax.jit(env.step)(jax.random.key(1), state, action, params)
    v = (float(new.data.qpos[0]) - float(state.data.qpos[0])) / 0.05
    np.testing.assert_allclose(float(reward), -v - 0.05 * 6 * 0.04, rtol=1e-4, atol=1e-5)


def test_physics_changes_the_dynamics(cheetah, run_actions):
    env, tasks = cheetah
    base = tasks.sample(jax.random.key(0))
    acts = _actions(1)
    low = base.replace(physics=env.physics(friction=0.5))
    high = base.replace(physics=env.physics(friction=0.9))
    heavy = base.replace(physics=env.physics(mass_scale=1.2))
    q_low, q_high, q_heavy, q_nom = (run_actions(p, acts)[1] for p in (
        low, high, heavy, base.replace(physics=env.physics())))
    assert float(jnp.max(jnp.abs(q_low - q_high))) > 1e-4
    assert float(jnp.max(jnp.abs(q_heavy - q_nom))) > 1e-4
    # The same actions in the same task give the same trajectory (the difference is physics).
    np.testing.assert_array_equal(run_actions(low, acts)[1], q_low)


def test_nominal_physics_equals_the_base_model(cheetah, run_actions):
    env, tasks = cheetah
    params = tasks.sample(jax.random.key(0))
    acts = _actions(2)
    untouched = run_actions(params.replace(physics=None), acts)
    nominal = run_actions(params.replace(physics=env.physics()), acts)
    for a, b in zip(jax.tree.leaves(untouched), jax.tree.leaves(nominal)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_derived_constants_equal_mj_setconst(cheetah):
    env, _ = cheetah
    scale = jnp.asarray(np.linspace(0.6, 1.5, env.mj_model.nbody), jnp.float32)
    physics = jax.jit(lambda s: env.physics(mass_scale=s))(scale)
    m = copy.copy(env.mj_model)
    m.body_mass[:] = np.asarray(physics.body_mass)
    m.body_inertia[:] = np.asarray(physics.body_inertia)
    mujoco.mj_setConst(m, mujoco.MjData(m))
    np.testing.assert_allclose(physics.body_mass, env.mj_model.body_mass * np.asarray(scale),
                               rtol=1e-6)
    np.testing.assert_allclose(physics.body_subtreemass, m.body_subtreemass, rtol=1e-5)
    np.testing.assert_allclose(physics.body_invweight0, m.body_invweight0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(physics.dof_invweight0, m.dof_invweight0, rtol=1e-4)
    # The nominal physics carries MuJoCo's own constants, and recomputing them changes nothing.
    sub, biw, diw = derived_constants(env.model, jnp.asarray(env.mj_model.body_mass),
                                      jnp.asarray(env.mj_model.body_inertia))
    np.testing.assert_allclose(biw, env.mj_model.body_invweight0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(diw, env.mj_model.dof_invweight0, rtol=1e-4)


def test_vmap_over_tasks_equals_loop_and_no_recompilation(cheetah, run_actions):
    env, tasks = cheetah
    batch = tasks.sample_batch(jax.random.key(5), 3)
    acts = jnp.stack([_actions(i) for i in range(3)])
    vmapped = jax.jit(jax.vmap(run_actions))(batch, acts)
    for i in range(3):
        one = run_actions(jax.tree.map(lambda x: x[i], batch), acts[i])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(vmapped)):
            np.testing.assert_allclose(a, b[i], atol=1e-4, rtol=1e-4)
    # New tasks (new physics) reuse the compiled function: assert_max_traces(n=2) would raise.
    for seed in range(3):
        run_actions(tasks.sample(jax.random.key(100 + seed)), _actions())


def test_task_ranges_and_splits(cheetah):
    env, tasks = cheetah
    train = tasks.train.sample_batch(jax.random.key(0), 500)
    ood = tasks.ood.sample_batch(jax.random.key(0), 500)
    assert 0.0 <= float(train.target.min()) and float(train.target.max()) <= 2.0
    assert 2.0 <= float(ood.target.min()) and float(ood.target.max()) <= 3.0
    f = train.physics.geom_friction[:, :, 0]
    assert f.shape == (500, env.mj_model.ngeom)
    assert 0.5 <= float(f.min()) and float(f.max()) <= 0.9
    np.testing.assert_array_equal(f, f[:, :1] * np.ones_like(f))  # one friction per task
    ratio = train.physics.body_mass[:, 1:] / env.mj_model.body_mass[1:]
    assert 0.8 - 1e-5 <= float(ratio.min()) and float(ratio.max()) <= 1.2 + 1e-5
    test = tasks.test.sample_batch(jax.random.key(0), 500)
    assert not np.allclose(test.target, train.target)


def test_observation_noise_wraps_mjx_tasks():
    env, tasks = jmeta.make("halfcheetah-dir", horizon=STEPS, obs_noise=0.5)
    params = tasks.sample(jax.random.key(0))
    obs, _ = jax.jit(env.reset)(jax.random.key(1), params)
    assert obs.shape == (20,)


@pytest.mark.parametrize("overrides, message", [
    ({"friction": (0.0, 0.9)}, "friction: must be > 0"),
    ({"friction": (-1.0, 0.5)}, "friction: must be > 0"),
    ({"mass_scale": (0.0, 1.2)}, "mass_scale: must be > 0"),
    ({"mass_scale": (1.2, 0.8)}, "mass_scale: low must be <= high"),
    ({"damping_scale": (2.0, 1.0)}, "damping_scale: low must be <= high"),
    ({"friction": "high"}, "friction: expected a number or a (low, high) pair"),
    ({"ood_friction": (0.3, 0.5)}, "ood_friction: needs friction"),
    ({"solver": "pgs"}, "solver: expected one of ('newton', 'cg')"),
    ({"iterations": 0}, "iterations: expected a positive int"),
    ({"frame_skip": 0}, "frame_skip: expected a positive int"),
    ({"horizon": -5}, "horizon: expected a positive int"),
    ({"velocity": (2.0, 1.0)}, "velocity: low must be <= high"),
    ({"ctrl_cost": -0.1}, "ctrl_cost: expected a finite non-negative number"),
])
def test_bad_physics_ranges(overrides, message):
    with pytest.raises(ValueError) as err:
        jmeta.make("halfcheetah-vel", **overrides)
    assert message in str(err.value)


def test_import_jmeta_does_not_import_mujoco():
    import subprocess
    import sys

    code = ("import sys, jmeta; jmeta.envs.describe('halfcheetah-vel'); "
            "print('mujoco' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_model_applies_settotalmass_as_the_compiler(tmp_path, monkeypatch):
    from jmeta.envs.mjx.base import asset_path, load_model

    monkeypatch.chdir(tmp_path)  # MuJoCo writes its deprecation warning to ./MUJOCO_LOG.TXT
    path = asset_path("half_cheetah.xml")
    ours = load_model(path)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    theirs = mujoco.MjModel.from_xml_path(path)
    for field in ("body_mass", "body_inertia", "body_subtreemass", "body_invweight0",
                  "dof_invweight0", "actuator_acc0"):
        np.testing.assert_allclose(getattr(ours, field), getattr(theirs, field), rtol=1e-12)
    np.testing.assert_allclose(ours.body_mass.sum(), 14.0)


def test_diverged_simulation_terminates_with_zero_reward_and_observation(cheetah, jitted):
    env, tasks = cheetah
    params = tasks.sample(jax.random.key(0))
    reset, step = jitted
    _, state = reset(jax.random.key(0), params)
    obs, _, reward, term, trunc, info = step(jax.random.key(1), state, jnp.zeros(6), params)
    assert not bool(term) and not bool(info["diverged"])
    blown = state.replace(data=state.data.replace(qvel=jnp.full_like(state.data.qvel, 1e5)))
    obs, _, reward, term, trunc, info = step(jax.random.key(1), blown, jnp.zeros(6), params)
    assert bool(term) and bool(info["diverged"])
    assert float(reward) == 0.0 and not bool(jnp.any(obs != 0.0))
    nan = state.replace(data=state.data.replace(qpos=state.data.qpos.at[1].set(jnp.nan)))
    obs, _, reward, term, _, info = step(jax.random.key(1), nan, jnp.zeros(6), params)
    assert bool(term) and bool(info["diverged"]) and bool(jnp.all(jnp.isfinite(obs)))
    assert float(reward) == 0.0
