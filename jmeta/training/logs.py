"""A run's logs: ``metrics.jsonl``, ``events.jsonl`` and TensorBoard, written between chunks.

``RUN_DIR/metrics.jsonl`` holds one JSON object per meta-iteration::

    {"iteration": 12,                    # 1-based count after the update
     "time": 31.4,                       # seconds of training since the run started (all resumes)
     "metrics": {"return_post": -8.1, "kl": 0.004, ...},        # every scalar metric
     "tasks": {"return": [...], "return_pre": [...], "goal_0": [...], "goal_1": [...]}}

``"tasks"`` holds one value per task of the iteration's task batch: the per-task returns
(``"return"``: post-adaptation for MAML-RL, which also has ``"return_pre"``; the trial return for
RL²) and the task's parameters, flattened by :func:`flatten_task_params`. Non-finite numbers are
written as ``null`` (JSON has no NaN). ``RUN_DIR/events.jsonl`` holds one object per event
(``{"iteration", "time", "event", "message", ...}``): starts, resumes, non-finite rollbacks,
checkpoint fallbacks, aborts.

Both files are append-only except that a resumed run drops the metrics lines after the restored
iteration (:meth:`JsonlLog.truncate_after`), so a crash after logging a chunk but before its
checkpoint does not duplicate lines, and a line cut by a crash is dropped.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import numpy as np

__all__ = [
    "JsonlLog",
    "TensorBoardLog",
    "flatten_task_params",
    "iteration_records",
    "jsonable",
    "read_jsonl",
]

# Per-task metrics the algorithms return, and their column in "tasks".
TASK_RETURN_COLUMNS = {
    "task_returns_post": "return",  # maml_rl: after adaptation
    "task_returns_pre": "return_pre",  # maml_rl: before adaptation
    "task_returns": "return",  # rl2: the trial's return
}
TASK_PARAMS = "task_params"
MAX_COMPONENTS = 4  # task-parameter leaves up to this size are logged per component
MAX_VECTOR_METRIC = 16  # vector metrics up to this size are logged per component (name_i)


def jsonable(value: Any) -> Any:
    """``value`` with numpy/JAX numbers as Python numbers and non-finite floats as ``None``.

    Args:
      value: nested dicts/lists/tuples of numbers, arrays, strings, bools or ``None``.

    Returns:
      The same structure, safe for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _path_name(path) -> str:
    parts = []
    for p in path:
        if isinstance(p, jax.tree_util.GetAttrKey):
            part = p.name
        elif isinstance(p, jax.tree_util.DictKey):
            part = str(p.key)
        elif isinstance(p, jax.tree_util.SequenceKey):
            part = str(p.idx)
        elif isinstance(p, jax.tree_util.FlattenedIndexKey):
            part = str(p.key)
        else:
            part = str(p).strip(".[]'\"")
        if part != "env_params":  # wrappers' inner task (ObservationNoise): name it by its fields
            parts.append(part)
    return ".".join(parts) or "param"


def flatten_task_params(task_params: Any, num_tasks: int | None = None) -> dict[str, np.ndarray]:
    """Named per-task float columns of a batch of tasks.

    Scalar leaves keep their field path (``"target"``, ``"friction"``); leaves of up to 4
    elements get one column per component (``"goal_0"``, ``"goal_1"``); larger leaves are
    summarised by their per-task mean (``"physics.geom_friction.mean"``). Path parts are joined
    with ``"."``; a wrapper's ``env_params`` level is left out of the names.

    Args:
      task_params: an ``EnvParams`` pytree with a leading ``[num_tasks]`` axis on every leaf.
      num_tasks: the expected task count (leaves without that leading axis are skipped).

    Returns:
      ``name -> [num_tasks]`` float64 arrays, in the pytree's order.
    """
    columns: dict[str, np.ndarray] = {}
    leaves = jax.tree_util.tree_flatten_with_path(task_params)[0]
    for path, leaf in leaves:
        x = np.asarray(leaf)
        if x.ndim == 0 or (num_tasks is not None and x.shape[0] != num_tasks):
            continue
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            continue
        name = _path_name(path)
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        if flat.shape[1] == 1:
            columns[name] = flat[:, 0]
        elif flat.shape[1] <= MAX_COMPONENTS:
            for j in range(flat.shape[1]):
                columns[f"{name}_{j}"] = flat[:, j]
        elif flat.shape[1] > 0:
            columns[f"{name}.mean"] = flat.mean(axis=1)
    return columns


def iteration_records(metrics: Mapping[str, Any], first_iteration: int,
                      times: Iterable[float]) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records of one chunk.

    Args:
      metrics: a chunk's stacked metrics (``train``'s second output, on the host): scalars
        ``[n]``; per-task returns ``[n, num_tasks]`` (``task_returns*``); ``task_params``, an
        ``EnvParams`` pytree ``[n, num_tasks, ...]``; small vectors ``[n, k]`` (k <= 16) logged as
        ``name_0 .. name_{k-1}``; nested dicts flattened with ``"/"``. Larger arrays are left out.
      first_iteration: the 1-based iteration of the chunk's first update.
      times: ``n`` seconds-since-start values, one per iteration.

    Returns:
      ``n`` dicts ``{"iteration", "time", "metrics", "tasks"}`` with Python floats (NaN kept;
      :func:`jsonable` turns it into ``null`` when written).
    """
    times = list(times)
    n = len(times)
    scalars: dict[str, np.ndarray] = {}
    tasks: dict[str, np.ndarray] = {}

    def add(name: str, value: Any):
        if isinstance(value, Mapping) and name != TASK_PARAMS:
            for k, v in value.items():
                add(f"{name}/{k}" if name else str(k), v)
            return
        if name == TASK_PARAMS:
            returns = next((np.asarray(metrics[k]) for k in TASK_RETURN_COLUMNS if k in metrics),
                           None)
            num_tasks = returns.shape[1] if returns is not None and returns.ndim == 2 else None
            per_iter = [flatten_task_params(jax.tree.map(lambda x, i=i: np.asarray(x)[i], value),
                                            num_tasks) for i in range(n)]
            for col in per_iter[0] if per_iter else ():
                tasks[col] = np.stack([p[col] for p in per_iter])
            return
        x = np.asarray(value)
        if x.ndim == 0 or x.shape[0] != n or not (np.issubdtype(x.dtype, np.number)
                                                  or x.dtype == np.bool_):
            return
        x = x.astype(np.float64)
        if name in TASK_RETURN_COLUMNS and x.ndim == 2:
            tasks[TASK_RETURN_COLUMNS[name]] = x
        elif x.ndim == 1:
            scalars[name] = x
        elif x.ndim == 2 and x.shape[1] <= MAX_VECTOR_METRIC and not name.startswith("task_"):
            for j in range(x.shape[1]):
                scalars[f"{name}_{j}"] = x[:, j]

    for name, value in metrics.items():
        add(name, value)
    # "return" columns first, then the task parameters
    order = [c for c in ("return", "return_pre") if c in tasks] + [
        c for c in tasks if c not in ("return", "return_pre")]
    return [{
        "iteration": first_iteration + i,
        "time": float(times[i]),
        "metrics": {k: float(v[i]) for k, v in scalars.items()},
        "tasks": {k: tasks[k][i].tolist() for k in order},
    } for i in range(n)]


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL file; a final line cut by a crash (unparseable) is left out.

    Args:
      path: the file (missing: no records).

    Returns:
      The parsed objects, in order, up to the first line that does not parse.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open() as f:
        for line in f:
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records



def write_atomic(path: Path, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through ``PATH.tmp`` and a rename, so a crash at any moment
    leaves ``path`` with either its old or its new content, never a part of it."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


class JsonlLog:
    """An append-only JSONL file, one record per line, flushed and fsynced per batch.

    Args:
      path: the file; created on the first write. A last line left incomplete by a crash is
        removed on open, so appended records always start on their own line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._drop_partial_tail()

    def _drop_partial_tail(self):
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(keep)

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Appends ``records`` (non-finite numbers become ``null``).

        Args:
          records: JSON-able mappings (numpy/JAX numbers allowed).
        """
        lines = [json.dumps(jsonable(r), allow_nan=False) + "\n" for r in records]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, iteration: int) -> int:
        """Drops the records whose ``"iteration"`` is above ``iteration`` (and any unparseable
        line with everything after it), keeping the rest byte for byte.

        Args:
          iteration: the last iteration to keep (0 drops every record).

        Returns:
          The number of lines dropped.
        """
        if not self.path.exists():
            return 0
        lines = self.path.read_bytes().splitlines(keepends=True)
        kept = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if int(record.get("iteration", 0)) > iteration:
                break
            kept.append(line)
        dropped = len([x for x in lines if x.strip()]) - len(kept)
        if dropped:
            write_atomic(self.path, b"".join(kept))
        return dropped


class TensorBoardLog:
    """TensorBoard event files (tensorboardX) under ``RUN_DIR/tb``.

    Writes every scalar metric (tag = metric name) and a histogram of each per-task column
    (``tasks/return``, ``tasks/return_pre``) per iteration.

    Args:
      logdir: the event files' directory.
      purge_step: on resume, the first iteration written again: TensorBoard hides events of
        earlier runs from that step on, so a crash between logging and checkpointing leaves no
        duplicated points.
    """

    def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
        from tensorboardX import SummaryWriter  # host-only dependency, imported on use

        # event file names have a 1 s resolution: a unique suffix keeps a quick resume from
        # overwriting the previous file
        suffix = f".{os.getpid()}.{purge_step or 0}.{time.time_ns() % 10**9}"
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=10,
                                    filename_suffix=suffix)

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Adds the scalars and per-task histograms of ``records`` and flushes.

        Args:
          records: :func:`iteration_records` output.
        """
        for r in records:
            step = int(r["iteration"])
            for name, value in r["metrics"].items():
                self.writer.add_scalar(name, value, step)
            for name in ("return", "return_pre"):
                values = np.asarray(r["tasks"].get(name, []), np.float64)
                values = values[np.isfinite(values)]
                if values.size:
                    self.writer.add_histogram(f"tasks/{name}", values, step)
        self.writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self.writer.close()
