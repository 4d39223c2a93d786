"""Supervised few-shot meta-learning: task families and MAML / FOMAML / Meta-SGD / Reptile.

Task families are jit-able samplers (``TaskFamily.sample(key) -> Task``):

* ``sinusoid``: regression exactly as Finn et al. 2017, §5.1 and App. C: amplitude U[0.1, 5.0],
  phase U[0, π], inputs U[−5, 5], ``y = A sin(x − φ)``, K support points and a separate query set.
* ``classification``: N-way K-shot episodes over any ``(x, y)`` arrays the user passes (labels are
  re-drawn per episode, classes without replacement, examples without replacement within a class).
  ``digits`` builds it on scikit-learn's bundled 8×8 digits (no download).

``make(config, tasks) -> Algorithm(init, update, train, adapt)`` has the shape of every jmeta
algorithm (shared/DESIGN.md §4); ``evaluate`` is the meta-test protocol: adapt on each fresh task's
support set with plain gradient steps and report the query loss (and accuracy) after 0..T steps.

>>> import jax
>>> tasks = sinusoid(num_shots=5, num_query=5)
>>> algo = make(Config(meta_batch_size=4), tasks)
>>> state = algo.init(jax.random.key(0))
>>> state, metrics = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=3)
>>> metrics["query_loss_after"].shape
(3,)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jmeta.algorithms import maml
from jmeta.algorithms.base import Algorithm, TrainState, scan_train
from jmeta.networks.mlp import MLP

__all__ = [
    "Config",
    "MetaParams",
    "Task",
    "TaskFamily",
    "classification",
    "digits",
    "evaluate",
    "make",
    "sinusoid",
]

METHODS = ("maml", "fomaml", "meta_sgd", "reptile", "pretrain")


# --------------------------------------------------------------------------------------------
# Task families


class Task(NamedTuple):
    """One few-shot task. Leading axes are examples.

    Attributes:
      support_x: ``[K_s, *in]`` inputs the learner adapts on.
      support_y: ``[K_s, *out]`` targets (float for regression, int32 labels ``[K_s]`` for
        classification).
      query_x: ``[K_q, *in]`` held-out inputs of the same task (the meta-objective).
      query_y: ``[K_q, *out]``.
      info: task parameters, e.g. ``{"amplitude": [], "phase": []}`` for a sinusoid, or the
        ``[N]`` original class ids of an episode.
    """

    support_x: jax.Array
    support_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array
    info: Any = None


class TaskFamily(NamedTuple):
    """A distribution over tasks.

    Attributes:
      sample: ``sample(key) -> Task``, pure and jit-able (vmap it for a meta-batch).
      kind: ``"regression"`` (MSE loss) or ``"classification"`` (softmax cross-entropy, accuracy).
      output_dim: network output width (1 for sinusoid, N for N-way).
      input_shape: shape of one input.
    """

    sample: Callable[[jax.Array], Task]
    kind: str
    output_dim: int
    input_shape: tuple[int, ...]


def sinusoid(
    num_shots: int,
    num_query: int,
    *,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> TaskFamily:
    """Sinusoid regression of Finn et al. 2017 (§5.1): ``y = A sin(x − φ)``.

    Args:
      num_shots: K, number of support points per task.
      num_query: number of query points per task (drawn independently of the support).
      amplitude: range of A, uniform (paper: [0.1, 5.0]).
      phase: range of φ, uniform (paper: [0, π]).
      x_range: range of the inputs, uniform (paper: [−5, 5]).

    Returns:
      A ``TaskFamily`` with inputs ``[K, 1]`` and targets ``[K, 1]``.
    """
    for name, v in (("num_shots", num_shots), ("num_query", num_query)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    for name, (lo, hi) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
        if not lo <= hi:
            raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)!r}")

    def sample(key: jax.Array) -> Task:
        k_a, k_p, k_s, k_q = jax.random.split(key, 4)
        a = jax.random.uniform(k_a, (), minval=amplitude[0], maxval=amplitude[1])  # U(0.1, 5.0)
        p = jax.random.uniform(k_p, (), minval=phase[0], maxval=phase[1])  # U(0, π)
        xs = jax.random.uniform(k_s, (num_shots, 1), minval=x_range[0], maxval=x_range[1])
        xq = jax.random.uniform(k_q, (num_query, 1), minval=x_range[0], maxval=x_range[1])
        f = lambda x: a * jnp.sin(x - p)  # noqa: E731
        return Task(xs, f(xs), xq, f(xq), {"amplitude": a, "phase": p})

    return TaskFamily(sample=sample, kind="regression", output_dim=1, input_shape=(1,))


def classification(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    num_ways: int,
    num_shots: int,
    num_query: int,
    classes: tuple[int, ...] | None = None,
) -> TaskFamily:
    """Episodic N-way K-shot sampler over user-given arrays (Vinyals et al. 2016; Finn et al. §5.2).

    Each episode draws ``num_ways`` distinct classes from ``classes`` in random order (episode
    label ``i`` is the i-th drawn class), then ``num_shots + num_query`` distinct examples of each
    class; the first ``num_shots`` form the support set. The index table is built once here (host
    side); ``sample`` is pure and jit-able.

    Args:
      x: ``[M, *in]`` inputs.
      y: ``[M]`` integer class ids.
      num_ways: N, classes per episode.
      num_shots: K, support examples per class.
      num_query: query examples per class.
      classes: the class ids this split may use (e.g. meta-train classes); default all of ``y``.

    Returns:
      A ``TaskFamily`` whose tasks hold ``support_x [N*K, *in]``, ``support_y [N*K]`` (int32),
      ``query_x [N*Q, *in]``, ``query_y [N*Q]`` and ``info`` = the ``[N]`` original class ids.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows and y must be 1-D; got "
                         f"x {x.shape}, y {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class ids, got dtype {y.dtype}")
    for name, v in (("num_ways", num_ways), ("num_shots", num_shots), ("num_query", num_query)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    classes = tuple(sorted(set(y.tolist()))) if classes is None else tuple(int(c) for c in classes)
    if len(classes) < num_ways:
        raise ValueError(f"num_ways={num_ways} needs at least that many classes, got {len(classes)}")
    counts = np.array([(y == c).sum() for c in classes])
    need = num_shots + num_query
    if counts.min() < need:
        c = classes[int(counts.argmin())]
        raise ValueError(f"class {c} has {counts.min()} examples; num_shots + num_query = {need}")
    table = np.zeros((len(classes), counts.max()), np.int32)
    for i, c in enumerate(classes):
        idx = np.flatnonzero(y == c)
        table[i, : len(idx)] = idx
    table_j, counts_j = jnp.asarray(table), jnp.asarray(counts)
    x_j, class_ids = jnp.asarray(x), jnp.asarray(classes, jnp.int32)

    def sample(key: jax.Array) -> Task:
        k_c, k_e = jax.random.split(key)
        chosen = jax.random.choice(k_c, len(classes), (num_ways,), replace=False)  # [N]

        def examples(k, c):
            # uniform random order of this class's valid rows; padding sorts last
            u = jax.random.uniform(k, (table_j.shape[1],))
            u = jnp.where(jnp.arange(table_j.shape[1]) < counts_j[c], u, 2.0)
            return table_j[c, jnp.argsort(u)[:need]]  # [K + Q]

        rows = jax.vmap(examples)(jax.random.split(k_e, num_ways), chosen)  # [N, K + Q]
        labels = jnp.broadcast_to(jnp.arange(num_ways, dtype=jnp.int32)[:, None], rows.shape)
        s_rows, q_rows = rows[:, :num_shots].reshape(-1), rows[:, num_shots:].reshape(-1)
        s_lab, q_lab = labels[:, :num_shots].reshape(-1), labels[:, num_shots:].reshape(-1)
        return Task(x_j[s_rows], s_lab, x_j[q_rows], q_lab, class_ids[chosen])

    return TaskFamily(
        sample=sample, kind="classification", output_dim=num_ways, input_shape=tuple(x.shape[1:])
    )


def digits(
    *,
    num_ways: int,
    num_shots: int,
    num_query: int,
    classes: tuple[int, ...],
    rotations: bool = False,
) -> TaskFamily:
    """``classification`` on scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no
    download); inputs are the 64 pixel values scaled to [0, 1].

    Args:
      num_ways, num_shots, num_query: as in ``classification``.
      classes: the digit classes of this split (e.g. 0–4 to meta-train, 5–9 to meta-test).
      rotations: also add each class rotated by 90°, 180° and 270° as three new classes (ids
        ``c + 10 k``), the augmentation Finn et al. 2017 use on Omniglot (after Santoro et al.
        2016); it gives a meta-training split of 5 digits 20 classes.
    """
    from sklearn.datasets import load_digits  # host-side data loading only

    data = load_digits()
    images = data.images.astype(np.float32) / 16.0  # [M, 8, 8]
    labels = data.target.astype(np.int32)
    keep = np.isin(labels, classes)
    images, labels = images[keep], labels[keep]
    split = tuple(int(c) for c in classes)
    if rotations:
        images = np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)])
        labels = np.concatenate([labels + 10 * k for k in range(4)])
        split = tuple(c + 10 * k for k in range(4) for c in split)
    return classification(
        images.reshape(len(images), -1),
        labels,
        num_ways=num_ways,
        num_shots=num_shots,
        num_query=num_query,
        classes=split,
    )


# --------------------------------------------------------------------------------------------
# Algorithms


@dataclasses.dataclass(frozen=True)
class Config:
    """Supervised meta-learning configuration; defaults are Finn et al.'s sinusoid setup.

    Attributes:
      method: ``"maml"`` (second order), ``"fomaml"`` (first order), ``"meta_sgd"`` (learned
        per-parameter inner rates, Li et al. 2017), ``"reptile"`` (Nichol et al. 2018: the outer
        step moves towards the adapted parameters) or ``"pretrain"`` (no meta-learning: one network
        trained on the pooled support+query data of every task, the paper's baseline).
      hidden_sizes: MLP hidden widths (paper: 40-40).
      activation: hidden activation (paper: relu).
      inner_lr: inner SGD step size α (paper: 0.01); the initial value of Meta-SGD's rates.
      num_inner_steps: inner steps per task during meta-training (paper: 1).
      eval_inner_steps: inner steps ``adapt`` takes at meta-test time (paper reports up to 10).
      meta_batch_size: tasks per meta-iteration (paper: 25).
      outer_lr: outer step size (paper: Adam, 1e-3).
      outer_optimizer: ``"adam"`` or ``"sgd"``.
      max_grad_norm: clip the meta-gradient to this global norm; ``None`` disables clipping.
      remat: ``adapt``'s remat mode (False, True / "step", "full"); changes memory, not values.
    """

    method: str = "maml"
    hidden_sizes: tuple[int, ...] = (40, 40)
    activation: str = "relu"
    inner_lr: float = 0.01
    num_inner_steps: int = 1
    eval_inner_steps: int = 10
    meta_batch_size: int = 25
    outer_lr: float = 1e-3
    outer_optimizer: str = "adam"
    max_grad_norm: float | None = None
    remat: bool | str = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.hidden_sizes or any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints, got {self.hidden_sizes!r}")
        if not self.inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0, got {self.inner_lr!r}")
        for name in ("num_inner_steps", "eval_inner_steps", "meta_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not self.outer_lr > 0:
            raise ValueError(f"outer_lr must be > 0, got {self.outer_lr!r}")
        if self.outer_optimizer not in ("adam", "sgd"):
            raise ValueError(f"outer_optimizer must be 'adam' or 'sgd', got {self.outer_optimizer!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.remat not in (False, True, "step", "full"):
            raise ValueError(f"remat must be False, True/'step' or 'full', got {self.remat!r}")


@struct.dataclass
class MetaParams:
    """What the outer loop learns.

    Attributes:
      net: the network initialisation θ.
      inner_lr: Meta-SGD's per-parameter rates (same structure as ``net``), else ``None``.
    """

    net: Any
    inner_lr: Any = None


def _network(config: Config, tasks: TaskFamily) -> MLP:
    return MLP(tuple(config.hidden_sizes), tasks.output_dim, config.activation)


def _losses(net: MLP, kind: str):
    """``loss(params, (x, y)) -> scalar`` and ``metric(params, (x, y)) -> (loss, accuracy)``."""

    def predict(params, x):
        return net.apply(params, x.reshape(x.shape[0], -1))

    def loss(params, batch):
        x, y = batch
        out = predict(params, x)
        if kind == "regression":
            return jnp.mean((out - y.reshape(out.shape)) ** 2)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))

    def metric(params, batch):
        x, y = batch
        out = predict(params, x)
        if kind == "regression":
            return jnp.mean((out - y.reshape(out.shape)) ** 2), jnp.nan
        lo = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
        return lo, jnp.mean(jnp.argmax(out, -1) == y)

    return loss, metric


def make(config: Config, tasks: TaskFamily) -> Algorithm:
    """Builds a supervised meta-learner (Finn et al. 2017, Algorithm 2; Li et al. 2017;
    Nichol et al. 2018).

    Args:
      config: a ``Config``.
      tasks: a ``TaskFamily`` (``sinusoid``, ``classification``, ``digits``).

    Returns:
      ``Algorithm`` with ``init(key) -> TrainState`` (``params`` a ``MetaParams``),
      ``update(state) -> (state, metrics)``, ``train(state, num_iterations)`` and
      ``adapt(state, task, key=None, num_steps=None) -> (adapted net params, AdaptMetrics)``
      (``eval_inner_steps`` SGD steps on the support set, Meta-SGD's learned rates if any).
    """
    net = _network(config, tasks)
    loss_fn, metric_fn = _losses(net, tasks.kind)
    optimizer = maml.clipped_optimizer(
        optax.adam(config.outer_lr) if config.outer_optimizer == "adam" else optax.sgd(config.outer_lr),
        config.max_grad_norm,
    )
    meta_sgd = config.method == "meta_sgd"

    def init(key: jax.Array) -> TrainState:
        k_net, key = jax.random.split(key)
        x0 = jnp.zeros((1, math.prod(tasks.input_shape)))
        net_params = net.init(k_net, x0)
        rates = (
            jax.tree_util.tree_map(lambda p: jnp.full_like(p, config.inner_lr), net_params)
            if meta_sgd
            else None
        )
        params = MetaParams(net=net_params, inner_lr=rates)
        return TrainState(
            params=params,
            opt_state=optimizer.init(params),
            key=key,
            iteration=jnp.zeros((), jnp.int32),
        )

    def _lr(params: MetaParams):
        return params.inner_lr if meta_sgd else config.inner_lr

    def _adapt(params: MetaParams, task: Task, num_steps: int, train: bool):
        return maml.adapt(
            loss_fn,
            params.net,
            (task.support_x, task.support_y),
            num_steps=num_steps,
            inner_lr=_lr(params),
            first_order=train and config.method == "fomaml",
            remat=config.remat if train else False,
            reuse_batch=True,
        )

    def task_loss(params: MetaParams, task: Task):
        query = (task.query_x, task.query_y)
        if config.method == "pretrain":
            x = jnp.concatenate([task.support_x, task.query_x])
            y = jnp.concatenate([task.support_y, task.query_y])
            lo = loss_fn(params.net, (x, y))
            return lo, (lo, lo)
        adapted, _ = _adapt(params, task, config.num_inner_steps, train=True)
        before = loss_fn(jax.lax.stop_gradient(params.net), query)
        after = loss_fn(adapted, query)
        return after, (before, after)

    def meta_grads(params: MetaParams, batch: Task):
        if config.method == "reptile":

            def one(task):
                adapted, _ = _adapt(params, task, config.num_inner_steps, train=True)
                query = (task.query_x, task.query_y)
                return maml.reptile_direction(params.net, adapted), (
                    loss_fn(params.net, query),
                    loss_fn(adapted, query),
                )

            directions, (before, after) = jax.vmap(one)(batch)
            grads = MetaParams(net=jax.tree_util.tree_map(lambda d: d.mean(0), directions))
            return grads, jnp.mean(after), (before, after)

        def batch_loss(p):
            losses, aux = jax.vmap(task_loss, in_axes=(None, 0))(p, batch)
            return jnp.mean(losses), aux

        (value, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(params)
        return grads, value, aux

    def update(state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        key, k_tasks = jax.random.split(state.key)
        batch = jax.vmap(tasks.sample)(jax.random.split(k_tasks, config.meta_batch_size))
        grads, _, (before, after) = meta_grads(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "query_loss_before": jnp.mean(before),
            "query_loss_after": jnp.mean(after),
            "meta_grad_norm": optax.tree.norm(grads),
        }
        state = state.replace(
            params=params, opt_state=opt_state, key=key, iteration=state.iteration + 1
        )
        return state, metrics

    def adapt(state: TrainState, task: Task, key: jax.Array | None = None, num_steps: int | None = None):
        del key  # deterministic gradient steps
        steps = config.eval_inner_steps if num_steps is None else num_steps
        return _adapt(state.params, task, steps, train=False)

    return Algorithm(init=init, update=update, train=scan_train(update), adapt=adapt)


def evaluate(
    config: Config,
    tasks: TaskFamily,
    params: MetaParams,
    key: jax.Array,
    *,
    num_tasks: int,
    num_steps: int,
    inner_lr: float | None = None,
) -> dict[str, jax.Array]:
    """Meta-test protocol: adaptation curve on ``num_tasks`` fresh tasks drawn with ``key``.

    On each task the network starts from ``params.net`` and takes ``num_steps`` plain gradient
    steps on the whole support set (the same K points every step, step size ``inner_lr`` — default
    ``config.inner_lr`` — or Meta-SGD's learned rates), as in Finn et al. 2017 (§5.1: trained with
    one step, evaluated with up to 10 at the same step size). After each step the loss (MSE or
    cross-entropy) and accuracy are measured on the task's separate query set.

    Args:
      config: the ``Config`` the parameters were trained with (network shape, Meta-SGD).
      tasks: the task family to draw test tasks from (a held-out split).
      params: ``MetaParams`` (``state.params``).
      key: PRNG key for the test tasks; use one never used in training.
      num_tasks: number of test tasks.
      num_steps: largest number of inner steps evaluated.
      inner_lr: override the step size (ignored with learned Meta-SGD rates).

    Returns:
      dict of ``[num_tasks, num_steps + 1]`` arrays: ``"loss"`` and ``"accuracy"`` (NaN for
      regression), entry ``[:, t]`` after ``t`` steps.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
    lr = params.inner_lr if params.inner_lr is not None else (inner_lr or config.inner_lr)
    test_tasks = jax.vmap(tasks.sample)(jax.random.split(key, num_tasks))
    loss, acc = _curve_fn(config, tasks, num_steps)(params.net, lr, test_tasks)
    return {"loss": loss, "accuracy": acc}


@functools.lru_cache(maxsize=64)
def _curve_fn(config: Config, tasks: TaskFamily, num_steps: int):
    """Jitted ``(net params, lr, tasks) -> ([T, num_steps + 1] loss, accuracy)``; cached so that
    evaluating several step sizes or checkpoints compiles once (``lr`` is traced)."""
    net = _network(config, tasks)
    loss_fn, metric_fn = _losses(net, tasks.kind)

    def curve(net_params, lr, task: Task):
        support, query = (task.support_x, task.support_y), (task.query_x, task.query_y)

        def step(p, _):
            p, _ = maml.adapt(loss_fn, p, support, num_steps=1, inner_lr=lr, reuse_batch=True)
            return p, metric_fn(p, query)

        first = metric_fn(net_params, query)
        if num_steps == 0:
            rest = (jnp.zeros((0,)), jnp.zeros((0,)))
        else:
            _, rest = jax.lax.scan(step, net_params, None, length=num_steps)
        return (
            jnp.concatenate([first[0][None], rest[0]]),
            jnp.concatenate([jnp.asarray(first[1], jnp.float32)[None], rest[1].astype(jnp.float32)]),
        )

    return jax.jit(jax.vmap(curve, in_axes=(None, None, 0)))
