"""The brax adapter on brax's inverted pendulum (mjx backend) with the pole mass as the task:
shapes, parity with brax's own step on the task's System, the randomised field changes the
trajectory, vmap over tasks = loop, time limits as truncations, clear errors."""

import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brax.envs as brax_envs  # brax is a core dependency: a missing install must fail, not skip

from brax.envs.wrappers import training as brax_training  # noqa: E402

from jmeta.envs.brax_adapter import BraxParams, from_brax  # noqa: E402
from jmeta.envs.spaces import Box  # noqa: E402

STEPS = 6
POLE = 2  # body id of the pole (0: world, 1: cart)


def pole_mass(key, sys, ranges):
    lo, hi = ranges["pole_mass"]
    return {"body_mass": sys.body_mass.at[POLE].set(jax.random.uniform(key, minval=lo, maxval=hi))}


@pytest.fixture(scope="module")
def pendulum():
    benv = brax_envs.get_environment("inverted_pendulum", backend="mjx")
    env, tasks = from_brax(benv, pole_mass, {"pole_mass": (2.0, 8.0)},
                           ood_ranges={"pole_mass": (10.0, 15.0)}, horizon=STEPS)
    return benv, env, tasks


def _actions(seed=0):
    return jax.random.uniform(jax.random.key(seed), (STEPS, 1), minval=-1.0, maxval=1.0)


@pytest.fixture(scope="module")
def run(pendulum):
    """``run(params, actions [T, 1]) -> (obs, qpos, reward, terminated, truncated)``, jitted once
    (one unbatched and one vmapped trace, whatever the tasks)."""
    _, env, _ = pendulum

    @jax.jit
    @chex.assert_max_traces(n=2)
    def run(params, actions):
        _, state = env.reset(jax.random.key(0), params)

        def body(state, a):
            obs, state, reward, term, trunc, _ = env.step(jax.random.key(1), state, a, params)
            return state, (obs, state.env_state.pipeline_state.qpos, reward, term, trunc)

        return jax.lax.scan(body, state, actions)[1]

    return run


def test_spaces_shapes_and_truncation(pendulum, run):
    _, env, tasks = pendulum
    assert env.name == "brax:InvertedPendulum"
    assert env.observation_space().shape == (4,)
    assert isinstance(env.action_space(), Box) and env.action_space().shape == (1,)
    params = tasks.sample(jax.random.key(0))
    assert isinstance(params, BraxParams) and params.horizon == STEPS
    obs, qpos, reward, term, trunc = run(params, 0.0 * _actions())
    assert obs.shape == (STEPS, 4) and obs.dtype == jnp.float32 and qpos.shape == (STEPS, 2)
    assert reward.shape == (STEPS,) and reward.dtype == jnp.float32
    np.testing.assert_allclose(reward, 1.0)
    assert not bool(jnp.any(term))  # 6 steps of 0.04 s from upright: the pole stays up
    assert [bool(t) for t in trunc] == [False] * (STEPS - 1) + [True]


def test_step_equals_brax_on_the_task_system(pendulum, run):
    """The adapter's rollout of a task = brax's own env whose ``sys`` is the task's System."""
    benv, env, tasks = pendulum
    params = tasks.sample(jax.random.key(3))
    actions = _actions(1)
    obs, qpos, reward, term, _ = run(params, actions)
    ref = copy.copy(benv)
    ref.sys = benv.sys.tree_replace({"body_mass": params.sys["body_mass"]})

    @jax.jit
    def brax_rollout(actions):
        state = ref.reset(jax.random.key(0))

        def body(state, a):
            state = ref.step(state, a)
            return state, (state.obs, state.reward, state.done)

        return jax.lax.scan(body, state, actions)[1]

    b_obs, b_reward, b_done = brax_rollout(actions)
    np.testing.assert_allclose(obs, b_obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reward, b_reward)
    np.testing.assert_array_equal(term, b_done > 0)
    # the shared env keeps its nominal System (the adapter steps shallow copies)
    assert env.sys is benv.sys
    np.testing.assert_allclose(benv.sys.body_mass[POLE], 5.0185914, rtol=1e-6)


def test_randomised_mass_changes_the_trajectory(pendulum, run):
    _, env, tasks = pendulum
    base = tasks.sample(jax.random.key(0))
    light = BraxParams(sys={"body_mass": base.sys["body_mass"].at[POLE].set(2.0)}, horizon=STEPS)
    heavy = BraxParams(sys={"body_mass": base.sys["body_mass"].at[POLE].set(8.0)}, horizon=STEPS)
    actions = jnp.ones((STEPS, 1))  # push the cart: the pole's response depends on its mass
    obs_light = run(light, actions)[0]
    obs_heavy = run(heavy, actions)[0]
    np.testing.assert_allclose(obs_light[0, :1], obs_heavy[0, :1], atol=1e-2)  # same start
    assert float(jnp.max(jnp.abs(obs_light[-1] - obs_heavy[-1]))) > 1e-2


def test_vmap_over_tasks_equals_loop_and_no_recompilation(pendulum, run):
    _, env, tasks = pendulum
    batch = tasks.sample_batch(jax.random.key(5), 3)
    acts = jnp.stack([_actions(i) for i in range(3)])
    vmapped = jax.jit(jax.vmap(run))(batch, acts)
    for i in range(3):
        one = run(jax.tree.map(lambda x: x[i], batch), acts[i])
        for a, b in zip(one, vmapped):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)
    # new tasks reuse the compiled function: assert_max_traces(n=2) would raise otherwise
    run(tasks.sample(jax.random.key(9)), acts[0])
    jax.jit(jax.vmap(run))(tasks.sample_batch(jax.random.key(10), 3), acts)


def test_task_ranges_and_system_returning_randomize_fn(pendulum):
    benv, env, tasks = pendulum
    m = tasks.sample_batch(jax.random.key(0), 500).sys["body_mass"]
    assert m.shape == (500, 3)
    np.testing.assert_allclose(m[:, :POLE], np.broadcast_to(np.asarray(benv.sys.body_mass)[:POLE],
                                                            (500, POLE)))
    assert 2.0 <= float(m[:, POLE].min()) and float(m[:, POLE].max()) <= 8.0
    test = tasks.test.sample_batch(jax.random.key(0), 500).sys["body_mass"][:, POLE]
    assert not np.allclose(m[:, POLE], test) and 2.0 <= float(test.min())
    ood = tasks.ood.sample_batch(jax.random.key(0), 500).sys["body_mass"][:, POLE]
    assert 10.0 <= float(ood.min()) and float(ood.max()) <= 15.0

    def damping(key, sys, ranges):  # returns a System: the changed field is found by identity
        scale = jax.random.uniform(key, minval=ranges["damping"][0], maxval=ranges["damping"][1])
        return sys.tree_replace({"dof_damping": sys.dof_damping * scale})

    _, dtasks = from_brax(benv, damping, {"damping": (0.5, 2.0)})
    p = dtasks.sample(jax.random.key(0))
    assert list(p.sys) == ["dof_damping"] and p.horizon == 1000
    ratio = p.sys["dof_damping"] / benv.sys.dof_damping
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    assert 0.5 <= float(ratio[0]) <= 2.0


def test_episode_wrapper_time_limit_is_a_truncation():
    benv = brax_training.EpisodeWrapper(
        brax_envs.get_environment("inverted_pendulum", backend="mjx"), episode_length=2,
        action_repeat=1)
    env, tasks = from_brax(benv, pole_mass, {"pole_mass": (4.0, 6.0)}, horizon=10)
    params = tasks.sample(jax.random.key(0))

    @jax.jit
    def flags(params):
        _, state = env.reset(jax.random.key(0), params)
        out = []
        for _ in range(2):
            _, state, _, term, trunc, _ = env.step(jax.random.key(1), state, jnp.zeros(1), params)
            out.append((term, trunc))
        return out

    (t1, u1), (t2, u2) = flags(params)
    assert not bool(t1) and not bool(u1)
    assert not bool(t2) and bool(u2)  # brax: done=1 with truncation=1 -> truncated


class _NotBrax:
    def reset(self, key):
        return None


@pytest.mark.parametrize("make, message", [
    (lambda b: from_brax(_NotBrax(), pole_mass, {"pole_mass": (2.0, 8.0)}),
     "brax_env: expected a brax.envs.Env"),
    (lambda b: from_brax(brax_envs.create("inverted_pendulum", backend="mjx"), pole_mass,
                         {"pole_mass": (2.0, 8.0)}),
     "AutoResetWrapper is not supported"),
    (lambda b: from_brax(b, pole_mass, {"pole_mass": (8.0, 2.0)}),
     "pole_mass: low must be <= high"),
    (lambda b: from_brax(b, pole_mass, {"pole_mass": (2.0, 8.0)}, {"length": (1.0, 2.0)}),
     "ood_ranges has keys not in ranges: ['length']"),
    (lambda b: from_brax(b, pole_mass, {"pole_mass": (2.0, 8.0)}, horizon=0),
     "horizon: expected a positive int"),
    (lambda b: from_brax(b, "mass", {"pole_mass": (2.0, 8.0)}),
     "randomize_fn: expected a function"),
    (lambda b: from_brax(b, lambda k, s, r: [s.body_mass], {}),
     "randomize_fn: must return a brax System or a dict"),
    (lambda b: from_brax(b, lambda k, s, r: {"pole_mass": 1.0}, {}),
     "randomize_fn: 'pole_mass' is not a field of the brax System"),
    (lambda b: from_brax(b, lambda k, s, r: {"opt": 1.0}, {}),
     "randomize_fn: 'opt' names a"),
    (lambda b: from_brax(b, lambda k, s, r: {"body_mass": jnp.ones((4, 3))}, {}),
     "randomize_fn: 'body_mass' has shape (4, 3), the System's has (3,)"),
    (lambda b: from_brax(b, lambda k, s, r: s, {}),
     "randomize_fn: changed no System field"),
])
def test_bad_inputs_raise_clear_errors(pendulum, make, message):
    benv, _, _ = pendulum
    with pytest.raises(ValueError) as err:
        make(benv)
    assert message in str(err.value)
