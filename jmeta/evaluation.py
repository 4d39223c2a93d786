"""The meta-test protocol shared by every algorithm: return vs. experience on held-out tasks.

Each algorithm's ``adapt(state, task, key)`` returns a result with a ``returns`` field: for
gradient-based methods the mean return before each adaptation step and after the last
(``[K + 1]``), for memory-based methods the return of each episode of a trial. ``evaluate``
samples ``num_tasks`` tasks from a split and runs ``adapt`` on all of them in parallel (``vmap``).
Pure and jit-able (``num_tasks`` static).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.algorithms.base import Algorithm
from jmeta.envs.tasks import TaskDistribution, check_positive_int


class EvalResult(NamedTuple):
    """Meta-test returns.

    Attributes:
      returns: ``[num_tasks, K + 1]`` per-task returns after 0..K adaptation steps (or per trial
        episode).
      tasks: the evaluated tasks (``EnvParams`` stacked along ``[num_tasks]``), so results can be
        explained by task parameters.
    """

    returns: jax.Array
    tasks: Any

    @property
    def mean(self) -> jax.Array:
        """``[K + 1]`` mean over tasks."""
        return jnp.mean(self.returns, axis=0)

    @property
    def std(self) -> jax.Array:
        return jnp.std(self.returns, axis=0)

    @property
    def sem(self) -> jax.Array:
        """``[K + 1]`` standard error of the mean over tasks."""
        return self.std / jnp.sqrt(self.returns.shape[0])


def evaluate(
    algo: Algorithm, state: Any, tasks: TaskDistribution, key: jax.Array, num_tasks: int = 40
) -> EvalResult:
    """Adapts to ``num_tasks`` tasks of ``tasks`` (pass ``tasks.test`` or ``tasks.ood``).

    Args:
      algo: any jmeta algorithm.
      state: its ``TrainState``.
      tasks: the task distribution (split) to evaluate on.
      key: PRNG key.
      num_tasks: number of test tasks (MAML paper: 40).

    Returns:
      :class:`EvalResult`.

    >>> # curve = jax.jit(evaluate, static_argnums=(0, 2, 4))(algo, state, tasks.test, key, 40).mean
    """
    num_tasks = check_positive_int("num_tasks", num_tasks)
    k_tasks, k_adapt = jax.random.split(key)
    task_batch = tasks.sample_batch(k_tasks, num_tasks)
    keys = jax.random.split(k_adapt, num_tasks)
    result = jax.vmap(algo.adapt, in_axes=(None, 0, 0))(state, task_batch, keys)
    return EvalResult(returns=result.returns, tasks=task_batch)


def finite_summary(returns: Any) -> dict[str, np.ndarray]:
    """Per-column statistics of ``returns`` ``[num_tasks, K + 1]`` over the finite entries (host).

    An adaptation step can diverge on some tasks (a sharp policy has huge log-likelihood
    gradients); those are counted in ``non_finite`` and left out of the statistics, so one
    diverged task does not turn the mean into NaN.

    Returns:
      ``{"mean", "std", "sem", "non_finite"}``, each ``[K + 1]`` (``std`` over the finite tasks,
      ``sem = std / sqrt(count)``).
    """
    returns = np.asarray(returns, np.float64)
    finite = np.isfinite(returns)
    count = np.maximum(finite.sum(axis=0), 1)
    mean = np.where(finite, returns, 0.0).sum(axis=0) / count
    std = np.sqrt(np.where(finite, (returns - mean) ** 2, 0.0).sum(axis=0) / count)
    return {"mean": mean, "std": std, "sem": std / np.sqrt(count),
            "non_finite": (~finite).sum(axis=0)}
