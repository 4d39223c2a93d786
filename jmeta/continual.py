"""Continual meta-learning: a schedule of task groups and a replay buffer of past tasks.

Meta-training on one task group after another (goals far out, then nearer, then at the origin;
velocity bands 0–1, 1–2, 2–3) erases what was meta-learned on the earlier groups: catastrophic
forgetting. The counter here is *task replay*: a buffer of tasks seen in earlier stages, from
which a fixed fraction of every meta-iteration's task batch is drawn.

Pieces (all pure and jit-able; nothing here touches files, the clock or prints):

* :class:`ReplayBuffer` with :func:`buffer_init`, :func:`buffer_add`, :func:`buffer_add_batch`,
  :func:`buffer_sample`: a fixed-capacity buffer of pytrees (here task params, ``EnvParams``),
  filled as a *reservoir* (Vitter's algorithm R: after ``n`` offers every offered item is in the
  buffer with probability ``capacity / n``) or a *ring* (the last ``capacity`` items). Capacity is
  static, the count an array, so the buffer is a pytree that ``jit``, ``vmap`` and ``lax.scan``
  carry.
* A task-group schedule: :class:`ContinualConfig` (``task_groups``: range overrides of the env's
  task distribution, one dict per stage; ``iterations_per_stage``), :func:`parse_task_groups`
  for the command-line syntax ``"goal_radius=0.4:0.5;goal_radius=0:0.1"``, :func:`group_tasks`
  for one group's :class:`~jmeta.envs.tasks.TaskDistribution` (its ``.test`` split gives the
  group's held-out tasks).
* :func:`mix_tasks`: a task batch of ``num_tasks`` = ``replay_count(ratio, num_tasks)`` tasks
  drawn uniformly (with replacement) from the buffer's entries of *earlier* stages, then the rest
  from the current group. While no earlier-stage task is in the buffer (the whole first stage),
  every task comes from the current group.
* :func:`make`: wraps any jmeta RL algorithm (``maml_rl``, ``rl2``) into a continual one.

How the buffer reaches the jitted update: it is a field of the carried state
(:class:`ContinualState` = ``TrainState`` + ``buffer``), and the stage is a function of the
iteration counter (``min(iteration // iterations_per_stage, num_groups - 1)``), both traced. The
wrapped ``update`` builds the algorithm around a :class:`MixedTasks` distribution holding the
traced stage and buffer, so the schedule, the stage switches and the buffer's growth are all inside
one compiled program: **nothing recompiles per stage or per iteration**, a chunk may span a stage
boundary, and a checkpoint (the state) holds the buffer, so a run resumed mid-stage continues
bit-exactly in the right stage with the right buffer.

When tasks enter the buffer: as they are drawn. After each meta-iteration the batch's
current-group tasks are offered to the buffer, tagged with their stage; the replayed ones are
not offered again. Replay draws only entries of earlier stages (the current stage's own tasks
are not "old" tasks), so during a stage the replay *source* is fixed: the earlier stages' entries,
which with a reservoir can only shrink (be overwritten by newer tasks) and never grow.

References: Vitter, "Random sampling with a reservoir", ACM TOMS 1985 (algorithm R); Rolnick et
al., "Experience replay for continual learning", NeurIPS 2019 (replay against forgetting).

>>> import jax, jmeta
>>> from jmeta import continual
>>> from jmeta.algorithms import maml_rl
>>> env, tasks = jmeta.make("point-nav", horizon=10)
>>> cfg = continual.ContinualConfig(
...     continual.parse_task_groups("goal_radius=0.4:0.5;goal_radius=0:0.1"),
...     iterations_per_stage=5, replay_ratio=0.5)
>>> algo = continual.make(lambda t: maml_rl.make(maml_rl.Config(num_tasks=4), env, t),
...                       tasks, cfg)
>>> state = algo.init(jax.random.key(0))
>>> state, metrics = jax.jit(algo.train, static_argnames="num_iterations")(state, 10)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import struct

from jmeta.algorithms.base import Algorithm, TrainState, scan_train
from jmeta.envs.tasks import Range, TaskDistribution, check_positive_int

__all__ = [
    "BUFFER_KINDS",
    "ContinualConfig",
    "ContinualState",
    "MixedTasks",
    "ReplayBuffer",
    "TaskRecord",
    "buffer_add",
    "buffer_add_batch",
    "buffer_init",
    "buffer_sample",
    "check_task_groups",
    "format_task_groups",
    "group_tasks",
    "make",
    "mix_tasks",
    "parse_task_groups",
    "replay_count",
    "stage_of",
]

BUFFER_KINDS = ("reservoir", "ring")
_BUFFER_SALT = 0x5EED  # folds the state's key into the key of the buffer's reservoir draws


# --- the replay buffer ------------------------------------------------------------------------
@struct.dataclass
class ReplayBuffer:
    """A fixed-capacity buffer of pytrees.

    Attributes:
      data: the stored items, a pytree whose leaves have a leading ``[capacity]`` axis (slots not
        yet filled hold zeros).
      count: int32 scalar, the number of items offered so far (``>= capacity`` once full).
      capacity: the number of slots (static: it defines the shapes).
      kind: ``"reservoir"`` (Vitter's algorithm R) or ``"ring"`` (static).
    """

    data: Any
    count: jax.Array
    capacity: int = struct.field(pytree_node=False)
    kind: str = struct.field(pytree_node=False, default="reservoir")

    @property
    def size(self) -> jax.Array:
        """int32 scalar: the number of filled slots, ``min(count, capacity)``."""
        return jnp.minimum(self.count, self.capacity)

    @property
    def filled(self) -> jax.Array:
        """``[capacity]`` bool: which slots hold an item (slots fill in order ``0, 1, ...``)."""
        return jnp.arange(self.capacity) < self.count


def buffer_init(example: Any, capacity: int, kind: str = "reservoir") -> ReplayBuffer:
    """An empty buffer for items shaped like ``example``.

    Args:
      example: one item (a pytree of arrays, e.g. one task's ``EnvParams``); only its structure,
        shapes and dtypes are used.
      capacity: the number of slots (>= 1).
      kind: ``"reservoir"`` or ``"ring"``.

    Returns:
      A :class:`ReplayBuffer` with ``count == 0``.

    Raises:
      ValueError: ``capacity`` is not a positive int or ``kind`` is unknown.
    """
    capacity = check_positive_int("replay_capacity", capacity)
    if kind not in BUFFER_KINDS:
        raise ValueError(f"buffer: expected one of {', '.join(BUFFER_KINDS)}, got {kind!r}")
    data = jax.tree.map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
                        example)
    return ReplayBuffer(data=data, count=jnp.zeros((), jnp.int32), capacity=capacity, kind=kind)


def buffer_add(buffer: ReplayBuffer, item: Any, key: jax.Array,
               valid: jax.typing.ArrayLike = True) -> ReplayBuffer:
    """Offers one item to the buffer.

    Ring: the item goes to slot ``count % capacity`` (overwriting the oldest). Reservoir
    (algorithm R): while not full, to slot ``count``; then, with ``n = count + 1`` offers so far,
    a uniform ``j`` in ``[0, n)`` is drawn and the item replaces slot ``j`` if ``j < capacity``
    (else it is dropped), so every offered item is held with probability ``capacity / n``.

    Args:
      buffer: the buffer.
      item: a pytree shaped like the buffer's items (no leading axis).
      key: PRNG key (used by the reservoir only).
      valid: bool scalar; ``False`` leaves the buffer unchanged (count included), for masked
        offers under ``jit``.

    Returns:
      The new buffer.
    """
    count = buffer.count
    if buffer.kind == "ring":
        slot = count % buffer.capacity
        keep = jnp.asarray(True)
    else:
        j = jax.random.randint(key, (), 0, jnp.maximum(count + 1, 1))
        slot = jnp.where(count < buffer.capacity, count, j)
        keep = slot < buffer.capacity
    write = jnp.logical_and(keep, valid)
    slot = jnp.minimum(slot, buffer.capacity - 1)

    def put(store, x):
        x = jnp.asarray(x, store.dtype)
        return store.at[slot].set(jnp.where(write, x, store[slot]))

    data = jax.tree.map(put, buffer.data, item)
    return buffer.replace(data=data, count=count + jnp.asarray(valid, jnp.int32))


def buffer_add_batch(buffer: ReplayBuffer, items: Any, key: jax.Array,
                     valid: jax.typing.ArrayLike | None = None) -> ReplayBuffer:
    """Offers items one after another (a ``lax.scan`` of :func:`buffer_add`).

    Args:
      buffer: the buffer.
      items: a pytree whose leaves have a leading ``[n]`` axis.
      key: PRNG key (split into one per item).
      valid: optional ``[n]`` bool; items with ``False`` are skipped.

    Returns:
      The new buffer.
    """
    n = jax.tree.leaves(items)[0].shape[0]
    valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)

    def body(buf, xs):
        item, k, v = xs
        return buffer_add(buf, item, k, v), None

    buffer, _ = jax.lax.scan(body, buffer, (items, jax.random.split(key, n), valid))
    return buffer


def buffer_sample(buffer: ReplayBuffer, key: jax.Array, num: int,
                  mask: jax.Array | None = None) -> tuple[Any, jax.Array]:
    """Draws ``num`` items uniformly, with replacement, from the filled slots.

    Args:
      buffer: the buffer.
      key: PRNG key.
      num: the number of items (static).
      mask: optional ``[capacity]`` bool restricting the draw to these slots (and filled ones).

    Returns:
      ``(items, ok)``: ``items`` a pytree with leading ``[num]`` axis; ``ok`` a bool scalar,
      ``False`` when no slot qualifies (then ``items`` are slot 0's, meaningless: mask them).
    """
    allowed = buffer.filled if mask is None else jnp.logical_and(buffer.filled, mask)
    ok = jnp.any(allowed)
    logits = jnp.where(allowed | ~ok, 0.0, -jnp.inf)
    idx = jax.random.categorical(key, logits, shape=(num,))
    return jax.tree.map(lambda x: x[idx], buffer.data), ok


# --- task groups ------------------------------------------------------------------------------
def _check_pair(where: str, name: str, value: Any) -> Range:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
        raise ValueError(f"{where}: {name}: expected a number or a (low, high) pair, "
                         f"got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{where}: {name}: range must be finite, got ({low}, {high})")
    if low > high:
        raise ValueError(f"{where}: {name}: low must be <= high, got ({low}, {high})")
    return (low, high)


def _normalise_groups(groups: Any) -> tuple[dict[str, Range], ...]:
    if isinstance(groups, Mapping) or not isinstance(groups, (tuple, list)):
        raise ValueError(f"task_groups: expected a list of groups (dicts of range name -> "
                         f"(low, high)), got {groups!r}")
    if not groups:
        raise ValueError("task_groups: empty; give at least one group")
    out = []
    for i, group in enumerate(groups, 1):
        if not isinstance(group, Mapping):
            raise ValueError(f"task_groups: group {i}: expected a dict of range name -> "
                             f"(low, high), got {group!r}")
        if not group:
            raise ValueError(f"task_groups: group {i} is empty")
        bad = [k for k in group if not isinstance(k, str)]
        if bad:
            raise ValueError(f"task_groups: group {i}: range names must be strings, "
                             f"got {bad[0]!r}")
        out.append({k: _check_pair(f"task_groups: group {i}", k, v) for k, v in group.items()})
    return tuple(out)


def parse_task_groups(text: str) -> tuple[dict[str, Range], ...]:
    """Parses the command-line syntax of a task-group schedule.

    Groups are separated by ``;``, a group's range overrides by ``,``; an override is
    ``NAME=LOW:HIGH`` or ``NAME=VALUE`` (a fixed value). Whitespace is ignored.

    Args:
      text: e.g. ``"goal_radius=0.4:0.5;goal_radius=0.2:0.3;goal_radius=0:0.1"`` or
        ``"velocity=0:1;velocity=1:2;velocity=2:3"``.

    Returns:
      One dict ``name -> (low, high)`` per group, in stage order.

    Raises:
      ValueError: empty text, an empty group, an override without ``=``, a name given twice in
        a group, a value that is not a number or ``LOW:HIGH``, or ``LOW > HIGH``.

    >>> parse_task_groups("goal_radius=0.4:0.5; goal_radius=0:0.1")
    ({'goal_radius': (0.4, 0.5)}, {'goal_radius': (0.0, 0.1)})
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty; expected groups separated by ';', e.g. "
                         "'goal_radius=0.4:0.5;goal_radius=0:0.1'")
    parts = text.split(";")
    if parts and not parts[-1].strip():  # a trailing ';' is harmless
        parts = parts[:-1]
    groups = []
    for i, part in enumerate(parts, 1):
        if not part.strip():
            raise ValueError(f"group {i} is empty (two ';' in a row?)")
        group: dict[str, Range] = {}
        for item in part.split(","):
            item = item.strip()
            if not item:
                raise ValueError(f"group {i}: empty override (a stray ','?)")
            if "=" not in item:
                raise ValueError(f"group {i}: expected NAME=LOW:HIGH, got {item!r}")
            name, value = (s.strip() for s in item.split("=", 1))
            if not name:
                raise ValueError(f"group {i}: missing range name in {item!r}")
            if name in group:
                raise ValueError(f"group {i}: {name!r} given twice")
            try:
                numbers = tuple(float(v) for v in value.split(":"))
            except ValueError:
                numbers = ()
            if len(numbers) not in (1, 2) or not all(math.isfinite(v) for v in numbers):
                raise ValueError(f"group {i}: {name}: expected LOW:HIGH or a number, "
                                 f"got {value!r}")
            group[name] = _check_pair(f"group {i}", name,
                                      numbers if len(numbers) == 2 else numbers[0])
        groups.append(group)
    return tuple(groups)


def format_task_groups(groups: Any) -> str:
    """Inverse of :func:`parse_task_groups` (for messages and tables)."""
    return ";".join(",".join(f"{k}={lo:g}:{hi:g}" for k, (lo, hi) in g.items()) for g in groups)


def check_task_groups(tasks: TaskDistribution, groups: Any) -> tuple[dict[str, Range], ...]:
    """Validates ``groups`` against ``tasks``' range names (``tasks.ranges``).

    Returns:
      The groups, normalised (tuples of floats).

    Raises:
      ValueError: an unknown range name (lists the valid ones), or a malformed group.
    """
    groups = _normalise_groups(groups)
    for i, group in enumerate(groups, 1):
        unknown = [k for k in group if k not in tasks.ranges]
        if unknown:
            raise ValueError(f"task_groups: group {i}: unknown range {unknown[0]!r} for "
                             f"{tasks.env_name}; valid: {', '.join(tasks.ranges)}")
    return groups


def group_tasks(tasks: TaskDistribution, group: Mapping[str, Range]) -> TaskDistribution:
    """``tasks`` with one group's range overrides (its ``train``/``test`` ranges; ``ood``
    unchanged). ``group_tasks(tasks, g).test`` draws the group's held-out tasks."""
    plain = TaskDistribution(env_name=tasks.env_name, sampler=tasks.sampler,
                             ranges=tasks.ranges, ood_ranges=tasks.ood_ranges, split=tasks.split)
    return dataclasses.replace(plain, ranges={**tasks.ranges, **dict(group)})


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
    """A continual meta-training schedule with task replay.

    Attributes:
      task_groups: one dict of range overrides (name -> (low, high), names of the env's task
        distribution, ``tasks.ranges``) per stage, in order; e.g. ``({"goal_radius": (0.4,
        0.5)}, {"goal_radius": (0.0, 0.1)})``.
      iterations_per_stage: meta-iterations spent on each group (>= 1); iterations after the
        last stage stay on the last group.
      replay_ratio: fraction in [0, 1] of each meta-iteration's tasks drawn from the replay
        buffer (rounded to the nearest count, halves up; 0 turns replay off; 1 replays every
        task once an earlier stage's task is in the buffer, so later groups are never trained).
      replay_capacity: buffer slots (>= 1).
      buffer: ``"reservoir"`` (algorithm R: a uniform sample of all tasks seen) or ``"ring"``
        (the most recent tasks).
    """

    task_groups: tuple[Mapping[str, Range], ...]
    iterations_per_stage: int
    replay_ratio: float = 0.3
    replay_capacity: int = 100
    buffer: str = "reservoir"

    def __post_init__(self):
        object.__setattr__(self, "task_groups", _normalise_groups(self.task_groups))
        check_positive_int("iterations_per_stage", self.iterations_per_stage)
        r = self.replay_ratio
        if (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r)
                or not 0.0 <= r <= 1.0):
            raise ValueError(f"replay_ratio: expected a number in [0, 1], got {r!r}")
        object.__setattr__(self, "replay_ratio", float(r))
        check_positive_int("replay_capacity", self.replay_capacity)
        if self.buffer not in BUFFER_KINDS:
            raise ValueError(f"buffer: expected one of {', '.join(BUFFER_KINDS)}, "
                             f"got {self.buffer!r}")

    @property
    def num_stages(self) -> int:
        return len(self.task_groups)

    @property
    def total_iterations(self) -> int:
        """``num_stages × iterations_per_stage``."""
        return self.num_stages * self.iterations_per_stage

    def to_dict(self) -> dict[str, Any]:
        """JSON-able data (ranges as lists); ``ContinualConfig(**d)`` rebuilds it."""
        return {"task_groups": [{k: list(v) for k, v in g.items()} for g in self.task_groups],
                "iterations_per_stage": self.iterations_per_stage,
                "replay_ratio": self.replay_ratio, "replay_capacity": self.replay_capacity,
                "buffer": self.buffer}

    def check_num_tasks(self, num_tasks: int) -> None:
        """Raises if a positive ``replay_ratio`` replays no task of a ``num_tasks`` batch."""
        if self.replay_ratio > 0 and replay_count(self.replay_ratio, num_tasks) == 0:
            raise ValueError(f"replay_ratio: {self.replay_ratio:g} of num_tasks {num_tasks} "
                             f"rounds to 0 replayed tasks per iteration; raise either (or set "
                             f"0 to turn replay off)")


def replay_count(replay_ratio: float, num_tasks: int) -> int:
    """Tasks of a ``num_tasks`` batch drawn from the buffer: ``round(ratio × num_tasks)``, halves
    rounded up (``0.3 × 20 = 6``, ``0.3 × 8 = 2.4 -> 2``, ``0.5 × 5 = 2.5 -> 3``)."""
    return min(num_tasks, int(math.floor(replay_ratio * num_tasks + 0.5 + 1e-9)))


def stage_of(iteration: jax.typing.ArrayLike, iterations_per_stage: int,
             num_stages: int) -> jax.Array:
    """The 0-based stage of the update that starts at ``iteration`` (updates done so far):
    ``min(iteration // iterations_per_stage, num_stages - 1)``."""
    return jnp.minimum(jnp.asarray(iteration) // iterations_per_stage, num_stages - 1)


# --- mixing -----------------------------------------------------------------------------------
@struct.dataclass
class TaskRecord:
    """A buffer entry: a task and the 0-based stage it was drawn in (int32)."""

    task: Any
    stage: jax.Array


def mix_tasks(key: jax.Array, sample_current: Callable[[jax.Array], Any],
              buffer: ReplayBuffer | None, stage: jax.typing.ArrayLike, num_tasks: int,
              replay_ratio: float) -> tuple[Any, jax.Array]:
    """One meta-iteration's task batch: replayed tasks first, then current-group tasks.

    Args:
      key: PRNG key.
      sample_current: ``key -> task`` for the current group (vmapped here).
      buffer: a buffer of :class:`TaskRecord` (or ``None``: no replay).
      stage: the current stage; only entries of earlier stages are replayed.
      num_tasks: the batch size (static).
      replay_ratio: the fraction of replayed tasks (static; :func:`replay_count`).

    Returns:
      ``(tasks, replayed)``: the tasks (leading ``[num_tasks]`` axis) and a ``[num_tasks]`` bool,
      ``True`` for the first ``replay_count(replay_ratio, num_tasks)`` positions once the buffer
      holds a task of an earlier stage, all ``False`` before.
    """
    k_cur, k_rep = jax.random.split(key)
    current = jax.vmap(sample_current)(jax.random.split(k_cur, num_tasks))
    n_replay = replay_count(replay_ratio, num_tasks) if buffer is not None else 0
    if n_replay == 0:
        return current, jnp.zeros((num_tasks,), bool)
    past, ok = buffer_sample(buffer, k_rep, n_replay, mask=buffer.data.stage < stage)
    replayed = jnp.logical_and(jnp.arange(num_tasks) < n_replay, ok)

    def merge(cur, old):
        pad = jnp.concatenate([old.astype(cur.dtype), cur[n_replay:]], axis=0)
        shape = (num_tasks,) + (1,) * (cur.ndim - 1)
        return jnp.where(replayed.reshape(shape), pad, cur)

    return jax.tree.map(merge, current, past.task), replayed


@dataclasses.dataclass(frozen=True, eq=False)
class MixedTasks(TaskDistribution):
    """A task distribution that follows the schedule: its ``train`` batches are
    :func:`mix_tasks` of the stage's group and the buffer; ``test`` samples the stage's group's
    held-out tasks; ``ood`` is the env's.

    Built inside the traced ``update`` with the traced ``stage`` and ``buffer``; not meant to be
    hashed or used as a static argument (it hashes as the env's distribution).

    Attributes:
      groups: the range overrides of each stage (static).
      stage: int32 scalar, the current stage (traced).
      buffer: a :class:`ReplayBuffer` of :class:`TaskRecord` (traced), or ``None``.
      replay_ratio: the fraction of replayed tasks (static).
    """

    groups: tuple = ()
    stage: Any = 0
    buffer: Any = None
    replay_ratio: float = 0.0

    def sample(self, key: jax.Array) -> Any:
        """One task of the current stage's group (no replay). Pure and jit-able."""
        if self.split == "ood" or not self.groups:
            return super().sample(key)
        branches = [group_tasks(self, g).with_split(self.split).sample for g in self.groups]
        return jax.lax.switch(jnp.asarray(self.stage, jnp.int32), branches, key)

    def sample_batch(self, key: jax.Array, num_tasks: int) -> Any:
        """``num_tasks`` tasks; on the ``train`` split mixed with replayed ones
        (:func:`mix_tasks`), else all from the current group."""
        num_tasks = check_positive_int("num_tasks", num_tasks)
        if self.split != "train":
            return jax.vmap(self.sample)(jax.random.split(key, num_tasks))
        return mix_tasks(key, self.sample, self.buffer, self.stage, num_tasks,
                         self.replay_ratio)[0]


# --- the continual algorithm ------------------------------------------------------------------
@struct.dataclass
class ContinualState:
    """A ``TrainState`` (same fields, so the Runner and checkpoints treat it alike) plus the
    replay buffer.

    Attributes:
      params, opt_state, key, iteration: as in :class:`~jmeta.algorithms.base.TrainState`.
      buffer: the :class:`ReplayBuffer` of :class:`TaskRecord`.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    iteration: jax.Array
    buffer: ReplayBuffer

    @property
    def train_state(self) -> TrainState:
        return TrainState(params=self.params, opt_state=self.opt_state, key=self.key,
                          iteration=self.iteration)


def make(make_algorithm: Callable[[TaskDistribution], Algorithm], tasks: TaskDistribution,
         config: ContinualConfig, num_tasks: int | None = None) -> Algorithm:
    """Wraps an RL algorithm into continual meta-training over ``config``'s task groups.

    Args:
      make_algorithm: ``tasks -> Algorithm`` (e.g. ``lambda t: maml_rl.make(cfg, env, t)``);
        called inside the traced update with a :class:`MixedTasks`, so it must be pure Python
        (jmeta's ``make`` functions are). The algorithm's ``update`` must sample its tasks with
        ``tasks.train.sample_batch`` and report them as ``metrics["task_params"]`` (MAML-RL and
        RL² do).
      tasks: the env's task distribution (the groups override its ranges).
      config: the schedule and replay settings.
      num_tasks: the algorithm's tasks per iteration, to check that a positive ``replay_ratio``
        replays at least one (optional).

    Returns:
      ``Algorithm(init, update, train, adapt)`` over :class:`ContinualState`. ``update`` adds the
      metrics ``stage`` (0-based), ``replayed_tasks`` and ``buffer_size``. ``adapt`` is the
      wrapped algorithm's (on ``state.train_state``). ``sample``/``learn`` are ``None``: the
      decoupled samplers of :mod:`jmeta.distributed` do not run continual schedules.

    Raises:
      ValueError: an unknown range name in the groups, or a replay ratio that replays no task.
    """
    if not isinstance(config, ContinualConfig):
        raise ValueError(f"config: expected a ContinualConfig, got {type(config).__name__}")
    groups = check_task_groups(tasks, config.task_groups)
    if num_tasks is not None:
        config.check_num_tasks(num_tasks)
    host_algo = make_algorithm(tasks)
    use_replay = config.replay_ratio > 0

    def mixed(stage, buffer) -> MixedTasks:
        return MixedTasks(env_name=tasks.env_name, sampler=tasks.sampler, ranges=tasks.ranges,
                          ood_ranges=tasks.ood_ranges, split=tasks.split, groups=groups,
                          stage=stage, buffer=buffer if use_replay else None,
                          replay_ratio=config.replay_ratio)

    def init(key: jax.Array) -> ContinualState:
        ts = host_algo.init(key)
        example = TaskRecord(task=tasks.sample(jax.random.key(0)),
                             stage=jnp.zeros((), jnp.int32))
        buffer = buffer_init(example, config.replay_capacity, config.buffer)
        return ContinualState(params=ts.params, opt_state=ts.opt_state, key=ts.key,
                              iteration=ts.iteration, buffer=buffer)

    def update(state: ContinualState):
        stage = stage_of(state.iteration, config.iterations_per_stage, len(groups)).astype(
            jnp.int32)
        buffer = state.buffer
        algo = make_algorithm(mixed(stage, buffer))
        ts, metrics = algo.update(state.train_state)
        batch = metrics["task_params"]
        n = jax.tree.leaves(batch)[0].shape[0]
        n_replay = replay_count(config.replay_ratio, n) if use_replay else 0
        has_past = jnp.any(buffer.filled & (buffer.data.stage < stage))
        replayed = jnp.logical_and(jnp.arange(n) < n_replay, has_past)
        records = TaskRecord(task=batch, stage=jnp.full((n,), stage, jnp.int32))
        buffer = buffer_add_batch(buffer, records, jax.random.fold_in(state.key, _BUFFER_SALT),
                                  valid=~replayed)
        metrics = {**metrics, "stage": stage,
                   "replayed_tasks": jnp.sum(replayed).astype(jnp.int32),
                   "buffer_size": buffer.size}
        return ContinualState(params=ts.params, opt_state=ts.opt_state, key=ts.key,
                              iteration=ts.iteration, buffer=buffer), metrics

    def adapt(state: ContinualState, task: Any, key: jax.Array):
        return host_algo.adapt(state.train_state, task, key)

    return Algorithm(init=init, update=update, train=scan_train(update), adapt=adapt)
