"""Action and observation spaces (gymnax-style) with ``sample`` and ``contains``."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


class Space:
    """Base class: ``shape``, ``dtype``, ``sample(key)`` and ``contains(x)``."""

    shape: tuple[int, ...]
    dtype: jnp.dtype

    def sample(self, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def contains(self, x: ArrayLike) -> jax.Array:
        raise NotImplementedError


class Discrete(Space):
    """``{0, ..., n - 1}``, a scalar int32.

    Args:
      n: number of elements, a positive int.
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"Discrete space size must be a positive int, got {n!r}")
        self.n = int(n)
        self.shape = ()
        self.dtype = jnp.int32

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (), 0, self.n, dtype=self.dtype)

    def contains(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        integral = jnp.issubdtype(x.dtype, jnp.integer) or jnp.all(x == jnp.round(x))
        return jnp.logical_and(integral, jnp.logical_and(x >= 0, x < self.n))

    def __repr__(self) -> str:
        return f"Discrete({self.n})"


class Box(Space):
    """A box ``[low, high]`` of the given shape (float32 by default).

    Args:
      low: lower bound, broadcast to ``shape`` (may be ``-inf``).
      high: upper bound, broadcast to ``shape`` (may be ``inf``).
      shape: the shape of an element.
      dtype: element dtype.
    """

    def __init__(self, low: ArrayLike, high: ArrayLike, shape: Sequence[int], dtype=jnp.float32):
        self.shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ValueError(f"Box shape must be non-negative, got {self.shape}")
        self.dtype = dtype
        self.low = np.broadcast_to(np.asarray(low, dtype=np.float32), self.shape)
        self.high = np.broadcast_to(np.asarray(high, dtype=np.float32), self.shape)
        if np.any(self.low > self.high):
            raise ValueError(f"Box low must be <= high, got low={self.low}, high={self.high}")

    def sample(self, key: jax.Array) -> jax.Array:
        # Unbounded sides are sampled from a unit normal around the finite bound (or 0).
        low, high = jnp.asarray(self.low), jnp.asarray(self.high)
        k1, k2 = jax.random.split(key)
        u = jax.random.uniform(k1, self.shape, minval=jnp.where(jnp.isfinite(low), low, 0.0),
                               maxval=jnp.where(jnp.isfinite(high), high, 0.0))
        n = jax.random.normal(k2, self.shape)
        both = jnp.isfinite(low) & jnp.isfinite(high)
        only_low = jnp.isfinite(low) & ~jnp.isfinite(high)
        only_high = ~jnp.isfinite(low) & jnp.isfinite(high)
        x = jnp.where(both, u, n)
        x = jnp.where(only_low, low + jnp.abs(n), x)
        x = jnp.where(only_high, high - jnp.abs(n), x)
        return x.astype(self.dtype)

    def contains(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if x.shape != self.shape:
            return jnp.asarray(False)
        return jnp.all((x >= self.low) & (x <= self.high))

    def __repr__(self) -> str:
        return f"Box(shape={self.shape}, low={self.low.min()}, high={self.high.max()})"
