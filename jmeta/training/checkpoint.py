"""orbax checkpoints of a ``TrainState``: params, optimiser state, PRNG key, iteration, JSON meta.

Each checkpoint is a step directory ``RUN_DIR/checkpoints/<iteration>/`` with two orbax items:

* ``state``: the ``TrainState`` as a nested dict of arrays (``flax.serialization.to_state_dict``:
  params, the *whole* optimiser state — the Brax#655 bug, a restore that drops it, is tested
  against — the PRNG key as raw ``jax.random.key_data`` and the iteration), saved with orbax's
  standard handler;
* ``meta``: JSON (the run's ``RunSpec``/config, the key's PRNG implementation, the iteration, the
  ranking metric's value, the last scalar metrics).

Restoring goes into a ``jax.eval_shape(algo.init, key)`` target, so shapes, dtypes and the
pytree structure come from the code, never from the file; nothing is pickled or evaluated.
orbax writes each checkpoint in a temporary directory and renames it when complete, so a process
killed mid-write leaves the previous checkpoints intact (the temporary directory is removed the
next time the directory is opened). A checkpoint that exists but cannot be read (truncated or
garbled files) is reported in one line and the next older one is restored instead.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import serialization

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "abstract_tree",
    "state_to_tree",
    "tree_to_state",
]

FORMAT = 1


class CheckpointError(RuntimeError):
    """No checkpoint of a directory could be restored."""


def _typed_key(key: Any) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def state_to_tree(state: Any) -> dict[str, Any]:
    """A ``TrainState`` as a nested dict of arrays, its key as raw ``key_data`` (uint32).

    Args:
      state: a ``TrainState`` (``params``, ``opt_state``, ``key``, ``iteration``).

    Returns:
      ``flax.serialization.to_state_dict`` of the state with a raw key.
    """
    key = jax.random.key_data(state.key) if _typed_key(state.key) else state.key
    return serialization.to_state_dict(state.replace(key=key))


def abstract_tree(abstract_state: Any) -> dict[str, Any]:
    """The restore target of :func:`state_to_tree`'s output for a state of this shape.

    Args:
      abstract_state: ``jax.eval_shape(algo.init, key)`` (or a concrete state).

    Returns:
      The nested dict with ``jax.ShapeDtypeStruct`` leaves on the default device.
    """
    key = abstract_state.key
    if _typed_key(key):
        key = jax.eval_shape(jax.random.key_data, key)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    tree = serialization.to_state_dict(abstract_state.replace(key=key))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def tree_to_state(abstract_state: Any, tree: dict[str, Any], key_impl: str | None) -> Any:
    """Inverse of :func:`state_to_tree`.

    Args:
      abstract_state: the target's structure (``jax.eval_shape(algo.init, key)``).
      tree: the restored nested dict.
      key_impl: the PRNG implementation of a typed key (``"threefry2x32"``), ``None`` for a raw
        uint32 key.

    Returns:
      The ``TrainState`` with its typed key rebuilt by ``jax.random.wrap_key_data``.
    """
    state = serialization.from_state_dict(abstract_state, tree)
    if key_impl is not None:
        state = state.replace(key=jax.random.wrap_key_data(tree["key"], impl=key_impl))
    return state


def key_impl_name(key: Any) -> str | None:
    """The PRNG implementation name of a typed key, ``None`` for a raw uint32 key."""
    return str(jax.random.key_impl(key)) if _typed_key(key) else None


class Checkpoints:
    """The checkpoints of one run: save, keep the last ``keep`` and the best, restore with fallback.

    Args:
      directory: ``RUN_DIR/checkpoints`` (created).
      keep: how many of the latest checkpoints to keep (>= 1).
      best_mode: ``"max"`` or ``"min"``: also keep the checkpoint with the best ranking value;
        ``None``: keep only the latest.
      on_event: ``on_event(event, message, **fields)`` for fallbacks (the Runner logs and prints).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3,
                 best_mode: str | None = None,
                 on_event: Callable[..., None] | None = None):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.best_mode = best_mode
        self.on_event = on_event or (lambda *a, **k: None)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # pruned here: the last `keep` plus the best
            create=True,
            cleanup_tmp_directories=True,  # a write killed mid-way leaves a tmp dir: remove it
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "meta"))
        self._values: dict[int, float | None] = {}
        self._unreadable: set[int] = set()

    # --- queries ----------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """The complete checkpoints' steps (iterations), ascending."""
        return sorted(int(s) for s in self._manager.all_steps())

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON meta of checkpoint ``step``."""
        args = self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())
        return dict(self._manager.restore(step, args=args)["meta"])

    def best_step(self) -> int | None:
        """The step with the best ranking value (``None`` without ``best_mode`` or values)."""
        if self.best_mode is None:
            return None
        scored = [(v, s) for s in self.steps() if (v := self._value(s)) is not None]
        if not scored:
            return None
        # ties: the latest
        pick = max if self.best_mode == "max" else min
        best = pick(v for v, _ in scored)
        return max(s for v, s in scored if v == best)

    def _value(self, step: int) -> float | None:
        if step not in self._values:
            try:
                value = self.meta(step).get("best_value")
            except Exception:  # unreadable meta: never the best
                value = None
            self._values[step] = value if isinstance(value, (int, float)) and math.isfinite(
                value) else None
        return self._values[step]

    # --- save -------------------------------------------------------------------------------
    def save(self, state: Any, meta: dict[str, Any], best_value: float | None = None) -> None:
        """Writes checkpoint ``int(state.iteration)`` (atomically) and prunes old ones.

        Args:
          state: the ``TrainState``.
          meta: JSON-able data stored beside it (spec, config, time, metrics...).
          best_value: the value checkpoints are ranked by (``None``: not ranked).
        """
        ocp = self._ocp
        step = int(state.iteration)
        if step in self.steps():  # an unreadable leftover of a previous process at this step
            self._set_aside(step)
        best_value = (float(best_value) if best_value is not None and math.isfinite(best_value)
                      else None)
        meta = {"format": FORMAT, **meta, "iteration": step, "key_impl": key_impl_name(state.key),
                "best_value": best_value}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state_to_tree(state)),
                                  meta=ocp.args.JsonSave(meta))
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()
        self._values[step] = best_value
        self._prune()

    def _prune(self):
        steps = self.steps()
        keep = set(steps[-self.keep:])
        best = self.best_step()
        if best is not None:
            keep.add(best)
        for s in steps:
            if s not in keep:
                self._manager.delete(s)
                self._values.pop(s, None)

    def _set_aside(self, step: int):
        """Moves an unreadable step directory to ``checkpoints.corrupt/`` (kept for inspection)."""
        src = self.directory / str(step)
        dest_root = self.directory.parent / (self.directory.name + ".corrupt")
        dest_root.mkdir(parents=True, exist_ok=True)
        dest, i = dest_root / str(step), 1
        while dest.exists():
            dest, i = dest_root / f"{step}.{i}", i + 1
        if src.exists():
            shutil.move(str(src), str(dest))
        self._manager.reload()
        self._values.pop(step, None)

    # --- restore ----------------------------------------------------------------------------
    def restore(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
        """The latest readable checkpoint, falling back to older ones.

        Each unreadable checkpoint is reported with ``on_event("checkpoint_fallback", ...)``
        in one line naming the step, the error and the checkpoint tried next.

        Args:
          abstract_state: ``jax.eval_shape(algo.init, key)``.

        Returns:
          ``(state, meta)``, or ``None`` when the directory holds no checkpoint.

        Raises:
          CheckpointError: there are checkpoints but none can be restored (for instance a run
            of another algorithm or config, or every file corrupt).
        """
        ocp = self._ocp
        target = abstract_tree(abstract_state)
        steps = self.steps()
        errors = []
        for i in range(len(steps) - 1, -1, -1):
            step = steps[i]
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
                meta = dict(restored["meta"])
                state = tree_to_state(abstract_state, restored["state"], meta.get("key_impl"))
                if int(state.iteration) != step or int(meta.get("iteration", -1)) != step:
                    raise ValueError(f"it holds iteration {int(state.iteration)}, "
                                     f"meta {meta.get('iteration')}")
                self._unreadable.discard(step)
                return state, meta
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                text = str(e).strip()
                reason = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]
                errors.append(f"{step} ({reason})")
                self._unreadable.add(step)
                nxt = f"checkpoint {steps[i - 1]}" if i > 0 else "nothing (no older checkpoint)"
                self.on_event("checkpoint_fallback",
                              f"checkpoint {step} in {self.directory} is unreadable ({reason}); "
                              f"falling back to {nxt}", step=step)
        if steps:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored: "
                                  + "; ".join(errors))
        return None

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
