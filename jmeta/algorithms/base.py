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
      sample: ``sample(params, key, num_tasks) -> data`` (``num_tasks`` static), the part of
        ``update`` that only needs values of the parameters: task sampling, rollouts and (for
        MAML) the inner adaptation and post-adaptation rollouts. ``None`` for algorithms without
        a sampling phase (supervised). The decoupled samplers of :mod:`jmeta.distributed` run it.
      learn: ``learn(state, data) -> (state, metrics)``, the rest of ``update``: everything that
        is differentiated, recomputed from ``data`` (whose task axis may come from several
        ``sample`` calls). ``update(state)`` is ``learn`` of ``sample`` with keys drawn from
        ``state.key``.
    """

    init: Callable[..., Any]
    update: Callable[..., Any]
    train: Callable[..., Any]
    adapt: Callable[..., Any]
    sample: Callable[..., Any] | None = None
    learn: Callable[..., Any] | None = None


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


# --- task-batch sharding (the placement helpers are in jmeta.sharding, one layer up) ----------
TASK_AXIS = "tasks"


def check_mesh(mesh: jax.sharding.Mesh, num_tasks: int, field: str = "num_tasks") -> None:
    """Raises ``ValueError`` unless ``mesh`` has a ``"tasks"`` axis whose size divides
    ``num_tasks``."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if TASK_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh: needs an axis named {TASK_AXIS!r}, got {mesh.axis_names}")
    size = mesh.shape[TASK_AXIS]
    if num_tasks % size:
        raise ValueError(f"{field}: {num_tasks} is not divisible by the mesh's {TASK_AXIS!r} "
                         f"axis of size {size}")


def task_constraint(mesh: jax.sharding.Mesh | None) -> Callable[[Any], Any]:
    """``tree -> tree`` laying every leaf's leading (task) axis along the mesh's ``"tasks"`` axis
    (``with_sharding_constraint``); the identity for ``mesh=None``.

    A leaf whose leading axis the ``"tasks"`` axis does not divide is left unconstrained (XLA
    lays it out): jax >= 0.11 rejects such uneven shardings (``IndivisibleError`` on the
    jitted function's outputs), where 0.10 padded them. The algorithms' task batches are always
    divisible (:func:`check_mesh`); this concerns other batch sizes, e.g. evaluation."""
    if mesh is None:
        return lambda tree: tree
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TASK_AXIS))
    size = mesh.shape[TASK_AXIS]

    def constrain(x):
        if x.ndim == 0 or x.shape[0] % size:
            return x
        return jax.lax.with_sharding_constraint(x, sharding)

    return lambda tree: jax.tree.map(constrain, tree)


def shard_map_compiles(mesh: jax.sharding.Mesh) -> bool:
    """Whether :func:`task_map` may use ``jax.shard_map`` on ``mesh``.

    False on CPU host devices with jax >= 0.11: XLA:CPU's compiler crashes (segmentation fault in
    ``backend_compile_and_load``) on any ``mujoco.mjx.step`` inside ``jax.shard_map``, measured
    with jax/jaxlib 0.11.2 on 2 host devices (the repro is in benchmarks/RESULTS.md; MAML-RL's
    MJX sampling in ``tests/test_host_threads.py``); 0.10.2 compiles and runs it, and 0.11.2 runs
    the same program partitioned from sharding constraints (without the 0.10.2 speed-up)."""
    platform = mesh.devices.flat[0].platform
    return not (platform == "cpu" and tuple(jax.__version_info__[:2]) >= (0, 11))


def task_map(mesh: jax.sharding.Mesh | None, fn: Callable[..., Any],
             in_axes: tuple[int | None, ...]) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)`` over the task axis; on a ``mesh``, each device maps its own
    shard of the tasks (``jax.shard_map``).

    Per-task work such as rollouts holds loops whose trip count depends on the data: MJX's
    solver runs a ``while_loop`` until every state in the batch has converged. Under a plain
    sharding constraint XLA partitions the vmapped loop across devices, and every iteration's
    condition becomes a cross-device reduction. Inside ``shard_map`` each device runs its own
    loops with no collective at all (``tests/test_sharding.py`` counts them in the compiled
    program); the outputs are laid along the ``"tasks"`` axis.

    Where :func:`shard_map_compiles` is false (CPU host devices with jax >= 0.11, whose compiler
    crashes on shard-mapped MJX programs), the vmapped function is partitioned from sharding
    constraints instead: the same values, with the loops' conditions reduced across devices.
    (MJX programs on host devices used to hang, with or without ``shard_map``: XLA:CPU's thread
    pool was too small, which ``import jmeta`` now sizes; see :mod:`jmeta._host_threads`.)

    Args:
      mesh: a mesh with a ``"tasks"`` axis, or ``None`` (then this is ``jax.vmap``).
      fn: the per-task function.
      in_axes: ``0`` (mapped over tasks) or ``None`` (shared, e.g. the parameters) per
        positional argument.

    Returns:
      ``f(*args)`` with every output leaf stacked along a leading task axis. ``shard_map`` needs
      the mapped arguments' task count to be divisible by the ``"tasks"`` axis size; when it is
      not, the sharding-constraint path is used instead (the same values, partitioned by XLA).
    """
    if any(a not in (0, None) for a in in_axes):
        raise ValueError(f"task_map: in_axes must each be 0 or None, got {in_axes}")
    mapped = jax.vmap(fn, in_axes=in_axes)
    if mesh is None:
        return mapped
    spec = jax.sharding.PartitionSpec(TASK_AXIS)
    sharded = jax.shard_map(
        mapped, mesh=mesh, out_specs=spec, check_vma=False,
        in_specs=tuple(spec if a == 0 else jax.sharding.PartitionSpec() for a in in_axes))
    constrain = task_constraint(mesh)
    size = mesh.shape[TASK_AXIS]
    use_shard_map = shard_map_compiles(mesh)

    def call(*args):
        num = {x.shape[0] for a, arg in zip(in_axes, args) if a == 0
               for x in jax.tree.leaves(arg)}
        if use_shard_map and len(num) == 1 and num.pop() % size == 0:
            return sharded(*args)
        args = tuple(constrain(arg) if a == 0 else arg for a, arg in zip(in_axes, args))
        return constrain(mapped(*args))

    return call

