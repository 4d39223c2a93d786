"""Classical baselines for random tabular MDPs, an RL² benchmark (Duan et al. 2016, Table 2).

A trial is ``num_episodes`` episodes of ``params.horizon`` steps in one task of
``jmeta.make("tabular-mdp")``. Every episode starts in state 0 and every step is taken with the
env's own ``reset``/``step`` (:class:`jmeta.envs.tabular_mdp.TabularMDP`), so rewards are
``N(reward_means[s, a], reward_std)`` and next states are drawn from ``transitions[s, a]`` exactly
as the env draws them. Returns are undiscounted.

Strategies (``STRATEGIES``; options and their defaults in brackets):

* ``random``: a uniform action every step.
* ``psrl`` [``reward_mean_prior=(1.0, 1.0)``, ``dirichlet_alpha=1.0``]: posterior sampling for
  reinforcement learning (Osband, Russo and Van Roy 2013, "(More) efficient reinforcement
  learning via posterior sampling"; Strens 2000). The prior is the task distribution's own: a
  ``Dirichlet(dirichlet_alpha)`` over the next state of each (s, a), updated with the observed
  transition counts, and a normal prior ``N(mean, std²)`` (``reward_mean_prior = (mean, std)``)
  on each reward mean with the known noise ``params.reward_std``, updated conjugately. At the
  start of every episode one MDP is drawn from the posterior and solved by finite-horizon value
  iteration (:func:`value_iteration`); the episode follows its time-dependent greedy policy. The
  defaults are those of ``TabularMDPConfig``; pass that config's ``ood_reward_mean_prior`` for
  ``ood`` tasks.
* ``greedy`` [the same prior]: certainty equivalence, jmeta's version of the "Greedy" row of
  Duan et al. 2016, Table 2 (the table does not say which estimates its greedy agent used; this
  one, with the task prior's posterior means, scores well above the paper's, see
  ``benchmarks/RESULTS.md``). At the start of every episode the MDP of posterior means (the posterior mean of each
  reward mean, and the Dirichlet posterior mean of each transition row) is solved by value
  iteration, and the episode follows its greedy policy. Like PSRL without the sampling: it
  explores only where the prior mean of an untried (s, a) beats what was seen.
* ``epsilon_greedy`` [the same prior, ``epsilon=0.1``]: ``greedy``, but every step takes a
  uniform action with probability ``epsilon`` (the paper's "ε-greedy" row; it tuned ε, and
  ``benchmarks/rl2_mdp.py`` does too).

Options may be traced (sweep them under ``jit``/``vmap``); they are checked only when concrete.

>>> import jax, jmeta
>>> from jmeta.baselines import mdp
>>> _, tasks = jmeta.make("tabular-mdp")
>>> params = tasks.sample_batch(jax.random.key(0), 200)
>>> totals = mdp.evaluate("psrl", params, jax.random.key(1), num_episodes=10)  # [200]
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.baselines.bandits import (  # shared input checks
    _check_rank,
    _check_strategy,
    _concrete_float,
    _resolve_options,
)
from jmeta.envs.tabular_mdp import TabularMDP, TabularMDPParams, TabularMDPState
from jmeta.envs.tasks import check_positive_int

__all__ = [
    "Counts",
    "STRATEGIES",
    "evaluate",
    "evaluate_episodes",
    "play",
    "value_iteration",
]

STRATEGIES = ("random", "psrl", "greedy", "epsilon_greedy")

# Every option a strategy takes, with its default (TabularMDPConfig's prior).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "random": {},
    "psrl": {"reward_mean_prior": (1.0, 1.0), "dirichlet_alpha": 1.0},
    "greedy": {"reward_mean_prior": (1.0, 1.0), "dirichlet_alpha": 1.0},
    "epsilon_greedy": {"reward_mean_prior": (1.0, 1.0), "dirichlet_alpha": 1.0, "epsilon": 0.1},
}


class Counts(NamedTuple):
    """What the agent has observed in a task so far (PSRL's sufficient statistics).

    Attributes:
      transitions: ``[S, A, S]`` float32, how often each (s, a) led to each next state.
      reward_sums: ``[S, A]`` float32, the sum of the rewards observed at each (s, a).
      visits: ``[S, A]`` float32, how often each (s, a) was taken.
    """

    transitions: jax.Array
    reward_sums: jax.Array
    visits: jax.Array


def value_iteration(
    reward_means: jax.typing.ArrayLike, transitions: jax.typing.ArrayLike, horizon: int
) -> jax.Array:
    """Finite-horizon, undiscounted value iteration (Bellman 1957; Puterman 1994, ch. 4).

    Args:
      reward_means: ``[S, A]`` expected reward of each (state, action).
      transitions: ``[S, A, S]`` next-state probabilities.
      horizon: the number of steps H (static).

    Returns:
      ``[H, S, A]`` Q-values: ``q[t, s, a]`` is the expected return of taking ``a`` in ``s`` at step
      ``t`` and acting optimally for the remaining ``H - t - 1`` steps. The optimal
      time-dependent policy is ``argmax(q[t, s])``; the optimal expected return from ``s`` is
      ``max(q[0, s])``.
    """
    reward_means = jnp.asarray(reward_means, jnp.float32)
    transitions = jnp.asarray(transitions, jnp.float32)
    horizon = check_positive_int("horizon", horizon)

    def _backup(v_next: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
        q = reward_means + transitions @ v_next  # [S, A]
        return jnp.max(q, axis=-1), q

    v_end = jnp.zeros(reward_means.shape[0], jnp.float32)
    _, q = jax.lax.scan(_backup, v_end, None, length=horizon, reverse=True)
    return q


def _reward_posterior(
    counts: Counts, prior_mean: jax.Array, prior_std: jax.Array, noise_std: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Normal posterior ``(mean, std)`` ``[S, A]`` of each reward mean, known noise (conjugate).

    With prior ``N(m0, s0²)`` and ``n`` observations of sum ``y`` and noise ``σ``:
    mean ``(m0 σ² + s0² y) / (σ² + n s0²)``, variance ``s0² σ² / (σ² + n s0²)``. Written this way
    it stays finite for ``σ = 0`` (noiseless rewards: the mean of the observations) and
    ``s0 = 0`` (a known mean).
    """
    var0, noise_var = prior_std**2, noise_std**2
    n = counts.visits
    denom = noise_var + n * var0
    # denom = 0 with n > 0 only if s0 = σ = 0: a known mean, which observations cannot move.
    update = (n > 0) & (denom > 0)
    safe = jnp.where(update, denom, 1.0)
    post_mean = (prior_mean * noise_var + var0 * counts.reward_sums) / safe
    mean = jnp.where(update, post_mean, prior_mean)
    var = jnp.where(update, var0 * noise_var / safe, jnp.where(n > 0, 0.0, var0))
    return mean, jnp.sqrt(var)


def _check_options(opts: dict[str, Any]) -> None:
    if "reward_mean_prior" in opts:
        prior = opts["reward_mean_prior"]
        if not isinstance(prior, (tuple, list)) or len(prior) != 2:
            raise ValueError(f"reward_mean_prior: expected a (mean, std) pair, got {prior!r}")
        mean = _concrete_float("reward_mean_prior[0]", prior[0])
        std = _concrete_float("reward_mean_prior[1]", prior[1])
        if mean is not None and not math.isfinite(mean):
            raise ValueError(f"reward_mean_prior: mean must be finite, got {mean!r}")
        if std is not None and not (math.isfinite(std) and std >= 0.0):
            raise ValueError(f"reward_mean_prior: std must be a finite number >= 0, got {std!r}")
    if "dirichlet_alpha" in opts:
        alpha = _concrete_float("dirichlet_alpha", opts["dirichlet_alpha"])
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0.0):
            raise ValueError(f"dirichlet_alpha must be a finite number > 0, got {alpha!r}")
    if "epsilon" in opts:
        eps = _concrete_float("epsilon", opts["epsilon"])
        if eps is not None and not 0.0 <= eps <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {eps!r}")


def _check_params(fn: str, params: Any, batched: bool) -> TabularMDPParams:
    if not isinstance(params, TabularMDPParams):
        raise ValueError(f"{fn}: params must be a TabularMDPParams, got {type(params).__name__}")
    lead = 1 if batched else 0
    mu = _check_rank(fn, "params.reward_means", params.reward_means, 2 + lead)
    p = _check_rank(fn, "params.transitions", params.transitions, 3 + lead)
    S, A = mu.shape[lead:]
    if p.shape[lead:] != (S, A, S) or p.shape[:lead] != mu.shape[:lead]:
        raise ValueError(
            f"{fn}: params.transitions must have shape {mu.shape[:lead] + (S, A, S)} to match "
            f"params.reward_means {tuple(mu.shape)}, got {tuple(p.shape)}"
        )
    std = jnp.asarray(params.reward_std, jnp.float32)
    if batched and std.ndim == 0:
        std = jnp.broadcast_to(std, mu.shape[:1])
    if std.shape != mu.shape[:lead]:
        raise ValueError(
            f"{fn}: params.reward_std must have shape {mu.shape[:lead]}, got {tuple(std.shape)}"
        )
    check_positive_int("params.horizon", params.horizon)
    return params.replace(reward_means=mu, transitions=p, reward_std=std)


def _prepare(strategy: Any, num_episodes: Any, options: dict[str, Any]) -> tuple[str, int, dict]:
    strategy = _check_strategy(strategy, STRATEGIES)
    num_episodes = check_positive_int("num_episodes", num_episodes)
    opts = _resolve_options(strategy, options, _DEFAULTS)
    _check_options(opts)
    return strategy, num_episodes, opts


# --- the trial: a lax.scan over episodes, each a lax.scan over steps ----------------------------
def _trial(
    strategy: str, opts: dict[str, Any], params: TabularMDPParams, key: jax.Array, num_episodes: int
) -> jax.Array:
    S, A = params.reward_means.shape
    H = params.horizon
    env = TabularMDP(S, A)

    def _episode_policy(key: jax.Array, counts: Counts) -> jax.Array:
        """``[H, S]`` actions, greedy in an MDP drawn from the posterior (PSRL) or in the MDP of
        posterior means (greedy, epsilon_greedy)."""
        prior_mean, prior_std = opts["reward_mean_prior"]
        k_p, k_r = jax.random.split(key)
        alpha = jnp.asarray(opts["dirichlet_alpha"], jnp.float32) + counts.transitions
        mean, std = _reward_posterior(
            counts,
            jnp.asarray(prior_mean, jnp.float32),
            jnp.asarray(prior_std, jnp.float32),
            params.reward_std,
        )
        if strategy == "psrl":
            transitions = jax.random.dirichlet(k_p, alpha)  # [S, A, S]
            reward_means = mean + std * jax.random.normal(k_r, (S, A))
        else:
            transitions = alpha / jnp.sum(alpha, axis=-1, keepdims=True)
            reward_means = mean
        return jnp.argmax(value_iteration(reward_means, transitions, H), axis=-1).astype(jnp.int32)

    def _episode(counts: Counts, key: jax.Array) -> tuple[Counts, jax.Array]:
        k_policy, k_reset, k_steps = jax.random.split(key, 3)
        policy = None if strategy == "random" else _episode_policy(k_policy, counts)
        _, env_state = env.reset(k_reset, params)

        def _step(carry: tuple[TabularMDPState, Counts], key: jax.Array):
            env_state, counts = carry
            k_act, k_env = jax.random.split(key)
            s = env_state.state
            if strategy == "random":
                action = jax.random.randint(k_act, (), 0, A)
            elif strategy == "epsilon_greedy":
                k_explore, k_uniform = jax.random.split(k_act)
                explore = jax.random.uniform(k_explore) < opts["epsilon"]
                action = jnp.where(explore, jax.random.randint(k_uniform, (), 0, A),
                                   policy[env_state.time, s])
            else:
                action = policy[env_state.time, s]
            _, env_state, reward, _, _, _ = env.step(k_env, env_state, action, params)
            counts = Counts(
                transitions=counts.transitions.at[s, action, env_state.state].add(1.0),
                reward_sums=counts.reward_sums.at[s, action].add(reward),
                visits=counts.visits.at[s, action].add(1.0),
            )
            return (env_state, counts), reward

        keys = jax.random.split(k_steps, H)
        (_, counts), rewards = jax.lax.scan(_step, (env_state, counts), keys)
        return counts, jnp.sum(rewards)

    init = Counts(
        transitions=jnp.zeros((S, A, S), jnp.float32),
        reward_sums=jnp.zeros((S, A), jnp.float32),
        visits=jnp.zeros((S, A), jnp.float32),
    )
    _, returns = jax.lax.scan(_episode, init, jax.random.split(key, num_episodes))
    return returns


def play(
    strategy: str, params: TabularMDPParams, key: jax.Array, num_episodes: int, **options: Any
) -> jax.Array:
    """Runs one trial of ``num_episodes`` episodes in a tabular MDP with a classical strategy.

    Pure and jittable with ``strategy`` and ``num_episodes`` static:
    ``jax.jit(play, static_argnames=("strategy", "num_episodes"))``.

    Args:
      strategy: one of ``STRATEGIES`` (see the module docstring for the sources).
      params: the task, an unbatched ``TabularMDPParams`` (``horizon`` is static).
      key: PRNG key of the trial.
      num_episodes: the trial length n (static).
      **options: ``psrl``, ``greedy`` and ``epsilon_greedy`` take ``reward_mean_prior``
        (``(mean, std)``, default ``(1.0, 1.0)``) and ``dirichlet_alpha`` (default 1.0): the prior
        of the task distribution; ``epsilon_greedy`` also takes ``epsilon`` (default 0.1).

    Returns:
      ``[num_episodes]`` float32, the undiscounted return of each episode.

    Raises:
      ValueError: unknown strategy or option, ``num_episodes < 1``, an option out of range, or
        params of the wrong ranks or shapes.

    >>> import jax, jmeta
    >>> _, tasks = jmeta.make("tabular-mdp")
    >>> returns = play("psrl", tasks.sample(jax.random.key(0)), jax.random.key(1), num_episodes=10)
    """
    strategy, num_episodes, opts = _prepare(strategy, num_episodes, options)
    params = _check_params("mdp.play", params, batched=False)
    return _trial(strategy, opts, params, key, num_episodes)


def _evaluate(fn: str, strategy, params, key, num_episodes, options) -> jax.Array:
    """``[N, num_episodes]`` returns of one trial per task (task ``i``: key ``split(key)[i]``)."""
    strategy, num_episodes, opts = _prepare(strategy, num_episodes, options)
    params = _check_params(fn, params, batched=True)
    keys = jax.random.split(key, params.reward_means.shape[0])
    return jax.vmap(lambda p, k: _trial(strategy, opts, p, k, num_episodes))(params, keys)


def evaluate_episodes(
    strategy: str, params: TabularMDPParams, key: jax.Array, num_episodes: int, **options: Any
) -> jax.Array:
    """The return of every episode of one trial per task, vmapped over a batch of tasks: the
    trials :func:`evaluate` sums (same keys), for return-per-episode curves.

    Args:
      strategy, num_episodes, **options: as in :func:`play`.
      params: ``TabularMDPParams`` with a leading ``[N]`` axis (``tasks.sample_batch``).
      key: PRNG key; task ``i`` gets ``jax.random.split(key, N)[i]``, so row ``i`` equals
        ``play`` on task ``i`` with that key.

    Returns:
      ``[N, num_episodes]`` float32 undiscounted episode returns.
    """
    return _evaluate("mdp.evaluate_episodes", strategy, params, key, num_episodes, options)


def evaluate(
    strategy: str, params: TabularMDPParams, key: jax.Array, num_episodes: int, **options: Any
) -> jax.Array:
    """Total reward over a trial per task, vmapped over a batch of tasks.

    Args:
      strategy, num_episodes, **options: as in :func:`play`.
      params: ``TabularMDPParams`` with a leading ``[N]`` axis (``tasks.sample_batch``); a scalar
        ``reward_std`` is shared by all tasks.
      key: PRNG key; task ``i`` gets ``jax.random.split(key, N)[i]``.

    Returns:
      ``[N]`` float32, the sum of the ``num_episodes`` episode returns of each task (the rows of
      :func:`evaluate_episodes`).
    """
    return jnp.sum(_evaluate("mdp.evaluate", strategy, params, key, num_episodes, options), axis=-1)
