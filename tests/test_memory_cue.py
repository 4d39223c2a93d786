"""memory-cue: hand-checked transitions, the cue only at the trial's first step, rewards only for
right answers, jit/vmap parity, splits and bad inputs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.envs import TrialWrapper
from jmeta.envs.memory_cue import MemoryCue, MemoryCueParams, round_accuracy
from jmeta.rollout import rollout

K, L, N = 3, 3, 4  # cues, round length, rounds
OBS = K + 1 + L


def _params(cue=2, rate=1.0):
    return MemoryCueParams(cue=jnp.asarray(cue, jnp.int32),
                           distractor_rate=jnp.asarray(rate, jnp.float32), horizon=N * L)


def _play(env, params, actions, key=0):
    """Steps ``env`` through ``actions``; returns the observations (reset's first) and steps."""
    obs, state = env.reset(jax.random.key(key), params)
    seen, steps = [obs], []
    for t, a in enumerate(actions):
        obs, state, r, term, trunc, info = env.step(jax.random.key(100 + t), state,
                                                    jnp.asarray(a, jnp.int32), params)
        seen.append(obs)
        steps.append((float(r), bool(term), bool(trunc), {k: int(v) for k, v in info.items()}))
    return np.stack(seen), steps


def test_registered_and_listed():
    assert "memory-cue" in jmeta.envs.names()
    env, tasks = jmeta.make("memory-cue", num_cues=K, round_length=L, num_rounds=N)
    assert isinstance(env, MemoryCue)
    assert env.horizon == N * L
    assert tasks.sample(jax.random.key(0)).horizon == N * L
    assert env.observation_space().shape == (OBS,)
    assert env.action_space().n == K
    assert jmeta.envs.describe("memory-cue")["feedback"] == "end"


def test_cue_only_at_first_step_and_phase_by_hand():
    env = MemoryCue(K, L, N)
    obs, _ = _play(env, _params(cue=2, rate=1.0), [0] * (N * L))
    # step 0: token one-hot(2), cue flag 1, phase 0
    np.testing.assert_array_equal(obs[0], [0, 0, 1, 1, 1, 0, 0])
    # every later step: cue flag 0; rate 1: exactly one distractor token; phase t mod L
    for t in range(1, N * L + 1):
        assert obs[t, K] == 0.0, t
        assert obs[t, :K].sum() == 1.0, t
        np.testing.assert_array_equal(obs[t, K + 1:], np.eye(L)[t % L])
    # rate 0: no distractor tokens, the cue still shown at step 0
    obs, _ = _play(env, _params(cue=1, rate=0.0), [0] * (N * L))
    np.testing.assert_array_equal(obs[0, :K + 1], [0, 1, 0, 1])
    assert obs[1:, :K + 1].sum() == 0.0


def test_distractors_are_uniform_look_alikes():
    env = MemoryCue(K, L, N)
    params = _params(cue=0, rate=0.5)
    keys = jax.random.split(jax.random.key(0), 4000)
    _, state = env.reset(jax.random.key(0), params)
    obs = jax.jit(jax.vmap(lambda k: env.step(k, state, jnp.int32(0), params)[0]))(keys)
    tokens = np.asarray(obs[:, :K])
    np.testing.assert_allclose(tokens.sum(axis=1).mean(), 0.5, atol=0.03)  # shown w.p. rate
    np.testing.assert_allclose(tokens.mean(axis=0), [0.5 / K] * K, atol=0.03)  # uniform symbol


def test_end_feedback_pays_correct_answers_at_the_last_step():
    env = MemoryCue(K, L, N)  # feedback "end"
    cue = 2
    # answers (steps 2, 5, 8, 11): right, wrong, right, right; non-answer steps play the cue too
    answers = [cue, 0, cue, cue]
    actions = [cue if t % L != L - 1 else answers[t // L] for t in range(N * L)]
    _, steps = _play(env, _params(cue=cue), actions)
    rewards = [s[0] for s in steps]
    assert rewards == [0.0] * (N * L - 1) + [3.0]
    assert [s[1] for s in steps] == [False] * (N * L - 1) + [True]  # terminal, last step only
    assert not any(s[2] for s in steps)  # never truncated
    info = [s[3] for s in steps]
    assert [i["answer"] for i in info] == [int(t % L == L - 1) for t in range(N * L)]
    assert [i["correct"] for i in info] == [
        int(t % L == L - 1 and answers[t // L] == cue) for t in range(N * L)]
    assert [i["round"] for i in info] == [t // L for t in range(N * L)]


def test_immediate_feedback_pays_each_right_answer_at_once():
    env, _ = jmeta.make("memory-cue", num_cues=K, round_length=L, num_rounds=N,
                        feedback="immediate")
    cue = 1
    answers = [cue, 2, 0, cue]
    actions = [cue if t % L != L - 1 else answers[t // L] for t in range(N * L)]
    _, steps = _play(env, _params(cue=cue), actions)
    expected = [float(t % L == L - 1 and answers[t // L] == cue) for t in range(N * L)]
    assert [s[0] for s in steps] == expected  # the cue played at a non-answer step pays nothing


def test_through_trial_wrapper_cue_only_at_trial_start():
    """RL² with trial_episodes=1: the cue flag is 1 at the trial's first step only; the
    previous-reward input stays 0 until after the last answer (nothing re-reveals the cue)."""
    env = MemoryCue(K, L, N)
    trial = TrialWrapper(env, 1)
    params = _params(cue=0, rate=1.0)

    def policy(_, carry, obs, key):
        return carry, jnp.int32(0), {}  # always answers the cue

    final, traj = rollout(trial, policy, None, params, jax.random.key(3), N * L)
    obs = np.asarray(traj.obs)  # [T, OBS + K + 2]: inner obs, prev action, prev reward, done
    assert obs.shape == (N * L, OBS + K + 2)
    np.testing.assert_array_equal(obs[:, K], [1.0] + [0.0] * (N * L - 1))  # cue flag
    np.testing.assert_array_equal(obs[0, :K], [1, 0, 0])
    assert np.all(obs[:, OBS + K] == 0.0)  # previous reward: 0 throughout the trial
    assert np.all(obs[:, -1] == 0.0)  # no episode boundary inside the probe trial
    np.testing.assert_array_equal(traj.reward, [0.0] * (N * L - 1) + [float(N)])
    assert bool(traj.terminated[-1]) and bool(final.done)
    np.testing.assert_array_equal(round_accuracy(traj.info, N), np.ones(N))


def test_round_accuracy_by_hand():
    # two rounds of L=2: answers at t=1 (right) and t=3 (wrong)
    info = {"round": jnp.array([0, 0, 1, 1]), "answer": jnp.array([0, 1, 0, 1], bool),
            "correct": jnp.array([0, 1, 0, 0], bool)}
    np.testing.assert_array_equal(round_accuracy(info, 2), [1.0, 0.0])


def test_step_jit_matches_no_jit():
    env, tasks = jmeta.make("memory-cue", num_cues=K, round_length=L, num_rounds=N)
    params = tasks.sample(jax.random.key(0))
    _, state = env.reset(jax.random.key(1), params)
    for t in range(L):  # up to and including an answer step
        eager = env.step(jax.random.key(3 + t), state, params.cue, params)
        jitted = jax.jit(env.step)(jax.random.key(3 + t), state, params.cue, params)
        chex.assert_trees_all_close(eager, jitted)
        state = eager[1]
    reset_eager = env.reset(jax.random.key(9), params)
    chex.assert_trees_all_close(reset_eager, jax.jit(env.reset)(jax.random.key(9), params))


def test_vmap_over_tasks_matches_loop_and_is_deterministic():
    env, tasks = jmeta.make("memory-cue", num_cues=K, round_length=L, num_rounds=N)
    batch = tasks.sample_batch(jax.random.key(0), 3)
    keys = jax.random.split(jax.random.key(1), 3)

    def run(params, key):
        policy = lambda _, c, obs, k: (c, jax.random.randint(k, (), 0, K), {})  # noqa: E731
        return rollout(env, policy, None, params, key, N * L)[1]

    run_one, run_batch = jax.jit(run), jax.jit(jax.vmap(run))
    vm = run_batch(batch, keys)
    for i in range(3):
        one = run_one(jax.tree.map(lambda x: x[i], batch), keys[i])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], vm), one)
    chex.assert_trees_all_equal(run_batch(batch, keys), vm)  # fixed keys: the same trials


def test_task_distribution_and_splits():
    _, tasks = jmeta.make("memory-cue", num_cues=K)
    sample_batch = jax.jit(lambda t, k, n: t.sample_batch(k, n), static_argnums=(0, 2))
    batch = sample_batch(tasks.train, jax.random.key(0), 3000)
    cues = np.asarray(batch.cue)
    assert batch.cue.dtype == jnp.int32
    np.testing.assert_allclose(np.bincount(cues, minlength=K) / len(cues), [1 / K] * K,
                               atol=0.03)  # uniform over the cues
    rates = np.asarray(batch.distractor_rate)
    assert rates.min() >= 0.5 and rates.max() <= 1.0 and rates.max() - rates.min() > 0.45
    ood = sample_batch(tasks.ood, jax.random.key(0), 100).distractor_rate
    np.testing.assert_array_equal(ood, 1.0)  # default ood: a distractor at every step
    key = jax.random.key(0)
    test_rate = float(tasks.test.sample(key).distractor_rate)
    assert test_rate != float(tasks.train.sample(key).distractor_rate)  # disjoint key streams
    assert tasks.test.ranges == tasks.train.ranges
    assert tasks.ood.active_ranges != tasks.train.active_ranges
    chex.assert_trees_all_equal(jax.jit(tasks.test.sample)(key), tasks.test.sample(key))
    # declarative overrides
    _, t2 = jmeta.make("memory-cue", distractor_rate=(0.0, 0.1), ood_distractor_rate=0.3)
    assert float(sample_batch(t2, key, 200).distractor_rate.max()) <= 0.1
    np.testing.assert_allclose(sample_batch(t2.ood, key, 10).distractor_rate, 0.3)


@pytest.mark.parametrize("overrides, message", [
    (dict(num_cues=1), r"num_cues: expected an int >= 2 \(one cue needs no memory\), got 1"),
    (dict(num_cues=2.5), r"num_cues: expected a positive int, got 2.5"),
    (dict(round_length=0), r"round_length: expected a positive int, got 0"),
    (dict(num_rounds=-3), r"num_rounds: expected a positive int, got -3"),
    (dict(feedback="later"), r"feedback: expected one of \('end', 'immediate'\), got 'later'"),
    (dict(distractor_rate=(0.2, 1.5)), r"distractor_rate: high must be <= 1.0, got \(0.2, 1.5\)"),
    (dict(ood_distractor_rate=(0.9, 0.1)),
     r"ood_distractor_rate: low must be <= high, got \(0.9, 0.1\)"),
    (dict(num_cue=4), r"unknown override\(s\) 'num_cue' for environment 'memory-cue'; valid: "
                      r"num_cues, round_length, num_rounds, feedback"),
])
def test_bad_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        jmeta.make("memory-cue", **overrides)


def test_bad_env_args_and_actions():
    with pytest.raises(ValueError, match=r"num_cues: expected an int >= 2"):
        MemoryCue(num_cues=1)
    with pytest.raises(ValueError, match=r"feedback: expected one of"):
        MemoryCue(feedback="never")
    env = MemoryCue(K, L, N)
    params = _params()
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"memory-cue: action must be an integer scalar of shape"):
        env.step(jax.random.key(1), state, jnp.array([0, 1]), params)
    with pytest.raises(ValueError, match=r"memory-cue: action must be an integer scalar"):
        env.step(jax.random.key(1), state, jnp.float32(1.0), params)
