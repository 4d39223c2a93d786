"""``jmeta doctor``: read a run's logged curves and report what went wrong, with the numbers.

The doctor reads what the Runner writes in a run directory and nothing else:

* ``metrics.jsonl``: one JSON object per meta-iteration, ``{"iteration": int, "time": float,
  "metrics": {name: float | null}, "tasks": {"return": [...], "<param>": [...], ...}}``; ``null``
  (or a ``NaN``/``Infinity`` literal) is a non-finite value; ``"tasks"`` may be absent. A
  list-valued metric (RL²'s ``episode_returns``) becomes ``name_0, name_1, …``, a per-task list
  (a 2-D goal) ``goal_0, goal_1``; booleans (TRPO's ``step_accepted``) become 0/1. An iteration
  logged twice (a resumed run re-logs those after its last checkpoint): the later line wins.
* ``events.jsonl`` (optional): ``{"iteration", "time", "event", "message", ...}``; the doctor
  reports ``abort``, ``nonfinite_rollback`` and ``checkpoint_fallback`` events.
* ``spec.json`` / ``config.json`` (optional, best effort): only to find ``max_kl`` and the line
  search's ``ls_backtracks`` when they are not passed; no finding needs them.
* ``eval_test.json`` / ``eval_ood.json`` (optional): what ``jmeta evaluate RUN_DIR [--split ood]``
  writes, the meta-test curve (``mean``/``sem`` per adaptation step or trial episode) on a split;
  used only for ``meta_overfitting``.

:func:`diagnose` returns a list of :class:`Finding`, most severe first. Severity is a number in
[0, 1] used for ranking: ``>= 0.8`` the run is broken (abort, non-finite values), ``>= 0.5`` it
learns badly (drops, collapses, blow-ups, no adaptation gain), ``>= 0.3`` worth a look, below that
information (a converged plateau, a task parameter that matters). A finding is computed only when
its inputs were logged; every threshold is a field of :class:`DoctorConfig`, which
:func:`diagnose` also takes as keyword arguments.

**The return curve.** ``DoctorConfig.return_metric`` when given, else ``return_post`` (MAML-RL),
else ``trial_return`` (RL²), else the metric whose name contains ``"return"`` with the most finite
values (ties: alphabetical), else the per-iteration mean of the per-task ``"return"`` column.

**Scale.** Returns are often negative and have no natural unit, so a change is compared with
scales of the curve itself: its *noise* σ (robust: 1.4826·MAD of the first differences / √2, so
trends do not inflate it; per window where that matters) and its *range* (max − min of the curve
smoothed by a rolling median of ``window`` iterations). Percentages are ``100·(new − ref)/|ref|``
(sign-aware: −12.1 → −19.7 is a 63 % fall), quoted only when ``|ref| >= 0.1·scale``; otherwise
the change is given in the curve's units.

**What is found** (kinds):

* ``sudden_drop``: at iteration t, the level just before (the interquartile mean, IQM, of the
  ``window`` points before t, detrended by a Theil–Sen slope so a rise into the fall does not hide
  it) exceeds the IQM of the ``window`` points from t by ``drop_min_frac`` of the range and by
  ``drop_z`` standard errors (from the two windows' own noise, inflated by the noise's correlation
  time). The jump is then located as the best single change in mean; the message gives the levels,
  the iterations, and whether (when) the curve recovered. ``decline``: ending well below the best
  without such a jump.
* ``plateau``: over the last ``plateau_frac`` of the run the return did not improve (the median of
  the last third of that tail minus that of its first third is below ``plateau_z`` s.e. and
  ``plateau_min_gain`` of the range). Severity depends on what came before: never improved from
  the start (high), stuck well below an earlier best (medium), or converged after learning (info).
* ``nonfinite`` (nulls in metrics or per-task returns), ``abort``, ``nonfinite_rollback``,
  ``checkpoint_fallback`` (events), ``truncated_log`` (a killed run's broken last line).
* ``log_std_collapse`` / ``entropy_collapse``: ends below a floor, or falls fast within ``window``.
* ``kl_blowup`` (over ``kl_over_factor·max_kl``, or rising ``blowup_factor``× above its earlier
  level), ``kl_spikes`` / ``grad_norm_spikes`` / ``grad_norm_blowup``, ``line_search_rejections``.
* ``no_adaptation_gain``: over the last ``gain_frac``, ``mean(post − pre) < gain_k·sem`` (a paired
  test over iterations; pytorch-maml-rl#61); for RL², the last minus the first trial episode.
* ``task_attribution``: for each task parameter, the quantile threshold that best separates low
  returns (max Welch t) with per-iteration means removed (the learning trend is not a task
  effect), "return is X % lower for friction < 0.55 than for friction ≥ 0.55", X =
  ``100·(mean_rest − mean_group)/|mean_rest|``; and across each drop, the split whose side fell
  most more than the other ("tasks with friction < 0.55 fell 400 %, the others 1 %"). Parameters
  are taken greedily, each next one tested outside the failing sides already named.
* ``meta_overfitting`` (needs ``eval_test.json`` and ``eval_ood.json``): the meta-tested return
  at the end of adaptation (last step / last trial episode) on the shifted ``ood`` split is below
  the held-out ``test`` split's by more than ``ood_rel_gap`` of ``|test|`` and by more than
  ``ood_k`` standard errors of the difference (the two s.e.m. in quadrature): good on the training
  distribution, collapsing under a shift. The message gives both curves' ends and both
  adaptation gains; the counters are task-range widening and observation noise during
  meta-training (``benchmarks/meta_overfitting.py`` measures them).

>>> findings = diagnose("runs/nav")                       # doctest: +SKIP
>>> print(format_report(findings))                        # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DoctorConfig",
    "DoctorError",
    "Finding",
    "MalformedLogError",
    "NotARunDirError",
    "RunDirNotFoundError",
    "RunLog",
    "TaskSamples",
    "diagnose",
    "findings_to_json",
    "format_report",
    "load_run",
]

METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
EVAL_FILES = {"test": "eval_test.json", "ood": "eval_ood.json"}  # written by `jmeta evaluate`
_SPEC_FILES = ("spec.json", "config.json")


# --------------------------------------------------------------------------------------------------
# Errors


class DoctorError(Exception):
    """Base class of the doctor's input errors; the message is one line naming the problem."""


class RunDirNotFoundError(DoctorError, FileNotFoundError):
    """The run directory does not exist."""


class NotARunDirError(DoctorError, FileNotFoundError):
    """The path exists but holds no ``metrics.jsonl`` (not a jmeta run directory)."""


class MalformedLogError(DoctorError, ValueError):
    """``metrics.jsonl`` / ``events.jsonl`` is empty or has a line that is not a log record."""


# --------------------------------------------------------------------------------------------------
# Findings and thresholds


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis.

    Attributes:
      kind: what was found, e.g. ``"sudden_drop"``, ``"plateau"``, ``"nonfinite"``,
        ``"log_std_collapse"``, ``"kl_blowup"``, ``"no_adaptation_gain"``, ``"task_attribution"``,
        ``"meta_overfitting"``.
      severity: in [0, 1]; findings are ranked by it (see the module docstring for the bands).
      iteration: the (1-based) meta-iteration where the problem starts, or ``None``.
      message: one sentence, with the numbers.
      evidence: the numbers behind the message (JSON-serialisable).
    """

    kind: str
    severity: float
    iteration: int | None
    message: str
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become ``None``)."""
        return _jsonable({"kind": self.kind, "severity": self.severity,
                          "iteration": self.iteration, "message": self.message,
                          "evidence": dict(self.evidence)})


@dataclasses.dataclass(frozen=True)
class DoctorConfig:
    """Thresholds of :func:`diagnose` (every one of them is also a keyword argument of it).

    Attributes:
      return_metric: name of the metric to treat as the return curve; ``None``: the rule in the
        module docstring.
      max_kl: trust-region size the KL is checked against; ``None``: read from ``spec.json`` /
        ``config.json`` when there, else the KL is only compared with its own typical level.
      max_backtracks: line-search length (MAML-RL's ``ls_backtracks``); ``None``: from the spec
        when there. Needed only when ``step_accepted`` was not logged.
      window: smoothing / comparison window in iterations; ``None``: ``clip(n // 20, 5, 50)`` for a
        run of ``n`` logged iterations.
      min_iterations: curves with fewer finite points are not checked for trends.
      drop_min_frac: a sudden drop must remove at least this fraction of the curve's range.
      drop_z: ... and be this many standard errors of the before/after level difference (from
        the two windows' own noise, inflated by the noise's correlation time).
      max_drops: at most this many drops are reported (largest first).
      plateau_frac: the last this fraction of the run is tested for improvement, and a plateau must
        last at least this fraction of the run.
      plateau_z: improvement over the tail counts when it exceeds this many standard errors ...
      plateau_min_gain: ... and this fraction of the curve's range.
      plateau_flat: a run that learned is only called flat when its tail improvement is, at about
        95 % confidence (gain + 2 s.e.), below this fraction of its range (a short run may simply
        be too noisy to tell).
      log_std_min: a mean policy log-std ending below this has collapsed (-2.5: std 0.08).
      log_std_fast_drop: a log-std falling by this many nats within ``window`` iterations collapses.
      entropy_min_frac: an entropy that starts positive and ends below this fraction of its start
        has collapsed.
      entropy_drop_nats: an entropy that starts at or below zero (continuous actions) has collapsed
        when it ends this many nats below its start.
      entropy_fast_frac: a positive entropy losing this fraction of its start within ``window``
        iterations falls fast (for non-positive starts: ``entropy_drop_nats / 2`` nats).
      kl_over_factor: ``kl > kl_over_factor · max_kl`` is over the trust region ...
      kl_over_frac: ... reported when at least this fraction of iterations (or half of some window)
        is over.
      spike_factor: a value above this multiple of both its rolling and its overall median is a
        spike (``kl``, ``grad_norm``).
      blowup_factor: a smoothed ``kl`` / ``grad_norm`` rising to this multiple of its earlier level
        has blown up.
      reject_frac: TRPO line-search rejections reported when at least this fraction of iterations
        (or half of the last window) rejected the step.
      gain_frac: the adaptation gain (``return_post − return_pre``) is tested over the last this
        fraction of the run.
      gain_k: the gain is "within noise" when its mean is below ``gain_k`` standard errors.
      attribution_frac: task parameters are related to per-task returns over the last this fraction
        of the run (when there is no drop to explain).
      attribution_z: a split is reported when its Welch t statistic reaches this ...
      attribution_min_effect: ... and its mean difference is at least this many s.d. of the
        per-task returns (after removing each iteration's mean).
      attribution_min_frac: each side of a split holds at least this fraction of the
        task-samples ...
      attribution_min_n: ... and at least this many.
      attribution_bins: candidate thresholds are this many quantiles (from 5 % to 95 %) of the
        parameter.
      max_attributions: at most this many parameters are reported per analysis.
      ood_rel_gap: meta-overfitting: the ``ood`` return after adaptation is below the ``test``
        one by more than this fraction of ``|test|`` ...
      ood_k: ... and by more than this many standard errors of the difference.
    """

    return_metric: str | None = None
    max_kl: float | None = None
    max_backtracks: int | None = None
    window: int | None = None
    min_iterations: int = 20
    drop_min_frac: float = 0.15
    drop_z: float = 4.0
    max_drops: int = 3
    plateau_frac: float = 0.25
    plateau_z: float = 3.0
    plateau_min_gain: float = 0.02
    plateau_flat: float = 0.1
    log_std_min: float = -2.5
    log_std_fast_drop: float = 1.0
    entropy_min_frac: float = 0.1
    entropy_drop_nats: float = 2.0
    entropy_fast_frac: float = 0.5
    kl_over_factor: float = 1.5
    kl_over_frac: float = 0.1
    spike_factor: float = 10.0
    blowup_factor: float = 5.0
    reject_frac: float = 0.2
    gain_frac: float = 0.5
    gain_k: float = 2.0
    attribution_frac: float = 0.5
    attribution_z: float = 5.0
    attribution_min_effect: float = 0.3
    attribution_min_frac: float = 0.05
    attribution_min_n: int = 20
    attribution_bins: int = 91
    max_attributions: int = 3
    ood_rel_gap: float = 0.5
    ood_k: float = 3.0

    def __post_init__(self):
        def need(name, ok, allowed):
            if not ok:
                raise ValueError(f"DoctorConfig.{name} must be {allowed}, got "
                                 f"{getattr(self, name)!r}")

        for name in ("max_kl",):
            v = getattr(self, name)
            need(name, v is None or (_is_number(v) and v > 0), "None or a number > 0")
        for name in ("max_backtracks", "window"):
            v = getattr(self, name)
            need(name, v is None or (isinstance(v, int) and v >= 1), "None or an integer >= 1")
        for name in ("min_iterations", "max_drops", "attribution_min_n", "max_attributions"):
            v = getattr(self, name)
            need(name, isinstance(v, int) and v >= 1, "an integer >= 1")
        need("attribution_bins", isinstance(self.attribution_bins, int)
             and self.attribution_bins >= 2, "an integer >= 2")
        for name in ("drop_min_frac", "plateau_frac", "plateau_flat", "entropy_min_frac",
                     "entropy_fast_frac", "kl_over_frac", "reject_frac", "gain_frac",
                     "attribution_frac"):
            v = getattr(self, name)
            need(name, _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
        need("attribution_min_frac", _is_number(self.attribution_min_frac)
             and 0 < self.attribution_min_frac < 0.5, "a number in (0, 0.5)")
        for name in ("drop_z", "plateau_z", "gain_k", "attribution_z", "log_std_fast_drop",
                     "entropy_drop_nats", "attribution_min_effect", "ood_rel_gap", "ood_k"):
            v = getattr(self, name)
            need(name, _is_number(v) and v > 0, "a number > 0")
        need("plateau_min_gain", _is_number(self.plateau_min_gain) and self.plateau_min_gain >= 0,
             "a number >= 0")
        for name in ("kl_over_factor", "spike_factor", "blowup_factor"):
            v = getattr(self, name)
            need(name, _is_number(v) and v > 1, "a number > 1")
        need("log_std_min", _is_number(self.log_std_min), "a number")
        need("return_metric", self.return_metric is None or isinstance(self.return_metric, str),
             "None or a metric name")


# --------------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass(frozen=True)
class TaskSamples:
    """Per-task values pooled over iterations: one entry per (iteration, task).

    Attributes:
      iteration: ``[M]`` int, the iteration of each task-sample.
      returns: ``[M]`` the task's return (``NaN`` where logged non-finite).
      params: name -> ``[M]`` task parameter values (``NaN`` where missing).
      extra: other return-like per-task columns (e.g. ``return_pre``), name -> ``[M]``.
    """

    iteration: np.ndarray
    returns: np.ndarray
    params: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class RunLog:
    """A run directory's logs as arrays (what :func:`load_run` returns).

    Attributes:
      run_dir: the directory.
      iterations: ``[N]`` int, sorted, unique.
      time: ``[N]`` seconds since start (``NaN`` where absent).
      metrics: name -> ``[N]`` float; ``NaN`` where missing or non-finite.
      nonfinite: name -> ``[N]`` bool, True where the value was logged non-finite (``null``).
      tasks: per-task samples, or ``None`` when no line had a ``"tasks"`` object with returns.
      events: the records of ``events.jsonl`` (empty when absent).
      spec: the parsed ``spec.json`` / ``config.json`` (empty when absent or unreadable).
      warnings: findings about the log files themselves (a truncated last line).
      evaluations: split (``"test"``, ``"ood"``) -> the parsed ``eval_<split>.json`` of
        ``jmeta evaluate`` (only the splits that have one).
    """

    run_dir: pathlib.Path
    iterations: np.ndarray
    time: np.ndarray
    metrics: dict[str, np.ndarray]
    nonfinite: dict[str, np.ndarray]
    tasks: TaskSamples | None
    events: list[dict[str, Any]]
    spec: dict[str, Any]
    warnings: list[Finding]
    evaluations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def load_run(run_dir: str | pathlib.Path) -> RunLog:
    """Read a run directory's ``metrics.jsonl`` (+ ``events.jsonl``, spec) into arrays.

    Args:
      run_dir: the run directory (or its ``metrics.jsonl``).

    Returns:
      A :class:`RunLog`.

    Raises:
      RunDirNotFoundError: the path does not exist.
      NotARunDirError: it holds no ``metrics.jsonl``.
      MalformedLogError: ``metrics.jsonl`` is empty, or a line other than the last is not a
        record (the message names the line). A broken *last* line (a killed run) is skipped with a
        ``truncated_log`` warning in ``RunLog.warnings``. An ``eval_<split>.json`` that is not
        JSON or lacks equal-length ``mean``/``sem`` lists.
    """
    path = pathlib.Path(run_dir)
    if path.is_file() and path.name == METRICS_FILE:
        path = path.parent
    if not path.exists():
        raise RunDirNotFoundError(f"run dir not found: {path}")
    if not path.is_dir():
        raise NotARunDirError(f"not a jmeta run dir: {path} is a file, not a directory")
    metrics_path = path / METRICS_FILE
    if not metrics_path.is_file():
        raise NotARunDirError(f"not a jmeta run dir: {path} (no {METRICS_FILE})")

    warnings: list[Finding] = []
    records = _read_jsonl(metrics_path, _check_metrics_record, warnings)
    if not records:
        raise MalformedLogError(f"{metrics_path} is empty: no meta-iteration was logged")
    events: list[dict[str, Any]] = []
    if (path / EVENTS_FILE).is_file():
        events = [r for _, r in _read_jsonl(path / EVENTS_FILE, _check_event_record, warnings)]

    # One record per iteration, the last one logged winning (a resumed run re-logs iterations).
    by_iter: dict[int, tuple[int, dict]] = {}
    for pos, (lineno, rec) in enumerate(records):
        it = rec.get("iteration")
        it = int(it) if _is_number(it) else pos + 1
        by_iter[it] = (lineno, rec)
    iterations = np.array(sorted(by_iter), dtype=np.int64)
    n = len(iterations)
    time = np.full(n, np.nan)
    metrics: dict[str, np.ndarray] = {}
    nonfinite: dict[str, np.ndarray] = {}
    task_rows: list[tuple[int, dict[str, np.ndarray]]] = []
    for i, it in enumerate(iterations):
        lineno, rec = by_iter[int(it)]
        if _is_number(rec.get("time")):
            time[i] = float(rec["time"])
        for name, value in _flatten_metrics(rec.get("metrics") or {}):
            if name not in metrics:
                metrics[name] = np.full(n, np.nan)
                nonfinite[name] = np.zeros(n, bool)
            if value is None or not math.isfinite(value):
                nonfinite[name][i] = True
            else:
                metrics[name][i] = value
        tasks = rec.get("tasks")
        if tasks:
            cols = _task_columns(tasks, metrics_path, lineno)
            if "return" in cols:
                task_rows.append((int(it), cols))

    return RunLog(run_dir=path, iterations=iterations, time=time, metrics=metrics,
                  nonfinite=nonfinite, tasks=_pool_tasks(task_rows), events=events,
                  spec=_read_spec(path), warnings=warnings, evaluations=_read_evaluations(path))


def _read_evaluations(path: pathlib.Path) -> dict[str, dict[str, Any]]:
    out = {}
    for split, name in EVAL_FILES.items():
        f = path / name
        if not f.is_file():
            continue
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MalformedLogError(f"{f}: not a JSON evaluation ({e})") from None
        mean, sem = (rec.get(k) if isinstance(rec, dict) else None for k in ("mean", "sem"))
        if not (isinstance(mean, list) and isinstance(sem, list) and len(mean) == len(sem) >= 1):
            raise MalformedLogError(f"{f}: expected \"mean\" and \"sem\" lists of equal length "
                                    f"(what `jmeta evaluate` writes)")
        out[split] = rec
    return out


def _read_jsonl(path, check, warnings) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MalformedLogError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        lineno = i + 1
        try:
            rec = json.loads(line)
            problem = check(rec)
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e.msg} at column {e.colno})"
        if problem is None:
            out.append((lineno, rec))
        elif i == last and not text.endswith("\n"):
            warnings.append(Finding(
                "truncated_log", 0.1, None,
                f"the last line of {path.name} (line {lineno}) is incomplete, as a killed run "
                f"leaves it; it was ignored",
                {"file": path.name, "line": lineno}))
        else:
            raise MalformedLogError(f"{path} line {lineno}: {problem}")
    return out


def _check_metrics_record(rec) -> str | None:
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    if "metrics" not in rec or not isinstance(rec["metrics"], dict):
        return "no \"metrics\" object (expected {\"iteration\", \"time\", \"metrics\", \"tasks\"})"
    if "iteration" in rec and not _is_number(rec["iteration"]):
        return f"\"iteration\" is not a number: {rec['iteration']!r}"
    if rec.get("tasks") is not None and not isinstance(rec["tasks"], dict):
        return "\"tasks\" is not an object of per-task columns"
    return None


def _check_event_record(rec) -> str | None:
    if not isinstance(rec, dict) or not isinstance(rec.get("event"), str):
        return "expected a JSON object with an \"event\" name"
    return None


def _flatten_metrics(metrics: dict) -> list[tuple[str, float | None]]:
    out = []
    for name, value in metrics.items():
        if isinstance(value, list):
            flat = np.asarray(value, dtype=object).ravel().tolist()
            out.extend((f"{name}_{j}", _to_float(v)) for j, v in enumerate(flat))
        elif value is None or _is_number(value) or isinstance(value, bool):
            out.append((name, _to_float(value)))
        # strings / objects are not curves: ignored
    return out


def _to_float(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if _is_number(v):
        return float(v)
    return None  # null (non-finite); anything else is treated the same way


def _task_columns(tasks: dict, path, lineno) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for name, values in tasks.items():
        if not isinstance(values, list):
            raise MalformedLogError(f"{path} line {lineno}: tasks column {name!r} is not a list")
        try:
            arr = np.array([[np.nan if v is None else v for v in x] if isinstance(x, list)
                            else (np.nan if x is None else x) for x in values], dtype=float)
        except (TypeError, ValueError):
            raise MalformedLogError(f"{path} line {lineno}: tasks column {name!r} holds "
                                    f"non-numeric values") from None
        if arr.ndim == 2:  # a vector parameter per task (e.g. a 2-D goal): goal_0, goal_1
            cols.update({f"{name}_{j}": arr[:, j] for j in range(arr.shape[1])})
        else:
            cols[name] = arr.reshape(-1)
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        ref = lengths.get("return", next(iter(lengths.values())))
        bad = next(k for k, v in lengths.items() if v != ref)
        raise MalformedLogError(f"{path} line {lineno}: tasks column {bad!r} has {lengths[bad]} "
                                f"values, \"return\" has {ref}")
    return cols


def _pool_tasks(rows) -> TaskSamples | None:
    if not rows:
        return None
    names = sorted({k for _, cols in rows for k in cols if k != "return"})
    its, rets = [], []
    other = {k: [] for k in names}
    for it, cols in rows:
        m = len(cols["return"])
        its.append(np.full(m, it, np.int64))
        rets.append(cols["return"])
        for k in names:
            other[k].append(cols.get(k, np.full(m, np.nan)))
    joined = {k: np.concatenate(v) for k, v in other.items()}
    extra = {k: v for k, v in joined.items() if "return" in k}
    params = {k: v for k, v in joined.items() if "return" not in k}
    return TaskSamples(iteration=np.concatenate(its), returns=np.concatenate(rets),
                       params=params, extra=extra)


def _read_spec(path: pathlib.Path) -> dict[str, Any]:
    for name in _SPEC_FILES:
        try:
            spec = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(spec, dict):
            return spec
    return {}


def _find_key(tree, keys) -> Any:
    """The first value under any of ``keys`` in a nested dict/list (depth first)."""
    if isinstance(tree, dict):
        for k in keys:
            if k in tree and _is_number(tree[k]):
                return tree[k]
        for v in tree.values():
            found = _find_key(v, keys)
            if found is not None:
                return found
    elif isinstance(tree, list):
        for v in tree:
            found = _find_key(v, keys)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------------------------------
# Diagnosis


def diagnose(run_dir: str | pathlib.Path | RunLog, config: DoctorConfig | None = None,
             **thresholds: Any) -> list[Finding]:
    """Diagnose a run from its logs: ranked findings, most severe first.

    Args:
      run_dir: a run directory (or a :class:`RunLog` from :func:`load_run`).
      config: thresholds; default ``DoctorConfig()``.
      **thresholds: any :class:`DoctorConfig` field, overriding ``config``
        (``diagnose(d, max_kl=0.01, drop_min_frac=0.3)``).

    Returns:
      ``list[Finding]`` sorted by severity (descending), then iteration. Empty when nothing is
      wrong.

    Raises:
      RunDirNotFoundError, NotARunDirError, MalformedLogError: see :func:`load_run`.
      TypeError: an unknown threshold name.
      ValueError: a threshold out of its range.
    """
    config = config or DoctorConfig()
    if thresholds:
        known = {f.name for f in dataclasses.fields(DoctorConfig)}
        unknown = sorted(set(thresholds) - known)
        if unknown:
            raise TypeError(f"diagnose() got unknown threshold(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        config = dataclasses.replace(config, **thresholds)
    log = run_dir if isinstance(run_dir, RunLog) else load_run(run_dir)
    return _Diagnosis(log, config).run()


class _Diagnosis:
    def __init__(self, log: RunLog, cfg: DoctorConfig):
        self.log, self.cfg = log, cfg
        self.findings: list[Finding] = list(log.warnings)
        n = len(log.iterations)
        self.w = cfg.window or int(np.clip(n // 20, 5, 50))
        self.ret_name, self.ret = self._return_curve()

    # -- the return curve ---------------------------------------------------------------------

    def _return_curve(self) -> tuple[str | None, np.ndarray | None]:
        m = self.log.metrics
        if self.cfg.return_metric is not None:
            if self.cfg.return_metric not in m:
                raise ValueError(f"return_metric {self.cfg.return_metric!r} was not logged; "
                                 f"logged metrics: {', '.join(sorted(m)) or 'none'}")
            return self.cfg.return_metric, m[self.cfg.return_metric]
        for name in ("return_post", "trial_return"):
            if name in m and np.isfinite(m[name]).any():
                return name, m[name]
        cands = sorted((-int(np.isfinite(v).sum()), k) for k, v in m.items()
                       if "return" in k and np.isfinite(v).any())
        if cands:
            return cands[0][1], m[cands[0][1]]
        t = self.log.tasks
        if t is not None:
            pos = np.searchsorted(self.log.iterations, t.iteration)
            sums = np.bincount(pos, np.nan_to_num(t.returns), len(self.log.iterations))
            counts = np.bincount(pos, np.isfinite(t.returns), len(self.log.iterations))
            with np.errstate(invalid="ignore", divide="ignore"):
                return "mean task return", np.where(counts > 0, sums / counts, np.nan)
        return None, None

    def run(self) -> list[Finding]:
        self.check_nonfinite()
        self.check_events()
        drops = []
        if self.ret is not None:
            drops = self.check_drops()
            self.check_plateau()
            self.check_decline(drops)
        self.check_collapse()
        self.check_kl_and_grads()
        self.check_line_search()
        self.check_adaptation_gain()
        self.check_attribution(drops)
        self.check_meta_overfitting()
        if self.ret is None:
            self.add("no_return_metric", 0.05, None,
                     "no return was logged (no metric named like \"return\", no per-task returns); "
                     "return-based checks were skipped", {"metrics": sorted(self.log.metrics)})
        self.link_drops(drops)
        return sorted(self.findings, key=lambda f: (-f.severity, f.iteration is None,
                                                    f.iteration or 0, f.kind))

    def add(self, kind, severity, iteration, message, evidence) -> Finding:
        f = Finding(kind, float(np.clip(severity, 0.0, 1.0)),
                    None if iteration is None else int(iteration), message, _jsonable(evidence))
        self.findings.append(f)
        return f

    def metric(self, leaf: str) -> str | None:
        """The logged metric named ``leaf``, or else the first whose last path part
        (after ``/`` or ``.``: the Runner flattens nested metrics with ``/``) is ``leaf``."""
        if leaf in self.log.metrics:
            return leaf
        return next((k for k in sorted(self.log.metrics) if _leaf(k) == leaf), None)

    def finite(self, y) -> tuple[np.ndarray, np.ndarray]:
        """(iterations, values) of the finite points of a ``[N]`` curve."""
        ok = np.isfinite(y)
        return self.log.iterations[ok], y[ok]

    # -- 3. non-finite values and the Runner's events -------------------------------------------

    def check_nonfinite(self):
        its = self.log.iterations
        bad = {k: v for k, v in self.log.nonfinite.items() if v.any()}
        if bad:
            any_bad = np.any(np.stack(list(bad.values())), axis=0)
            first = int(its[any_bad][0])
            counts = {k: int(v.sum()) for k, v in sorted(bad.items(), key=lambda kv: -kv[1].sum())}
            listed = ", ".join(f"{k} ({c})" for k, c in list(counts.items())[:6])
            more = f" and {len(counts) - 6} more" if len(counts) > 6 else ""
            in_return = self.ret_name in bad
            self.add("nonfinite", 0.95 if in_return else 0.85, first,
                     f"metrics were non-finite (NaN/inf, logged as null) at {int(any_bad.sum())} "
                     f"of {len(its)} iterations, first at iteration {first}: {listed}{more}",
                     {"iterations": int(any_bad.sum()), "first_iteration": first,
                      "counts": counts, "iteration_list": its[any_bad][:50].tolist()})
        t = self.log.tasks
        if t is not None:
            bad_t = ~np.isfinite(t.returns)
            if bad_t.any():
                bad_its = np.unique(t.iteration[bad_t])
                self.add("nonfinite", 0.85, int(bad_its[0]),
                         f"per-task returns were non-finite for {int(bad_t.sum())} of {len(bad_t)} "
                         f"task-samples at {len(bad_its)} iterations, first at iteration "
                         f"{int(bad_its[0])}",
                         {"task_samples": int(bad_t.sum()), "iterations": len(bad_its),
                          "first_iteration": int(bad_its[0]),
                          "iteration_list": bad_its[:50].tolist()})

    def check_events(self):
        by_kind: dict[str, list[dict]] = {}
        for e in self.log.events:
            by_kind.setdefault(e["event"], []).append(e)

        def its_of(es):
            return [int(e["iteration"]) for e in es if _is_number(e.get("iteration"))]

        for e in by_kind.get("abort", []):
            it = e.get("iteration") if _is_number(e.get("iteration")) else None
            where = f" at iteration {int(it)}" if it is not None else ""
            msg = re.sub(r"^aborted\s*:?\s*", "", str(e.get("message") or "").strip())
            self.add("abort", 1.0, it, f"the run aborted{where}" + (f": {msg}" if msg else ""),
                     {"event": e})
        rb = by_kind.get("nonfinite_rollback", [])
        if rb:
            its = its_of(rb)
            first = min(its) if its else None
            shown = ", ".join(map(str, its[:8])) + (", …" if len(its) > 8 else "")
            msg = str(rb[0].get("message") or "").strip()
            self.add("nonfinite_rollback", 0.6 + 0.3 * min(1.0, len(rb) / 20), first,
                     f"the Runner rolled back {len(rb)} time(s) after non-finite values"
                     + (f" (from iterations {shown})" if its else "")
                     + (f"; first: {msg}" if msg else ""),
                     {"count": len(rb), "iterations": its[:50], "first_message": msg})
        fb = by_kind.get("checkpoint_fallback", [])
        if fb:
            its = its_of(fb)
            msg = str(fb[-1].get("message") or "").strip()
            self.add("checkpoint_fallback", 0.4, min(its) if its else None,
                     f"{len(fb)} checkpoint(s) could not be restored and an older one was used"
                     + (f" (last: {msg})" if msg else ""),
                     {"count": len(fb), "iterations": its[:50]})

    # -- 1. sudden drops of the return ----------------------------------------------------------

    def check_drops(self) -> list[Finding]:
        its, y = self.finite(self.ret)
        n, w, cfg = len(y), self.w, self.cfg
        if n < max(cfg.min_iterations, 2 * w + 2):
            return []
        sigma = _noise_sigma(y)
        smooth = _rolling_median(y, w)
        rng = float(smooth.max() - smooth.min())
        if rng <= 0:
            return []
        # Levels are interquartile means (IQM: robust like a median, much less noisy when the
        # mean over tasks jumps between a few values because a random few tasks fail).
        # before(t): the level of y[t-w:t] at its end, trend-corrected (Theil–Sen), so a curve
        # still rising into the fall does not hide part of it; after(t): the IQM of y[t:t+w]
        # (extrapolating a second slope would double the noise, and what follows a fall is
        # usually flat). A steady decline gives only d ≈ slope·w/2: far below a sudden fall.
        last_lv = _end_levels(y, w)               # of the windows y[i:i+w]
        med = _window_iqms(y, w)
        t = np.arange(w, n - w + 1)
        d = last_lv[t - w] - med[t]               # > 0 is a fall
        # The statistic's standard error from the two windows' own (robust) noise, so a run that
        # gets noisier after some tasks fail is judged by its noise there. The end level of a
        # detrended window (_end_levels) has s.d. 1.73·σ/√w, a window IQM 1.13·σ/√w
        # (independent Gaussian noise, measured at w = 50). Correlated noise (slow wobble) makes
        # a window level vary more: with correlation time τ its variance is τ times larger (see
        # _correlation_time).
        sig = _window_sigmas(y, w)                # noise of each window y[i:i+w]
        tau = _correlation_time(y, w, sig)
        se = np.sqrt((1.73 * sig[t - w]) ** 2 + (1.13 * sig[t]) ** 2) * math.sqrt(tau / w)
        se = np.maximum(se, 1e-12 * max(1.0, float(np.abs(y).max())))
        ok = (d > cfg.drop_z * se) & (d > cfg.drop_min_frac * rng)
        fine = _rolling_median(y, max(3, (w // 5) | 1))
        drops = []
        taken = np.zeros(n, bool)
        while len(drops) < cfg.max_drops:
            cand = ok & ~taken[t]
            if not cand.any():
                break
            k = int(np.argmax(np.where(cand, d, -np.inf)))
            tk, dk = int(t[k]), float(d[k])
            # d is flat-topped around a jump (the window statistics are robust to a few values
            # from the other side), so locate it as the best single change in mean over the
            # stretch where d stays near its peak (padded: a window before, half a one after).
            k1, k2 = k, k
            while k1 > 0 and d[k1 - 1] >= 0.8 * dk:
                k1 -= 1
            while k2 < len(d) - 1 and d[k2 + 1] >= 0.8 * dk:
                k2 += 1
            tk = _change_point(y, max(1, int(t[k1]) - w), min(n - 1, int(t[k2]) + w // 2))
            top = _level_at(y[max(0, tk - w):tk], -1)
            bottom = float(_iqm(y[tk:tk + w]))
            step = top - bottom
            a = tk - 1
            while a > max(0, tk - w) and fine[a] < top - 0.1 * step:
                a -= 1
            b = tk
            while b < min(n - 1, tk + w) and fine[b] > bottom + 0.1 * step:
                b += 1
            taken[max(0, min(a, int(t[k1])) - w):min(n, max(b, int(t[k2])) + w)] = True
            # the levels at the two ends of the fall, measured like d (before: trend-corrected)
            before = _level_at(y[max(0, a - w + 1):a + 1], -1)
            after = float(_iqm(y[b:b + w]))
            fall = before - after
            if fall < cfg.drop_min_frac * rng or fall < cfg.drop_z * se[k]:
                continue  # the located fall is smaller than the window statistic suggested
            r0 = min(n, b + w // 2)  # past the window that still straddles the fall
            rec = np.nonzero(smooth[r0:] >= before - 0.25 * fall)[0]
            recovered = int(its[r0 + rec[0]]) if len(rec) else None
            frac = min(1.0, fall / rng)
            pct = _pct(before, after, rng)
            size = f"{-pct:.0f} %" if pct is not None else f"by {_f(fall)}"
            tail = (f"; it recovered by iteration {recovered}" if recovered else
                    f"; it had not recovered by the last iteration ({_f(smooth[-1])})")
            msg = (f"{self.ret_name} fell {size} (from {_f(before)} to {_f(after)}, "
                   f"{100 * frac:.0f} % of the run's range) between iterations {int(its[a])} and "
                   f"{int(its[b])}{tail}")
            sev = (0.5 + 0.45 * frac) if recovered is None else (0.3 + 0.3 * frac)
            drops.append(self.add("sudden_drop", sev, int(its[min(a + 1, b)]), msg, {
                "metric": self.ret_name, "before": before, "after": after, "fall": fall,
                "percent": pct, "fraction_of_range": frac, "range": rng, "noise_sigma": sigma,
                "z": fall / float(se[k]), "noise_correlation_time": tau,
                "start_iteration": int(its[a]),
                "end_iteration": int(its[b]), "recovered_iteration": recovered, "window": w,
                "_index": (a, b)}))
        return drops

    # -- 2. plateau -----------------------------------------------------------------------------

    def check_plateau(self):
        its, y = self.finite(self.ret)
        n, w, cfg = len(y), self.w, self.cfg
        if n < max(cfg.min_iterations, 2 * w):
            return
        sigma = _noise_sigma(y)
        smooth = _rolling_median(y, w)
        rng = float(smooth.max() - smooth.min())
        tail = y[n - max(9, int(round(cfg.plateau_frac * n))):]
        third = len(tail) // 3
        gain = float(np.median(tail[-third:]) - np.median(tail[:third]))
        se = 1.2533 * sigma * math.sqrt(2.0 / third)
        if gain > max(cfg.plateau_z * se, cfg.plateau_min_gain * rng):
            return  # still improving
        flat = gain + 2 * se <= cfg.plateau_flat * rng  # ... and not just too short to tell
        level = float(np.median(tail))
        tol = max(3 * 1.2533 * sigma / math.sqrt(w), 0.05 * rng)
        out = np.nonzero(np.abs(smooth - level) > tol)[0]
        s = int(out[-1]) + 1 if len(out) else 0
        if n - s < cfg.plateau_frac * n or s >= n:
            return
        span = (n - s) / n
        start = _level_at(y[:w], 0)
        best_i = int(np.argmax(smooth[:max(s, 1)]))
        best = float(smooth[best_i])
        ev = {"metric": self.ret_name, "level": level, "start_level": start, "best": best,
              "best_iteration": int(its[best_i]), "tail_gain": gain, "tail_gain_se": se,
              "fraction_of_run": span, "tolerance": tol}
        first = int(its[s])
        share = f"the last {100 * span:.0f} % of the run"
        if abs(level - start) <= tol or s == 0:
            self.add("plateau", 0.75, first,
                     f"{self.ret_name} never improved: it stayed at {_f(level)} ± {_f(tol)} from "
                     f"iteration {first} to {int(its[-1])} (start {_f(start)}, last-part gain "
                     f"{_f(gain)} ± {_f(se)})", {**ev, "no_learning": True})
        elif not flat:
            return
        elif best - level > max(tol, 0.2 * rng):
            self.add("plateau", 0.5, first,
                     f"{self.ret_name} has stayed at {_f(level)} since iteration {first} "
                     f"({share}), {_f(best - level)} below its best ({_f(best)} at iteration "
                     f"{int(its[best_i])})", {**ev, "below_best": True})
        else:
            self.add("plateau", 0.15 + 0.2 * span, first,
                     f"{self.ret_name} has not improved since iteration {first} ({share}; level "
                     f"{_f(level)}, up from {_f(start)} at the start; last-part gain {_f(gain)} "
                     f"± {_f(se)})", ev)

    def check_decline(self, drops: list[Finding]):
        """A return that ends well below its best without a sudden drop to explain it."""
        its, y = self.finite(self.ret)
        n, w, cfg = len(y), self.w, self.cfg
        if n < max(cfg.min_iterations, 2 * w):
            return
        smooth = _rolling_median(y, w)
        rng = float(smooth.max() - smooth.min())
        h = w // 2  # the smoothed ends rest on half windows: judge the best away from them
        best_i = h + int(np.argmax(smooth[h:n - h])) if n > 2 * h + 1 else int(np.argmax(smooth))
        best = float(smooth[best_i])
        end = float(_iqm(y[-w:]))
        fall = best - end
        sig = _noise_sigma(y)
        se = math.sqrt(1.13 ** 2 + 1.13 ** 2) * sig / math.sqrt(w)
        explained = sum(d.evidence["fall"] for d in drops
                        if d.evidence.get("recovered_iteration") is None)
        if (rng <= 0 or fall < cfg.drop_min_frac * rng or fall < cfg.drop_z * se
                or explained >= 0.5 * fall):
            return
        frac = min(1.0, fall / rng)
        pct = _pct(best, end, rng)
        size = f"{-pct:.0f} %" if pct is not None else f"{_f(fall)}"
        self.add("decline", 0.45 + 0.35 * frac, int(its[best_i]),
                 f"{self.ret_name} declined {size} from its best ({_f(best)} at iteration "
                 f"{int(its[best_i])}) to {_f(end)} at the end ({100 * frac:.0f} % of the run's "
                 f"range), without a sudden drop",
                 {"metric": self.ret_name, "best": best, "best_iteration": int(its[best_i]),
                  "end": end, "fall": fall, "percent": pct, "fraction_of_range": frac})

    # -- 4. entropy / log-std collapse ----------------------------------------------------------

    def check_collapse(self):
        cfg = self.cfg
        for name in sorted(self.log.metrics):
            low = _leaf(name)  # "log_std", "policy_log_std"; "entropy", "policy_entropy"
            if low.endswith("log_std"):
                self._collapse(name, "log_std", floor=cfg.log_std_min, fast=cfg.log_std_fast_drop)
            elif low == "entropy" or low.endswith("_entropy"):
                its, y = self.finite(self.log.metrics[name])
                if len(y) < cfg.min_iterations:
                    continue
                start = _level_at(y[:self.w], 0)
                if start > 0:
                    self._collapse(name, "entropy", floor=cfg.entropy_min_frac * start,
                                   fast=cfg.entropy_fast_frac * start)
                else:
                    self._collapse(name, "entropy", floor=start - cfg.entropy_drop_nats,
                                   fast=cfg.entropy_drop_nats / 2)

    def _collapse(self, name, what, floor, fast):
        its, y = self.finite(self.log.metrics[name])
        n, w = len(y), self.w
        if n < max(self.cfg.min_iterations, 2 * w):
            return
        smooth = _rolling_median(y, max(3, (w // 5) | 1))
        start, end = _level_at(y[:w], 0), _level_at(y[-w:], -1)
        below = end < floor and start >= floor
        k = min(w, n - 1)
        falls = smooth[:-k] - smooth[k:]
        j = int(np.argmax(falls))
        is_fast = falls[j] >= fast
        if not (below or is_fast):
            return
        if is_fast:
            top, bottom = smooth[j], smooth[j + k]
            a = j
            while a < j + k and smooth[a + 1] >= top - 0.1 * (top - bottom):
                a += 1
            b = a
            while b < j + k and smooth[b] > bottom + 0.1 * (top - bottom):
                b += 1
            first, seg = int(its[a]), (float(np.median(y[max(0, a - w + 1):a + 1])),
                                       float(np.median(y[b:b + w])))
        else:
            cross = np.nonzero(smooth < floor)[0]
            a = b = int(cross[0]) if len(cross) else n - 1
            first, seg = int(its[a]), (start, end)
        if what == "log_std":
            std = f" (policy std {_f(math.exp(seg[0]))} → {_f(math.exp(seg[1]))})"
        else:
            std = ""
        how = (f"fell from {_f(seg[0])} to {_f(seg[1])}{std} between iterations {int(its[a])} and "
               f"{int(its[b])}" if is_fast else f"fell from {_f(start)} to {_f(end)}")
        end_note = (f"; it ends at {_f(end)}, below {_f(floor)}" if below
                    else f"; it ends at {_f(end)}")
        self.add(f"{what}_collapse", 0.55 + (0.15 if below and is_fast else 0.0), first,
                 f"{name} collapsed: it {how}{end_note}",
                 {"metric": name, "start": start, "end": end, "floor": floor,
                  "fast_fall": float(falls[j]), "fast_threshold": fast, "window": k,
                  "below_floor": bool(below), "fast": bool(is_fast)})

    # -- 5. KL, gradient norm, line search ------------------------------------------------------

    def check_kl_and_grads(self):
        cfg = self.cfg
        max_kl = cfg.max_kl
        if max_kl is None:
            v = _find_key(self.log.spec, ("max_kl",))
            max_kl = float(v) if v is not None and v > 0 else None
        for name in sorted(self.log.metrics):
            low = _leaf(name)  # "kl", "inner_kl", "approx_kl"; "grad_norm" (not "kl_coeff")
            is_kl = low == "kl" or low.endswith("_kl")
            if not (is_kl or low.endswith("grad_norm")):
                continue
            its, y = self.finite(self.log.metrics[name])
            if len(y) < self.cfg.min_iterations:
                continue
            reported = False
            if low == "kl" and max_kl is not None:
                reported = self._kl_over(name, its, y, max_kl)
            if not reported:
                reported = self._blowup(name, its, y)
            if not reported:
                self._spikes(name, its, y)

    def _kl_over(self, name, its, y, max_kl) -> bool:
        cfg, w = self.cfg, self.w
        over = y > cfg.kl_over_factor * max_kl
        frac = float(over.mean())
        roll = _window_means(over.astype(float), min(w, len(y)))
        hot = np.nonzero(roll >= 0.5)[0]
        if frac < cfg.kl_over_frac and not len(hot):
            return False
        first = int(its[hot[0] + int(np.argmax(over[hot[0]:]))]) if len(hot) else \
            int(its[np.argmax(over)])
        after = y[its >= first]
        self.add("kl_blowup", 0.55 + 0.35 * min(1.0, frac / 0.5), first,
                 f"{name} exceeded {cfg.kl_over_factor:g}× max_kl ({_f(max_kl)}) at "
                 f"{100 * frac:.0f} % of iterations, "
                 f"{'consistently from' if len(hot) else 'first at'} iteration {first} "
                 f"(median {_f(np.median(after))} since then, {_f(np.median(after) / max_kl)}× "
                 f"max_kl; overall median {_f(np.median(y))})",
                 {"metric": name, "max_kl": max_kl, "fraction_over": frac,
                  "median_after": float(np.median(after)), "median": float(np.median(y))})
        return True

    def _blowup(self, name, its, y) -> bool:
        cfg, w = self.cfg, self.w
        pos = y[y > 0]
        if len(pos) < len(y) // 2:
            return False
        smooth = _rolling_median(y, w)
        p = int(np.argmax(smooth))
        if p < w:
            return False  # largest at the start (early large steps): not a blow-up
        base, s = float(np.median(y[:p])), p
        for _ in range(3):  # the level before the rise: refine with the rise's onset
            if base <= 0:
                return False
            low = np.nonzero(smooth[:p] < 2 * base)[0]
            s = int(low[-1]) + 1 if len(low) else 0
            base = float(np.median(y[:max(s, w)]))
        hi_level = float(np.median(y[p:p + w]))
        if base <= 0 or hi_level < cfg.blowup_factor * base:
            return False
        first = int(its[s])
        kind = "kl_blowup" if "grad" not in name else "grad_norm_blowup"
        self.add(kind, 0.6, first,
                 f"{name} blew up: it rose {_f(hi_level / base)}× from its earlier median "
                 f"{_f(base)} to {_f(hi_level)} (iteration {first} to {int(its[p])})",
                 {"metric": name, "base": base, "peak_level": hi_level,
                  "ratio": hi_level / base, "peak_iteration": int(its[p])})
        return True

    def _spikes(self, name, its, y):
        cfg, w = self.cfg, self.w
        med = float(np.median(y))
        if med <= 0:
            return
        local = _rolling_median(y, 2 * w + 1)
        sp = (y > cfg.spike_factor * med) & (y > cfg.spike_factor * local)
        if not sp.any():
            return
        cnt, big = int(sp.sum()), int(np.argmax(np.where(sp, y, -np.inf)))
        kind = "kl_spikes" if "grad" not in name else "grad_norm_spikes"
        self.add(kind, 0.3 + 0.3 * min(1.0, cnt / max(1.0, 0.02 * len(y))),
                 int(its[np.argmax(sp)]),
                 f"{name} spiked above {cfg.spike_factor:g}× its median ({_f(med)}) at {cnt} "
                 f"iteration(s), first at {int(its[np.argmax(sp)])}, largest {_f(y[big])} at "
                 f"iteration {int(its[big])}",
                 {"metric": name, "median": med, "count": cnt,
                  "iterations": its[sp][:50].tolist(), "largest": float(y[big])})

    def check_line_search(self):
        m, cfg, w = self.log.metrics, self.cfg, self.w
        max_bt = cfg.max_backtracks
        if max_bt is None:
            v = _find_key(self.log.spec, ("ls_backtracks", "max_backtracks"))
            max_bt = int(v) if v is not None else None
        acc_name, bt_name = self.metric("step_accepted"), self.metric("num_backtracks")
        if acc_name is not None:
            its, acc = self.finite(m[acc_name])
            rejected = acc < 0.5
            source = acc_name
        elif bt_name is not None and max_bt is not None:
            its, nb = self.finite(m[bt_name])
            rejected = nb >= max_bt
            source = bt_name
        else:
            return
        if len(rejected) < self.cfg.min_iterations:
            return
        frac = float(rejected.mean())
        k = min(w, len(rejected))
        roll = _window_means(rejected.astype(float), k)
        last = float(roll[-1])
        if frac < cfg.reject_frac and last < 0.5:
            return
        hot = np.nonzero(roll >= max(cfg.reject_frac, 0.5 if frac < cfg.reject_frac else 0))[0]
        first = int(its[hot[0] + int(np.argmax(rejected[hot[0]:]))]) if len(hot) \
            else int(its[np.argmax(rejected)])
        ev = {"fraction_rejected": frac, "last_window_fraction": last, "source": source,
              "window": k}
        bt = ""
        if bt_name is not None:
            nb = m[bt_name][np.isfinite(m[bt_name])]
            ev["mean_backtracks"] = float(nb.mean()) if len(nb) else None
            if max_bt is not None:
                ev["max_backtracks"] = max_bt
                bt = f"; {100 * float(np.mean(nb >= max_bt)):.0f} % ran all {max_bt} backtracks"
        self.add("line_search_rejections", 0.4 + 0.4 * min(1.0, max(frac, last)), first,
                 f"the TRPO line search rejected the step at {100 * frac:.0f} % of iterations "
                 f"(first run of rejections at iteration {first}; {100 * last:.0f} % of the last "
                 f"{k}){bt}: no candidate step improved the surrogate within the trust region "
                 f"(steps too large for it, or a noisy gradient estimate)", ev)

    # -- 6. adaptation gain ---------------------------------------------------------------------

    def check_adaptation_gain(self):
        m, cfg = self.log.metrics, self.cfg
        pairs = []
        post, pre = self.metric("return_post"), self.metric("return_pre")
        if post is not None and pre is not None:
            pairs.append((post, pre, "adaptation"))
        eps = sorted((int(mt.group(1)), k) for k in m
                     if (mt := re.fullmatch(r"episode_returns?_(\d+)", _leaf(k))))
        if len(eps) >= 2:
            pairs.append((eps[-1][1], eps[0][1], "the trial (last − first episode)"))
        for post_name, pre_name, what in pairs:
            ok = np.isfinite(m[post_name]) & np.isfinite(m[pre_name])
            its = self.log.iterations[ok]
            g = (m[post_name] - m[pre_name])[ok]
            if len(g) < cfg.min_iterations:
                continue
            start = len(g) - max(10, int(round(cfg.gain_frac * len(g))))
            g_t, pre_t = g[start:], m[pre_name][ok][start:]
            mean = float(g_t.mean())
            sem = float(g_t.std(ddof=1) / math.sqrt(len(g_t)))
            if mean >= cfg.gain_k * sem:
                continue
            early = g[:max(10, len(g) // 5)]
            pct = _pct(float(pre_t.mean()), float(pre_t.mean()) + mean,
                       float(np.ptp(pre_t)) or abs(float(pre_t.mean())) or 1.0)
            rel = f", {pct:+.1f} % of {pre_name}" if pct is not None else ""
            hurts = mean < -cfg.gain_k * sem
            verdict = ("adaptation makes it worse" if hurts else
                       "within noise: the inner loop does not help (post ≈ pre)")
            self.add("no_adaptation_gain", 0.8 if hurts else 0.7, int(its[start]),
                     f"{post_name} − {pre_name} = {_f(mean)} ± {_f(sem)} (s.e.m., n={len(g_t)} "
                     f"iterations {int(its[start])}–{int(its[-1])}{rel}): {verdict}; early in "
                     f"training it was {_f(early.mean())}",
                     {"post": post_name, "pre": pre_name, "what": what, "mean_gain": mean,
                      "sem": sem, "n": len(g_t), "k": cfg.gain_k, "percent": pct,
                      "early_gain": float(early.mean()), "negative": bool(hurts)})

    # -- 6b. meta-overfitting: the meta-test curves on the test and ood splits -------------------

    def check_meta_overfitting(self):
        ev, cfg = self.log.evaluations, self.cfg
        if "test" not in ev or "ood" not in ev:
            return
        ends = {}
        for split in ("test", "ood"):
            mean = np.array([np.nan if v is None else v for v in ev[split]["mean"]], float)
            sem = np.array([np.nan if v is None else v for v in ev[split]["sem"]], float)
            if not (np.isfinite(mean[-1]) and np.isfinite(sem[-1])):
                return  # a non-finite end is reported by nothing here: no basis for a gap
            ends[split] = (float(mean[-1]), float(sem[-1]), float(mean[-1] - mean[0]))
        (t, t_sem, t_gain), (o, o_sem, o_gain) = ends["test"], ends["ood"]
        gap, se = t - o, math.hypot(t_sem, o_sem)
        rel = gap / abs(t) if t != 0 else math.inf
        z = gap / se if se > 0 else math.inf
        if not (z > cfg.ood_k and rel > cfg.ood_rel_gap):
            return
        x = ev["test"].get("x", "steps")
        at = (f"after {len(ev['test']['mean']) - 1} adaptation step(s)" if x == "steps" else
              f"in trial episode {len(ev['test']['mean'])}")
        its = {s: ev[s].get("iteration") for s in ("test", "ood")}
        when = ("" if its["test"] == its["ood"] else
                f" (evaluated at different iterations: test {its['test']}, ood {its['ood']})")
        self.add("meta_overfitting", 0.55 + 0.15 * min(1.0, rel / cfg.ood_rel_gap - 1.0),
                 its["test"] if isinstance(its["test"], int) else None,
                 f"meta-overfitting: {at}, the return on shifted (ood) tasks is {_f(o)} ± "
                 f"{_f(o_sem)} against {_f(t)} ± {_f(t_sem)} on held-out test tasks, "
                 f"{100 * rel:.0f} % of |test| lower ({z:.1f} s.e.){when}; adaptation "
                 f"gained {_f(t_gain)} on test and {_f(o_gain)} on ood; counters: widen the "
                 f"training task ranges, add observation noise (obs_noise) in meta-training",
                 {"test_return": t, "test_sem": t_sem, "ood_return": o, "ood_sem": o_sem,
                  "gap": gap, "relative_gap": rel, "z": z,
                  "test_gain": t_gain, "ood_gain": o_gain, "iterations": its,
                  "rel_threshold": cfg.ood_rel_gap, "k": cfg.ood_k})

    # -- 7. task-parameter attribution ----------------------------------------------------------

    def check_attribution(self, drops: list[Finding]):
        """Which task parameters the failing tasks share (one split per parameter).

        Parameters are taken greedily: the strongest split is reported, then the others are
        re-tested on the task-samples *outside* its failing side, so a parameter is only named
        for what the ones before it do not explain (an irrelevant parameter can pick up part of a
        real one's effect by chance when both are tested on all samples).
        """
        t, cfg = self.log.tasks, self.cfg
        if t is None or not t.params:
            return
        named = set()
        its_f, _ = self.finite(self.ret) if self.ret is not None else (self.log.iterations, None)
        for drop in drops:
            a, b = drop.evidence["_index"]
            win = max(self.w, 10)
            lo_b, hi_b = int(its_f[max(0, a - win + 1)]), int(its_f[a])
            lo_a, hi_a = int(its_f[b]), int(its_f[min(len(its_f) - 1, b + win - 1)])
            bef = (t.iteration >= lo_b) & (t.iteration <= hi_b) & np.isfinite(t.returns)
            aft = (t.iteration >= lo_a) & (t.iteration <= hi_a) & np.isfinite(t.returns)
            given: list[str] = []
            for p, r in self._greedy(
                    lambda x, keep: self._drop_split(x, t.returns, bef & keep, aft & keep)):
                named.add(p)
                side = "<" if r["below"] else "≥"
                cause = "low" if r["below"] else "high"
                pg = _pct(r["before_g"], r["after_g"], r["scale"])
                pr = _pct(r["before_r"], r["after_r"], r["scale"])
                fg = f"fell {-pg:.0f} %" if pg is not None else f"fell by {_f(r['fall_g'])}"
                verb = "fell" if r["fall_r"] >= 0 else "rose"
                fr = (f"{verb} {abs(pr):.0f} %" if pr is not None
                      else f"{verb} by {_f(abs(r['fall_r']))}")
                among = f" (among tasks outside {' and '.join(given)})" if given else ""
                self.add("task_attribution", drop.severity - 0.01 * (1 + len(given)),
                         drop.iteration,
                         f"the {drop.evidence['metric']} drop at iteration {drop.iteration} is "
                         f"concentrated{among} in tasks with {p} {side} {_f(r['threshold'])}: "
                         f"they {fg} (from {_f(r['before_g'])} to {_f(r['after_g'])}, "
                         f"n={r['n_g']} task-samples) while the others {fr} (from "
                         f"{_f(r['before_r'])} to {_f(r['after_r'])}, n={r['n_r']}); {cause} {p} "
                         f"may be the cause",
                         {"parameter": p, "threshold": r["threshold"], "side": side,
                          "drop_iteration": drop.iteration, "given": list(given),
                          **{k: v for k, v in r.items() if k != "below"}})
                given.append(f"{p} {side} {_f(r['threshold'])}")
        # Over the last part of training: which parameter values go with low returns.
        last = self.log.iterations[-1]
        n_it = len(self.log.iterations)
        start = self.log.iterations[max(0, n_it - max(1, int(round(cfg.attribution_frac * n_it))))]
        sel = (t.iteration >= start) & np.isfinite(t.returns)
        if sel.sum() < 2 * cfg.attribution_min_n:
            return
        scale = float(np.std(t.returns[sel])) or 1.0

        def split(x, keep):
            m = sel & keep & np.isfinite(x)
            if m.sum() < 2 * cfg.attribution_min_n:
                return None
            # each iteration's mean removed: the learning trend is not a task effect
            r = self._split(x[m], _center_by_group(t.returns[m], t.iteration[m]))
            if r is not None:
                grand = float(t.returns[m].mean())
                r = {**r, "mean_g": grand + r["mean_g"], "mean_r": grand + r["mean_r"]}
            return r

        given = []
        for p, r in self._greedy(split, skip=named):
            mg, mr = r["mean_g"], r["mean_r"]
            pct = _pct(mr, mg, scale)
            size = f"{-pct:.0f} % lower" if pct is not None else f"{_f(mr - mg)} lower"
            side = "<" if r["below"] else "≥"
            other = "≥" if r["below"] else "<"
            among = f" among tasks outside {' and '.join(given)}," if given else ""
            self.add("task_attribution",
                     0.25 + 0.15 * min(1.0, r["effect"] / 2) - 0.01 * len(given), int(start),
                     f"over iterations {int(start)}–{int(last)},{among} return is {size} for {p} "
                     f"{side} {_f(r['threshold'])} (mean {_f(mg)}, n={r['n_g']} task-samples) "
                     f"than for {p} {other} {_f(r['threshold'])} (mean {_f(mr)}, n={r['n_r']})",
                     {"parameter": p, "threshold": r["threshold"], "side": side, "mean_group": mg,
                      "mean_rest": mr, "percent_lower": None if pct is None else -pct,
                      "effect_sd": r["effect"], "t": r["t"], "n_group": r["n_g"],
                      "n_rest": r["n_r"], "first_iteration": int(start), "given": list(given)})
            given.append(f"{p} {side} {_f(r['threshold'])}")

    def _greedy(self, split, skip=()):
        """Yield ``(param, split result)`` strongest first, each next one tested on the
        task-samples outside the failing sides already yielded (at most ``max_attributions``)."""
        t = self.log.tasks
        keep = np.ones(len(t.returns), bool)
        left = [p for p in t.params if p not in skip]
        for _ in range(self.cfg.max_attributions):
            best = None
            for p in left:
                r = split(t.params[p], keep)
                if r is not None and (best is None or r["t"] > best[1]["t"]):
                    best = (p, r)
            if best is None:
                return
            p, r = best
            x = t.params[p]
            keep &= ~((x < r["threshold"]) if r["below"] else (x >= r["threshold"]))
            left.remove(p)
            yield p, r

    def _thresholds(self, x):
        levels = np.linspace(0.05, 0.95, self.cfg.attribution_bins)
        return np.unique(np.quantile(x, levels))

    def _min_n(self, m):
        return max(self.cfg.attribution_min_n, int(math.ceil(self.cfg.attribution_min_frac * m)))

    def _split(self, x, r) -> dict | None:
        """Best threshold split of residual returns ``r`` by parameter ``x`` (max Welch |t|)."""
        ok = np.isfinite(x)
        x, r = x[ok], r[ok]
        if len(r) < 2 * self.cfg.attribution_min_n or np.ptp(x) == 0:
            return None
        thr = self._thresholds(x)
        g = _split_stats(x, r, thr, self._min_n(len(r)))
        if not g.ok.any():
            return None
        tstat = (g.m1 - g.m2) / np.sqrt(g.se1 ** 2 + g.se2 ** 2 + 1e-300)
        c = int(np.argmax(np.where(g.ok, np.abs(tstat), -np.inf)))
        effect = abs(float(g.m1[c] - g.m2[c])) / (float(np.std(r)) or 1.0)
        if abs(tstat[c]) < self.cfg.attribution_z or effect < self.cfg.attribution_min_effect:
            return None
        below = bool(g.m1[c] < g.m2[c])  # the worse side
        (mg, ng), (mr, nr) = ((g.m1[c], g.n1[c]), (g.m2[c], g.n2[c]))[::1 if below else -1]
        return {"threshold": float(thr[c]), "below": below, "t": float(abs(tstat[c])),
                "effect": effect, "mean_g": float(mg), "mean_r": float(mr), "n_g": int(ng),
                "n_r": int(nr)}

    def _drop_split(self, x, ret, bef, aft) -> dict | None:
        """Best split by how much more one side fell across a drop (max |t| of the interaction:
        (fall of one side − fall of the other) over its standard error)."""
        okb, oka = bef & np.isfinite(x), aft & np.isfinite(x)
        xb, rb, xa, ra = x[okb], ret[okb], x[oka], ret[oka]
        if (min(len(rb), len(ra)) < 2 * self.cfg.attribution_min_n
                or np.ptp(np.concatenate([xb, xa])) == 0):
            return None
        thr = self._thresholds(np.concatenate([xb, xa]))
        B = _split_stats(xb, rb, thr, self._min_n(len(rb)))
        A = _split_stats(xa, ra, thr, self._min_n(len(ra)))
        fall1, fall2 = B.m1 - A.m1, B.m2 - A.m2
        tstat = (fall1 - fall2) / np.sqrt(B.se1 ** 2 + B.se2 ** 2 + A.se1 ** 2 + A.se2 ** 2
                                          + 1e-300)
        okc = B.ok & A.ok
        if not okc.any():
            return None
        c = int(np.argmax(np.where(okc, np.abs(tstat), -np.inf)))
        scale = float(np.std(np.concatenate([rb, ra]))) or 1.0
        inter = abs(float(fall1[c] - fall2[c]))
        if (abs(tstat[c]) < self.cfg.attribution_z
                or inter / scale < self.cfg.attribution_min_effect):
            return None
        below = bool(fall1[c] > fall2[c])  # the side that fell more
        one = (B.m1[c], A.m1[c], fall1[c], B.n1[c] + A.n1[c])
        two = (B.m2[c], A.m2[c], fall2[c], B.n2[c] + A.n2[c])
        g, o = (one, two) if below else (two, one)
        if g[2] <= 0:
            return None  # the "worse" side did not fall: the other side rose; not a drop cause
        total = float(rb.mean() - ra.mean())
        share = float(g[2] * g[3] / (g[3] + o[3]) / total) if total > 0 else None
        return {"threshold": float(thr[c]), "below": below, "t": float(abs(tstat[c])),
                "before_g": float(g[0]), "after_g": float(g[1]), "fall_g": float(g[2]),
                "n_g": int(g[3]), "before_r": float(o[0]), "after_r": float(o[1]),
                "fall_r": float(o[2]), "n_r": int(o[3]), "share_of_drop": share, "scale": scale,
                "interaction_sd": inter / scale}

    # -- cross-references -----------------------------------------------------------------------

    def link_drops(self, drops: list[Finding]):
        """Name, in each drop's message, the other findings that start around it."""
        causes = ("log_std_collapse", "entropy_collapse", "kl_blowup", "kl_spikes",
                  "grad_norm_blowup", "grad_norm_spikes", "nonfinite", "nonfinite_rollback",
                  "line_search_rejections")
        for drop in drops:
            s, e = drop.evidence["start_iteration"], drop.evidence["end_iteration"]
            span = 2 * self.w
            near = [f for f in self.findings if f.kind in causes and f.iteration is not None
                    and s - span <= f.iteration <= e + self.w]
            ev = {k: v for k, v in drop.evidence.items() if k != "_index"}
            msg = drop.message
            if near:
                msg += "; around then: " + ", ".join(
                    f"{f.kind.replace('_', ' ')} (iteration {f.iteration})" for f in near)
                ev["around"] = [f.kind for f in near]
            new = dataclasses.replace(drop, message=msg, evidence=ev)
            self.findings[self.findings.index(drop)] = new


# --------------------------------------------------------------------------------------------------
# Output


def format_report(findings: Sequence[Finding], *, evidence: bool = False) -> str:
    """Findings as a ranked, readable report ("no problems found" when there are none).

    Args:
      findings: from :func:`diagnose` (already ranked).
      evidence: also print each finding's evidence numbers.
    """
    if not findings:
        return "jmeta doctor: no problems found"
    label = lambda s: ("critical" if s >= 0.8 else "problem" if s >= 0.5 else
                       "warning" if s >= 0.3 else "info")
    lines = [f"jmeta doctor: {len(findings)} finding{'s' if len(findings) != 1 else ''}, "
             f"most severe first"]
    for i, f in enumerate(findings, 1):
        where = f" @ {f.iteration}" if f.iteration is not None else ""
        lines.append(f"{i:>2}. [{label(f.severity)} {f.severity:.2f}] {f.kind}{where}: "
                     f"{f.message}")
        if evidence and f.evidence:
            ev = ", ".join(f"{k}={_f(v) if _is_number(v) else v}" for k, v in f.evidence.items()
                           if not isinstance(v, (list, dict)))
            lines.append(f"      evidence: {ev}")
    return "\n".join(lines)


def findings_to_json(findings: Sequence[Finding], *, indent: int | None = 2) -> str:
    """Findings as a JSON array of ``{kind, severity, iteration, message, evidence}``."""
    return json.dumps([f.to_dict() for f in findings], indent=indent, allow_nan=False)


# --------------------------------------------------------------------------------------------------
# Numerics


class _Groups(NamedTuple):
    """Per candidate threshold ``[C]``: the two sides' means, standard errors, sizes, and
    whether both sides are large enough."""

    m1: np.ndarray
    m2: np.ndarray
    se1: np.ndarray
    se2: np.ndarray
    n1: np.ndarray
    n2: np.ndarray
    ok: np.ndarray


def _split_stats(x: np.ndarray, r: np.ndarray, thr: np.ndarray, min_n: int) -> _Groups:
    """Statistics of ``r`` on the two sides ``x < thr[c]`` (1) and ``x ≥ thr[c]`` (2)."""
    below = x[:, None] < thr[None, :]            # [M, C]
    n1 = below.sum(0)
    n2 = len(r) - n1
    n1s, n2s = np.maximum(n1, 1), np.maximum(n2, 1)
    s1, q1 = r @ below, (r * r) @ below
    m1, m2 = s1 / n1s, (r.sum() - s1) / n2s
    v1 = np.maximum(q1 / n1s - m1 ** 2, 0) * n1s / np.maximum(n1s - 1, 1)
    v2 = np.maximum(((r * r).sum() - q1) / n2s - m2 ** 2, 0) * n2s / np.maximum(n2s - 1, 1)
    return _Groups(m1, m2, np.sqrt(v1 / n1s), np.sqrt(v2 / n2s), n1, n2,
                   (n1 >= min_n) & (n2 >= min_n))


def _leaf(name: str) -> str:
    """The last part of a flattened metric name (``"outer/kl"`` -> ``"kl"``), lower-cased."""
    return re.split(r"[/.]", name)[-1].lower()


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _noise_sigma(y: np.ndarray) -> float:
    """Robust iteration-to-iteration noise: 1.4826·MAD(diff y)/√2 (trend-free)."""
    d = np.diff(y)
    if len(d) == 0:
        return 0.0
    mad = float(np.median(np.abs(d - np.median(d))))
    sigma = 1.4826 * mad / math.sqrt(2)
    if sigma == 0:  # piecewise-constant curve: fall back to the mean absolute difference
        sigma = float(np.mean(np.abs(d))) / math.sqrt(2)
    return sigma


def _rolling_median(y: np.ndarray, w: int) -> np.ndarray:
    """Centred rolling median of width ``w`` (shrinking at the ends), same length as ``y``."""
    n = len(y)
    w = max(1, min(int(w), n))
    if w == 1:
        return y.astype(float).copy()
    h = w // 2
    pad = np.concatenate([np.full(h, np.nan), y.astype(float), np.full(w - 1 - h, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, w)
    return np.nanmedian(win, axis=1)


def _change_point(y: np.ndarray, lo: int, hi: int) -> int:
    """The index ``s`` in ``(lo, hi]`` that best splits ``y[lo:hi+1]`` into two means (the
    largest two-sample z, ``(m_left − m_right)·sqrt(n_l·n_r/n)``), ``y[s]`` the first on the
    right."""
    seg = y[lo:hi + 1].astype(float)
    m = len(seg)
    if m < 2:
        return lo
    c = np.cumsum(seg)
    nl = np.arange(1, m)
    left = c[:-1] / nl
    right = (c[-1] - c[:-1]) / (m - nl)
    score = (left - right) * np.sqrt(nl * (m - nl) / m)
    return lo + 1 + int(np.argmax(score))


def _level_at(y: np.ndarray, i: int) -> float:
    """Robust level of a short window at its index ``i``: the IQM of ``y`` detrended by the
    Theil–Sen slope (median of pairwise slopes), so a ramp into a fall does not bias it."""
    m = len(y)
    if m < 3:
        return float(np.median(y))
    x = np.arange(m, dtype=float)
    iu, ju = np.triu_indices(m, 1)
    slope = float(np.median((y[ju] - y[iu]) / (ju - iu)))
    return float(_iqm(y - slope * (x - x[i])))


def _end_levels(y: np.ndarray, w: int, chunk: int = 256) -> np.ndarray:
    """For every window ``y[i:i+w]``: its robust level at its last index (``[n − w + 1]``).

    The level is the IQM of the window detrended by a Theil–Sen slope, taken from the window
    itself and from the ``2w`` points ending with it (a longer baseline keeps a wobble of
    correlated noise from being extrapolated as a trend); the smaller of the two levels is
    returned, so that past a peak, where the long slope still averages the rise, the level is
    not overstated (a kink is not a drop).
    """
    y = y.astype(float)
    n = len(y)
    win = np.lib.stride_tricks.sliding_window_view(y, w)
    x = np.arange(w, dtype=float) - (w - 1)
    out = np.full(len(win), np.inf)
    for length in (w, 2 * w):
        if n < length:
            continue
        long = np.lib.stride_tricks.sliding_window_view(y, length)
        iu, ju = np.triu_indices(length, 1)
        rows = np.arange(length - w, len(win))     # windows with `length` points ending with them
        for s in range(0, len(rows), chunk):
            r = rows[s:s + chunk]
            c = long[r - (length - w)]
            slope = np.median((c[:, ju] - c[:, iu]) / (ju - iu), axis=1)
            out[r] = np.minimum(out[r], _iqm(win[r] - slope[:, None] * x))
    return out


def _iqm(rows: np.ndarray) -> np.ndarray:
    """Interquartile mean of each row (the mean of its middle half): robust to outliers like a
    median, but far less noisy when values cluster (e.g. a mean over tasks of which a random
    few fail), as rliable recommends for RL scores (Agarwal et al., 2021)."""
    w = rows.shape[-1]
    q = w // 4
    srt = np.sort(rows, axis=-1)
    return srt[..., q:w - q].mean(axis=-1)


def _window_iqms(y: np.ndarray, w: int) -> np.ndarray:
    """``out[i] = iqm(y[i:i+w])``, length ``n − w + 1``."""
    return _iqm(np.lib.stride_tricks.sliding_window_view(y.astype(float), w))


def _window_sigmas(y: np.ndarray, w: int) -> np.ndarray:
    """:func:`_noise_sigma` of every window ``y[i:i+w]`` (robust, from its first differences)."""
    d = np.lib.stride_tricks.sliding_window_view(np.diff(y.astype(float)), w - 1)
    mad = np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)
    return 1.4826 * mad / math.sqrt(2)


def _correlation_time(y: np.ndarray, w: int, sig: np.ndarray) -> float:
    """How many times the variance of a ``w``-window IQM exceeds its value for independent
    noise, ``(1.13·σ)²/w`` (σ: the window's iteration-to-iteration noise); 1 when it does not
    clearly exceed it.

    Estimated from second differences of window IQMs ``w`` apart,
    ``m[i] − 2·m[i+w] + m[i+2w]``, scaled by their local noise (so a run that gets noisier after
    a failure is not "correlated"): a linear trend cancels, a sudden drop touches only a few of
    them, and their robust variance is τ. Below ``_TAU_MIN`` (the 95th percentile of the
    estimate for independent noise on 1000 iterations) it is taken as 1.
    """
    m = _window_iqms(y, w)
    i = np.arange(max(0, len(m) - 2 * w))
    if len(i) < 4 * w:
        return 1.0
    d2 = m[i] - 2 * m[i + w] + m[i + 2 * w]
    s = np.sqrt((sig[i] ** 2 + 4 * sig[i + w] ** 2 + sig[i + 2 * w] ** 2) / 6)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = d2 * math.sqrt(w) / (1.13 * math.sqrt(6) * s)
    z = z[np.isfinite(z)]
    if len(z) < 4 * w:
        return 1.0
    tau = float((1.4826 * np.median(np.abs(z - np.median(z)))) ** 2)
    return tau if math.isfinite(tau) and tau > _TAU_MIN else 1.0


_TAU_MIN = 2.0


def _window_means(y: np.ndarray, w: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(y)])
    return (c[w:] - c[:-w]) / w


def _center_by_group(r: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``r`` minus the mean of its group (iteration): removes the learning trend."""
    _, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, r)
    counts = np.bincount(inv)
    return r - (sums / counts)[inv]


def _pct(ref: float, new: float, scale: float) -> float | None:
    """``100·(new − ref)/|ref|`` (negative: a fall), or ``None`` when ``|ref| < 0.1·scale``."""
    if not (math.isfinite(ref) and math.isfinite(new)) or abs(ref) < 0.1 * abs(scale) or ref == 0:
        return None
    return 100.0 * (new - ref) / abs(ref)


def _f(x) -> str:
    """A number for a message: 3 significant digits, no exponent for ordinary sizes."""
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e6:
        digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
        s = f"{x:.{digits}f}"
        return s.rstrip("0").rstrip(".") if "." in s else s
    return f"{x:.3g}"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x
