"""Policy-gradient maths: returns, GAE, the linear feature baseline, surrogate losses, KLs.

Every function here is pure and jit-able and written for **one stream** (one trajectory ``[T]``,
one task's episodes): vmap it where it is called (shared/STYLE.md 7). Ranks are checked at entry
and a mismatch raises a ``ValueError`` that names the function and the argument. Hyperparameters
(``gamma``, ``lam``, ``clip_eps``) may be Python numbers, which are range-checked, or traced
arrays (to sweep them under ``vmap``), which are not.

Conventions (see :class:`jmeta.types.Trajectory`):

* ``terminated[t]``: the episode ended in a terminal state: nothing is bootstrapped after ``t``.
* ``truncated[t]``: the episode was cut by a time limit: the value of ``next_obs[t]`` is
  bootstrapped.
* either flag ends the episode, so recursions (returns, GAE, time indices) restart after it: a
  trajectory collected with automatic resets holds several episodes.
* ``valid[t] == False`` marks padding (after the end of an episode when rollouts do not reset):
  padding contributes nothing and every per-step output is 0 there.

>>> import jax.numpy as jnp
>>> adv = gae(jnp.array([1.0, 1.0]), values=jnp.zeros(2), next_values=jnp.zeros(2),
...           terminated=jnp.array([False, True]), truncated=jnp.zeros(2, bool),
...           valid=jnp.ones(2, bool), gamma=0.5, lam=1.0)
>>> adv.tolist()
[1.5, 1.0]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import jax.scipy.linalg  # noqa: F401  (jax.scipy.linalg.cho_solve)

from jmeta.types import Trajectory

__all__ = [
    "LinearFeatureBaseline",
    "advantages_with_linear_baseline",
    "categorical_kl",
    "discounted_returns",
    "episode_time_index",
    "fit_linear_baseline",
    "gae",
    "gaussian_kl",
    "linear_baseline_features",
    "normalize_advantages",
    "ppo_clip_objective",
    "predict_linear_baseline",
    "trpo_surrogate_loss",
    "vpg_loss",
]

# rllab's LinearFeatureBaseline: ridge coefficient, and how many times it is multiplied by 10 when
# the solution is not finite.
DEFAULT_BASELINE_REG = 1e-5
_BASELINE_REG_TRIES = 5


# --- input checks (Python level, at trace time) ---------------------------------------------
def _check_rank(fn: str, name: str, x: jax.typing.ArrayLike, rank: int | set[int]) -> None:
    """chex rank check that raises a ``ValueError`` naming the function and the argument."""
    try:
        chex.assert_rank(x, rank)
    except AssertionError:
        want = rank if isinstance(rank, int) else " or ".join(str(r) for r in sorted(rank))
        raise ValueError(
            f"{fn}: {name} must have rank {want}, got shape {tuple(jnp.shape(x))}"
        ) from None


def _check_same_shape(fn: str, **arrays: jax.typing.ArrayLike) -> None:
    """Raises a ``ValueError`` unless every array has the shape of the first one."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, x in items[1:]:
        if jnp.shape(x) != jnp.shape(first):
            raise ValueError(
                f"{fn}: {name} must have the shape of {first_name} {tuple(jnp.shape(first))}, "
                f"got {tuple(jnp.shape(x))}"
            )


def _concrete_float(fn: str, name: str, value) -> float | None:
    """``value`` as a Python float, or ``None`` when it is traced (then it is not checked)."""
    if isinstance(value, jax.core.Tracer):
        return None
    if jnp.ndim(value) != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {tuple(jnp.shape(value))}")
    return float(value)


def check_unit_interval(fn: str, name: str, value) -> None:
    """Raises a ``ValueError`` if a concrete ``value`` is not a finite number in ``[0, 1]``."""
    v = _concrete_float(fn, name, value)
    if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{fn}: {name} must be in [0, 1], got {v!r}")


def check_positive(fn: str, name: str, value, *, allow_zero: bool = False) -> None:
    """Raises a ``ValueError`` if a concrete ``value`` is not finite and > 0 (>= 0 if allowed)."""
    v = _concrete_float(fn, name, value)
    if v is None:
        return
    ok = v >= 0.0 if allow_zero else v > 0.0
    if not (math.isfinite(v) and ok):
        kind = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be a finite number {kind}, got {v!r}")


def _as_bool(x: jax.typing.ArrayLike) -> jax.Array:
    return jnp.asarray(x).astype(jnp.bool_)


# --- returns and advantages -------------------------------------------------------------------
def discounted_returns(
    rewards: jax.typing.ArrayLike,
    discounts: jax.typing.ArrayLike,
    bootstrap: jax.typing.ArrayLike = 0.0,
    valid: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Discounted reward-to-go ``G_t = r_t + discount_t · G_{t+1}``, ``G_T = bootstrap``.

    ``discount_t`` is usually ``γ·(1 − terminated_t)``; use ``γ·(1 − (terminated_t | truncated_t))``
    for Monte-Carlo returns of each episode of an auto-reset trajectory (rllab/MAML's per-path
    returns, the linear baseline's targets). A discount of 0 restarts the recursion.

    Args:
      rewards: ``[T]`` rewards ``r_t``.
      discounts: ``[T]`` discounts ``discount_t`` applied to ``G_{t+1}``.
      bootstrap: scalar value of the state after the last step (0 if the episode ended).
      valid: optional ``[T]`` bool mask; invalid (padding) steps get ``G_t = 0`` and pass 0 to the
        step before, so the bootstrap only counts when the last step is valid.

    Returns:
      ``[T]`` returns (Sutton & Barto 2018, eq. 3.8; the REINFORCE weight of Williams 1992).

    >>> discounted_returns(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.5]), 4.0).tolist()
    [3.0, 4.0]
    """
    fn = "discounted_returns"
    _check_rank(fn, "rewards", rewards, 1)
    _check_rank(fn, "discounts", discounts, 1)
    _check_rank(fn, "bootstrap", bootstrap, 0)
    _check_same_shape(fn, rewards=rewards, discounts=discounts)
    if valid is None:
        valid = jnp.ones(jnp.shape(rewards), jnp.bool_)
    else:
        _check_rank(fn, "valid", valid, 1)
        _check_same_shape(fn, rewards=rewards, valid=valid)
    return _discounted_returns(rewards, discounts, bootstrap, valid)


# The kernels below are jitted so that eager calls (notebooks, tests) compile once per shape
# instead of dispatching op by op; inside an outer jit they are simply inlined.
@jax.jit
def _discounted_returns(rewards, discounts, bootstrap, valid) -> jax.Array:
    rewards = jnp.asarray(rewards)
    dtype = jnp.result_type(rewards.dtype, jnp.float32)
    rewards = rewards.astype(dtype)
    discounts = jnp.asarray(discounts, dtype)
    valid = _as_bool(valid)

    def _step(g_next, xs):
        r, d, v = xs
        g = jnp.where(v, r + d * g_next, 0.0)
        return g, g

    _, returns = jax.lax.scan(
        _step, jnp.asarray(bootstrap, dtype), (rewards, discounts, valid), reverse=True
    )
    return returns


def gae(
    rewards: jax.typing.ArrayLike,
    values: jax.typing.ArrayLike,
    next_values: jax.typing.ArrayLike,
    terminated: jax.typing.ArrayLike,
    truncated: jax.typing.ArrayLike,
    valid: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
    lam: jax.typing.ArrayLike,
) -> jax.Array:
    """Generalised advantage estimation, GAE(γ, λ) (Schulman et al. 2016, eq. 16).

    ``δ_t = r_t + γ·(1 − terminated_t)·V(next_obs_t) − V(obs_t)`` and
    ``A_t = δ_t + γλ·(1 − done_t)·A_{t+1}`` with ``done_t = terminated_t | truncated_t``:

    * at a **truncation** (time limit) the value of the true last observation is bootstrapped;
    * at a **termination** nothing is bootstrapped;
    * either way the recursion restarts, so several auto-reset episodes can share a trajectory;
    * **invalid** (padding) steps get ``A_t = 0`` and pass 0 to the step before them.

    Because ``δ_t`` uses ``next_values`` (not ``values[t + 1]``), a trajectory cut mid-episode at
    ``T`` bootstraps from ``V(next_obs_{T-1})``. Value targets are ``advantages + values``.

    Args:
      rewards: ``[T]`` rewards.
      values: ``[T]`` ``V(obs_t)``.
      next_values: ``[T]`` ``V(next_obs_t)``, evaluated on the observation the step reached
        (before any automatic reset; ``Trajectory.next_obs``).
      terminated: ``[T]`` bool.
      truncated: ``[T]`` bool.
      valid: ``[T]`` bool.
      gamma: discount γ in ``[0, 1]``.
      lam: GAE λ in ``[0, 1]`` (0: one-step TD error, 1: Monte-Carlo return minus baseline).

    Returns:
      ``[T]`` advantages, 0 on invalid steps.
    """
    fn = "gae"
    check_unit_interval(fn, "gamma", gamma)
    check_unit_interval(fn, "lam", lam)
    arrays = dict(rewards=rewards, values=values, next_values=next_values,
                  terminated=terminated, truncated=truncated, valid=valid)
    for name, x in arrays.items():
        _check_rank(fn, name, x, 1)
    _check_same_shape(fn, **arrays)
    return _gae(rewards, values, next_values, terminated, truncated, valid, gamma, lam)


@jax.jit
def _gae(rewards, values, next_values, terminated, truncated, valid, gamma, lam) -> jax.Array:
    dtype = jnp.result_type(jnp.asarray(rewards).dtype, jnp.asarray(values).dtype, jnp.float32)
    rewards, values, next_values = (jnp.asarray(x, dtype) for x in (rewards, values, next_values))
    terminated, truncated, valid = (_as_bool(x) for x in (terminated, truncated, valid))
    gamma = jnp.asarray(gamma, dtype)
    lam = jnp.asarray(lam, dtype)

    not_term = 1.0 - terminated.astype(dtype)
    not_done = 1.0 - jnp.logical_or(terminated, truncated).astype(dtype)
    deltas = rewards + gamma * not_term * next_values - values

    def _step(adv_next, xs):
        delta, cont, v = xs
        adv = jnp.where(v, delta + gamma * lam * cont * adv_next, 0.0)
        return adv, adv

    _, advantages = jax.lax.scan(
        _step, jnp.zeros((), dtype), (deltas, not_done, valid), reverse=True
    )
    return advantages


def episode_time_index(
    terminated: jax.typing.ArrayLike, truncated: jax.typing.ArrayLike
) -> jax.Array:
    """Step index within its episode, restarting at 0 after every episode end.

    Args:
      terminated: ``[T]`` bool.
      truncated: ``[T]`` bool.

    Returns:
      ``[T]`` int32: ``t`` counted from the start of the step's episode (the time index of
      ``next_obs_t`` is this plus one).

    >>> episode_time_index(jnp.array([0, 1, 0, 0]), jnp.zeros(4)).tolist()
    [0, 1, 0, 1]
    """
    fn = "episode_time_index"
    _check_rank(fn, "terminated", terminated, 1)
    _check_rank(fn, "truncated", truncated, 1)
    _check_same_shape(fn, terminated=terminated, truncated=truncated)
    return _episode_time_index(terminated, truncated)


@jax.jit
def _episode_time_index(terminated, truncated) -> jax.Array:
    done = jnp.logical_or(_as_bool(terminated), _as_bool(truncated))

    def _step(t, d):
        return jnp.where(d, 0, t + 1), t

    _, index = jax.lax.scan(_step, jnp.zeros((), jnp.int32), done)
    return index


def normalize_advantages(
    advantages: jax.typing.ArrayLike, valid: jax.typing.ArrayLike, eps: float = 1e-8
) -> jax.Array:
    """``(A − mean) / (std + eps)`` with mean and (population) std over the valid steps only.

    As rllab's ``center_adv`` and pytorch-maml-rl's ``weighted_normalize``. Any shape (e.g. one
    task's ``[E, T]`` episodes pooled); invalid steps give 0.

    Args:
      advantages: ``[...]`` advantages.
      valid: ``[...]`` bool mask of the same shape.
      eps: added to the std.

    Returns:
      ``[...]`` normalised advantages, 0 where ``valid`` is False.
    """
    fn = "normalize_advantages"
    _check_same_shape(fn, advantages=advantages, valid=valid)
    return _normalize_advantages(advantages, valid, eps)


@jax.jit
def _normalize_advantages(advantages, valid, eps) -> jax.Array:
    adv = jnp.asarray(advantages)
    adv = adv.astype(jnp.result_type(adv.dtype, jnp.float32))
    w = _as_bool(valid).astype(adv.dtype)
    count = jnp.maximum(jnp.sum(w), 1.0)
    mean = jnp.sum(w * adv) / count
    centred = jnp.where(w > 0, adv - mean, 0.0)
    std = jnp.sqrt(jnp.sum(centred**2) / count)
    return centred / (std + eps)


# --- linear feature baseline ------------------------------------------------------------------
def linear_baseline_features(
    obs: jax.typing.ArrayLike, time_index: jax.typing.ArrayLike
) -> jax.Array:
    """rllab's ``LinearFeatureBaseline`` features ``[o, o², a, a², a³, 1]``, ``a = t / 100``.

    ``o`` is the observation clipped to ``[-10, 10]``; ``t`` the step's index within its episode
    (:func:`episode_time_index`).

    Args:
      obs: ``[T, d]`` observations.
      time_index: ``[T]`` step indices.

    Returns:
      ``[T, 2·d + 4]`` features (Duan et al. 2016, "Benchmarking deep RL for continuous control",
      used by MAML, Finn et al. 2017).
    """
    fn = "linear_baseline_features"
    _check_rank(fn, "obs", obs, 2)
    _check_rank(fn, "time_index", time_index, 1)
    if jnp.shape(obs)[0] != jnp.shape(time_index)[0]:
        raise ValueError(
            f"{fn}: obs {tuple(jnp.shape(obs))} and time_index {tuple(jnp.shape(time_index))} "
            "must have the same length T"
        )
    o = jnp.asarray(obs)
    o = jnp.clip(o.astype(jnp.result_type(o.dtype, jnp.float32)), -10.0, 10.0)
    a = (jnp.asarray(time_index).astype(o.dtype) / 100.0)[:, None]
    return jnp.concatenate([o, o**2, a, a**2, a**3, jnp.ones_like(a)], axis=-1)


def fit_linear_baseline(
    features: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    reg_coeff: jax.typing.ArrayLike = DEFAULT_BASELINE_REG,
) -> jax.Array:
    """Weighted ridge regression ``(XᵀWX + reg·I) c = XᵀWy`` (rllab's ``LinearFeatureBaseline.fit``).

    rllab retries with ``reg·10`` (up to 5 solves) when the solution is not finite. Here the 5
    solves share one Gram matrix and run batched (no data-dependent control flow, so the fit is
    jit-, vmap- and grad-friendly); the first finite solution is returned.

    Args:
      features: ``[N, F]`` features (:func:`linear_baseline_features`; pool a task's episodes by
        reshaping ``[E, T, F] → [E·T, F]``).
      targets: ``[N]`` regression targets (discounted returns).
      weights: ``[N]`` weights; a bool ``valid`` mask drops padding steps.
      reg_coeff: ridge coefficient (rllab/MAML: 1e-5), ``>= 0``.

    Returns:
      ``[F]`` coefficients; zeros when no step has weight (then the Gram matrix is ``reg·I``).
    """
    fn = "fit_linear_baseline"
    _check_rank(fn, "features", features, 2)
    _check_rank(fn, "targets", targets, 1)
    _check_rank(fn, "weights", weights, 1)
    _check_same_shape(fn, targets=targets, weights=weights)
    if jnp.shape(features)[0] != jnp.shape(targets)[0]:
        raise ValueError(
            f"{fn}: features {tuple(jnp.shape(features))} and targets "
            f"{tuple(jnp.shape(targets))} must have the same number of rows N"
        )
    check_positive(fn, "reg_coeff", reg_coeff, allow_zero=True)
    return _fit_linear_baseline(features, targets, weights, reg_coeff)


@jax.jit
def _fit_linear_baseline(features, targets, weights, reg_coeff) -> jax.Array:
    x = jnp.asarray(features)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    y = jnp.asarray(targets, x.dtype)
    w = jnp.asarray(weights).astype(x.dtype)
    # Padding rows may hold anything (even non-finite): zero them before they touch the sums.
    keep = w != 0
    x = jnp.where(keep[:, None], x, 0.0)
    y = jnp.where(keep, y, 0.0)
    gram = (x * w[:, None]).T @ x
    rhs = x.T @ (w * y)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    regs = jnp.asarray(reg_coeff, x.dtype) * 10.0 ** jnp.arange(_BASELINE_REG_TRIES, dtype=x.dtype)
    # gram + reg·I is symmetric positive (semi-)definite: a Cholesky solve (cheaper to compile and
    # run than LU); a singular system gives non-finite values, which trigger the retry.
    solutions = jax.vmap(
        lambda r: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram + r * eye), rhs)
    )(regs)
    finite = jnp.all(jnp.isfinite(solutions), axis=-1)
    # The first finite solution (the last try when none is, as rllab keeps its last coeffs).
    first = jnp.where(jnp.any(finite), jnp.argmax(finite), _BASELINE_REG_TRIES - 1)
    return solutions[first]


def predict_linear_baseline(
    coeffs: jax.typing.ArrayLike, features: jax.typing.ArrayLike
) -> jax.Array:
    """Baseline values ``features @ coeffs``.

    Args:
      coeffs: ``[F]`` from :func:`fit_linear_baseline`.
      features: ``[..., F]``.

    Returns:
      ``[...]`` values.
    """
    fn = "predict_linear_baseline"
    _check_rank(fn, "coeffs", coeffs, 1)
    if jnp.ndim(features) < 1 or jnp.shape(features)[-1] != jnp.shape(coeffs)[0]:
        raise ValueError(
            f"{fn}: features must end with F={jnp.shape(coeffs)[0]} (the size of coeffs), "
            f"got shape {tuple(jnp.shape(features))}"
        )
    return jnp.asarray(features) @ jnp.asarray(coeffs)


class LinearFeatureBaseline(NamedTuple):
    """rllab/MAML's linear feature baseline for one task, fitted on its episodes (a pytree).

    Attributes:
      coeffs: ``[2·d + 4]`` regression coefficients.

    >>> obs, t = jnp.zeros((2, 5, 3)), jnp.tile(jnp.arange(5), (2, 1))
    >>> bl = LinearFeatureBaseline.fit(obs, t, targets=jnp.ones((2, 5)), valid=jnp.ones((2, 5)))
    >>> bl.predict(obs, t).shape
    (2, 5)
    """

    coeffs: jax.Array

    @classmethod
    def fit(
        cls,
        obs: jax.typing.ArrayLike,
        time_index: jax.typing.ArrayLike,
        targets: jax.typing.ArrayLike,
        valid: jax.typing.ArrayLike,
        reg_coeff: jax.typing.ArrayLike = DEFAULT_BASELINE_REG,
    ) -> "LinearFeatureBaseline":
        """Fits the baseline by ridge regression over every valid step of one task.

        Args:
          obs: ``[*B, d]`` observations, any leading shape ``B`` (``[T]`` or ``[E, T]``).
          time_index: ``[*B]`` step indices within their episodes.
          targets: ``[*B]`` discounted returns.
          valid: ``[*B]`` bool, steps to fit on.
          reg_coeff: ridge coefficient (see :func:`fit_linear_baseline`).

        Returns:
          the fitted baseline.
        """
        feats = _batched_features("LinearFeatureBaseline.fit", obs, time_index)
        _check_same_shape("LinearFeatureBaseline.fit", time_index=time_index, targets=targets,
                          valid=valid)
        nf = feats.shape[-1]
        coeffs = fit_linear_baseline(
            feats.reshape(-1, nf), jnp.reshape(targets, -1), jnp.reshape(valid, -1), reg_coeff
        )
        return cls(coeffs)

    def predict(self, obs: jax.typing.ArrayLike, time_index: jax.typing.ArrayLike) -> jax.Array:
        """Values ``[*B]`` of observations ``[*B, d]`` at step indices ``[*B]``."""
        return predict_linear_baseline(
            self.coeffs, _batched_features("LinearFeatureBaseline.predict", obs, time_index)
        )


def _batched_features(fn: str, obs, time_index) -> jax.Array:
    """:func:`linear_baseline_features` over any leading shape ``[*B, d]``, ``[*B]``."""
    if jnp.ndim(obs) < 2 or jnp.shape(obs)[:-1] != jnp.shape(time_index):
        raise ValueError(
            f"{fn}: obs must be [*B, d] and time_index [*B], got shapes "
            f"{tuple(jnp.shape(obs))} and {tuple(jnp.shape(time_index))}"
        )
    return _batched_features_kernel(obs, time_index)


@jax.jit
def _batched_features_kernel(obs, time_index) -> jax.Array:
    obs = jnp.asarray(obs)
    d = obs.shape[-1]
    flat = linear_baseline_features(obs.reshape(-1, d), jnp.reshape(time_index, -1))
    return flat.reshape(*obs.shape[:-1], flat.shape[-1])


def advantages_with_linear_baseline(
    traj: Trajectory,
    gamma: jax.typing.ArrayLike,
    lam: jax.typing.ArrayLike,
    reg_coeff: jax.typing.ArrayLike = DEFAULT_BASELINE_REG,
) -> tuple[jax.Array, LinearFeatureBaseline]:
    """MAML-RL's advantage recipe for one task: fit the linear baseline, then GAE.

    1. time indices restart at every episode end (:func:`episode_time_index`);
    2. targets are each episode's Monte-Carlo discounted returns (recursion cut at termination
       *and* truncation, no bootstrap: rllab's per-path returns);
    3. the baseline (:class:`LinearFeatureBaseline`) is fitted over every valid step of every
       episode;
    4. GAE(γ, λ) with ``V(next_obs_t)`` from the baseline at time index ``t + 1``, so truncated
       episodes bootstrap (rllab appended 0 instead, treating every path end as terminal).

    Args:
      traj: one task's trajectories, fields ``[T, ...]`` or ``[E, T, ...]`` (vector observations).
      gamma: discount γ in ``[0, 1]``.
      lam: GAE λ in ``[0, 1]``.
      reg_coeff: the baseline's ridge coefficient.

    Returns:
      ``(advantages, baseline)``: advantages of ``traj.reward``'s shape (0 on padding; not
      normalised, see :func:`normalize_advantages`) and the fitted baseline.
    """
    fn = "advantages_with_linear_baseline"
    check_unit_interval(fn, "gamma", gamma)
    check_unit_interval(fn, "lam", lam)
    _check_rank(fn, "traj.reward", traj.reward, {1, 2})
    fields = (traj.obs, traj.next_obs, traj.reward, traj.terminated, traj.truncated, traj.valid)
    if jnp.ndim(traj.reward) == 1:  # one rollout: add the episode axis
        fields = tuple(jnp.asarray(x)[None] for x in fields)
    obs, next_obs, reward, term, trunc, valid = fields
    _check_same_shape(fn, reward=reward, terminated=term, truncated=trunc, valid=valid)
    obs_ok = jnp.ndim(obs) == 3 and jnp.shape(obs)[:2] == jnp.shape(reward)
    if not obs_ok or jnp.shape(obs) != jnp.shape(next_obs):
        raise ValueError(
            f"{fn}: obs and next_obs must be [E, T, d] (or [T, d]) matching reward "
            f"{tuple(jnp.shape(traj.reward))}, got {tuple(jnp.shape(traj.obs))} and "
            f"{tuple(jnp.shape(traj.next_obs))}"
        )
    check_positive(fn, "reg_coeff", reg_coeff, allow_zero=True)
    adv, baseline = _advantages_with_linear_baseline(
        obs, next_obs, reward, term, trunc, valid, gamma, lam, reg_coeff
    )
    return adv.reshape(jnp.shape(traj.reward)), baseline


@jax.jit
def _advantages_with_linear_baseline(obs, next_obs, reward, term, trunc, valid, gamma, lam,
                                     reg_coeff):
    dtype = jnp.result_type(reward.dtype, jnp.float32)
    t_index = jax.vmap(episode_time_index)(term, trunc)
    done = jnp.logical_or(term, trunc)
    discounts = jnp.asarray(gamma, dtype) * (1.0 - done.astype(dtype))
    targets = jax.vmap(lambda r, d, v: discounted_returns(r, d, 0.0, v))(reward, discounts, valid)
    baseline = LinearFeatureBaseline.fit(obs, t_index, targets, valid, reg_coeff)
    values = baseline.predict(obs, t_index)
    next_values = baseline.predict(next_obs, t_index + 1)
    adv = jax.vmap(lambda *xs: gae(*xs, gamma, lam))(
        reward, values, next_values, term, trunc, valid
    )
    return adv, baseline


# --- surrogate losses -------------------------------------------------------------------------
def masked_mean(x: jax.Array, valid: jax.typing.ArrayLike) -> jax.Array:
    """Mean of ``x`` over the steps where ``valid`` (0 when none is valid)."""
    w = _as_bool(valid).astype(x.dtype)
    return jnp.sum(jnp.where(w > 0, x, 0.0)) / jnp.maximum(jnp.sum(w), 1.0)


def vpg_loss(
    log_probs: jax.typing.ArrayLike,
    advantages: jax.typing.ArrayLike,
    valid: jax.typing.ArrayLike,
) -> jax.Array:
    """REINFORCE surrogate loss ``−mean_valid(log π(a_t|s_t) · A_t)`` (Williams 1992).

    Its gradient is the (negated) policy gradient; MAML-RL's inner loss (Finn et al. 2017, §3.2).
    Advantages are treated as data (``stop_gradient``). The mean is over all valid steps of any
    shape (pytorch-maml-rl's ``weighted_mean``).

    Args:
      log_probs: ``[...]`` log-probabilities of the taken actions under the policy being updated.
      advantages: ``[...]`` advantages.
      valid: ``[...]`` bool mask.

    Returns:
      scalar loss to minimise.
    """
    fn = "vpg_loss"
    _check_same_shape(fn, log_probs=log_probs, advantages=advantages, valid=valid)
    logp = jnp.asarray(log_probs)
    adv = jax.lax.stop_gradient(jnp.asarray(advantages, logp.dtype))
    return -masked_mean(logp * adv, valid)


def trpo_surrogate_loss(
    log_probs: jax.typing.ArrayLike,
    old_log_probs: jax.typing.ArrayLike,
    advantages: jax.typing.ArrayLike,
    valid: jax.typing.ArrayLike,
) -> jax.Array:
    """Importance-sampled surrogate loss ``−mean_valid(π(a|s)/π_old(a|s) · A)`` (Schulman et al.
    2015, eq. 14), the loss :func:`jmeta.algorithms.trpo.trpo_step` minimises.

    Args:
      log_probs: ``[...]`` log-probabilities under the policy being updated.
      old_log_probs: ``[...]`` log-probabilities under the behaviour policy (treated as data).
      advantages: ``[...]`` advantages (treated as data).
      valid: ``[...]`` bool mask.

    Returns:
      scalar loss to minimise (equal in value to −mean(A) at ``log_probs == old_log_probs``, with
      the gradient of :func:`vpg_loss`).
    """
    fn = "trpo_surrogate_loss"
    _check_same_shape(fn, log_probs=log_probs, old_log_probs=old_log_probs,
                      advantages=advantages, valid=valid)
    logp = jnp.asarray(log_probs)
    old = jax.lax.stop_gradient(jnp.asarray(old_log_probs, logp.dtype))
    adv = jax.lax.stop_gradient(jnp.asarray(advantages, logp.dtype))
    ratio = jnp.exp(jnp.where(_as_bool(valid), logp - old, 0.0))
    return -masked_mean(ratio * adv, valid)


def ppo_clip_objective(
    ratio: jax.typing.ArrayLike,
    advantages: jax.typing.ArrayLike,
    clip_eps: jax.typing.ArrayLike,
    valid: jax.typing.ArrayLike,
) -> jax.Array:
    """PPO's clipped surrogate **objective** ``mean_valid(min(ρA, clip(ρ, 1−ε, 1+ε)A))``
    (Schulman et al. 2017, eq. 7). Maximise it (its negation is the loss).

    Args:
      ratio: ``[...]`` probability ratios ``π(a|s) / π_old(a|s)``.
      advantages: ``[...]`` advantages (treated as data).
      clip_eps: clipping ε ``> 0`` (0.2 in the paper).
      valid: ``[...]`` bool mask.

    Returns:
      scalar objective to maximise.
    """
    fn = "ppo_clip_objective"
    check_positive(fn, "clip_eps", clip_eps)
    _check_same_shape(fn, ratio=ratio, advantages=advantages, valid=valid)
    ratio = jnp.asarray(ratio)
    adv = jax.lax.stop_gradient(jnp.asarray(advantages, ratio.dtype))
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return masked_mean(jnp.minimum(ratio * adv, clipped * adv), valid)


# --- KL divergences ---------------------------------------------------------------------------
def gaussian_kl(
    mean_p: jax.typing.ArrayLike,
    log_std_p: jax.typing.ArrayLike,
    mean_q: jax.typing.ArrayLike,
    log_std_q: jax.typing.ArrayLike,
) -> jax.Array:
    """``KL(p ‖ q)`` between diagonal Gaussians, summed over the last (action) axis.

    ``Σ_i log σq − log σp + (σp² + (μp − μq)²) / (2σq²) − ½``.

    Args:
      mean_p, log_std_p: ``[..., A]`` mean and log-std of ``p`` (log-std broadcastable).
      mean_q, log_std_q: ``[..., A]`` mean and log-std of ``q``.

    Returns:
      ``[...]`` KL divergences. TRPO constrains ``mean KL(π_old ‖ π)`` (Schulman et al. 2015).
    """
    fn = "gaussian_kl"
    args = dict(mean_p=mean_p, log_std_p=log_std_p, mean_q=mean_q, log_std_q=log_std_q)
    for name, x in args.items():
        if jnp.ndim(x) < 1:
            raise ValueError(f"{fn}: {name} must have rank >= 1 ([..., A]), got a scalar")
    try:
        jnp.broadcast_shapes(*(jnp.shape(x) for x in args.values()))
    except ValueError:
        shapes = ", ".join(f"{k}{tuple(jnp.shape(v))}" for k, v in args.items())
        raise ValueError(f"{fn}: shapes do not broadcast: {shapes}") from None
    return _gaussian_kl(*args.values())


@jax.jit
def _gaussian_kl(mp, lsp, mq, lsq) -> jax.Array:
    var_ratio = jnp.exp(2.0 * (lsp - lsq))
    mahal = ((mp - mq) * jnp.exp(-lsq)) ** 2
    return jnp.sum(lsq - lsp + 0.5 * (var_ratio + mahal) - 0.5, axis=-1)


def categorical_kl(logits_p: jax.typing.ArrayLike, logits_q: jax.typing.ArrayLike) -> jax.Array:
    """``KL(p ‖ q) = Σ_a p(a)(log p(a) − log q(a))`` between categoricals given by logits.

    Actions with ``p(a) = 0`` (logit ``-inf``) contribute 0, without NaN values or gradients.

    Args:
      logits_p: ``[..., K]`` unnormalised log-probabilities of ``p``.
      logits_q: ``[..., K]`` unnormalised log-probabilities of ``q``.

    Returns:
      ``[...]`` KL divergences.
    """
    fn = "categorical_kl"
    _check_same_shape(fn, logits_p=logits_p, logits_q=logits_q)
    if jnp.ndim(logits_p) < 1:
        raise ValueError(f"{fn}: logits must have rank >= 1 ([..., K]), got a scalar")
    return _categorical_kl(logits_p, logits_q)


@jax.jit
def _categorical_kl(logits_p, logits_q) -> jax.Array:
    logp = jax.nn.log_softmax(jnp.asarray(logits_p), axis=-1)
    logq = jax.nn.log_softmax(jnp.asarray(logits_q), axis=-1)
    p = jnp.exp(logp)
    support = p > 0
    # Double `where`: the masked branch must not produce NaN (it would leak into gradients).
    diff = jnp.where(support, logp, 0.0) - jnp.where(support, logq, 0.0)
    return jnp.sum(jnp.where(support, p * diff, 0.0), axis=-1)
