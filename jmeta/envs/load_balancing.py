"""Server load balancing: route each arriving job to one of N servers whose speeds are unknown.

The seed's server load-balancing use case (issue 9) as a pure-JAX, event-driven queueing env.

Protocol. ``num_servers`` servers each serve their own FIFO queue, work-conserving, at a service
rate ``rates[i]`` (work per unit time). A task is a server pool: the rates, drawn i.i.d. per task
from ``service_rate`` (heterogeneous: the agent does not know which servers are fast), and the
arrival rate λ of jobs. Jobs arrive as a Poisson process: one env step is one arrival, the
inter-arrival time Δ is Exponential(λ) (continuous time, so arrivals are exactly Poisson; no
"several arrivals per step" problem), and each job's size (its work) is Exponential with mean
``mean_job_size``. ``job_size="constant"`` / ``arrivals="constant"`` make either deterministic
(size ``mean_job_size``, Δ = 1/λ), which the tests use to check the dynamics by hand.

Each step the agent routes the job waiting to be routed (``Discrete(num_servers)``):

1. the job joins server ``a``'s queue; its latency (sojourn time: waiting + service) is known at
   once under FIFO, ``latency = (W_a + s) / rates[a]``, with ``W_a`` the work already queued at
   ``a`` and ``s`` the job's size; ``W_a += s``;
2. the next job arrives Δ later; meanwhile every server drains ``W_i ← max(W_i − rates[i]·Δ, 0)``.

Observation ``[num_servers + 2]``: ``[W_1..W_N, s, Δ]`` with the work ``W`` and the size ``s`` of
the job to route in units of ``mean_job_size`` and Δ (the time since the previous arrival, 0 at
reset) in time units. Successive observations reveal the rates (a busy server drains
``rates[i]·Δ``), as does the reward. Queues start empty.

Reward (``reward``): ``"latency"`` (default): ``−latency`` of the routed job. It is the per-job
quantity the benchmark reports, it is immediate (credited at routing time, when FIFO already fixes
it; a real system would observe it at completion), and unshaped: the return is −(total latency),
so maximising the return minimises the mean latency. ``"backlog"``: ``−∫ Σ_i W_i(t) dt`` over the
interval until the next arrival, in units of ``mean_job_size`` (the time-integrated queued work;
by Little's law its long-run mean tracks the mean number of waiting jobs); it penalises the effect
of a routing choice on everyone, not just the routed job.

``info``: ``latency`` (the routed job's latency, whatever the reward: the mean of ``info
["latency"]`` over an episode's steps is its mean latency, the metric every policy is compared
on) and ``backlog`` (the total queued work just after routing, in units of ``mean_job_size``).

Episodes are ``horizon`` jobs (default 100), then ``truncated`` (never ``terminated``).

Tasks: ``service_rate`` (default (0.2, 2.0)) is the range of each server's rate; the arrival rate
is set per task from the utilisation ``load`` (default 0.8, a number or a range), λ = load ·
Σ rates / mean_job_size, so every pool is equally loaded; the ``ood`` split draws rates from
``ood_service_rate`` (default (0.05, 3.0), wider: slower slow servers, faster fast ones).

>>> import jax, jmeta
>>> env, tasks = jmeta.make("load-balancing", num_servers=3, horizon=10)
>>> pool = tasks.test.sample(jax.random.key(0))
>>> obs, state = env.reset(jax.random.key(1), pool)
>>> obs, state, reward, terminated, truncated, info = env.step(jax.random.key(2), state, 0, pool)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.envs.tasks import (
    Range,
    TaskDistribution,
    check_positive_float,
    check_positive_int,
    check_range,
)

JOB_SIZES = ("exponential", "constant")
ARRIVALS = ("poisson", "constant")
REWARDS = ("latency", "backlog")


@struct.dataclass
class LoadBalancingParams:
    """A server pool (one task).

    Attributes:
      rates: ``[num_servers]`` service rate of each server (work per unit time), > 0.
      arrival_rate: scalar λ, jobs per unit time.
      horizon: jobs per episode (static: cannot be vmapped).
    """

    rates: jax.Array
    arrival_rate: jax.Array
    horizon: int = struct.field(pytree_node=False, default=100)


@struct.dataclass
class LoadBalancingState:
    """Attributes: ``work`` ``[N]`` queued work per server when the current job arrives;
    ``job_size`` the size of the job to route; ``dt`` the time since the previous arrival;
    ``time`` int32 jobs routed so far."""

    work: jax.Array
    job_size: jax.Array
    dt: jax.Array
    time: jax.Array


def drain(work: jax.Array, rates: jax.Array, dt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Serves ``dt`` time units of work on every server.

    Args:
      work: ``[N]`` queued work.
      rates: ``[N]`` service rates.
      dt: elapsed time (scalar).

    Returns:
      ``(work after, integral)``: ``[N]`` ``max(work − rates·dt, 0)`` and ``[N]`` the integral of
      each server's queued work over the interval (a trapezoid until the queue empties).
    """
    served = rates * dt
    after = jnp.maximum(work - served, 0.0)
    empties = work <= served
    integral = jnp.where(empties, work**2 / (2.0 * rates), work * dt - rates * dt**2 / 2.0)
    return after, integral


class LoadBalancing(Environment[LoadBalancingState, LoadBalancingParams]):
    """Route jobs to servers of unknown speeds (see the module docstring).

    Args:
      num_servers: N, the size of the action space.
      mean_job_size: mean work of a job (the observation's unit of work).
      job_size: ``"exponential"`` or ``"constant"`` job sizes.
      arrivals: ``"poisson"`` (exponential inter-arrival times) or ``"constant"`` (Δ = 1/λ).
      reward: ``"latency"`` or ``"backlog"``.
    """

    name = "load-balancing"

    def __init__(self, num_servers: int, mean_job_size: float = 1.0,
                 job_size: str = "exponential", arrivals: str = "poisson",
                 reward: str = "latency"):
        self.num_servers = check_positive_int("num_servers", num_servers)
        self.mean_job_size = check_positive_float("mean_job_size", mean_job_size)
        self.job_size = _check_choice("job_size", job_size, JOB_SIZES)
        self.arrivals = _check_choice("arrivals", arrivals, ARRIVALS)
        self.reward = _check_choice("reward", reward, REWARDS)

    def _size(self, key: jax.Array) -> jax.Array:
        if self.job_size == "constant":
            return jnp.asarray(self.mean_job_size, jnp.float32)
        return self.mean_job_size * jax.random.exponential(key)

    def _interarrival(self, key: jax.Array, arrival_rate: jax.Array) -> jax.Array:
        if self.arrivals == "constant":
            return 1.0 / arrival_rate
        return jax.random.exponential(key) / arrival_rate

    def _obs(self, state: LoadBalancingState) -> jax.Array:
        m = self.mean_job_size
        return jnp.concatenate([state.work / m, state.job_size[None] / m, state.dt[None]]
                               ).astype(jnp.float32)

    def reset_env(self, key, params):
        state = LoadBalancingState(
            work=jnp.zeros(self.num_servers, jnp.float32),
            job_size=self._size(key).astype(jnp.float32),
            dt=jnp.zeros((), jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self._obs(state), state

    def step_env(self, key, state, action, params):
        k_dt, k_size = jax.random.split(key)
        latency = (state.work[action] + state.job_size) / params.rates[action]
        work = state.work.at[action].add(state.job_size)
        backlog = jnp.sum(work) / self.mean_job_size
        dt = self._interarrival(k_dt, params.arrival_rate).astype(jnp.float32)
        work, integral = drain(work, params.rates, dt)
        if self.reward == "latency":
            reward = -latency
        else:
            reward = -jnp.sum(integral) / self.mean_job_size
        time = state.time + 1
        state = LoadBalancingState(work=work, job_size=self._size(k_size).astype(jnp.float32),
                                   dt=dt, time=time)
        truncated = time >= params.horizon
        info = {"latency": latency, "backlog": backlog}
        return self._obs(state), state, reward, False, truncated, info

    def action_space(self, params=None):
        return Discrete(self.num_servers)

    def observation_space(self, params=None):
        return Box(0.0, jnp.inf, (self.num_servers + 2,))


def _check_choice(field: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{field}: expected one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def _check_rates(field: str, value) -> Range:
    low, high = check_range(field, value, lower=0.0)
    if low <= 0.0:
        raise ValueError(f"{field}: service rates must be > 0, got ({low}, {high})")
    return (low, high)


@dataclasses.dataclass(frozen=True)
class LoadBalancingConfig:
    """``jmeta.make("load-balancing", ...)``: route jobs to N servers of unknown service rates.

    Attributes:
      num_servers: number of servers N (the actions).
      horizon: jobs routed per episode.
      service_rate: (low, high) of each server's service rate (work per unit time), drawn
        i.i.d. per server and task; low > 0.
      ood_service_rate: (low, high) of the service rates of ``ood`` pools.
      load: utilisation λ·mean_job_size/Σ rates, a number or a (low, high) range drawn per task
        (> 0; above 1 the pool is overloaded and queues grow over the episode).
      mean_job_size: mean work of a job.
      job_size: "exponential" (default) or "constant" job sizes.
      arrivals: "poisson" (default, exponential inter-arrival times) or "constant" (1/λ).
      reward: "latency" (default: minus the routed job's latency) or "backlog" (minus the
        time-integrated queued work until the next arrival).
    """

    num_servers: int = 5
    horizon: int = 100
    service_rate: Range = (0.2, 2.0)
    ood_service_rate: Range = (0.05, 3.0)
    load: Range = (0.8, 0.8)
    mean_job_size: float = 1.0
    job_size: str = "exponential"
    arrivals: str = "poisson"
    reward: str = "latency"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in ("num_servers", "horizon"):
            set_(f, check_positive_int(f, getattr(self, f)))
        for f in ("service_rate", "ood_service_rate"):
            set_(f, _check_rates(f, getattr(self, f)))
        load = check_range("load", self.load, lower=0.0)
        if load[0] <= 0.0:
            raise ValueError(f"load: utilisation must be > 0, got {load}")
        set_("load", load)
        set_("mean_job_size", check_positive_float("mean_job_size", self.mean_job_size))
        _check_choice("job_size", self.job_size, JOB_SIZES)
        _check_choice("arrivals", self.arrivals, ARRIVALS)
        _check_choice("reward", self.reward, REWARDS)


def build(config: LoadBalancingConfig) -> tuple[LoadBalancing, TaskDistribution]:
    """The env and its task distribution (pools: rates ~ U[service_rate], λ from ``load``)."""
    env = LoadBalancing(config.num_servers, config.mean_job_size, config.job_size,
                        config.arrivals, config.reward)
    n, horizon, m = config.num_servers, config.horizon, config.mean_job_size

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> LoadBalancingParams:
        k_rates, k_load = jax.random.split(key)
        lo, hi = ranges["service_rate"]
        rates = jax.random.uniform(k_rates, (n,), minval=lo, maxval=hi)
        lo, hi = ranges["load"]
        load = jax.random.uniform(k_load, minval=lo, maxval=hi)
        return LoadBalancingParams(rates=rates, arrival_rate=load * jnp.sum(rates) / m,
                                   horizon=horizon)

    tasks = TaskDistribution(
        env_name=env.name,
        sampler=sampler,
        ranges={"service_rate": config.service_rate, "load": config.load},
        ood_ranges={"service_rate": config.ood_service_rate},
    )
    return env, tasks
