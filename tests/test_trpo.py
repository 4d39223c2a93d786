"""TRPO pieces (jmeta.algorithms.trpo): CG, Hessian-vector products, the trust-region step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jmeta.algorithms import pg, trpo
from jmeta.networks.policies import gaussian_log_prob


def _spd(n, seed=0):
    m = np.random.default_rng(seed).normal(size=(n, n))
    return (m.T @ m + n * np.eye(n)).astype(np.float32)


# --- conjugate gradient -----------------------------------------------------------------------
class ConjugateGradientTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_solves_spd_system(self):
        a = _spd(6)
        b = np.arange(1.0, 7.0, dtype=np.float32)
        x = self.variant(lambda b: trpo.conjugate_gradient(lambda v: a @ v, b, iters=6))(b)
        np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)

    def test_residual_is_b_minus_ax(self):
        a = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
        b = jnp.array([1.0, 2.0, -1.0])
        x, r = trpo.conjugate_gradient(lambda v: a @ v, b, iters=2, return_residual=True)
        np.testing.assert_allclose(r, b - a @ x, atol=1e-5)  # 2 < 3 iterations: r is not 0
        assert float(jnp.linalg.norm(r)) > 1e-3
        np.testing.assert_allclose(x @ a @ x, x @ (b - r), rtol=1e-5)

    def test_pytree_rhs(self):
        a = _spd(6, seed=1)
        b = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.0, 1.0])}
        flat_b, unravel = ravel_pytree(b)

        def matvec(tree):
            return unravel(a @ ravel_pytree(tree)[0])

        x = trpo.conjugate_gradient(matvec, b, iters=6)
        assert jax.tree.structure(x) == jax.tree.structure(b)
        np.testing.assert_allclose(ravel_pytree(x)[0], np.linalg.solve(a, flat_b), rtol=1e-4,
                                   atol=1e-5)

    def test_stops_without_nans(self):
        a = _spd(3)
        # b = 0: already solved, the loop must not divide 0 by 0
        x0 = trpo.conjugate_gradient(lambda v: a @ v, jnp.zeros(3), iters=10)
        np.testing.assert_array_equal(x0, np.zeros(3))
        # many more iterations than unknowns: converged iterations stop updating
        b = jnp.array([1.0, 2.0, 3.0])
        x = jax.jit(lambda b: trpo.conjugate_gradient(lambda v: a @ v, b, iters=50))(b)
        np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)
        # a singular direction (zero curvature) stops the loop instead of producing NaN
        xs = trpo.conjugate_gradient(lambda v: jnp.zeros_like(v), b, iters=5)
        assert np.all(np.isfinite(xs))

    def test_no_retrace(self):
        a = _spd(4)
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def solve(b):
            return trpo.conjugate_gradient(lambda v: a @ v, b, iters=4)

        solve(jnp.ones(4))
        solve(jnp.arange(4.0))


# --- Hessian-vector products ------------------------------------------------------------------
def test_hvp_matches_hand_hessian():
    def f(x):
        return x[0] ** 2 * x[1] + x[1] ** 3 + jnp.sin(x[2])

    x = jnp.array([1.0, 2.0, 0.5])
    v = jnp.array([0.3, -1.0, 2.0])
    # ∇²f = [[2x1, 2x0, 0], [2x0, 6x1, 0], [0, 0, −sin x2]]
    h = np.array([[4.0, 2.0, 0.0], [2.0, 12.0, 0.0], [0.0, 0.0, -np.sin(0.5)]])
    np.testing.assert_allclose(trpo.hvp(f, x, v), h @ v, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(trpo.hvp, static_argnums=0)(f, x, v, 0.1),
                               h @ v + 0.1 * v, rtol=1e-5)


def test_hvp_on_pytree_matches_explicit_hessian():
    def f(p):
        return jnp.sum(jnp.tanh(p["w"] @ p["b"])) + jnp.sum(p["b"] ** 4)

    p = {"w": jnp.array([[0.5, -1.0], [2.0, 0.3]]), "b": jnp.array([0.7, -0.2])}
    v = {"w": jnp.array([[1.0, 0.0], [-1.0, 2.0]]), "b": jnp.array([0.5, 1.5])}
    flat_p, unravel = ravel_pytree(p)
    hessian = jax.jit(jax.hessian(lambda z: f(unravel(z))))(flat_p)
    got = ravel_pytree(jax.jit(trpo.hvp, static_argnums=0)(f, p, v))[0]
    np.testing.assert_allclose(got, hessian @ ravel_pytree(v)[0], rtol=1e-5, atol=1e-6)


# --- the TRPO step ----------------------------------------------------------------------------
def _quadratic_loss(p):
    return jnp.sum((p - 1.0) ** 2)


def _unit_fisher_kl(p):  # trust region around 0 with Fisher = I
    return 0.5 * jnp.sum(p**2)


class TRPOStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_full_step_by_hand(self):
        # g = −2·(1, 1), F = I: s ∝ (1, 1) and the step reaches KL = δ (exactly without damping;
        # the default damping 1e-5 keeps it a hair inside, robust to float rounding):
        # ½‖θ‖² = δ = 0.01 → θ = √δ·(1, 1) = (0.1, 0.1).
        step = self.variant(
            lambda p: trpo.trpo_step(_quadratic_loss, _unit_fisher_kl, p, max_kl=0.01)
        )
        new, info = step(jnp.zeros(2))
        np.testing.assert_allclose(new, [0.1, 0.1], rtol=1e-5)
        assert bool(info.step_accepted)
        assert int(info.num_backtracks) == 0
        np.testing.assert_allclose(info.kl, 0.01, rtol=1e-5)
        np.testing.assert_allclose(info.loss_before, 2.0)
        np.testing.assert_allclose(info.loss_after, 2 * 0.9**2, rtol=1e-5)

    def test_backtracks_until_kl_is_within_trust_region(self):
        # The KL's quadratic model (Fisher I) underestimates it: kl = ½x + 10x², x = ‖θ‖².
        # The full step has ‖θ‖ = √(2δ) = 1 (δ = ½); the n-th candidate has x = 0.8^(2n), and
        # ½x + 10x² ≤ ½ needs x ≤ 0.2, i.e. n = 4 (0.8^6 = 0.26, 0.8^8 = 0.17).
        def kl(p):
            x = jnp.sum(p**2)
            return 0.5 * x + 10.0 * x**2

        new, info = jax.jit(
            lambda p: trpo.trpo_step(_quadratic_loss, kl, p, max_kl=0.5, cg_damping=0.0)
        )(jnp.zeros(2))
        assert bool(info.step_accepted)
        assert int(info.num_backtracks) == 4
        assert float(info.kl) <= 0.5
        np.testing.assert_allclose(info.kl, kl(new), rtol=1e-6)
        np.testing.assert_allclose(jnp.linalg.norm(new), 0.8**4, rtol=1e-5)
        assert float(info.loss_after) < float(info.loss_before)

    def test_no_improving_step_leaves_params_unchanged(self):
        # loss x² at x = 1 with a huge trust region: the full step (length √(2·10⁶) ≈ 1414)
        # and all 15 shrunk candidates (the smallest ≈ 62) overshoot and raise the loss.
        params = {"x": jnp.array([1.0])}
        loss = lambda p: jnp.sum(p["x"] ** 2)  # noqa: E731
        kl = lambda p: 0.5 * jnp.sum((p["x"] - 1.0) ** 2)  # noqa: E731
        new, info = jax.jit(lambda p: trpo.trpo_step(loss, kl, p, max_kl=1e6))(params)
        np.testing.assert_array_equal(new["x"], params["x"])
        assert not bool(info.step_accepted)
        assert int(info.num_backtracks) == 15
        np.testing.assert_array_equal(info.loss_after, info.loss_before)
        np.testing.assert_array_equal(info.kl, 0.0)

    def test_zero_gradient_is_a_no_op(self):
        new, info = jax.jit(lambda p: trpo.trpo_step(lambda q: jnp.sum(q) * 0.0, _unit_fisher_kl,
                                                     p, max_kl=0.01))(jnp.ones(3))
        np.testing.assert_array_equal(new, np.ones(3))
        assert not bool(info.step_accepted)
        assert np.isfinite(float(info.step_size))

    def test_no_retrace(self):
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def step(p):
            return trpo.trpo_step(_quadratic_loss, _unit_fisher_kl, p, max_kl=0.01)

        step(jnp.zeros(2))
        step(jnp.array([0.3, -0.2]))


def test_gaussian_policy_step_respects_max_kl_and_improves():
    """A toy policy-gradient problem: a linear-Gaussian policy (mean = obs·W + b, learned log-std),
    actions sampled from it, advantages rewarding actions close to a target; the TRPO step must
    lower the surrogate loss within the KL budget."""
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
    params = {"w": jnp.asarray(0.1 * rng.normal(size=(3, 2)), jnp.float32), "b": jnp.zeros(2),
              "log_std": jnp.full(2, -0.5)}

    def dist(p):
        return obs @ p["w"] + p["b"], jnp.broadcast_to(p["log_std"], (64, 2))

    @jax.jit
    def setup(p, key):
        mean, log_std = dist(p)
        actions = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        reward = -jnp.sum((actions - jnp.array([0.5, -0.5])) ** 2, -1)
        return mean, log_std, actions, gaussian_log_prob(mean, log_std, actions), reward

    old_mean, old_log_std, actions, old_logp, reward = setup(params, jax.random.key(0))
    valid = jnp.ones(64, bool)
    adv = pg.normalize_advantages(reward, valid)

    def loss_fn(p):
        mean, log_std = dist(p)
        return pg.trpo_surrogate_loss(gaussian_log_prob(mean, log_std, actions), old_logp, adv,
                                      valid)

    def kl_fn(p):
        mean, log_std = dist(p)
        return jnp.mean(pg.gaussian_kl(old_mean, old_log_std, mean, log_std))

    max_kl = 0.01
    new, info = jax.jit(lambda p: trpo.trpo_step(loss_fn, kl_fn, p, max_kl=max_kl))(params)
    assert bool(info.step_accepted)
    assert float(info.kl) <= max_kl
    # the KL and the loss recomputed independently at the new parameters
    recompute = jax.jit(lambda n, p: (kl_fn(n), loss_fn(n), loss_fn(p)))
    kl_new, loss_new, loss_old = recompute(new, params)
    assert float(kl_new) <= max_kl * (1 + 1e-5)
    assert float(kl_new) > 0.1 * max_kl  # a real step, not a vanishing one
    assert float(loss_new) < float(loss_old)
    np.testing.assert_allclose(info.loss_after, loss_new, rtol=1e-5)


def test_step_through_an_inner_adaptation():
    """MAML-RL's use: loss and KL close over an inner gradient step, so the gradient and the
    Fisher products are meta-gradients through the adaptation (forward-over-reverse over grad)."""
    inner = lambda th: jnp.sum((th - jnp.array([1.0, -1.0])) ** 2 * jnp.array([1.0, 3.0]))  # noqa
    adapt = lambda th: th - 0.1 * jax.grad(inner)(th)  # noqa: E731
    theta0 = jnp.array([0.2, 0.4])
    old = jax.lax.stop_gradient(adapt(theta0))
    loss = lambda th: jnp.sum(jnp.sin(adapt(th)) - adapt(th))  # noqa: E731
    kl = lambda th: 0.5 * jnp.sum((adapt(th) - old) ** 2)  # noqa: E731
    new, info = jax.jit(lambda th: trpo.trpo_step(loss, kl, th, max_kl=1e-3))(theta0)
    assert bool(info.step_accepted)
    assert float(info.kl) <= 1e-3
    assert float(loss(new)) < float(loss(theta0))


# --- bad inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_kl": 0.0}, r"trpo_step: max_kl must be a finite number > 0, got 0.0"),
        ({"max_kl": -0.01}, r"trpo_step: max_kl must be a finite number > 0, got -0.01"),
        ({"max_kl": float("inf")}, r"trpo_step: max_kl must be a finite number > 0, got inf"),
        ({"max_kl": 0.01, "cg_iters": 0}, r"trpo_step: cg_iters must be a positive int, got 0"),
        ({"max_kl": 0.01, "cg_iters": 2.5}, r"trpo_step: cg_iters must be a positive int, got 2.5"),
        ({"max_kl": 0.01, "cg_damping": -1.0},
         r"trpo_step: cg_damping must be a finite number >= 0, got -1.0"),
        ({"max_kl": 0.01, "backtrack_ratio": 1.0},
         r"trpo_step: backtrack_ratio must be in \(0, 1\), got 1.0"),
        ({"max_kl": 0.01, "max_backtracks": 0},
         r"trpo_step: max_backtracks must be a positive int, got 0"),
    ],
)
def test_trpo_step_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        trpo.trpo_step(_quadratic_loss, _unit_fisher_kl, jnp.zeros(2), **kwargs)


def test_cg_and_hvp_bad_inputs():
    with pytest.raises(ValueError, match=r"conjugate_gradient: iters must be a positive int, "
                                         r"got 0"):
        trpo.conjugate_gradient(lambda v: v, jnp.ones(2), iters=0)
    with pytest.raises(ValueError, match=r"conjugate_gradient: matvec must return the structure "
                                         r"of b \(2 numbers\), got 3"):
        trpo.conjugate_gradient(lambda v: jnp.ones(3), jnp.ones(2), iters=2)
    with pytest.raises(ValueError, match=r"hvp: damping must be a finite number >= 0, got -0.1"):
        trpo.hvp(_quadratic_loss, jnp.zeros(2), jnp.ones(2), damping=-0.1)
