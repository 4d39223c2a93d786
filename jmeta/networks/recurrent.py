"""Recurrent actor-critic for memory-based meta-RL (RL², Duan et al. 2016; Wang et al. 2016).

The seed's ``MetaRNNAgent``: an LSTM (or GRU) core reads the trial observation (observation,
previous action, previous reward, done flag; :class:`jmeta.envs.TrialWrapper`), and two linear
heads read its output: the actor (categorical logits, or a Gaussian mean with a state-independent
log-std) and the critic (a scalar value). Orthogonal initialisation throughout (actor head scale
0.01, critic 1.0, as in the PPO implementation details of Huang et al. 2022).

The recurrent state is the rollout's ``carry`` (:mod:`jmeta.rollout`): it starts at
:meth:`RecurrentActorCritic.initial_carry` (zeros) at the start of a trial and is carried across
the episodes of the trial, never reset inside it, so what the agent learned about the task
survives episode boundaries.

>>> import jax, jax.numpy as jnp
>>> net = RecurrentActorCritic(action_dim=5, discrete=True, hidden_size=8, cell="gru")
>>> carry = net.initial_carry()
>>> params = net.init(jax.random.key(0), carry, jnp.zeros(8))
>>> carry, logits, value = net.apply(params, carry, jnp.zeros(8))
>>> logits.shape, value.shape
((5,), ())
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CELLS = ("lstm", "gru")


def check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
    return cell


class RecurrentActorCritic(nn.Module):
    """LSTM/GRU core with actor and critic heads.

    Attributes:
      action_dim: number of discrete actions, or the dimension of a continuous action.
      discrete: categorical (``True``) or diagonal Gaussian (``False``) actions.
      hidden_size: width of the recurrent core.
      cell: ``"lstm"`` or ``"gru"``.
      init_log_std: initial log-std of the Gaussian head.

    ``__call__(carry, obs) -> (carry, dist, value)`` advances one step: ``dist`` is the logits
    ``[..., action_dim]`` or ``(mean, log_std)``, ``value`` has the batch shape of ``obs[..., 0]``.
    """

    action_dim: int
    discrete: bool = True
    hidden_size: int = 256
    cell: str = "lstm"
    init_log_std: float = 0.0

    def _core(self) -> nn.Module:
        kwargs = dict(features=self.hidden_size, kernel_init=nn.initializers.orthogonal(1.0),
                      recurrent_kernel_init=nn.initializers.orthogonal(1.0), name="core")
        if self.cell == "lstm":
            return nn.OptimizedLSTMCell(**kwargs)
        return nn.GRUCell(**kwargs)

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array):
        check_cell(self.cell)
        carry, h = self._core()(carry, obs)
        out = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                       name="actor")(h)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="critic")(h)[..., 0]
        if self.discrete:
            return carry, out, value
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std),
                             (self.action_dim,))
        return carry, (out, jnp.broadcast_to(log_std, out.shape)), value

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Any:
        """The zero recurrent state of a trial's first step: ``(c, h)`` for an LSTM, ``h`` for a
        GRU, each ``[*batch_shape, hidden_size]``."""
        check_cell(self.cell)
        if isinstance(self.hidden_size, bool) or not isinstance(self.hidden_size, (int, np.integer)) \
                or self.hidden_size < 1:
            raise ValueError(f"hidden_size: expected a positive int, got {self.hidden_size!r}")
        zeros = jnp.zeros((*batch_shape, self.hidden_size), jnp.float32)
        return (zeros, zeros) if self.cell == "lstm" else zeros

