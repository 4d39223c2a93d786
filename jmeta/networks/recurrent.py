"""Recurrent actor-critic for memory-based meta-RL (RL², Duan et al. 2016; Wang et al. 2016).

The seed's ``MetaRNNAgent``: an LSTM (or GRU) core reads the trial observation (observation,
previous action, previous reward, done flag; :class:`jmeta.envs.TrialWrapper`), and two linear
heads read its output: the actor (categorical logits, or a Gaussian mean with a state-independent
log-std) and the critic (a scalar value). Orthogonal initialisation throughout (actor head scale
0.01, critic 1.0, as in the PPO implementation details of Huang et al. 2022). The third core,
``cell="lngru"``, is :class:`LayerNormGRUCell`: a layer-normalised GRU with a ReLU candidate.

With ``task_critic=True`` the critic also reads the task's parameters (an *asymmetric*, or
privileged, critic: Pinto et al. 2018; Humplik et al. 2019): ``value = Dense(1)(tanh(Dense(hidden)
([h, task])))``. The actor reads ``h`` only, so the policy, and meta-test adaptation, never see the
task; only the value baseline of meta-training does, so the advantages need not carry the error
of a critic that must infer the task from the trial so far (on jmeta's bandit and MDP benchmarks
this did not improve RL²: ``benchmarks/RESULTS.md``).

With ``task_prediction=d`` a linear head reads ``h`` and predicts the task's ``d`` features (an
auxiliary task-inference loss, Humplik et al. 2019: trained by regression on the true task, its
optimum is the posterior mean of the task given the trial so far, so it pushes the memory to hold a
belief). It is only *sown* (flax ``sow``, collection ``"intermediates"``, name
``"task_prediction"``): ``__call__``'s outputs do not change, and the prediction is read only by
an ``apply`` with ``mutable=["intermediates"]``.

With ``separate_critic=True`` the critic has its own recurrent core (``critic_core``, same cell
and width) instead of reading the actor's: the carry is then the pair ``(actor state, critic
state)``. The policy's parameters and the value's are then disjoint, which a trust-region outer
step needs (RL² with ``outer="trpo"``: the value fit must not move the policy), and which Ni et
al. (2022) recommend for recurrent model-free RL.

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

CELLS = ("lstm", "gru", "lngru")


def check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
    return cell


def critic_input(h: jax.Array, task: jax.Array | None, task_critic: bool) -> jax.Array | None:
    """``[h, task]`` (``task`` broadcast over ``h``'s batch shape) for a ``task_critic`` network,
    ``None`` for a plain one; shared by the recurrent and the Transformer networks.

    Raises:
      ValueError: a ``task_critic`` network without ``task``, or a plain one given ``task``.
    """
    if not task_critic:
        if task is not None:
            raise ValueError("task: only a task_critic network reads task features")
        return None
    if task is None:
        raise ValueError("task: a task_critic network needs the task features")
    return jnp.concatenate([h, jnp.broadcast_to(task, h.shape[:-1] + task.shape[-1:])], axis=-1)


def critic_head(h: jax.Array, task: jax.Array | None, task_critic: bool, width: int) -> jax.Array:
    """The value head, inside a compact module: linear in ``h``, or with ``task_critic`` a
    one-hidden-layer tanh MLP over ``[h, task]`` (named ``critic_task`` and ``critic``)."""
    x = critic_input(h, task, task_critic)
    if x is not None:
        h = jnp.tanh(nn.Dense(width, kernel_init=nn.initializers.orthogonal(np.sqrt(2.0)),
                              name="critic_task")(x))
    return nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="critic")(h)[..., 0]


def sow_task_prediction(module: nn.Module, h: jax.Array, width: int) -> None:
    """Sows a linear prediction of the task's ``width`` features from ``h`` (inside a compact
    module; none when ``width`` is 0)."""
    if width:
        module.sow("intermediates", "task_prediction",
                   nn.Dense(width, kernel_init=nn.initializers.orthogonal(1.0),
                            name="task_head")(h))


class LayerNormGRUCell(nn.RNNCellBase):
    """A GRU with layer normalisation, a ReLU candidate and a biased-closed update gate: the cell
    of L. Lingle's PyTorch RL² (github.com/lucaslingle/pytorch_rl2), the one public
    reimplementation we found that reports Duan et al.'s tabular-MDP number (157.3 at n = 10).

    ``u = σ(LN(W_xu x) + LN(W_hu h) − update_bias)``, ``r = σ(LN(W_xr x) + LN(W_hr h))``,
    ``ĥ = relu(LN(W_xh x) + r ⊙ LN(W_hh h))``, ``h' = (1 − u) ⊙ h + u ⊙ ĥ``. Each LN has its
    own gain and bias (they replace the projections' biases). The ReLU candidate is not bounded
    by 1 as ``tanh`` is, and the update gate starts mostly closed (σ(−1) ≈ 0.27), so the state
    holds on to what it has seen: what counting pulls or visits over a long trial needs.

    Attributes:
      features: hidden width.
      update_bias: subtracted from the update gate's pre-activation (Lingle: 1).
      kernel_init, recurrent_kernel_init: initialisers of the input and recurrent kernels.
    """

    features: int
    update_bias: float = 1.0
    kernel_init: Any = nn.initializers.orthogonal(1.0)
    recurrent_kernel_init: Any = nn.initializers.orthogonal(1.0)

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h, width = carry, self.features

        def proj(x, n, init, name):
            y = nn.Dense(n, use_bias=False, kernel_init=init, name=name)(x)
            return nn.LayerNorm(name=name + "_ln")(y)

        ur = proj(inputs, 2 * width, self.kernel_init, "x_gates") \
            + proj(h, 2 * width, self.recurrent_kernel_init, "h_gates")
        u = jax.nn.sigmoid(ur[..., :width] - self.update_bias)
        r = jax.nn.sigmoid(ur[..., width:])
        cand = jax.nn.relu(proj(inputs, width, self.kernel_init, "x_cand")
                           + r * proj(h, width, self.recurrent_kernel_init, "h_cand"))
        h = (1.0 - u) * h + u * cand
        return h, h

    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros((*input_shape[:-1], self.features), jnp.float32)

    @property
    def num_feature_axes(self) -> int:
        return 1


class RecurrentActorCritic(nn.Module):
    """LSTM/GRU core with actor and critic heads.

    Attributes:
      action_dim: number of discrete actions, or the dimension of a continuous action.
      discrete: categorical (``True``) or diagonal Gaussian (``False``) actions.
      hidden_size: width of the recurrent core.
      cell: ``"lstm"``, ``"gru"`` or ``"lngru"`` (:class:`LayerNormGRUCell`).
      init_log_std: initial log-std of the Gaussian head.
      task_critic: the critic also reads the task features passed to ``__call__`` (see the module
        docstring); the actor never does.
      task_prediction: width of the sown task-prediction head (0: none; see the module
        docstring).
      separate_critic: the critic reads its own recurrent core (``critic_core``), not the
        actor's; the carry is ``(actor state, critic state)`` (see the module docstring).

    ``__call__(carry, obs, task=None) -> (carry, dist, value)`` advances one step: ``dist`` is the
    logits ``[..., action_dim]`` or ``(mean, log_std)``, ``value`` has the batch shape of
    ``obs[..., 0]``; ``task`` is the ``[..., task_dim]`` feature vector a ``task_critic`` needs.
    """

    action_dim: int
    discrete: bool = True
    hidden_size: int = 256
    cell: str = "lstm"
    init_log_std: float = 0.0
    task_critic: bool = False
    task_prediction: int = 0
    separate_critic: bool = False

    def _core(self, name: str = "core") -> nn.Module:
        kwargs = dict(features=self.hidden_size, kernel_init=nn.initializers.orthogonal(1.0),
                      recurrent_kernel_init=nn.initializers.orthogonal(1.0), name=name)
        if self.cell == "lstm":
            return nn.OptimizedLSTMCell(**kwargs)
        if self.cell == "lngru":
            return LayerNormGRUCell(**kwargs)
        return nn.GRUCell(**kwargs)

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array, task: jax.Array | None = None):
        check_cell(self.cell)
        if self.separate_critic:
            actor_carry, critic_carry = carry
            actor_carry, h = self._core()(actor_carry, obs)
            critic_carry, h_critic = self._core("critic_core")(critic_carry, obs)
            carry = (actor_carry, critic_carry)
        else:
            carry, h = self._core()(carry, obs)
            h_critic = h
        out = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                       name="actor")(h)
        value = critic_head(h_critic, task, self.task_critic, self.hidden_size)
        sow_task_prediction(self, h, self.task_prediction)
        if self.discrete:
            return carry, out, value
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std),
                             (self.action_dim,))
        return carry, (out, jnp.broadcast_to(log_std, out.shape)), value

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Any:
        """The zero recurrent state of a trial's first step: ``(c, h)`` for an LSTM, ``h`` for a
        GRU (either kind), each ``[*batch_shape, hidden_size]``; with ``separate_critic`` a pair
        of those (actor's, critic's)."""
        check_cell(self.cell)
        if isinstance(self.hidden_size, bool) or not isinstance(self.hidden_size, (int, np.integer)) \
                or self.hidden_size < 1:
            raise ValueError(f"hidden_size: expected a positive int, got {self.hidden_size!r}")
        zeros = jnp.zeros((*batch_shape, self.hidden_size), jnp.float32)
        one = (zeros, zeros) if self.cell == "lstm" else zeros
        return (one, one) if self.separate_critic else one

