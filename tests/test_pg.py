"""Policy-gradient maths (jmeta.algorithms.pg): values by hand, jit parity, no retracing, errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.algorithms import pg
from jmeta.types import Trajectory

T_, F_ = True, False


# --- discounted returns -----------------------------------------------------------------------
class DiscountedReturnsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_by_hand(self):
        rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
        discounts = jnp.array([0.5, 0.0, 0.5, 0.5])  # step 1 terminates: the recursion restarts
        # G3 = 4 + .5·10 = 9, G2 = 3 + .5·9 = 7.5, G1 = 2 + 0·7.5 = 2, G0 = 1 + .5·2 = 2
        out = self.variant(pg.discounted_returns)(rewards, discounts, 10.0)
        np.testing.assert_allclose(out, [2.0, 2.0, 7.5, 9.0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_padding_contributes_nothing(self):
        rewards = jnp.array([1.0, 2.0, 3.0, 100.0])
        discounts = jnp.array([0.5, 0.0, 0.5, 0.5])
        valid = jnp.array([T_, T_, T_, F_])
        # The padded step (reward 100) and the bootstrap (10) are dropped: G2 = 3, G1 = 2, G0 = 2.
        out = self.variant(pg.discounted_returns)(rewards, discounts, 10.0, valid)
        np.testing.assert_allclose(out, [2.0, 2.0, 3.0, 0.0])


# --- GAE --------------------------------------------------------------------------------------
# One trajectory with a truncation (step 1), an episode boundary, a termination (step 4), a valid
# step cut by the end of the data (step 5) and padding (step 6). γ = λ = 0.5, so γλ = 0.25.
GAE_CASE = dict(
    rewards=jnp.array([1.0, 2.0, 0.0, 1.0, 3.0, 2.0, 9.0]),
    values=jnp.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 5.0]),
    next_values=jnp.array([1.0, 4.0, 0.0, 2.0, 8.0, 6.0, 7.0]),
    terminated=jnp.array([F_, F_, F_, F_, T_, F_, F_]),
    truncated=jnp.array([F_, T_, F_, F_, F_, F_, F_]),
    valid=jnp.array([T_, T_, T_, T_, T_, T_, F_]),
)
# δ_t = r_t + γ(1 − term_t)·V(next_t) − V_t:
#   δ0 = 1 + .5·1 − 0 = 1.5, δ1 = 2 + .5·4 − 1 = 3 (truncated: bootstraps 4),
#   δ2 = 0 + .5·0 − 2 = −2,  δ3 = 1 + .5·2 − 0 = 2, δ4 = 3 + 0 − 1 = 2 (terminated: 8 is ignored),
#   δ5 = 2 + .5·6 − 2 = 3.
# A_t = δ_t + .25·(1 − done_t)·A_{t+1}, A = 0 on padding:
#   A6 = 0, A5 = 3, A4 = 2, A3 = 2 + .25·2 = 2.5, A2 = −2 + .25·2.5 = −1.375,
#   A1 = 3 (episode ends: A2 not used), A0 = 1.5 + .25·3 = 2.25.
GAE_EXPECTED = [2.25, 3.0, -1.375, 2.5, 2.0, 3.0, 0.0]


class GAETest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_by_hand(self):
        fn = self.variant(functools.partial(pg.gae, gamma=0.5, lam=0.5))
        np.testing.assert_allclose(fn(**GAE_CASE), GAE_EXPECTED, rtol=1e-6)

    def test_traced_gamma_lam(self):
        out = jax.jit(pg.gae)(**GAE_CASE, gamma=jnp.float32(0.5), lam=jnp.float32(0.5))
        np.testing.assert_allclose(out, GAE_EXPECTED, rtol=1e-6)

    def test_lambda_one_is_monte_carlo_minus_baseline(self):
        # One full episode ending in a termination: A_t = G_t − V_t.
        r = jnp.array([1.0, 0.0, 2.0])
        v = jnp.array([0.5, -1.0, 3.0])
        nv = jnp.array([-1.0, 3.0, 7.0])
        term = jnp.array([F_, F_, T_])
        adv = pg.gae(r, v, nv, term, jnp.zeros(3, bool), jnp.ones(3, bool), gamma=0.9, lam=1.0)
        g = pg.discounted_returns(r, 0.9 * (1.0 - term), 0.0)
        np.testing.assert_allclose(adv, g - v, rtol=1e-6)

    def test_cut_mid_episode_bootstraps_last_next_value(self):
        adv = pg.gae(jnp.array([1.0]), jnp.array([0.0]), jnp.array([10.0]), jnp.array([F_]),
                     jnp.array([F_]), jnp.array([T_]), gamma=0.5, lam=0.5)
        np.testing.assert_allclose(adv, [6.0])

    def test_vmaps_over_batch(self):
        batched = {k: jnp.stack([v, v]) for k, v in GAE_CASE.items()}
        out = jax.vmap(functools.partial(pg.gae, gamma=0.5, lam=0.5))(**batched)
        np.testing.assert_allclose(out, [GAE_EXPECTED] * 2, rtol=1e-6)

    def test_no_retrace(self):
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def f(case):
            return pg.gae(**case, gamma=0.5, lam=0.5)

        f(GAE_CASE)
        f({k: v + 0 if v.dtype != bool else v for k, v in GAE_CASE.items()})


def test_episode_time_index_restarts_after_each_end():
    term = jnp.array([F_, F_, F_, F_, T_, F_, F_])
    trunc = jnp.array([F_, T_, F_, F_, F_, F_, F_])
    np.testing.assert_array_equal(pg.episode_time_index(term, trunc), [0, 1, 0, 1, 2, 0, 1])


# --- normalisation ----------------------------------------------------------------------------
def test_normalize_advantages_over_valid_steps():
    adv = jnp.array([[1.0, 3.0, 50.0], [5.0, 7.0, -9.0]])
    valid = jnp.array([[T_, T_, F_], [T_, T_, F_]])
    # valid values 1, 3, 5, 7: mean 4, population std sqrt(5)
    out = jax.jit(pg.normalize_advantages)(adv, valid)
    s = np.sqrt(5.0)
    np.testing.assert_allclose(out, [[-3 / s, -1 / s, 0.0], [1 / s, 3 / s, 0.0]], rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(out), 0.0, atol=1e-6)


def test_normalize_advantages_constant_is_finite():
    out = pg.normalize_advantages(jnp.ones(4), jnp.ones(4, bool))
    np.testing.assert_allclose(out, np.zeros(4))


# --- linear feature baseline ------------------------------------------------------------------
def _numpy_features(obs, t):
    o = np.clip(obs, -10, 10)
    a = t[:, None] / 100.0
    return np.concatenate([o, o**2, a, a**2, a**3, np.ones_like(a)], axis=1)


def test_features_match_rllab():
    obs = np.array([[0.5, -20.0], [3.0, 12.0], [-1.0, 0.0]], np.float32)
    t = np.array([0, 1, 2])
    out = pg.linear_baseline_features(obs, t)
    assert out.shape == (3, 8)
    np.testing.assert_allclose(out, _numpy_features(obs, t), rtol=1e-6)
    np.testing.assert_allclose(out[0], [0.5, -10.0, 0.25, 100.0, 0.0, 0.0, 0.0, 1.0])


def test_linear_baseline_matches_numpy_ridge():
    rng = np.random.default_rng(0)
    num_episodes, horizon, d = 3, 40, 2
    obs = rng.normal(size=(num_episodes, horizon, d)).astype(np.float32) * 3.0
    obs[0, 5, 0] = 25.0  # clipped to 10
    t = np.tile(np.arange(horizon), (num_episodes, 1))
    targets = rng.normal(size=(num_episodes, horizon)).astype(np.float32) + t / 10.0
    valid = np.ones((num_episodes, horizon), bool)
    valid[1, 30:] = False  # episode 1 ended early: padding
    targets[1, 30:] = 1e6  # must not influence the fit
    bl = jax.jit(pg.LinearFeatureBaseline.fit)(obs, t, targets, valid)

    x = _numpy_features(obs.reshape(-1, d).astype(np.float64), t.reshape(-1).astype(np.float64))
    y = targets.reshape(-1).astype(np.float64)
    m = valid.reshape(-1)
    x, y = x[m], y[m]
    expected = np.linalg.lstsq(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y, rcond=None)[0]
    # Compare predictions (float32 normal equations vs float64): the ridge dominates the tiny
    # (t/100)³ column, so coefficients are compared through their fit.
    pred = bl.predict(obs, t)
    np.testing.assert_allclose(pred[valid], x @ expected, atol=2e-3 * np.abs(y).max())
    np.testing.assert_allclose(bl.coeffs[:2 * d], expected[:2 * d], rtol=1e-3, atol=1e-3)
    # the flat API on the valid rows gives the same fit
    x32 = x.astype(np.float32)
    coeffs = pg.fit_linear_baseline(x32, y.astype(np.float32), np.ones(len(y)))
    np.testing.assert_allclose(pg.predict_linear_baseline(coeffs, x32), pred[valid],
                               atol=2e-3 * np.abs(y).max())


def test_linear_baseline_exact_on_linear_targets():
    rng = np.random.default_rng(1)
    obs = rng.uniform(-2, 2, size=(60, 3)).astype(np.float32)
    t = np.arange(60) % 20
    feats = pg.linear_baseline_features(obs, t)
    true = np.array([1.0, -2.0, 0.5, 0.3, 0.0, -0.1, 0.0, 0.0, 0.0, 2.0], np.float32)
    coeffs = pg.fit_linear_baseline(feats, feats @ true, jnp.ones(60), reg_coeff=0.0)
    np.testing.assert_allclose(pg.predict_linear_baseline(coeffs, feats), feats @ true, atol=1e-3)


def test_linear_baseline_no_valid_steps_is_zero():
    feats = jnp.ones((4, 6))
    coeffs = pg.fit_linear_baseline(feats, jnp.full(4, jnp.nan), jnp.zeros(4, bool))
    np.testing.assert_array_equal(coeffs, np.zeros(6))


def test_linear_baseline_retries_with_larger_reg():
    # Two identical columns: Gram = 500·[[1, 1], [1, 1]] is singular, and 500 + 1e-5 rounds to 500
    # in float32, so the first solve (reg 1e-5) is not finite; rllab's retry multiplies reg by 10
    # and the 1e-4 solve is the first finite one, which must be returned.
    x = jnp.array([[10.0, 10.0], [20.0, 20.0]])
    y = jnp.array([1.0, 2.0])

    def ridge(reg):
        a = jax.scipy.linalg.cho_factor(x.T @ x + reg * jnp.eye(2))
        return jax.scipy.linalg.cho_solve(a, x.T @ y)

    assert not np.all(np.isfinite(ridge(1e-5)))  # precondition of the test
    coeffs = pg.fit_linear_baseline(x, y, jnp.ones(2), reg_coeff=1e-5)
    np.testing.assert_allclose(coeffs, ridge(1e-4), rtol=1e-5)
    np.testing.assert_allclose(x @ coeffs, y, rtol=1e-4)


def test_advantages_with_linear_baseline_shapes_and_padding():
    rng = np.random.default_rng(2)
    num_episodes, horizon, d = 2, 6, 3
    valid = np.ones((num_episodes, horizon), bool)
    valid[1, 4:] = False
    term = np.zeros((num_episodes, horizon), bool)
    term[1, 3] = True
    obs = rng.normal(size=(num_episodes, horizon + 1, d)).astype(np.float32)
    traj = Trajectory(
        obs=jnp.asarray(obs[:, :-1]),
        action=jnp.zeros((num_episodes, horizon, 1)),
        reward=jnp.asarray(rng.normal(size=(num_episodes, horizon)), jnp.float32),
        terminated=jnp.asarray(term),
        truncated=jnp.zeros((num_episodes, horizon), bool),
        next_obs=jnp.asarray(obs[:, 1:]),  # one episode per row: next_obs_t = obs_{t+1}
        valid=jnp.asarray(valid),
        extras={},
        info={},
    )
    adv, bl = jax.jit(pg.advantages_with_linear_baseline)(traj, 0.99, 0.95)
    assert adv.shape == (num_episodes, horizon)
    assert bl.coeffs.shape == (2 * d + 4,)
    np.testing.assert_array_equal(adv[1, 4:], 0.0)
    # λ = 1 (not jitted this time): A = G − V on each episode, with G the Monte-Carlo return
    # (episode 1 terminates at step 3) and V the fitted baseline (numpy features).
    adv1, bl1 = pg.advantages_with_linear_baseline(traj, 0.99, 1.0)
    g = np.zeros(4)
    for t in reversed(range(4)):
        g[t] = traj.reward[1, t] + (0.99 * g[t + 1] if t < 3 else 0.0)
    v = _numpy_features(obs[1, :4], np.arange(4.0)) @ np.asarray(bl1.coeffs)
    np.testing.assert_allclose(adv1[1, :4], g - v, rtol=1e-4, atol=1e-4)
    # a single rollout [T, ...] works too
    single = jax.tree.map(lambda x: x[0], traj)
    adv_single, _ = pg.advantages_with_linear_baseline(single, 0.99, 0.95)
    assert adv_single.shape == (horizon,)


# --- losses -----------------------------------------------------------------------------------
def test_vpg_loss_by_hand_and_gradient():
    logp = jnp.array([-1.0, -2.0, -3.0])
    adv = jnp.array([2.0, -1.0, 100.0])
    valid = jnp.array([T_, T_, F_])
    # −(−1·2 + −2·−1)/2 = 0
    np.testing.assert_allclose(pg.vpg_loss(logp, adv, valid), 0.0)
    g = jax.grad(pg.vpg_loss)(logp, adv, valid)
    np.testing.assert_allclose(g, [-1.0, 0.5, 0.0])
    # advantages are data: no gradient flows into them
    np.testing.assert_allclose(jax.grad(pg.vpg_loss, argnums=1)(logp, adv, valid), 0.0)


def test_trpo_surrogate_has_vpg_gradient_at_old_policy():
    logp = jnp.array([-1.0, -2.0, -0.5])
    adv = jnp.array([2.0, -1.0, 0.5])
    valid = jnp.ones(3, bool)
    loss = pg.trpo_surrogate_loss(logp, logp, adv, valid)
    np.testing.assert_allclose(loss, -jnp.mean(adv), rtol=1e-6)
    g1 = jax.grad(pg.trpo_surrogate_loss)(logp, logp, adv, valid)
    g2 = jax.grad(pg.vpg_loss)(logp, adv, valid)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)


def test_ppo_clip_objective_by_hand():
    ratio = jnp.array([1.5, 0.5, 1.1, 0.7, 3.0])
    adv = jnp.array([1.0, 1.0, -2.0, -1.0, 9.0])
    valid = jnp.array([T_, T_, T_, T_, F_])
    # min(1.5, 1.2)=1.2 ; min(.5, .8)=.5 ; min(-2.2, -2.2)=-2.2 ; min(-.7, -.8)=-.8 → mean −0.325
    out = jax.jit(pg.ppo_clip_objective)(ratio, adv, 0.2, valid)
    np.testing.assert_allclose(out, (1.2 + 0.5 - 2.2 - 0.8) / 4, rtol=1e-6)


# --- KL ---------------------------------------------------------------------------------------
def test_gaussian_kl_closed_form_1d():
    # KL(N(0, 1) ‖ N(1, 2²)) = log 2 + (1 + 1)/(2·4) − ½ = log 2 − 0.25
    out = pg.gaussian_kl(jnp.array([0.0]), jnp.array([0.0]), jnp.array([1.0]),
                         jnp.log(jnp.array([2.0])))
    np.testing.assert_allclose(out, np.log(2.0) - 0.25, rtol=1e-6)


def test_gaussian_kl_monte_carlo_and_sums_over_actions():
    mp, lsp = jnp.array([0.3, -0.5]), jnp.array([-0.2, 0.4])
    mq, lsq = jnp.array([0.0, 0.5]), jnp.array([0.1, -0.3])

    @jax.jit
    def monte_carlo(key):
        x = mp + jnp.exp(lsp) * jax.random.normal(key, (200_000, 2))

        def logpdf(m, ls):
            return jnp.sum(-0.5 * ((x - m) / jnp.exp(ls)) ** 2 - ls - 0.5 * jnp.log(2 * jnp.pi), -1)

        return jnp.mean(logpdf(mp, lsp) - logpdf(mq, lsq))

    mc = monte_carlo(jax.random.key(0))
    kl = pg.gaussian_kl(mp, lsp, mq, lsq)
    assert kl.shape == ()
    np.testing.assert_allclose(kl, mc, rtol=0.02)
    np.testing.assert_allclose(pg.gaussian_kl(mp, lsp, mp, lsp), 0.0, atol=1e-7)
    batched = pg.gaussian_kl(jnp.stack([mp, mq]), lsp, mq, lsq)  # log-std broadcasts
    assert batched.shape == (2,)


def test_categorical_kl_by_hand():
    p = jnp.log(jnp.array([0.5, 0.5, 0.0]))  # a zero-probability action (logit −inf)
    q = jnp.log(jnp.array([0.25, 0.5, 0.25]))
    # 0.5·log(0.5/0.25) + 0.5·log(1) + 0 = 0.5·log 2
    out = pg.categorical_kl(p, q)
    np.testing.assert_allclose(out, 0.5 * np.log(2.0), rtol=1e-6)
    g = jax.grad(lambda lq: pg.categorical_kl(p, lq))(q)
    assert np.all(np.isfinite(g))
    logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(pg.categorical_kl(logits, logits + 5.0), [0.0, 0.0], atol=1e-6)


# --- bad inputs -------------------------------------------------------------------------------
def _gae_with(**overrides):
    kwargs = dict(GAE_CASE, gamma=0.9, lam=0.95)
    kwargs.update(overrides)
    return pg.gae(**kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"gamma": 1.5}, r"gae: gamma must be in \[0, 1\], got 1.5"),
        ({"gamma": -0.1}, r"gae: gamma must be in \[0, 1\], got -0.1"),
        ({"lam": 2.0}, r"gae: lam must be in \[0, 1\], got 2.0"),
        ({"lam": float("nan")}, r"gae: lam must be in \[0, 1\], got nan"),
        ({"gamma": jnp.ones(2)}, r"gae: gamma must be a scalar, got shape \(2,\)"),
        ({"rewards": jnp.zeros((7, 1))}, r"gae: rewards must have rank 1, got shape \(7, 1\)"),
        ({"values": jnp.zeros(6)},
         r"gae: values must have the shape of rewards \(7,\), got \(6,\)"),
    ],
)
def test_gae_bad_inputs(overrides, message):
    with pytest.raises(ValueError, match=message):
        _gae_with(**overrides)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match=r"discounted_returns: rewards must have rank 1, got "
                                         r"shape \(2, 3\)"):
        pg.discounted_returns(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0)
    with pytest.raises(ValueError, match=r"discounted_returns: bootstrap must have rank 0"):
        pg.discounted_returns(jnp.zeros(3), jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"linear_baseline_features: obs must have rank 2, got "
                                         r"shape \(5,\)"):
        pg.linear_baseline_features(jnp.zeros(5), jnp.arange(5))
    with pytest.raises(ValueError, match=r"fit_linear_baseline: features \(4, 3\) and targets "
                                         r"\(5,\) must have the same number of rows N"):
        pg.fit_linear_baseline(jnp.zeros((4, 3)), jnp.zeros(5), jnp.ones(5))
    with pytest.raises(ValueError, match=r"fit_linear_baseline: reg_coeff must be a finite "
                                         r"number >= 0, got -1.0"):
        pg.fit_linear_baseline(jnp.zeros((4, 3)), jnp.zeros(4), jnp.ones(4), reg_coeff=-1.0)
    with pytest.raises(ValueError, match=r"LinearFeatureBaseline.fit: obs must be \[\*B, d\] and "
                                         r"time_index \[\*B\], got shapes \(2, 5, 3\) and \(5,\)"):
        pg.LinearFeatureBaseline.fit(jnp.zeros((2, 5, 3)), jnp.arange(5), jnp.zeros(5), jnp.ones(5))
    with pytest.raises(ValueError, match=r"ppo_clip_objective: clip_eps must be a finite number "
                                         r"> 0, got 0.0"):
        pg.ppo_clip_objective(jnp.ones(3), jnp.ones(3), 0.0, jnp.ones(3))
    with pytest.raises(ValueError, match=r"vpg_loss: advantages must have the shape of log_probs "
                                         r"\(3,\), got \(4,\)"):
        pg.vpg_loss(jnp.ones(3), jnp.ones(4), jnp.ones(3))
    with pytest.raises(ValueError, match=r"gaussian_kl: shapes do not broadcast"):
        pg.gaussian_kl(jnp.zeros(2), jnp.zeros(3), jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"categorical_kl: logits_q must have the shape of "
                                         r"logits_p \(3,\), got \(4,\)"):
        pg.categorical_kl(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"advantages_with_linear_baseline: lam must be in "
                                         r"\[0, 1\], got 1.1"):
        pg.advantages_with_linear_baseline(None, 0.9, 1.1)
