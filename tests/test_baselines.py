"""Classical RL² baselines: hand-worked values, learning thresholds, jit parity, input errors.

Compilation dominates the run time here, so tests share a few jitted functions with fixed shapes
(bandits: 64 trials of 2 arms, 50 pulls; MDPs: 64 tasks of 10 states, 5 actions, 10 episodes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.baselines import bandits, gittins_index_table, mdp, value_iteration
from jmeta.envs.bandit import BanditParams
from jmeta.envs.tabular_mdp import TabularMDPParams

NUM_TRIALS, NUM_PULLS = 64, 50
NUM_TASKS, NUM_EPISODES, S, A, H = 64, 10, 10, 5, 10

_bandit_eval_jit = jax.jit(bandits.evaluate, static_argnames=("strategy", "num_pulls", "discount"))
# One set of option names per strategy: a missing keyword would be another jit signature.
_BANDIT_OPTIONS = {
    "random": {},
    "greedy": {"initial_mean": 1.0},
    "epsilon_greedy": {"epsilon": 0.1, "initial_mean": 1.0},
    "ucb1": {"c": 1.0},
    "thompson": {},
    "gittins": {},
}


def _bandit_eval(strategy, arm_means, key, **options):
    """``[NUM_TRIALS]`` totals of ``NUM_PULLS`` pulls, one compilation per strategy."""
    options = {**_BANDIT_OPTIONS[strategy], **options}
    return _bandit_eval_jit(strategy, arm_means, key, NUM_PULLS, **options)


_mdp_eval = jax.jit(mdp.evaluate, static_argnames=("strategy", "num_episodes"))


# ``[N, num_episodes]`` returns; task i gets ``split(key, N)[i]``, as in ``mdp.evaluate``.
_mdp_episodes = jax.jit(mdp.evaluate_episodes, static_argnames=("strategy", "num_episodes"))


def _tile(x, n):
    x = np.asarray(x, np.float32)
    return jnp.broadcast_to(x, (n,) + x.shape)


def _sampled_tasks(seed: int = 0) -> TabularMDPParams:
    """``jmeta.make("tabular-mdp")``'s task distribution (mu ~ N(1, 1), rows ~ Dirichlet(1)),
    drawn with numpy: ``tasks.sample_batch`` would cost a few seconds of compilation."""
    rng = np.random.default_rng(seed)
    return TabularMDPParams(
        reward_means=jnp.asarray(rng.normal(1.0, 1.0, (NUM_TASKS, S, A)), jnp.float32),
        transitions=jnp.asarray(rng.dirichlet(np.ones(S), (NUM_TASKS, S, A)), jnp.float32),
        reward_std=jnp.ones(NUM_TASKS, jnp.float32),
        horizon=H,
    )


# --- bandits: hand-worked values ----------------------------------------------------------------
def test_ucb1_pull_sequence_by_hand():
    # Arm means 0, 1, 0: rewards are deterministic. Each arm once (t = 1..3), then
    # mean + sqrt(2 ln t / n) with t = pulls so far:
    #   t=3 n=(1,1,1): 1.48, 2.48, 1.48 -> 1      t=4 n=(1,2,1): 1.67, 2.18, 1.67 -> 1
    #   t=5 n=(1,3,1): 1.79, 2.04, 1.79 -> 1      t=6 n=(1,4,1): 1.89, 1.95, 1.89 -> 1
    #   t=7 n=(1,5,1): 1.97, 1.88, 1.97 -> 0 (lowest index of the tie)
    #   t=8 n=(2,5,1): 1.44, 1.91, 2.04 -> 2      t=9 n=(2,5,2): 1.48, 1.94, 1.48 -> 1
    arm_means = jnp.array([0.0, 1.0, 0.0])
    want_actions = [0, 1, 2, 1, 1, 1, 1, 0, 2, 1]
    want_rewards = [0, 1, 0, 1, 1, 1, 1, 0, 0, 1]
    rollout = jax.jit(bandits.rollout, static_argnames=("strategy", "num_pulls"))
    for key in (jax.random.key(0), jax.random.key(1)):  # deterministic given the rewards
        trial = rollout("ucb1", arm_means, key, 10)
        np.testing.assert_array_equal(trial.actions, want_actions)
        np.testing.assert_array_equal(trial.rewards, want_rewards)
    assert trial.actions.dtype == jnp.int32 and trial.rewards.dtype == jnp.float32
    # Not jitted: the same trial.
    rewards = bandits.play("ucb1", arm_means, jax.random.key(0), 10)
    np.testing.assert_array_equal(rewards, want_rewards)


@pytest.mark.parametrize(
    "strategy, options", [("greedy", {}), ("epsilon_greedy", {"epsilon": 0.0})]
)
def test_greedy_tries_each_arm_once_by_hand(strategy, options):
    # Arm means (0, 1). If arm 0 comes first, it pays 0 and arm 1 (unpulled, counted as 1) takes
    # over for good. If arm 1 comes first, its mean 1 ties with the unpulled arm 0 at every pull
    # until arm 0 is pulled once (all 49 coin flips missing it: probability 2^-49). Total n - 1.
    totals = _bandit_eval(strategy, _tile([0.0, 1.0], NUM_TRIALS), jax.random.key(0), **options)
    np.testing.assert_array_equal(totals, NUM_PULLS - 1.0)
    # initial_mean = 0.5: arm 1 first pays 1 > 0.5 and is never left; arm 0 first pays 0 < 0.5.
    totals = _bandit_eval(strategy, _tile([0.0, 1.0], NUM_TRIALS), jax.random.key(0),
                          **{**options, "initial_mean": 0.5})
    assert set(np.asarray(totals).tolist()) == {NUM_PULLS - 1.0, NUM_PULLS}


def test_gittins_stays_on_a_sure_arm_by_hand():
    # Arm means (0, 1), discount 0.9. The index is 0.70 untried, 0.50 after one failure and
    # >= 0.80 after s >= 1 successes: arm 1 is never left. Which arm goes first is a uniform
    # tie-break, so the total is n - 1 or n, and both happen.
    totals = _bandit_eval("gittins", _tile([0.0, 1.0], NUM_TRIALS), jax.random.key(0))
    assert set(np.asarray(totals).tolist()) == {NUM_PULLS - 1.0, NUM_PULLS}


def test_gittins_table_matches_published_values():
    # Gittins, Glazebrook and Weber (2011), Beta(1, 1) prior: table[successes, failures].
    t = gittins_index_table(0.9, 12)
    np.testing.assert_allclose(
        [t[0, 0], t[1, 1], t[2, 2], t[9, 1]], [0.7029, 0.6346, 0.6010, 0.8695], atol=1e-4
    )
    np.testing.assert_allclose(gittins_index_table(0.99, 2)[0, 0], 0.8699, atol=1e-4)
    # Above the posterior mean, up with successes, down with failures.
    s, f = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    valid = s + f < 12
    assert np.all(t[valid] >= ((s + 1) / (s + f + 2))[valid])
    assert np.all(np.diff(t[:11, 0]) > 0) and np.all(np.diff(t[0, :11]) < 0)
    assert np.isnan(t[6, 6])


# --- bandits: learning --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "strategy, options",
    [
        ("greedy", {}),
        ("epsilon_greedy", {"epsilon": 0.1}),
        ("ucb1", {"c": 1.0}),
        ("thompson", {}),
        ("gittins", {}),
    ],
)
def test_strategies_beat_random_on_an_easy_bandit(strategy, options):
    arm_means = _tile([0.1, 0.9], NUM_TRIALS)
    key = jax.random.key(2)
    random = float(_bandit_eval("random", arm_means, key).mean())
    assert 22.0 < random < 28.0  # 50 pulls at 0.5 on average
    totals = _bandit_eval(strategy, arm_means, key, **options)
    assert totals.shape == (NUM_TRIALS,) and totals.dtype == jnp.float32
    # The best arm pays 45 on average; the clear ones reach about 40-44 here.
    assert float(totals.mean()) > random + 12.0
    # Fixed key, same result; another key, another one.
    np.testing.assert_array_equal(_bandit_eval(strategy, arm_means, key, **options), totals)
    other = _bandit_eval(strategy, arm_means, jax.random.key(3), **options)
    assert not np.array_equal(other, totals)


def test_sweeping_options_does_not_recompile():
    arm_means = _tile([0.1, 0.9], NUM_TRIALS)
    _bandit_eval("epsilon_greedy", arm_means, jax.random.key(0))
    size = _bandit_eval_jit._cache_size()
    for eps in (0.0, 0.5, 1.0):
        totals = _bandit_eval("epsilon_greedy", arm_means, jax.random.key(0), epsilon=eps)
    assert _bandit_eval_jit._cache_size() == size
    assert 20.0 < float(totals.mean()) < 30.0  # epsilon = 1 is random
    # evaluate accepts BanditParams as well (traced only: a new pytree would compile again).
    out = jax.eval_shape(
        lambda m: bandits.evaluate("random", BanditParams(arm_means=m), jax.random.key(1), 5),
        arm_means,
    )
    assert out.shape == (NUM_TRIALS,) and out.dtype == jnp.float32


# --- tabular MDPs -------------------------------------------------------------------------------
def test_value_iteration_by_hand():
    # 2 states, 2 actions, H = 2. (0, 0) goes to 0 or 1 with probability 1/2; otherwise action a
    # goes to state a. Last step: q = mu, V = (1.5, 3). First step: q = mu + P V:
    # (0,0): 1.5 + (1.5 + 3) / 2 = 3.75; (0,1): 0 + 3; (1,0): 2 + 1.5; (1,1): 3 + 3.
    mu = jnp.array([[1.5, 0.0], [2.0, 3.0]])
    p = jnp.array([[[0.5, 0.5], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    want = [[[3.75, 3.0], [3.5, 6.0]], [[1.5, 0.0], [2.0, 3.0]]]
    np.testing.assert_allclose(value_iteration(mu, p, 2), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(value_iteration, static_argnums=2)(mu, p, 2), want,
                               rtol=1e-6)


def _deterministic_mdp() -> TabularMDPParams:
    # Action a moves s to (s + a) mod S; action 0 (stay) pays 5, the others 0: the optimal return
    # is 5 H = 50. Rewards are nearly noiseless, transitions one-hot.
    s, a = np.arange(S)[:, None], np.arange(A)[None, :]
    transitions = np.eye(S)[(s + a) % S]
    reward_means = np.where(a == 0, 5.0, 0.0) * np.ones((S, 1))
    return TabularMDPParams(
        reward_means=_tile(reward_means, NUM_TASKS),
        transitions=_tile(transitions, NUM_TASKS),
        reward_std=_tile(1e-3, NUM_TASKS),
        horizon=H,
    )


def test_psrl_reaches_the_optimum_of_a_deterministic_mdp():
    params = _deterministic_mdp()
    q = value_iteration(params.reward_means[0], params.transitions[0], H)
    optimum = float(jnp.max(q[0, 0]))
    assert optimum == pytest.approx(50.0)
    returns = np.asarray(_mdp_episodes("psrl", params, jax.random.key(0), NUM_EPISODES))
    assert returns.shape == (NUM_TASKS, NUM_EPISODES)
    optimal = np.abs(returns - optimum) < 0.1
    assert optimal[:, 0].mean() < 0.5  # the first episode explores
    assert optimal[:, -3:].mean() > 0.9  # after a few episodes, (nearly) always optimal


def test_psrl_beats_random_on_sampled_tasks():
    params = _sampled_tasks()
    key = jax.random.key(1)
    random = _mdp_eval("random", params, key, NUM_EPISODES)
    psrl = _mdp_episodes("psrl", params, key, NUM_EPISODES)
    assert random.shape == (NUM_TASKS,)
    assert abs(float(random.mean()) - 100.0) < 15.0  # n H E[mu] = 10 * 10 * 1
    # Duan et al. 2016: 100.1 against 138.1.
    assert float(psrl.sum(-1).mean()) > float(random.mean()) + 15.0
    np.testing.assert_array_equal(_mdp_eval("random", params, key, NUM_EPISODES), random)
    np.testing.assert_array_equal(_mdp_episodes("psrl", params, key, NUM_EPISODES), psrl)


def test_per_step_evaluations_are_the_trials_evaluate_sums():
    # Row i of evaluate_pulls / evaluate_episodes is play on task i with split(key, N)[i], and
    # the rows' sums are evaluate's totals (same keys): the per-pull and per-episode curves of
    # benchmarks/rl2_bandits.py and rl2_mdp.py are the trials of their tables' totals.
    means = jnp.array([[0.9, 0.1, 0.2], [0.0, 0.5, 1.0], [0.3, 0.3, 0.7]])
    key = jax.random.key(3)
    keys = jax.random.split(key, 3)
    for strategy, options in (("ucb1", {"c": 0.5}), ("thompson", {}), ("gittins", {})):
        rewards = np.asarray(bandits.evaluate_pulls(strategy, means, key, 20, **options))
        assert rewards.shape == (3, 20)
        np.testing.assert_array_equal(
            rewards.sum(axis=-1), bandits.evaluate(strategy, means, key, 20, **options))
        np.testing.assert_array_equal(
            rewards[1], bandits.play(strategy, means[1], keys[1], 20, **options))
    params = jax.tree.map(lambda x: x[:3] if np.ndim(x) else x, _sampled_tasks())
    for strategy, options in (("psrl", {}), ("epsilon_greedy", {"epsilon": 0.2})):
        returns = np.asarray(mdp.evaluate_episodes(strategy, params, key, 2, **options))
        assert returns.shape == (3, 2)
        np.testing.assert_allclose(returns.sum(axis=-1),
                                   mdp.evaluate(strategy, params, key, 2, **options), rtol=1e-6)
        task = jax.tree.map(lambda x: x[2] if np.ndim(x) else x, params)
        np.testing.assert_allclose(returns[2], mdp.play(strategy, task, keys[2], 2, **options),
                                   rtol=1e-6)


def test_mdp_rewards_follow_the_env_and_noiseless_psrl_stays_finite():
    # Every (s, a) pays exactly 2 (reward_std = 0): every episode returns 2 H, whatever is done.
    params = _sampled_tasks()
    params = params.replace(reward_means=jnp.full_like(params.reward_means, 2.0),
                            reward_std=jnp.zeros_like(params.reward_std))
    np.testing.assert_allclose(_mdp_eval("random", params, jax.random.key(0), NUM_EPISODES),
                               2.0 * H * NUM_EPISODES, rtol=1e-6)
    np.testing.assert_allclose(_mdp_episodes("psrl", params, jax.random.key(0), NUM_EPISODES),
                               2.0 * H, rtol=1e-6)


def _two_armed_mdp(means) -> TabularMDPParams:
    """One state, two actions, H = 1, noiseless rewards ``means``: the MDP is a 2-armed bandit."""
    return TabularMDPParams(
        reward_means=jnp.asarray(means, jnp.float32)[None, None, :],
        transitions=jnp.ones((1, 1, 2, 1), jnp.float32),
        reward_std=jnp.zeros((1,), jnp.float32), horizon=1,
    )


def test_greedy_follows_the_posterior_mean_by_hand():
    # Prior N(1, 1) on each mean. Episode 1: both posterior means are 1, argmax takes action 0.
    # Its reward is seen exactly (noise 0), so action 0's posterior mean becomes that reward.
    # (a) 0.5 < 1: episode 2 tries action 1 (2.0) and keeps it: 0.5, 2.0, 2.0, ...
    # (b) 1.5 > 1: greedy never tries action 1 (3.0), which PSRL eventually does.
    key = jax.random.key(0)
    np.testing.assert_allclose(_mdp_episodes("greedy", _two_armed_mdp([0.5, 2.0]), key, 4)[0],
                               [0.5, 2.0, 2.0, 2.0])
    stuck = _two_armed_mdp([1.5, 3.0])
    np.testing.assert_allclose(_mdp_episodes("greedy", stuck, key, 4)[0], [1.5] * 4)
    many = jax.tree.map(lambda x: jnp.repeat(x, 64, axis=0) if x.ndim else x, stuck)
    psrl = _mdp_episodes("psrl", many, key, 8)
    assert float(jnp.mean(psrl[:, -1])) > 2.5  # PSRL samples action 1 and finds 3.0


def test_epsilon_greedy_interpolates_between_greedy_and_random():
    params = _sampled_tasks()
    key = jax.random.key(3)
    greedy = _mdp_episodes("greedy", params, key, NUM_EPISODES)
    np.testing.assert_array_equal(
        jax.jit(lambda p, k: mdp.evaluate("epsilon_greedy", p, k, NUM_EPISODES, epsilon=0.0))(
            params, key), greedy.sum(-1))
    uniform = jax.jit(lambda p, k: mdp.evaluate("epsilon_greedy", p, k, NUM_EPISODES,
                                                epsilon=1.0))(params, key)
    random = _mdp_eval("random", params, key, NUM_EPISODES)
    assert abs(float(uniform.mean()) - float(random.mean())) < 6.0  # both ~100 (SEM ~2)
    # Certainty equivalence exploits what it saw: clearly above random (paper: 134.8 vs 100.1).
    assert float(greedy.sum(-1).mean()) > float(random.mean()) + 15.0


# --- bad input ------------------------------------------------------------------------------
ARMS = jnp.array([0.2, 0.8])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bandits.play("ucb", ARMS, jax.random.key(0), 5),
         r"unknown strategy 'ucb'; expected one of 'random', 'greedy', 'epsilon_greedy', "
         r"'ucb1', 'thompson', 'gittins'"),
        (lambda: bandits.play("ucb1", ARMS, jax.random.key(0), 0),
         r"num_pulls: expected a positive int, got 0"),
        (lambda: bandits.evaluate("random", ARMS[None], jax.random.key(0), 2.5),
         r"num_pulls: expected a positive int, got 2.5"),
        (lambda: bandits.play("epsilon_greedy", ARMS, jax.random.key(0), 5, epsilon=1.5),
         r"epsilon must be in \[0, 1\], got 1.5"),
        (lambda: bandits.play("epsilon_greedy", ARMS, jax.random.key(0), 5, epsilon=-0.1),
         r"epsilon must be in \[0, 1\], got -0.1"),
        (lambda: bandits.play("ucb1", ARMS, jax.random.key(0), 5, c=-1.0),
         r"c must be a finite number >= 0, got -1.0"),
        (lambda: bandits.play("greedy", ARMS, jax.random.key(0), 5, initial_mean=2.0),
         r"initial_mean must be in \[0, 1\], got 2.0"),
        (lambda: bandits.play("gittins", ARMS, jax.random.key(0), 5, discount=1.0),
         r"discount must be in \(0, 0.995\], got 1.0"),
        (lambda: bandits.play("ucb1", ARMS, jax.random.key(0), 5, epsilon=0.1),
         r"strategy 'ucb1' takes 'c'; got unexpected option\(s\) 'epsilon'"),
        (lambda: bandits.play("thompson", ARMS, jax.random.key(0), 5, c=1.0),
         r"strategy 'thompson' takes no options; got unexpected option\(s\) 'c'"),
        (lambda: bandits.play("random", ARMS[None], jax.random.key(0), 5),
         r"bandits.play: arm_means must have rank 1, got shape \(1, 2\)"),
        (lambda: bandits.evaluate("random", ARMS, jax.random.key(0), 5),
         r"bandits.evaluate: arm_means must have rank 2, got shape \(2,\)"),
        (lambda: bandits.evaluate_pulls("random", ARMS, jax.random.key(0), 5),
         r"bandits.evaluate_pulls: arm_means must have rank 2, got shape \(2,\)"),
        (lambda: jax.jit(bandits.play, static_argnames=("strategy", "num_pulls"))(
            "gittins", ARMS, jax.random.key(0), 5, discount=0.9),
         r"gittins: discount must be a static Python float"),
    ],
)
def test_bandit_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _one_task() -> TabularMDPParams:
    return TabularMDPParams(
        reward_means=jnp.zeros((2, 2)), transitions=jnp.full((2, 2, 2), 0.5),
        reward_std=jnp.float32(1.0), horizon=3,
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mdp.play("ucrl2", _one_task(), jax.random.key(0), 5),
         r"unknown strategy 'ucrl2'; expected one of 'random', 'psrl', 'greedy', "
         r"'epsilon_greedy'"),
        (lambda: mdp.play("epsilon_greedy", _one_task(), jax.random.key(0), 5, epsilon=1.5),
         r"epsilon must be in \[0, 1\], got 1.5"),
        (lambda: mdp.play("greedy", _one_task(), jax.random.key(0), 5, epsilon=0.1),
         r"strategy 'greedy' takes 'reward_mean_prior', 'dirichlet_alpha'; got unexpected "
         r"option\(s\) 'epsilon'"),
        (lambda: mdp.play("psrl", _one_task(), jax.random.key(0), 0),
         r"num_episodes: expected a positive int, got 0"),
        (lambda: mdp.play("psrl", _one_task(), jax.random.key(0), 5, reward_mean_prior=(1.0, -1.0)),
         r"reward_mean_prior: std must be a finite number >= 0, got -1.0"),
        (lambda: mdp.play("psrl", _one_task(), jax.random.key(0), 5, reward_mean_prior=1.0),
         r"reward_mean_prior: expected a \(mean, std\) pair, got 1.0"),
        (lambda: mdp.play("psrl", _one_task(), jax.random.key(0), 5, dirichlet_alpha=0.0),
         r"dirichlet_alpha must be a finite number > 0, got 0.0"),
        (lambda: mdp.play("random", _one_task(), jax.random.key(0), 5, dirichlet_alpha=1.0),
         r"strategy 'random' takes no options; got unexpected option\(s\) 'dirichlet_alpha'"),
        (lambda: mdp.play("psrl", _one_task().replace(transitions=jnp.ones((2, 2, 3))),
                          jax.random.key(0), 5),
         r"mdp.play: params.transitions must have shape \(2, 2, 2\) to match "
         r"params.reward_means \(2, 2\), got \(2, 2, 3\)"),
        (lambda: mdp.evaluate("psrl", _one_task(), jax.random.key(0), 5),
         r"mdp.evaluate: params.reward_means must have rank 3, got shape \(2, 2\)"),
        (lambda: mdp.evaluate_episodes("psrl", _one_task(), jax.random.key(0), 5),
         r"mdp.evaluate_episodes: params.reward_means must have rank 3, got shape \(2, 2\)"),
        (lambda: mdp.play("psrl", jnp.zeros((2, 2)), jax.random.key(0), 5),
         r"mdp.play: params must be a TabularMDPParams, got"),
    ],
)
def test_mdp_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
