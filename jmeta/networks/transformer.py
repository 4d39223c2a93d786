"""Transformer memory agent: causal self-attention over the trial so far (a GTrXL-free, pre-LN
decoder in the spirit of Parisotto et al. 2020 and the Transformer agents of Melo 2022).

Each step of a trial is one token: the trial observation (observation, previous action, previous
reward, done flag; :class:`jmeta.envs.TrialWrapper`) embedded linearly plus a sinusoidal encoding
of its absolute time step. ``num_layers`` pre-LayerNorm blocks (multi-head causal attention, a
4× MLP) attend over the last ``context`` steps (a fixed window); actor and critic heads read the
final token, like :class:`jmeta.networks.recurrent.RecurrentActorCritic`.

Two ways to run it, with the same parameters:

* step by step inside a rollout (``__call__(carry, obs)``): the carry is a key/value cache, a ring
  buffer of the last ``context`` steps per layer, so each step costs ``O(context)``, all inside
  ``jit``;
* over a whole trial at once (``sequence(obs[T])``, for training): one masked attention over the
  ``T`` tokens (step ``t`` sees steps ``t − context < s ≤ t``), which equals the cached step loop.

Unlike an RNN, nothing is squeezed through a fixed-size state: a fact seen at step ``s`` stays
readable exactly until step ``s + context − 1``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jmeta.networks.recurrent import critic_input


@struct.dataclass
class KVCache:
    """The Transformer's rollout carry.

    Attributes:
      keys: ``[*batch, num_layers, context, num_heads, head_dim]`` keys of the last steps (ring).
      values: the same for values.
      time: ``[*batch]`` int32, number of steps seen (the next token's absolute position).
    """

    keys: jax.Array
    values: jax.Array
    time: jax.Array


def sinusoidal(position: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal encoding ``[..., dim]`` of integer positions ``[...]`` (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
    angles = position[..., None].astype(jnp.float32) * freqs
    enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, dim - 2 * half)])


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


class TransformerActorCritic(nn.Module):
    """Causal Transformer memory with actor and critic heads.

    Attributes:
      action_dim: number of discrete actions, or the dimension of a continuous action.
      discrete: categorical (``True``) or diagonal Gaussian (``False``) actions.
      d_model: token width.
      num_heads: attention heads (must divide ``d_model``).
      num_layers: Transformer blocks.
      context: attention window in steps (``>= 1``).
      init_log_std: initial log-std of the Gaussian head.
      task_critic: the critic also reads task features (``__call__``'s and ``sequence``'s
        ``task``): a tanh layer over ``[h, task]`` before the value, as in
        :class:`jmeta.networks.RecurrentActorCritic`; the actor never reads them.
      task_prediction: width of a sown linear task-prediction head on the final features, as in
        :class:`jmeta.networks.RecurrentActorCritic` (0: none).
    """

    action_dim: int
    discrete: bool = True
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    context: int = 64
    init_log_std: float = 0.0
    task_critic: bool = False
    task_prediction: int = 0

    def _check(self) -> None:
        for name in ("d_model", "num_heads", "num_layers", "context"):
            _check_positive(name, getattr(self, name))
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads: {self.num_heads} does not divide d_model {self.d_model}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def setup(self):
        self._check()
        self.embed = nn.Dense(self.d_model, name="embed")
        self.ln1 = [nn.LayerNorm(name=f"ln1_{i}") for i in range(self.num_layers)]
        self.qkv = [nn.Dense(3 * self.d_model, name=f"qkv_{i}") for i in range(self.num_layers)]
        self.proj = [nn.Dense(self.d_model, name=f"proj_{i}") for i in range(self.num_layers)]
        self.ln2 = [nn.LayerNorm(name=f"ln2_{i}") for i in range(self.num_layers)]
        self.mlp_in = [nn.Dense(4 * self.d_model, name=f"mlp_in_{i}")
                       for i in range(self.num_layers)]
        self.mlp_out = [nn.Dense(self.d_model, name=f"mlp_out_{i}")
                        for i in range(self.num_layers)]
        self.ln_f = nn.LayerNorm(name="ln_f")
        self.actor = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                              name="actor")
        self.critic = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="critic")
        if self.task_critic:
            self.critic_task = nn.Dense(self.d_model,
                                        kernel_init=nn.initializers.orthogonal(np.sqrt(2.0)),
                                        name="critic_task")
        if self.task_prediction:
            self.task_head = nn.Dense(self.task_prediction,
                                      kernel_init=nn.initializers.orthogonal(1.0), name="task_head")
        if not self.discrete:
            self.log_std = self.param("log_std", nn.initializers.constant(self.init_log_std),
                                      (self.action_dim,))

    def _tokens(self, obs, position):
        return self.embed(obs) + sinusoidal(position, self.d_model)

    def _split(self, x):  # [..., d] -> [..., heads, head_dim]
        return x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))

    def _mlp(self, i, h):
        return h + self.mlp_out[i](jax.nn.gelu(self.mlp_in[i](self.ln2[i](h))))

    def _heads(self, h, task):
        h = self.ln_f(h)
        out = self.actor(h)
        if self.task_prediction:
            self.sow("intermediates", "task_prediction", self.task_head(h))
        x = critic_input(h, task, self.task_critic)
        value = self.critic(h if x is None else jnp.tanh(self.critic_task(x)))[..., 0]
        if self.discrete:
            return out, value
        return (out, jnp.broadcast_to(self.log_std, out.shape)), value

    def __call__(self, carry: KVCache, obs: jax.Array, task: jax.Array | None = None):
        """One step: ``(cache, obs [*batch, obs_dim]) -> (cache, dist, value)``."""
        t = carry.time
        h = self._tokens(obs, t)
        slot = t % self.context
        slots = jnp.arange(self.context)
        # slot j holds the latest step s ≡ j (mod context) with s <= t: valid once written
        filled = slots <= t[..., None]  # [*batch, context]
        new_keys, new_values = [], []
        for i in range(self.num_layers):
            q, k, v = jnp.split(self.qkv[i](self.ln1[i](h)), 3, axis=-1)
            q, k, v = self._split(q), self._split(k), self._split(v)
            onehot = jax.nn.one_hot(slot, self.context, dtype=k.dtype)[..., None, None]
            keys = carry.keys[..., i, :, :, :] * (1 - onehot) + onehot * k[..., None, :, :]
            values = carry.values[..., i, :, :, :] * (1 - onehot) + onehot * v[..., None, :, :]
            logits = jnp.einsum("...hd,...chd->...hc", q, keys) / np.sqrt(self.head_dim)
            logits = jnp.where(filled[..., None, :], logits, -1e30)
            att = jnp.einsum("...hc,...chd->...hd", jax.nn.softmax(logits, axis=-1), values)
            h = h + self.proj[i](att.reshape(att.shape[:-2] + (self.d_model,)))
            h = self._mlp(i, h)
            new_keys.append(keys)
            new_values.append(values)
        carry = KVCache(keys=jnp.stack(new_keys, axis=-4), values=jnp.stack(new_values, axis=-4),
                        time=t + 1)
        dist, value = self._heads(h, task)
        return carry, dist, value

    def sequence(self, obs: jax.Array, task: jax.Array | None = None):
        """A whole trial from the empty cache: ``obs [T, obs_dim] -> (dist [T], value [T])``."""
        steps = obs.shape[0]
        pos = jnp.arange(steps)
        h = self._tokens(obs, pos)
        # step t sees steps s with t − context < s <= t
        mask = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - self.context)
        for i in range(self.num_layers):
            q, k, v = jnp.split(self.qkv[i](self.ln1[i](h)), 3, axis=-1)
            q, k, v = self._split(q), self._split(k), self._split(v)
            logits = jnp.einsum("thd,shd->hts", q, k) / np.sqrt(self.head_dim)
            logits = jnp.where(mask[None], logits, -1e30)
            att = jnp.einsum("hts,shd->thd", jax.nn.softmax(logits, axis=-1), v)
            h = h + self.proj[i](att.reshape(steps, self.d_model))
            h = self._mlp(i, h)
        return self._heads(h, task)

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> KVCache:
        """The empty cache of a trial's first step."""
        self._check()
        shape = (*batch_shape, self.num_layers, self.context, self.num_heads, self.head_dim)
        return KVCache(keys=jnp.zeros(shape, jnp.float32), values=jnp.zeros(shape, jnp.float32),
                       time=jnp.zeros(batch_shape, jnp.int32))
