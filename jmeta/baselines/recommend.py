"""Non-adaptive and oracle recommenders for cold-start recommendation ("cold-start-rec").

A session is ``num_steps`` interactions with one user (a task, ``ColdStartParams``): at each step
the recommender shows one catalogue item and the user clicks with probability
``env.click_probs(user)[item]``, drawn by the env's own ``step`` (the session is a
:func:`jmeta.rollout.rollout`, so a baseline's clicks are drawn exactly as an agent's are). Both
strategies recommend, at every step, the item with the highest score in a fixed score vector
(ties: the lowest index); they differ in where the scores come from:

* ``popularity``: each item's average click probability over a population of *training* users
  (:func:`popularity_scores`, e.g. of ``tasks.train`` samples via :func:`user_click_probs`). The
  same item for every user and every step: the usual cold-start fallback, with no adaptation.
  Clicks are independent given the user, so repeating the most popular item maximises the
  expected clicks of a policy that does not look at the user's feedback.
* ``oracle``: the user's own click probabilities (it knows the preference vector): the
  argmax-click-probability item at every step, the best any recommender can do in expectation and
  the upper bound of adaptive methods.

>>> import jax, jmeta
>>> from jmeta.baselines import recommend
>>> env, tasks = jmeta.make("cold-start-rec")
>>> popularity = recommend.popularity_scores(
...     recommend.user_click_probs(env, tasks.train.sample_batch(jax.random.key(0), 1000)))
>>> users = tasks.test.sample_batch(jax.random.key(1), 100)
>>> sessions = recommend.evaluate("popularity", env, users, jax.random.key(2),
...                               popularity=popularity)
>>> ctr_6_20 = recommend.window_ctr(sessions.clicks, 6, 20).mean()
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.envs.base import Environment
from jmeta.envs.cold_start_rec import ColdStartParams
from jmeta.envs.tasks import check_positive_int, unwrap_params
from jmeta.rollout import rollout

__all__ = [
    "STRATEGIES",
    "Session",
    "evaluate",
    "play",
    "popularity_scores",
    "user_click_probs",
    "window_ctr",
]

STRATEGIES = ("popularity", "oracle")


class Session(NamedTuple):
    """One session (or a batch of them, with a leading ``[N]`` axis on every field).

    Attributes:
      items: ``[T]`` int32, the item recommended at each interaction.
      clicks: ``[T]`` float32, the click (0 or 1) it got.
      click_probs: ``[T]`` float32, the click probability of the recommended item for the user.
    """

    items: jax.Array
    clicks: jax.Array
    click_probs: jax.Array


# --- input checks (Python level, at trace time) ---------------------------------------------
def _check_env(fn: str, env: Any) -> Environment:
    """``env`` if it is the cold-start env (or a wrapper of it), else a ``ValueError``."""
    if not isinstance(env, Environment) or not callable(getattr(env, "click_probs", None)) \
            or not isinstance(getattr(env, "num_items", None), int):
        raise ValueError(f"{fn}: env must be the cold-start-rec environment "
                         f"(jmeta.make('cold-start-rec')), got {env!r}")
    return env


def _user_params(fn: str, task: Any) -> ColdStartParams:
    """The ``ColdStartParams`` inside ``task`` (looking through wrapper params' ``env_params``)."""
    params = unwrap_params(task, ColdStartParams)
    if params is None:
        raise ValueError(f"{fn}: expected cold-start-rec users (ColdStartParams), got "
                         f"{type(task).__name__}")
    return params


def _check_users(fn: str, env, task: Any, rank: int) -> ColdStartParams:
    """The users' params; a ``ValueError`` unless ``user`` is ``[d]`` (rank 1) or ``[N, d]``."""
    params = _user_params(fn, task)
    shape = tuple(jnp.shape(params.user))
    if len(shape) != rank or shape[-1] != env.dim:
        want = f"[{env.dim}]" if rank == 1 else f"[N, {env.dim}]"
        raise ValueError(f"{fn}: user must have shape {want} for this catalogue, got {shape}")
    return params


def _check_strategy(fn: str, strategy: Any, popularity: Any) -> str:
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        valid = ", ".join(repr(s) for s in STRATEGIES)
        raise ValueError(f"{fn}: unknown strategy {strategy!r}; expected one of {valid}")
    if strategy == "popularity" and popularity is None:
        raise ValueError(f"{fn}: strategy 'popularity' needs popularity= scores "
                         "(popularity_scores of training users' click probabilities)")
    if strategy == "oracle" and popularity is not None:
        raise ValueError(f"{fn}: strategy 'oracle' takes no popularity scores (it uses the "
                         "user's own click probabilities)")
    return strategy


def _check_popularity(fn: str, env, popularity: Any) -> jax.Array:
    popularity = jnp.asarray(popularity, jnp.float32)
    if popularity.shape != (env.num_items,):
        raise ValueError(f"{fn}: popularity must have shape [{env.num_items}] (one score per "
                         f"catalogue item), got {tuple(popularity.shape)}")
    return popularity


def _check_num_steps(fn: str, num_steps: Any, horizon: int) -> int:
    if num_steps is None:
        return horizon
    num_steps = check_positive_int("num_steps", num_steps)
    if num_steps > horizon:
        raise ValueError(f"{fn}: num_steps {num_steps} exceeds the session length (the users' "
                         f"horizon {horizon})")
    return num_steps


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


# --- public functions -----------------------------------------------------------------------
def user_click_probs(env: Environment, users: Any) -> jax.Array:
    """Click probability of every item for each of a batch of users.

    Args:
      env: the cold-start-rec environment.
      users: ``ColdStartParams`` stacked along ``[N]`` (e.g. ``tasks.train.sample_batch``).

    Returns:
      ``[N, num_items]`` float32, ``σ(click_scale · u·v_j + click_bias)``.
    """
    fn = "recommend.user_click_probs"
    env = _check_env(fn, env)
    params = _check_users(fn, env, users, rank=2)
    return jax.vmap(env.click_probs)(params)


def popularity_scores(click_probs: jax.typing.ArrayLike) -> jax.Array:
    """Each item's popularity: its mean click probability over a population of users.

    Args:
      click_probs: ``[N, num_items]`` click probabilities of N (training) users, N >= 1, values
        in [0, 1] (checked when concrete).

    Returns:
      ``[num_items]`` float32 mean over the users.

    Raises:
      ValueError: not of rank 2, no users, or values outside [0, 1].

    >>> scores = popularity_scores(jnp.array([[0.1, 0.5], [0.3, 0.1]]))  # [0.2, 0.3]
    """
    fn = "recommend.popularity_scores"
    probs = jnp.asarray(click_probs, jnp.float32)
    if probs.ndim != 2:
        raise ValueError(f"{fn}: click_probs must be [N, num_items] (rank 2), got shape "
                         f"{tuple(probs.shape)}")
    if probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"{fn}: click_probs needs at least one user and one item, got shape "
                         f"{tuple(probs.shape)}")
    if _is_concrete(probs) and not bool(jnp.all((probs >= 0.0) & (probs <= 1.0))):
        raise ValueError(f"{fn}: click_probs must be probabilities in [0, 1]")
    return jnp.mean(probs, axis=0)


def _greedy_item(scores, carry, obs, key):
    """The rollout policy of both strategies: the highest-scoring item (lowest index on ties)."""
    del obs, key  # neither strategy looks at the feedback
    return carry, jnp.argmax(scores).astype(jnp.int32), {}


def _session(env, scores, task, key, num_steps) -> Session:
    _, traj = rollout(env, _greedy_item, scores, task, key, num_steps)
    return Session(items=traj.action, clicks=traj.reward, click_probs=traj.info["click_prob"])


def play(strategy: str, env: Environment, user: Any, key: jax.Array,
         num_steps: int | None = None, *, popularity: jax.typing.ArrayLike | None = None
         ) -> Session:
    """One session of a non-adaptive recommender with one user.

    Pure and jittable with ``strategy``, ``env`` and ``num_steps`` static:
    ``jax.jit(play, static_argnames=("strategy", "env", "num_steps"))``.

    Args:
      strategy: ``"popularity"`` or ``"oracle"`` (see the module docstring).
      env: the cold-start-rec environment (or a wrapper of it).
      user: one task (``ColdStartParams`` with ``user`` ``[d]``, or wrapper params around one).
      key: PRNG key of the session (the env's click draws).
      num_steps: interactions, at most the user's ``horizon``; ``None``: the whole horizon.
      popularity: ``[num_items]`` scores, required by ``"popularity"``, refused by ``"oracle"``.

    Returns:
      a :class:`Session` with ``[num_steps]`` fields.

    Raises:
      ValueError: unknown strategy, missing/unexpected/misshapen popularity scores, a user of
        the wrong shape, another env, or ``num_steps`` not in ``[1, horizon]``.
    """
    fn = "recommend.play"
    strategy = _check_strategy(fn, strategy, popularity)
    env = _check_env(fn, env)
    params = _check_users(fn, env, user, rank=1)
    num_steps = _check_num_steps(fn, num_steps, params.horizon)
    if strategy == "popularity":
        scores = _check_popularity(fn, env, popularity)
    else:
        scores = env.click_probs(params)
    return _session(env, scores, user, key, num_steps)


def evaluate(strategy: str, env: Environment, users: Any, key: jax.Array,
             num_steps: int | None = None, *, popularity: jax.typing.ArrayLike | None = None
             ) -> Session:
    """Sessions with a batch of users, vmapped: user ``i`` gets ``jax.random.split(key, N)[i]``.

    Args:
      strategy, env, num_steps, popularity: as in :func:`play`.
      users: tasks stacked along ``[N]`` (``ColdStartParams`` with ``user`` ``[N, d]``).
      key: PRNG key.

    Returns:
      a :class:`Session` with ``[N, num_steps]`` fields.
    """
    fn = "recommend.evaluate"
    strategy = _check_strategy(fn, strategy, popularity)
    env = _check_env(fn, env)
    params = _check_users(fn, env, users, rank=2)
    num_steps = _check_num_steps(fn, num_steps, params.horizon)
    keys = jax.random.split(key, params.user.shape[0])
    if strategy == "popularity":
        scores = _check_popularity(fn, env, popularity)
        return jax.vmap(lambda u, k: _session(env, scores, u, k, num_steps))(users, keys)
    return jax.vmap(lambda u, k: _session(env, env.click_probs(_user_params(fn, u)), u, k,
                                          num_steps))(users, keys)


def window_ctr(clicks: jax.typing.ArrayLike, first: int, last: int) -> jax.Array:
    """Click-through rate over interactions ``first..last`` (1-based, inclusive) of each session.

    Args:
      clicks: ``[..., T]`` clicks (0/1) per interaction, e.g. :attr:`Session.clicks` or an agent's
        per-step rewards.
      first, last: the window, ``1 <= first <= last <= T`` (e.g. 6, 20: after 5 support
        interactions).

    Returns:
      ``[...]`` mean click over the window.

    Raises:
      ValueError: ``clicks`` of rank 0, or a window outside ``1..T``.

    >>> ctr = window_ctr(jnp.array([1.0, 0.0, 1.0, 1.0]), 2, 4)  # 2/3
    """
    fn = "recommend.window_ctr"
    clicks = jnp.asarray(clicks, jnp.float32)
    if clicks.ndim < 1:
        raise ValueError(f"{fn}: clicks must be [..., T] (rank >= 1), got a scalar")
    t = clicks.shape[-1]
    first = check_positive_int("first", first)
    last = check_positive_int("last", last)
    if not first <= last <= t:
        raise ValueError(f"{fn}: need 1 <= first <= last <= T = {t}, got first={first}, "
                         f"last={last}")
    return jnp.mean(clicks[..., first - 1:last], axis=-1)
