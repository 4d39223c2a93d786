"""Shared shape of every jmeta algorithm (shared/DESIGN.md §4).

Each algorithm module exposes a frozen ``Config`` dataclass and ``make(config, ...) -> Algorithm``,
a NamedTuple of pure functions, so the Runner (host side) can drive any of them the same way.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """State carried across meta-iterations.

    Attributes:
      params: the meta-parameters (for MAML, the initialisation; for Meta-SGD, also the rates).
      opt_state: the outer optimiser's state.
      key: PRNG key consumed by ``update``.
      iteration: number of meta-iterations done, an int32 scalar.
    """

    params: Any
    opt_state: optax.OptState
    key: jax.Array
    iteration: jax.Array


class Algorithm(NamedTuple):
    """The four pure functions every algorithm provides.

    Attributes:
      init: ``init(key) -> TrainState``.
      update: ``update(state) -> (state, metrics)``, one meta-iteration.
      train: ``train(state, num_iterations) -> (state, stacked metrics)``, a ``lax.scan`` of
        ``update``; ``num_iterations`` is static.
      adapt: ``adapt(state, task, key) -> adapted``, meta-test adaptation to one task.
    """

    init: Callable[..., Any]
    update: Callable[..., Any]
    train: Callable[..., Any]
    adapt: Callable[..., Any]


def scan_train(update: Callable[[Any], tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
    """Builds ``train(state, num_iterations)`` as a ``lax.scan`` of ``update``.

    Args:
      update: ``update(state) -> (state, metrics)``.

    Returns:
      ``train(state, num_iterations) -> (state, metrics stacked along a leading [num_iterations] axis)``.
    """

    def train(state: Any, num_iterations: int) -> tuple[Any, Any]:
        if not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f"num_iterations must be a positive int, got {num_iterations!r}")

        def body(carry, _):
            return update(carry)

        return jax.lax.scan(body, state, None, length=num_iterations)

    return train
