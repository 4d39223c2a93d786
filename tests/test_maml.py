"""Tests of the gradient-based inner loop, jmeta/algorithms/maml.py."""

from __future__ import annotations

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmeta.algorithms import maml

# A quadratic inner loss 0.5 pᵀAp − bᵀp (gradient Ap − b, Hessian A) and outer loss 0.5‖q − t‖².
A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
B = jnp.array([1.0, -1.0])
T = jnp.array([0.3, 0.7])
P0 = jnp.array([0.2, -0.4])
LR = 0.1


def quad_loss(p, batch):
    a, b = batch
    return 0.5 * p @ a @ p - b @ p


def outer_loss(q):
    return 0.5 * jnp.sum((q - T) ** 2)


def mlp_params(key, sizes=(3, 8, 2)):
    params = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        k1, k2, key = jax.random.split(key, 3)
        params.append({"w": jax.random.normal(k1, (m, n)) / np.sqrt(m), "b": 0.1 * jax.random.normal(k2, (n,))})
    return params


def mlp_loss(params, batch):
    x, y = batch
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    out = h @ params[-1]["w"] + params[-1]["b"]
    return jnp.mean((out - y) ** 2)


def mlp_batches(key, num_steps, n=6):
    kx, ky = jax.random.split(key)
    return (jax.random.normal(kx, (num_steps, n, 3)), jax.random.normal(ky, (num_steps, n, 2)))


def test_one_step_matches_hand_computed_update():
    adapted, metrics = maml.adapt(quad_loss, P0, (A, B), num_steps=1, inner_lr=LR, reuse_batch=True)
    # A p0 = [0.2, −0.3]; p1 = p0 − α (A p0 − b) = [0.2, −0.4] − 0.1 [−0.8, 0.7] = [0.28, −0.47]
    np.testing.assert_allclose(adapted, [0.28, -0.47], rtol=1e-6)
    # loss before the step: 0.5 p0ᵀAp0 − bᵀp0 = 0.5 (0.04 + 0.12) − 0.6 = −0.52
    np.testing.assert_allclose(metrics.loss, [-0.52], rtol=1e-6)
    np.testing.assert_allclose(metrics.grad_norm, [np.hypot(0.8, 0.7)], rtol=1e-6)


def test_several_steps_each_with_its_own_batch():
    b2 = jnp.array([0.0, 2.0])
    batches = (jnp.stack([A, A]), jnp.stack([B, b2]))
    adapted, metrics = maml.adapt(quad_loss, P0, batches, num_steps=2, inner_lr=LR)
    p1 = P0 - LR * (A @ P0 - B)
    p2 = p1 - LR * (A @ p1 - b2)
    np.testing.assert_allclose(adapted, p2, rtol=1e-6)
    assert metrics.loss.shape == (2,)


def test_inner_optax_optimizer():
    opt = optax.sgd(LR, momentum=0.9)
    adapted, _ = maml.adapt(quad_loss, P0, (A, B), num_steps=2, inner_opt=opt, reuse_batch=True)
    g0 = A @ P0 - B
    p1 = P0 - LR * g0
    g1 = A @ p1 - B
    p2 = p1 - LR * (g1 + 0.9 * g0)
    np.testing.assert_allclose(adapted, p2, rtol=1e-6)


def test_second_and_first_order_meta_gradients_on_a_quadratic():
    def meta(p, first_order):
        q, _ = maml.adapt(quad_loss, p, (A, B), num_steps=1, inner_lr=LR, first_order=first_order,
                          reuse_batch=True)
        return outer_loss(q)

    q = P0 - LR * (A @ P0 - B)
    # second order: d q / d p = I − αA, so the meta-gradient is (I − αA)ᵀ (q − t)
    np.testing.assert_allclose(jax.grad(meta)(P0, False), (jnp.eye(2) - LR * A).T @ (q - T), rtol=1e-5)
    # first order drops the Hessian term: (q − t)
    np.testing.assert_allclose(jax.grad(meta)(P0, True), q - T, rtol=1e-6)


def test_second_order_meta_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), mlp_params(jax.random.key(0)))
        batches = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), mlp_batches(jax.random.key(1), 3))
        query = jax.tree_util.tree_map(lambda x: x[0] + 0.5, batches)

        def meta(p):
            q, _ = maml.adapt(mlp_loss, p, batches, num_steps=3, inner_lr=0.3)
            return mlp_loss(q, query)

        flat, unravel = jax.flatten_util.ravel_pytree(params)
        grad = jax.flatten_util.ravel_pytree(jax.jit(jax.grad(meta))(params))[0]
        f = jax.jit(jax.vmap(lambda v: meta(unravel(v))))
        eps = 1e-6
        e = np.eye(flat.size)
        fd = np.asarray((f(flat + eps * e) - f(flat - eps * e)) / (2 * eps))
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)
        # and the first-order gradient differs from it: the Hessian term matters here
        fo = jax.jit(jax.grad(lambda p: mlp_loss(maml.adapt(mlp_loss, p, batches, num_steps=3, inner_lr=0.3,
                                                            first_order=True)[0], query)))(params)
        assert np.abs(jax.flatten_util.ravel_pytree(fo)[0] - fd).max() > 1e-3


@pytest.mark.parametrize("remat", [True, "step", "full"])
def test_remat_gives_identical_gradients(remat):
    params = mlp_params(jax.random.key(2))
    batches = mlp_batches(jax.random.key(3), 4)
    query = jax.tree_util.tree_map(lambda x: x[-1] * 2.0, batches)

    def meta(p, r):
        q, _ = maml.adapt(mlp_loss, p, batches, num_steps=4, inner_lr=0.2, remat=r)
        return mlp_loss(q, query)

    want = jax.jit(jax.grad(meta), static_argnums=1)(params, False)
    got = jax.jit(jax.grad(meta), static_argnums=1)(params, remat)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)


def test_full_remat_differentiates_rates_batches_and_closures():
    """The custom VJP of remat='full' passes cotangents to learned rates, the batch, values the
    loss closes over, and through an inner optimiser's state."""
    params = mlp_params(jax.random.key(4))
    batches = mlp_batches(jax.random.key(5), 3)
    rates = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), params)
    query = jax.tree_util.tree_map(lambda x: x[0] - 1.0, batches)

    def meta(p, rates, batches, scale, remat):
        loss = lambda q, b: scale * mlp_loss(q, b)  # noqa: E731  closes over a traced value
        q, _ = maml.adapt(loss, p, batches, num_steps=3, inner_lr=rates, remat=remat)
        return mlp_loss(q, query)

    g = jax.jit(jax.grad(meta, argnums=(0, 1, 2, 3)), static_argnums=4)
    chex.assert_trees_all_close(
        g(params, rates, batches, 1.5, "full"), g(params, rates, batches, 1.5, False), rtol=1e-5, atol=1e-7
    )

    def meta_opt(p, remat):
        q, _ = maml.adapt(mlp_loss, p, batches, num_steps=3, inner_opt=optax.adam(0.05), remat=remat)
        return mlp_loss(q, query)

    g_opt = jax.jit(jax.grad(meta_opt), static_argnums=1)
    chex.assert_trees_all_close(g_opt(params, "full"), g_opt(params, False), rtol=1e-4, atol=1e-6)


def test_full_remat_with_integer_labels_in_the_batch():
    params = mlp_params(jax.random.key(6), sizes=(3, 8, 4))
    x = jax.random.normal(jax.random.key(7), (10, 3))
    y = jnp.arange(10) % 4

    def loss(p, b):
        xb, yb = b
        h = jnp.tanh(xb @ p[0]["w"] + p[0]["b"])
        return optax.softmax_cross_entropy_with_integer_labels(h @ p[1]["w"] + p[1]["b"], yb).mean()

    def meta(p, remat):
        q, _ = maml.adapt(loss, p, (x, y), num_steps=5, inner_lr=0.5, remat=remat, reuse_batch=True)
        return loss(q, (x, y))

    g = jax.jit(jax.grad(meta), static_argnums=1)
    chex.assert_trees_all_close(g(params, "full"), g(params, False), rtol=1e-5, atol=1e-7)


def test_vmap_over_tasks_equals_a_loop():
    params = mlp_params(jax.random.key(8))
    batches = mlp_batches(jax.random.key(9), 2 * 5)  # 5 tasks × 2 steps
    tasks = jax.tree_util.tree_map(lambda x: x.reshape(5, 2, *x.shape[1:]), batches)

    @jax.jit
    def run(b):
        return maml.adapt(mlp_loss, params, b, num_steps=2, inner_lr=0.1)

    batched, metrics = jax.vmap(run)(tasks)
    for i in range(5):
        one, m = run(jax.tree_util.tree_map(lambda x: x[i], tasks))
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], batched), one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics.loss[i], m.loss, rtol=1e-5)


def test_meta_sgd_rates_receive_gradients():
    params = mlp_params(jax.random.key(10))
    rates = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.05), params)
    batches = mlp_batches(jax.random.key(11), 1)
    query = jax.tree_util.tree_map(lambda x: x[0] + 0.3, batches)

    for first_order in (False, True):
        def meta(rates):
            q, _ = maml.adapt(mlp_loss, params, batches, num_steps=1, inner_lr=rates,
                              first_order=first_order)
            return mlp_loss(q, query)

        g = jax.jit(jax.grad(meta))(rates)
        for leaf in jax.tree_util.tree_leaves(g):
            assert leaf.shape in [p.shape for p in jax.tree_util.tree_leaves(params)]
            assert float(jnp.abs(leaf).sum()) > 0.0


def test_reptile_direction_moves_towards_adapted():
    params = {"w": jnp.array([1.0, 2.0])}
    adapted = {"w": jnp.array([0.0, 4.0])}
    d = maml.reptile_direction(params, adapted)
    np.testing.assert_allclose(d["w"], [1.0, -2.0])
    opt = optax.sgd(0.5)
    upd, _ = opt.update(d, opt.init(params))
    np.testing.assert_allclose(optax.apply_updates(params, upd)["w"], [0.5, 3.0])


def test_clipped_optimizer_clips_by_global_norm():
    opt = maml.clipped_optimizer(optax.sgd(1.0), max_grad_norm=1.0)
    g = {"w": jnp.array([3.0, 4.0])}
    upd, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(upd["w"], [-0.6, -0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        maml.clipped_optimizer(optax.sgd(1.0), max_grad_norm=0.0)


def test_no_recompilation():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def meta_grad(p, batches):
        def meta(p):
            q, _ = maml.adapt(mlp_loss, p, batches, num_steps=2, inner_lr=0.1, remat=True)
            return mlp_loss(q, jax.tree_util.tree_map(lambda x: x[0], batches))

        return jax.grad(meta)(p)

    params = mlp_params(jax.random.key(12))
    for seed in range(3):
        meta_grad(params, mlp_batches(jax.random.key(seed), 2))
    chex.clear_trace_counter()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_steps": 0, "inner_lr": 0.1}, "num_steps must be an int >= 1, got 0"),
        ({"num_steps": 1.0, "inner_lr": 0.1}, "num_steps must be an int >= 1, got 1.0"),
        ({"num_steps": 1, "inner_lr": -0.1}, "inner_lr must be > 0, got -0.1"),
        ({"num_steps": 1, "inner_lr": 0.0}, "inner_lr must be > 0, got 0.0"),
        ({"num_steps": 1, "inner_lr": jnp.array(-1.0)}, "inner_lr must be > 0, got -1.0"),
        ({"num_steps": 1}, "give exactly one of inner_lr"),
        ({"num_steps": 1, "inner_lr": 0.1, "inner_opt": optax.sgd(0.1)}, "give exactly one of inner_lr"),
        ({"num_steps": 1, "inner_lr": 0.1, "remat": "yes"}, "remat must be False, True/'step' or 'full'"),
        ({"num_steps": 1, "inner_lr": [0.1]}, "must have the structure of params"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        maml.adapt(quad_loss, P0, (A, B), reuse_batch=True, **kwargs)


def test_mismatched_batch_shapes_raise_clear_errors():
    batches = (jnp.stack([A, A, A]), jnp.stack([B, B, B]))  # 3 batches for 2 steps
    with pytest.raises(ValueError, match=r"leading \[num_steps\]=2 axis .* reuse_batch=True"):
        maml.adapt(quad_loss, P0, batches, num_steps=2, inner_lr=0.1)
    with pytest.raises(ValueError, match=r"inner_lr at \['w'\] has shape \(3,\), not broadcastable"):
        maml.adapt(lambda p, b: jnp.sum(p["w"] * b), {"w": jnp.ones(2)}, jnp.ones(2), num_steps=1,
                   inner_lr={"w": jnp.ones(3)}, reuse_batch=True)
