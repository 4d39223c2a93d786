"""2D point navigation of Finn et al. 2017 (MAML), section 5.3.

Protocol (the MAML code's ``point_env_randgoal.py``): the agent starts at the origin; the task is a
goal drawn uniformly from ``[-0.5, 0.5]²``; an action is a 2D displacement clipped to
``[-0.1, 0.1]²``; the reward is the negative L2 distance to the goal after the move (the paper's
text says squared distance, its code uses L2; we follow the code); the episode terminates when the
point is within 0.01 of the goal on both axes and is truncated after 100 steps.

Tasks: ``goal_radius`` is the half-width ``r`` of the goal box ``[-r, r]²`` (train/test). The
``ood`` split draws goals uniformly from the square annulus ``r_lo <= ||goal||_∞ <= r_hi``
(``ood_goal_radius``, default ``(0.5, 1.0)``), which is disjoint from the training box.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box
from jmeta.envs.tasks import (
    Range,
    TaskDistribution,
    check_positive_float,
    check_positive_int,
    check_range,
)


@struct.dataclass
class PointNavParams:
    """A point-nav task.

    Attributes:
      goal: ``[2]`` goal position.
      horizon: episode length (static: defines the rollout length).
    """

    goal: jax.Array
    horizon: int = struct.field(pytree_node=False, default=100)


@struct.dataclass
class PointNavState:
    pos: jax.Array  # [2]
    time: jax.Array  # int32 scalar, steps taken


class PointNav(Environment[PointNavState, PointNavParams]):
    """2D navigation to a goal (see module docstring).

    Args:
      max_action: actions are clipped to ``[-max_action, max_action]²`` (paper: 0.1).
      goal_tolerance: the episode terminates when ``|pos - goal| < goal_tolerance`` on both axes.
    """

    name = "point-nav"

    def __init__(self, max_action: float = 0.1, goal_tolerance: float = 0.01):
        self.max_action = float(max_action)
        self.goal_tolerance = float(goal_tolerance)

    def reset_env(self, key, params):
        state = PointNavState(pos=jnp.zeros(2, jnp.float32), time=jnp.zeros((), jnp.int32))
        return state.pos, state

    def step_env(self, key, state, action, params):
        action = jnp.clip(action, -self.max_action, self.max_action)
        pos = state.pos + action
        delta = pos - params.goal
        reward = -jnp.sqrt(jnp.sum(delta**2))
        terminated = jnp.all(jnp.abs(delta) < self.goal_tolerance)
        time = state.time + 1
        truncated = time >= params.horizon
        return pos, PointNavState(pos=pos, time=time), reward, terminated, truncated, {}

    def action_space(self, params=None):
        return Box(-self.max_action, self.max_action, (2,))

    def observation_space(self, params=None):
        return Box(-jnp.inf, jnp.inf, (2,))


@dataclasses.dataclass(frozen=True)
class PointNavConfig:
    """Options of ``jmeta.make("point-nav", ...)``.

    Attributes:
      goal_radius: half-width r of the train/test goal box [-r, r]² (paper: 0.5).
      ood_goal_radius: (low, high) L∞ radii of the OOD goal annulus (default (0.5, 1.0)).
      horizon: episode length (paper: 100).
      max_action: per-axis action clip (paper: 0.1).
      goal_tolerance: per-axis distance at which the episode terminates (MAML code: 0.01).
    """

    goal_radius: float = 0.5
    ood_goal_radius: Range = (0.5, 1.0)
    horizon: int = 100
    max_action: float = 0.1
    goal_tolerance: float = 0.01

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("goal_radius", check_positive_float("goal_radius", self.goal_radius))
        set_("ood_goal_radius", check_range("ood_goal_radius", self.ood_goal_radius, lower=0.0))
        set_("horizon", check_positive_int("horizon", self.horizon))
        set_("max_action", check_positive_float("max_action", self.max_action))
        set_("goal_tolerance", check_positive_float("goal_tolerance", self.goal_tolerance,
                                                    allow_zero=True))


def sample_square_annulus(key: jax.Array, r_low: jax.Array, r_high: jax.Array) -> jax.Array:
    """Uniform sample from ``{x in R²: r_low <= ||x||_∞ <= r_high}``.

    The L∞ radius has density ∝ r on [r_low, r_high] (the ring's perimeter grows as 8r), so
    ``r = sqrt(U(r_low², r_high²))``; the point is then uniform on the square of half-width r.
    """
    k_r, k_side, k_pos = jax.random.split(key, 3)
    r = jnp.sqrt(jax.random.uniform(k_r, minval=r_low**2, maxval=r_high**2))
    side = jax.random.randint(k_side, (), 0, 4)
    t = jax.random.uniform(k_pos, minval=-1.0, maxval=1.0) * r
    points = jnp.stack([
        jnp.array([r, t]), jnp.array([-r, t]), jnp.array([t, r]), jnp.array([t, -r])
    ])
    return points[side]


def build(config: PointNavConfig) -> tuple[PointNav, TaskDistribution]:
    env = PointNav(max_action=config.max_action, goal_tolerance=config.goal_tolerance)
    horizon = config.horizon

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> PointNavParams:
        lo, hi = ranges["goal_radius"]
        if lo == 0.0:  # a full box: uniform on [-hi, hi]² (the paper's distribution)
            goal = jax.random.uniform(key, (2,), minval=-hi, maxval=hi)
        else:
            goal = sample_square_annulus(key, lo, hi)
        return PointNavParams(goal=goal, horizon=horizon)

    tasks = TaskDistribution(
        env_name=env.name,
        sampler=sampler,
        ranges={"goal_radius": (0.0, config.goal_radius)},
        ood_ranges={"goal_radius": config.ood_goal_radius},
    )
    return env, tasks

