"""Tests of supervised few-shot meta-learning, jmeta/algorithms/supervised.py."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.algorithms import supervised as sv
from jmeta.algorithms.base import Algorithm, TrainState


def test_sinusoid_sampler_matches_the_paper_ranges():
    tasks = sv.sinusoid(num_shots=5, num_query=7)
    batch = jax.jit(jax.vmap(tasks.sample))(jax.random.split(jax.random.key(0), 500))
    a, p = np.asarray(batch.info["amplitude"]), np.asarray(batch.info["phase"])
    assert batch.support_x.shape == (500, 5, 1) and batch.query_x.shape == (500, 7, 1)
    assert 0.1 <= a.min() and a.max() <= 5.0 and a.max() - a.min() > 4.5
    assert 0.0 <= p.min() and p.max() <= math.pi and p.max() - p.min() > 3.0
    x = np.asarray(batch.support_x)
    assert -5.0 <= x.min() and x.max() <= 5.0
    np.testing.assert_allclose(batch.support_y, a[:, None, None] * np.sin(x - p[:, None, None]), atol=1e-5)
    assert not np.allclose(batch.support_x, batch.query_x[:, :5])


def test_classification_sampler_builds_valid_episodes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), 12)
    x = np.stack([y * 100.0 + np.arange(len(y)), np.zeros(len(y))], 1).astype(np.float32)  # row id in x
    x[:, 1] = rng.normal(size=len(y))
    tasks = sv.classification(x, y, num_ways=3, num_shots=2, num_query=4, classes=(1, 2, 4, 5, 6))
    assert tasks.output_dim == 3 and tasks.input_shape == (2,)
    sample = jax.jit(tasks.sample)
    for seed in range(20):
        t = sample(jax.random.key(seed))
        assert t.support_x.shape == (6, 2) and t.query_x.shape == (12, 2)
        classes = np.asarray(t.info)
        assert len(set(classes.tolist())) == 3 and set(classes.tolist()) <= {1, 2, 4, 5, 6}
        np.testing.assert_array_equal(np.asarray(t.support_y), np.repeat(np.arange(3), 2))
        rows = np.concatenate([np.asarray(t.support_x[:, 0]), np.asarray(t.query_x[:, 0])]) % 100
        assert len(set(rows.tolist())) == 18  # no example twice in an episode
        for xs, ys in ((t.support_x, t.support_y), (t.query_x, t.query_y)):
            true_class = np.asarray(xs[:, 0]) // 100
            np.testing.assert_array_equal(true_class, classes[np.asarray(ys)])


def test_classification_sampler_bad_inputs():
    x, y = np.zeros((10, 3)), np.repeat(np.arange(2), 5)
    with pytest.raises(ValueError, match="num_ways=3 needs at least that many classes, got 2"):
        sv.classification(x, y, num_ways=3, num_shots=1, num_query=1)
    with pytest.raises(ValueError, match="class 0 has 5 examples; num_shots \\+ num_query = 6"):
        sv.classification(x, y, num_ways=2, num_shots=3, num_query=3)
    with pytest.raises(ValueError, match="same number of rows"):
        sv.classification(x[:9], y, num_ways=2, num_shots=1, num_query=1)
    with pytest.raises(ValueError, match="y must hold integer class ids"):
        sv.classification(x, y.astype(float), num_ways=2, num_shots=1, num_query=1)
    with pytest.raises(ValueError, match="num_shots must be an int >= 1, got 0"):
        sv.classification(x, y, num_ways=2, num_shots=0, num_query=1)
    with pytest.raises(ValueError, match="num_query must be an int >= 1, got 0"):
        sv.sinusoid(num_shots=5, num_query=0)


def test_digits_with_rotations():
    tasks = sv.digits(num_ways=5, num_shots=1, num_query=3, classes=(0, 1, 2, 3, 4), rotations=True)
    t = tasks.sample(jax.random.key(0))
    assert t.support_x.shape == (5, 64) and float(t.support_x.max()) <= 1.0
    infos = jax.jit(jax.vmap(tasks.sample))(jax.random.split(jax.random.key(1), 40)).info
    classes = set(np.asarray(infos).ravel().tolist())
    assert classes <= {c + 10 * k for c in range(5) for k in range(4)} and len(classes) > 10


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("method", "maml2", "method must be one of"),
        ("inner_lr", 0.0, "inner_lr must be > 0, got 0.0"),
        ("num_inner_steps", 0, "num_inner_steps must be an int >= 1, got 0"),
        ("eval_inner_steps", 1.5, "eval_inner_steps must be an int >= 1, got 1.5"),
        ("meta_batch_size", 0, "meta_batch_size must be an int >= 1, got 0"),
        ("outer_lr", -1.0, "outer_lr must be > 0, got -1.0"),
        ("outer_optimizer", "rmsprop", "outer_optimizer must be 'adam' or 'sgd'"),
        ("max_grad_norm", 0.0, "max_grad_norm must be > 0 or None, got 0.0"),
        ("hidden_sizes", (40, 0), "hidden_sizes must be positive ints"),
        ("remat", "yes", "remat must be False, True/'step' or 'full'"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sv.Config(**{field: value})


@pytest.mark.parametrize("method", ["maml", "fomaml", "meta_sgd", "reptile", "pretrain"])
def test_every_method_runs_and_updates(method):
    cfg = sv.Config(method=method, hidden_sizes=(8,), meta_batch_size=3, num_inner_steps=2,
                    eval_inner_steps=2, max_grad_norm=10.0)
    algo = sv.make(cfg, sv.sinusoid(4, 4))
    assert isinstance(algo, Algorithm)
    state = algo.init(jax.random.key(0))
    assert isinstance(state, TrainState)
    new, metrics = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=3)
    assert int(new.iteration) == 3
    for v in metrics.values():
        assert v.shape == (3,) and np.isfinite(np.asarray(v)).all()
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), new.params.net, state.params.net)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    if method == "meta_sgd":
        rates_moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                             new.params.inner_lr, state.params.inner_lr)
        assert min(jax.tree_util.tree_leaves(rates_moved)) > 0  # every rate was meta-trained
    adapted, m = jax.jit(algo.adapt)(new, sv.sinusoid(4, 4).sample(jax.random.key(1)))
    assert m.loss.shape == (2,)
    chex.assert_trees_all_equal_shapes(adapted, new.params.net)


def test_update_does_not_recompile():
    algo = sv.make(sv.Config(hidden_sizes=(8,), meta_batch_size=2), sv.sinusoid(3, 3))
    update = jax.jit(chex.assert_max_traces(algo.update, n=1))
    state = algo.init(jax.random.key(0))
    for _ in range(3):
        state, _ = update(state)
    chex.clear_trace_counter()


def test_evaluate_shapes_and_classification_accuracy():
    tasks = sv.digits(num_ways=3, num_shots=2, num_query=2, classes=(0, 1, 2, 3))
    cfg = sv.Config(hidden_sizes=(16,), inner_lr=0.5)
    state = sv.make(cfg, tasks).init(jax.random.key(0))
    ev = sv.evaluate(cfg, tasks, state.params, jax.random.key(1), num_tasks=20, num_steps=3)
    assert ev["loss"].shape == (20, 4) and ev["accuracy"].shape == (20, 4)
    acc = np.asarray(ev["accuracy"])
    assert ((acc >= 0) & (acc <= 1)).all()
    assert acc[:, -1].mean() > acc[:, 0].mean()  # a few steps from a random init already help
    with pytest.raises(ValueError, match="num_tasks must be an int >= 1, got 0"):
        sv.evaluate(cfg, tasks, state.params, jax.random.key(1), num_tasks=0, num_steps=3)


def test_short_seeded_sinusoid_run_learns_to_adapt():
    """MAML, K=10, meta-batch 10, Adam 3e-3, 1,000 meta-iterations: one step on fresh tasks must cut
    the MSE clearly.

    (This early in meta-training, repeated steps can still overshoot: the 1-step protocol is what
    was trained.)"""
    cfg = sv.Config(method="maml", meta_batch_size=10, outer_lr=3e-3)
    algo = sv.make(cfg, sv.sinusoid(10, 10))
    state = algo.init(jax.random.key(0))
    state, metrics = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=1000)
    ev = sv.evaluate(cfg, sv.sinusoid(10, 100), state.params, jax.random.key(123), num_tasks=300, num_steps=1)
    mse = np.asarray(ev["loss"]).mean(0)
    assert mse[0] > 2.0, mse  # the meta-learned initialisation alone fits no particular task
    assert mse[1] < 0.5 * mse[0], mse  # one step on 10 points more than halves the error
    # and the training metrics say the same about the meta-training tasks
    after, before = np.asarray(metrics["query_loss_after"]), np.asarray(metrics["query_loss_before"])
    assert after[-200:].mean() < 0.65 * before[-200:].mean()
