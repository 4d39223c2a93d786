"""Classical routing policies for server load balancing (``jmeta.make("load-balancing")``).

An episode routes ``horizon`` jobs of one server pool (a task, ``LoadBalancingParams``); each
strategy is a rollout policy ``policy(params, carry, obs, key) -> (carry, action, extras)`` run by
:func:`jmeta.rollout.rollout` through the env's own ``step``, so its jobs arrive exactly as an
agent's do: the arrival times and sizes depend only on the rollout key, never on the routing, so
two policies run with the same pool and key route *the same job stream* (common random numbers).
The metric is the mean latency (sojourn time: waiting + service) of the routed jobs, read from the
env's ``info["latency"]``, whatever the env's reward.

A policy reads the queued work ``obs[:N]`` and the size of the job to route ``obs[N]`` (both in
units of the mean job size), so it runs on the env's observations and on
:class:`jmeta.envs.TrialWrapper` ones alike (their first N + 2 entries are the env's).

Strategies (``STRATEGIES``):

* ``random``: a uniform server.
* ``round_robin``: servers 0, 1, ..., N−1, 0, ... (the carry counts the jobs routed).
* ``jsq``: join the shortest queue, measured in queued *work* (the env knows every job's size, so
  this is "least work left", JSQ's size-aware form; with job counts it would send a job to a
  server holding one huge job). Ties (e.g. all queues empty) broken uniformly at random. It
  ignores the rates: on a heterogeneous pool it happily sends a job to an idle slow server.
* ``power_of_two``: power-of-two-choices (Mitzenmacher 2001, "The power of two choices in
  randomized load balancing"): two distinct servers drawn uniformly, the one with less queued work
  (ties: the first drawn, itself uniform).
* ``oracle``: knows the rates (the policy params are ``rates``): sends each job where it finishes
  first, ``argmin_i (W_i + s) / rates_i`` (shortest expected delay, SED; ties: lowest index). It
  is greedy per job (not the optimal policy of the whole stream, which would also weigh the
  delay a job causes to later ones), the usual upper reference of rate-unaware routing.

>>> import jax, jmeta
>>> from jmeta.baselines import load_balancing as lb
>>> env, tasks = jmeta.make("load-balancing", horizon=50)
>>> pools = tasks.test.sample_batch(jax.random.key(0), 100)
>>> jsq = lb.evaluate("jsq", env, pools, jax.random.key(1)).mean()   # mean latency
>>> oracle = lb.evaluate("oracle", env, pools, jax.random.key(1)).mean()
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.envs.base import Environment
from jmeta.envs.load_balancing import LoadBalancingParams
from jmeta.envs.tasks import check_positive_int, unwrap_params
from jmeta.rollout import rollout
from jmeta.types import Policy, Trajectory

__all__ = [
    "Episode",
    "INIT_CARRY",
    "STRATEGIES",
    "evaluate",
    "make_policy",
    "mean_latency",
    "play",
]

STRATEGIES = ("random", "round_robin", "jsq", "power_of_two", "oracle")

# The carry of every strategy: an int32 count of the jobs routed so far (round-robin's pointer).
INIT_CARRY = jnp.zeros((), jnp.int32)


class Episode(NamedTuple):
    """One episode (or a batch, with leading axes on every field).

    Attributes:
      servers: ``[T]`` int32, the server each job went to.
      latency: ``[T]`` float32, each job's latency (waiting + service time).
    """

    servers: jax.Array
    latency: jax.Array


def _check_strategy(fn: str, strategy: Any) -> str:
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"{fn}: unknown strategy {strategy!r}; expected one of "
                         f"{', '.join(map(repr, STRATEGIES))}")
    return strategy


def _check_env(fn: str, env: Any) -> Environment:
    if not isinstance(env, Environment) or not isinstance(getattr(env, "num_servers", None), int):
        raise ValueError(f"{fn}: env must be the load-balancing environment "
                         f"(jmeta.make('load-balancing')), got {env!r}")
    return env


def _pool(fn: str, task: Any) -> LoadBalancingParams:
    """The ``LoadBalancingParams`` inside ``task`` (looking through wrapper ``env_params``)."""
    params = unwrap_params(task, LoadBalancingParams)
    if params is None:
        raise ValueError(f"{fn}: expected load-balancing pools (LoadBalancingParams), got "
                         f"{type(task).__name__}")
    return params


def _check_pools(fn: str, env, task: Any, rank: int) -> LoadBalancingParams:
    params = _pool(fn, task)
    shape = tuple(jnp.shape(params.rates))
    if len(shape) != rank or shape[-1] != env.num_servers:
        want = f"[{env.num_servers}]" if rank == 1 else f"[num_tasks, {env.num_servers}]"
        raise ValueError(f"{fn}: rates must have shape {want} for this env, got {shape}")
    return params


def _num_steps(num_steps: Any, horizon: int) -> int:
    return horizon if num_steps is None else check_positive_int("num_steps", num_steps)


def _argmin_random_ties(values: jax.Array, key: jax.Array) -> jax.Array:
    """The index of the minimum of ``values``, uniform among ties."""
    noise = jax.random.uniform(key, values.shape)
    return jnp.argmax(jnp.where(values <= jnp.min(values), noise, -1.0)).astype(jnp.int32)


def make_policy(strategy: str, num_servers: int) -> Policy:
    """The rollout policy of ``strategy`` for a pool of ``num_servers`` servers.

    Args:
      strategy: one of ``STRATEGIES``.
      num_servers: N.

    Returns:
      ``policy(params, carry, obs, key) -> (carry + 1, server, {})``; ``params`` is the pool's
      ``rates`` ``[N]`` for ``"oracle"`` and ignored otherwise; ``carry`` starts at
      :data:`INIT_CARRY`. Pure, jit/vmap-able.
    """
    fn = "load_balancing.make_policy"
    strategy = _check_strategy(fn, strategy)
    n = check_positive_int("num_servers", num_servers)

    def act(params, carry, obs, key):
        work, size = obs[:n], obs[n]
        if strategy == "random":
            server = jax.random.randint(key, (), 0, n, dtype=jnp.int32)
        elif strategy == "round_robin":
            server = (carry % n).astype(jnp.int32)
        elif strategy == "jsq":
            server = _argmin_random_ties(work, key)
        elif strategy == "power_of_two":
            if n == 1:
                server = jnp.zeros((), jnp.int32)
            else:
                k1, k2 = jax.random.split(key)
                i = jax.random.randint(k1, (), 0, n, dtype=jnp.int32)
                j = (i + jax.random.randint(k2, (), 1, n, dtype=jnp.int32)) % n
                server = jnp.where(work[j] < work[i], j, i)
        else:  # oracle: shortest expected delay with the true rates
            server = jnp.argmin((work + size) / params).astype(jnp.int32)
        return carry + 1, server, {}

    return act


def mean_latency(traj: Trajectory) -> jax.Array:
    """Mean ``info["latency"]`` over the valid steps of each rollout (the last axis).

    Args:
      traj: a trajectory of the load-balancing env (or of a wrapper that keeps its info), fields
        ``[..., T]``.

    Returns:
      ``[...]`` mean latency per rollout.
    """
    valid = traj.valid.astype(jnp.float32)
    return jnp.sum(traj.info["latency"] * valid, axis=-1) / jnp.maximum(
        jnp.sum(valid, axis=-1), 1.0)


def _episode(env, strategy, pool, task, key, num_steps) -> Episode:
    act = make_policy(strategy, env.num_servers)
    _, traj = rollout(env, act, pool.rates, task, key, num_steps, init_carry=INIT_CARRY)
    return Episode(servers=traj.action, latency=traj.info["latency"])


def play(strategy: str, env: Environment, task: Any, key: jax.Array,
         num_steps: int | None = None) -> Episode:
    """One episode of ``strategy`` on one pool.

    Pure and jittable with ``strategy``, ``env`` and ``num_steps`` static:
    ``jax.jit(play, static_argnames=("strategy", "env", "num_steps"))``.

    Args:
      strategy: one of ``STRATEGIES`` (see the module docstring).
      env: the load-balancing env (or a wrapper of it exposing ``num_servers``).
      task: one pool (``LoadBalancingParams`` with ``rates`` ``[N]``, or wrapper params).
      key: PRNG key of the episode (the job stream and the policy's draws).
      num_steps: jobs to route; ``None``: the pool's ``horizon`` (more steps run into padding).

    Returns:
      an :class:`Episode` with ``[num_steps]`` fields.

    Raises:
      ValueError: unknown strategy, another env, a pool of the wrong size, or ``num_steps`` < 1.
    """
    fn = "load_balancing.play"
    strategy = _check_strategy(fn, strategy)
    env = _check_env(fn, env)
    pool = _check_pools(fn, env, task, rank=1)
    return _episode(env, strategy, pool, task, key, _num_steps(num_steps, pool.horizon))


def evaluate(strategy: str, env: Environment, tasks: Any, key: jax.Array,
             num_steps: int | None = None, num_episodes: int = 1) -> jax.Array:
    """Mean latency of ``strategy`` on each of a batch of pools (vmapped).

    Pool ``i`` plays ``num_episodes`` episodes with keys
    ``jax.random.split(jax.random.split(key, num_tasks)[i], num_episodes)``: the same keys for
    every strategy, hence the same job streams.

    Args:
      strategy, env, num_steps: as in :func:`play`.
      tasks: pools stacked along ``[num_tasks]`` (``rates`` ``[num_tasks, N]``).
      key: PRNG key.
      num_episodes: episodes per pool (static).

    Returns:
      ``[num_tasks]`` mean latency per job, over the pool's episodes.
    """
    fn = "load_balancing.evaluate"
    strategy = _check_strategy(fn, strategy)
    env = _check_env(fn, env)
    pools = _check_pools(fn, env, tasks, rank=2)
    num_steps = _num_steps(num_steps, pools.horizon)
    num_episodes = check_positive_int("num_episodes", num_episodes)

    def one(task, k):
        eps = jax.vmap(lambda kk: _episode(env, strategy, _pool(fn, task), task, kk, num_steps))(
            jax.random.split(k, num_episodes))
        return jnp.mean(eps.latency)

    return jax.vmap(one)(tasks, jax.random.split(key, pools.rates.shape[0]))
