"""Cold-start recommendation: a new user is a task, the first interactions are the support set.

The seed's personalised cold-start use case, as a pure-JAX bandit-like sequential problem.

Protocol: the environment owns a fixed catalogue of ``num_items`` item embeddings ``v_j`` (unit
vectors in R^d drawn from ``catalogue_seed`` when the env is built: part of the env, identical for
every task). A task is a user, a latent preference vector ``u = ρ·ω`` with ω uniform on the unit
sphere and norm ρ ~ U[``user_norm``]. Each step the agent recommends one item ``j`` and the user
clicks with probability ``σ(click_scale · u·v_j + click_bias)``; the reward is the click (0 or 1).
The observation is the last recommended item's embedding and the click it got (zeros at the start),
shape ``[d + 1]``. Episodes last ``horizon`` = 20 steps; the first 3–5 interactions act as the
support set from which an adaptive agent infers the user.

Tasks: ``user_norm`` (default (0.5, 1.5)) sets how strongly preferences separate items; the ``ood``
split draws ``ood_user_norm`` (default (1.5, 2.5)), users with sharper tastes than in training.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
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


@struct.dataclass
class ColdStartParams:
    """A user. Attributes: ``user`` ``[d]`` latent preference vector; ``horizon`` (static)."""

    user: jax.Array
    horizon: int = struct.field(pytree_node=False, default=20)


@struct.dataclass
class ColdStartState:
    last_obs: jax.Array  # [d + 1]
    time: jax.Array  # int32 scalar


def make_catalogue(num_items: int, dim: int, seed: int) -> np.ndarray:
    """The fixed catalogue: ``[num_items, dim]`` unit vectors from a seeded generator."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((num_items, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class ColdStartRec(Environment[ColdStartState, ColdStartParams]):
    """Recommend items to an unknown user (see module docstring)."""

    name = "cold-start-rec"

    def __init__(self, catalogue: np.ndarray, click_scale: float = 4.0, click_bias: float = -1.0):
        self.catalogue = jnp.asarray(catalogue, jnp.float32)
        self.num_items, self.dim = self.catalogue.shape
        self.click_scale = float(click_scale)
        self.click_bias = float(click_bias)

    def click_probs(self, params: ColdStartParams) -> jax.Array:
        """``[num_items]`` click probability of every item for the user ``params``."""
        return jax.nn.sigmoid(self.click_scale * self.catalogue @ params.user + self.click_bias)

    def reset_env(self, key, params):
        obs = jnp.zeros(self.dim + 1, jnp.float32)
        return obs, ColdStartState(last_obs=obs, time=jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        p = self.click_probs(params)[action]
        click = jax.random.bernoulli(key, p).astype(jnp.float32)
        obs = jnp.concatenate([self.catalogue[action], click[None]])
        time = state.time + 1
        truncated = time >= params.horizon
        return obs, ColdStartState(last_obs=obs, time=time), click, False, truncated, {"click_prob": p}

    def action_space(self, params=None):
        return Discrete(self.num_items)

    def observation_space(self, params=None):
        return Box(-1.0, 1.0, (self.dim + 1,))


@dataclasses.dataclass(frozen=True)
class ColdStartConfig:
    """Options of ``jmeta.make("cold-start-rec", ...)``.

    Attributes:
      num_items: catalogue size.
      embedding_dim: dimension d of item and user embeddings.
      horizon: interactions per episode.
      catalogue_seed: seed of the fixed catalogue (part of the env, not of the task).
      click_scale: logit scale of the click model.
      click_bias: logit bias of the click model (negative: clicks are rare by default).
      user_norm: (low, high) of the preference norm of train/test users.
      ood_user_norm: (low, high) of the preference norm of ``ood`` users.
    """

    num_items: int = 50
    embedding_dim: int = 8
    horizon: int = 20
    catalogue_seed: int = 0
    click_scale: float = 4.0
    click_bias: float = -1.0
    user_norm: Range = (0.5, 1.5)
    ood_user_norm: Range = (1.5, 2.5)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in ("num_items", "embedding_dim", "horizon"):
            set_(f, check_positive_int(f, getattr(self, f)))
        if isinstance(self.catalogue_seed, bool) or not isinstance(self.catalogue_seed, int) \
                or self.catalogue_seed < 0:
            raise ValueError(f"catalogue_seed: expected a non-negative int, got {self.catalogue_seed!r}")
        set_("click_scale", check_positive_float("click_scale", self.click_scale))
        set_("click_bias", check_range("click_bias", self.click_bias)[0])
        for f in ("user_norm", "ood_user_norm"):
            set_(f, check_range(f, getattr(self, f), lower=0.0))


def build(config: ColdStartConfig) -> tuple[ColdStartRec, TaskDistribution]:
    catalogue = make_catalogue(config.num_items, config.embedding_dim, config.catalogue_seed)
    env = ColdStartRec(catalogue, config.click_scale, config.click_bias)
    d, horizon = config.embedding_dim, config.horizon

    def sampler(key: jax.Array, ranges: Mapping[str, Range]) -> ColdStartParams:
        k_dir, k_norm = jax.random.split(key)
        direction = jax.random.normal(k_dir, (d,))
        direction = direction / jnp.linalg.norm(direction)
        lo, hi = ranges["user_norm"]
        norm = jax.random.uniform(k_norm, minval=lo, maxval=hi)
        return ColdStartParams(user=norm * direction, horizon=horizon)

    tasks = TaskDistribution(
        env_name=env.name,
        sampler=sampler,
        ranges={"user_norm": config.user_norm},
        ood_ranges={"user_norm": config.ood_user_norm},
    )
    return env, tasks
