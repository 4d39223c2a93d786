"""Feed-forward networks (flax linen: pure ``init``/``apply`` over explicit params)."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation called ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid: {', '.join(sorted(_ACTIVATIONS))}"
        ) from None


class MLP(nn.Module):
    """Multi-layer perceptron ``[..., in] -> [..., out_dim]``.

    Attributes:
      hidden_sizes: widths of the hidden layers, e.g. ``(64, 64)``.
      out_dim: output width.
      activation: name of the hidden activation (``tanh``, ``relu``, ``gelu``, ``elu``).
      kernel_init_scale: scale of the last layer's initialiser (small values give a near-zero
        initial policy mean, as in the MAML and rllab code).
    """

    hidden_sizes: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    kernel_init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for i, width in enumerate(self.hidden_sizes):
            x = act(nn.Dense(width, name=f"hidden_{i}")(x))
        last_init = nn.initializers.variance_scaling(
            self.kernel_init_scale, "fan_avg", "uniform"
        )
        return nn.Dense(self.out_dim, kernel_init=last_init, name="out")(x)
