"""``RunSpec``: a run's algorithm, environment and configuration as plain JSON data.

A run directory holds its ``RunSpec`` as JSON, so the environment, task distribution and algorithm
of a run can be rebuilt later (``jmeta evaluate RUN_DIR``, :func:`jmeta.training.load`) without
pickle or eval: :func:`build` maps the names to constructors and the dicts to frozen ``Config``
dataclasses, which validate every value.

Algorithms (``RunSpec.algo``):

* ``"maml-rl"``: :mod:`jmeta.algorithms.maml_rl` (outer loop, first order etc. via ``algo_config``)
  on any environment of :func:`jmeta.envs.registry.names`;
* ``"rl2"``: :mod:`jmeta.algorithms.rl2` on any registered environment;
* ``"maml"``, ``"fomaml"``, ``"reptile"``, ``"meta-sgd"``: :mod:`jmeta.algorithms.supervised`
  (``Config.method`` comes from the name) on the supervised task families ``"sinusoid"`` and
  ``"digits"``.

A ``maml-rl``/``rl2`` spec with ``continual`` (the fields of
:class:`jmeta.continual.ContinualConfig`) meta-trains through a schedule of task groups with task
replay (:func:`jmeta.continual.make`); its state carries the replay buffer.

>>> spec = RunSpec("maml-rl", "point-nav", env_kwargs={"horizon": 20},
...                algo_config={"num_tasks": 4, "outer": "ppo"}, seed=1)
>>> RunSpec.from_json(spec.to_json()) == spec
True
>>> env, tasks, algo = build(spec)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from typing import Any, Callable, Mapping, NamedTuple

from jmeta import continual as continual_mod
from jmeta.algorithms import maml_rl, rl2, supervised
from jmeta.algorithms.base import Algorithm
from jmeta.envs import registry

__all__ = [
    "ALGORITHMS",
    "RL_ALGORITHMS",
    "SUPERVISED_ALGORITHMS",
    "SUPERVISED_ENVS",
    "RunSpec",
    "SupervisedTasks",
    "build",
    "config_class",
    "default_best_metric",
]

RL_ALGORITHMS = ("maml-rl", "rl2")
# RunSpec algo name -> supervised.Config.method
SUPERVISED_ALGORITHMS = {"maml": "maml", "fomaml": "fomaml", "reptile": "reptile",
                         "meta-sgd": "meta_sgd"}
ALGORITHMS = RL_ALGORITHMS + tuple(SUPERVISED_ALGORITHMS)

# Default env_kwargs of the supervised families (their constructors' required arguments).
_DIGITS_TRAIN, _DIGITS_TEST = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
SUPERVISED_ENVS: dict[str, dict[str, Any]] = {
    # Finn et al. 2017 §5.1: K-shot sinusoid regression with a separate query set.
    "sinusoid": {"num_shots": 10, "num_query": 10},
    # N-way K-shot on scikit-learn's 8x8 digits: meta-train on 0-4, meta-test on 5-9.
    "digits": {"num_ways": 5, "num_shots": 1, "num_query": 15, "classes": _DIGITS_TRAIN,
               "test_classes": _DIGITS_TEST},
}
_SUPERVISED_BUILDERS: dict[str, Callable[..., supervised.TaskFamily]] = {
    "sinusoid": supervised.sinusoid,
    "digits": supervised.digits,
}


class SupervisedTasks(NamedTuple):
    """The splits of a supervised task family (what :func:`build` returns as ``tasks``).

    Attributes:
      train: the meta-training family.
      test: held-out tasks (for ``digits``: the ``test_classes``; for ``sinusoid``: the same
        family, whose tasks are drawn with keys never used in training).
      ood: a shifted family, or ``None`` where the family defines none.
    """

    train: supervised.TaskFamily
    test: supervised.TaskFamily
    ood: supervised.TaskFamily | None = None


def config_class(algo: str) -> type:
    """The ``Config`` dataclass behind ``algo`` (a name of :data:`ALGORITHMS`).

    Raises:
      ValueError: unknown algorithm name (lists the valid ones).
    """
    _check_choice("algo", algo, ALGORITHMS)
    if algo == "maml-rl":
        return maml_rl.Config
    if algo == "rl2":
        return rl2.Config
    return supervised.Config


def default_best_metric(algo: str) -> tuple[str, str]:
    """The metric a run of ``algo`` ranks its checkpoints by, and ``"max"``/``"min"``.

    ``maml-rl``: the post-adaptation return; ``rl2``: the trial return; supervised methods: the
    post-adaptation query loss (lower is better).
    """
    _check_choice("algo", algo, ALGORITHMS)
    if algo == "maml-rl":
        return "return_post", "max"
    if algo == "rl2":
        return "trial_return", "max"
    return "query_loss_after", "min"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything needed to rebuild a run's env, tasks and algorithm, as JSON-able data.

    Names and fields are checked and every value validated (by the env's and the algorithm's
    ``Config``) when the spec is made, so a bad spec fails before anything is built. Lists are
    stored as tuples, so a spec equals its JSON round trip.

    Attributes:
      algo: one of :data:`ALGORITHMS`.
      env: a registered environment (``jmeta.envs.registry.names()``) for ``maml-rl``/``rl2``, or a
        supervised family (``"sinusoid"``, ``"digits"``) for the supervised methods.
      env_kwargs: overrides of the environment's config (``jmeta.make(env, **env_kwargs)``), or the
        family's arguments (``sinusoid``: num_shots, num_query, amplitude, phase, x_range;
        ``digits``: num_ways, num_shots, num_query, classes, test_classes, rotations).
      algo_config: fields of the algorithm's ``Config`` (``maml_rl.Config``, ``rl2.Config`` or
        ``supervised.Config`` without ``method``, which the algo name sets).
      seed: the seed of ``algo.init(jax.random.key(seed))``.
      continual: ``None`` (default), or for ``maml-rl``/``rl2`` the fields of
        :class:`jmeta.continual.ContinualConfig` (``task_groups``: a list of dicts of range name
        -> ``[low, high]``, names of the env's task distribution; ``iterations_per_stage``;
        ``replay_ratio``; ``replay_capacity``; ``buffer``). Stored complete (defaults filled
        in), so the run's schedule and replay settings are in ``run.json``. Left out of
        :meth:`to_dict` when ``None``, so specs without it read as before.

    Raises:
      ValueError: an unknown algorithm, environment or field, or an invalid value; one line that
        names it and, for names, the valid choices.
    """

    algo: str
    env: str
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    algo_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    continual: Mapping[str, Any] | None = None

    def __post_init__(self):
        _check_choice("algo", self.algo, ALGORITHMS)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {self.seed!r}")
        for name in ("env_kwargs", "algo_config"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name}: expected a dict of field -> value, got {value!r}")
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise ValueError(f"{name}: field names must be strings, got {bad[0]!r}")
            object.__setattr__(self, name, {k: _tuples(v) for k, v in value.items()})
        supervised_algo = self.algo in SUPERVISED_ALGORITHMS
        if supervised_algo:
            _check_choice("env", self.env, tuple(SUPERVISED_ENVS),
                          what="task family", owner=self.algo,
                          hint=("it is an environment for the RL algorithms "
                                f"({', '.join(RL_ALGORITHMS)})"
                                if self.env in registry.names() else None))
            _check_fields("env_kwargs", self.env_kwargs, _family_fields(self.env),
                          f"task family {self.env!r}")
        else:
            _check_choice("env", self.env, tuple(registry.names()),
                          what="environment", owner=self.algo,
                          hint=("it is a supervised task family (algos "
                                f"{', '.join(SUPERVISED_ALGORITHMS)})"
                                if self.env in SUPERVISED_ENVS else None))
            _check_fields("env_kwargs", self.env_kwargs,
                          list(registry.describe(self.env)) + ["ood_obs_noise"],
                          f"environment {self.env!r}")
            env_config = {k: v for k, v in self.env_kwargs.items()
                          if k not in registry.WRAPPER_OPTIONS}
            _validated(registry.config_class(self.env), env_config, "env_kwargs")
        if supervised_algo and "method" in self.algo_config:
            raise ValueError(f"algo_config: 'method' is set by the algo name "
                             f"({', '.join(SUPERVISED_ALGORITHMS)}); drop it")
        cls = config_class(self.algo)
        fields = [f.name for f in dataclasses.fields(cls) if not (supervised_algo
                                                                  and f.name == "method")]
        _check_fields("algo_config", self.algo_config, fields, f"{self.algo!r}")
        config = self.config()  # validates the values
        if self.continual is not None:
            self._check_continual(config)

    def _check_continual(self, config: Any) -> None:
        if self.algo not in RL_ALGORITHMS:
            raise ValueError(f"continual: task groups and replay are for "
                             f"{' and '.join(RL_ALGORITHMS)}, not {self.algo}")
        if not isinstance(self.continual, Mapping):
            raise ValueError(f"continual: expected a dict of field -> value, "
                             f"got {self.continual!r}")
        fields = [f.name for f in dataclasses.fields(continual_mod.ContinualConfig)]
        _check_fields("continual", self.continual, fields, "continual")
        cont = _validated(continual_mod.ContinualConfig, dict(self.continual), "continual")
        try:
            cont.check_num_tasks(config.num_tasks)
            _, tasks = registry.make(self.env, **dict(self.env_kwargs))
            continual_mod.check_task_groups(tasks, cont.task_groups)
        except ValueError as e:
            raise ValueError(f"continual: {str(e).splitlines()[0]}") from None
        object.__setattr__(self, "continual", _tuples(cont.to_dict()))

    def continual_config(self) -> Any:
        """The :class:`jmeta.continual.ContinualConfig` (``None`` for a plain run)."""
        if self.continual is None:
            return None
        return continual_mod.ContinualConfig(**dict(self.continual))

    def config(self) -> Any:
        """The algorithm's frozen ``Config`` (validated)."""
        kwargs = dict(self.algo_config)
        if self.algo in SUPERVISED_ALGORITHMS:
            kwargs["method"] = SUPERVISED_ALGORITHMS[self.algo]
        return _validated(config_class(self.algo), kwargs, "algo_config")

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (tuples become lists)."""
        out = {"algo": self.algo, "env": self.env, "env_kwargs": _lists(dict(self.env_kwargs)),
               "algo_config": _lists(dict(self.algo_config)), "seed": self.seed}
        if self.continual is not None:
            out["continual"] = _lists(dict(self.continual))
        return out

    def to_json(self) -> str:
        """The spec as a JSON string (keys sorted, so equal specs give equal strings)."""
        try:
            return json.dumps(self.to_dict(), sort_keys=True, indent=2, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"spec: not JSON-serialisable ({e})") from None

    @classmethod
    def from_dict(cls, data: Any) -> "RunSpec":
        """Inverse of :meth:`to_dict`.

        Raises:
          ValueError: not a dict, a missing or unknown key, or anything ``RunSpec`` rejects.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"spec: expected a JSON object, got {type(data).__name__}")
        keys = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in keys]
        if unknown:
            raise ValueError(f"spec: unknown key {unknown[0]!r}; valid: {', '.join(keys)}")
        for k in ("algo", "env"):
            if k not in data:
                raise ValueError(f"spec: missing key {k!r}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        """Inverse of :meth:`to_json` (plain ``json``, never eval).

        Raises:
          ValueError: malformed JSON or anything :meth:`from_dict` rejects.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"spec: not valid JSON ({e})") from None
        return cls.from_dict(data)

    def __hash__(self) -> int:
        return hash(self.to_json())


def build(spec: RunSpec, mesh: Any = None) -> tuple[Any, Any, Algorithm]:
    """Builds the environment, task distribution and algorithm of ``spec``.

    Args:
      spec: a :class:`RunSpec`.
      mesh: optional ``jax.sharding.Mesh`` with an axis ``"tasks"``
        (:func:`jmeta.sharding.task_mesh`) over which ``maml-rl``/``rl2`` shard their task batch
        (``num_tasks`` divisible by its size).

    Returns:
      ``(env, tasks, algorithm)``. For ``maml-rl``/``rl2``: the environment, its
      :class:`~jmeta.envs.tasks.TaskDistribution` (``.train``/``.test``/``.ood``) and the
      ``Algorithm`` (with ``continual``: :func:`jmeta.continual.make` of it, whose state is a
      :class:`jmeta.continual.ContinualState`; ``tasks`` is still the env's whole
      distribution: :func:`jmeta.continual.group_tasks` gives one group's). For the supervised
      methods there is no environment: ``(None,``
      :class:`SupervisedTasks` ``, algorithm)``.

    Raises:
      ValueError: an invalid value (names the field); a ``mesh`` for a supervised method, or one
        whose ``"tasks"`` axis does not divide ``num_tasks``.
    """
    if not isinstance(spec, RunSpec):
        raise ValueError(f"spec: expected a RunSpec, got {type(spec).__name__}")
    config = spec.config()
    if mesh is not None and spec.algo not in RL_ALGORITHMS:
        raise ValueError(f"mesh: task-batch sharding is for {' and '.join(RL_ALGORITHMS)} only, "
                         f"not {spec.algo}")
    if spec.algo in SUPERVISED_ALGORITHMS:
        tasks = _supervised_tasks(spec.env, dict(spec.env_kwargs))
        return None, tasks, supervised.make(config, tasks.train)
    env, tasks = registry.make(spec.env, **dict(spec.env_kwargs))
    module = maml_rl if spec.algo == "maml-rl" else rl2
    cont = spec.continual_config()
    if cont is not None:
        algo = continual_mod.make(lambda t: module.make(config, env, t, mesh=mesh), tasks, cont,
                                  num_tasks=config.num_tasks)
        return env, tasks, algo
    return env, tasks, module.make(config, env, tasks, mesh=mesh)


# --- helpers -----------------------------------------------------------------------------------
def _check_choice(field: str, value: Any, choices: tuple[str, ...], what: str | None = None,
                  owner: str | None = None, hint: str | None = None):
    if value not in choices:
        where = f" for algo {owner!r}" if owner else ""
        hint = f" ({value!r}: {hint})" if hint else ""
        raise ValueError(f"{field}: unknown {what or field} {value!r}{where}; "
                         f"valid: {', '.join(choices)}{hint}")


def _check_fields(field: str, given: Mapping[str, Any], valid: list[str], owner: str):
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise ValueError(f"{field}: unknown field {unknown[0]!r} for {owner}; "
                         f"valid: {', '.join(valid)}")


def _validated(cls: type, kwargs: Mapping[str, Any], field: str) -> Any:
    """``cls(**kwargs)`` with its ValueError/TypeError as one line prefixed by ``field``."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{field}: {message}") from None


def _family_fields(name: str) -> list[str]:
    params = list(inspect.signature(_SUPERVISED_BUILDERS[name]).parameters)
    return params + (["test_classes"] if name == "digits" else [])


def _supervised_tasks(name: str, kwargs: dict[str, Any]) -> SupervisedTasks:
    kwargs = {**SUPERVISED_ENVS[name], **kwargs}
    builder = _SUPERVISED_BUILDERS[name]

    def make(**kw):
        try:
            return builder(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"env_kwargs: {str(e).splitlines()[0]}") from None

    if name == "digits":
        test_classes = kwargs.pop("test_classes")
        train = make(**kwargs)
        return SupervisedTasks(train=train, test=make(**{**kwargs, "classes": test_classes}))
    family = make(**kwargs)
    return SupervisedTasks(train=family, test=family)


def _tuples(value: Any) -> Any:
    """Lists (from JSON) as tuples, recursively, and finite-float checks."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"spec: non-finite number {value!r} (JSON cannot hold it)")
    return value


def _lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value
