"""Cold-start recommendation baselines: hand-worked values, env click draws, jit, input errors.

A three-item catalogue in 2-D (items e1, e2, −e1) makes every click probability a hand-computed
sigmoid: with click_scale 4 and bias −1, the user e1 clicks item 0 with σ(3), item 1 with σ(−1)
and item 2 with σ(−5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.baselines import recommend
from jmeta.envs.cold_start_rec import ColdStartParams, ColdStartRec
from jmeta.envs.wrappers import ObservationNoise

CATALOGUE = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
ENV = ColdStartRec(CATALOGUE, click_scale=4.0, click_bias=-1.0)
H = 8


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _users(vectors, horizon=H):
    return ColdStartParams(user=jnp.asarray(vectors, jnp.float32), horizon=horizon)


E1 = _users([1.0, 0.0])
N = 256  # users of every batched call on ENV: one compilation of _evaluate per strategy
_evaluate = jax.jit(recommend.evaluate, static_argnames=("strategy", "env", "num_steps"))
_play = jax.jit(recommend.play, static_argnames=("strategy", "env", "num_steps"))


def _batch(vectors):
    """``N`` users: ``vectors`` first, the rest copies of e1."""
    v = np.tile([1.0, 0.0], (N, 1))
    if len(vectors):
        v[: len(vectors)] = vectors
    return _users(v)


def test_user_click_probs_by_hand():
    probs = recommend.user_click_probs(ENV, _users([[1.0, 0.0], [0.0, 0.5]]))
    expected = [[_sig(3.0), _sig(-1.0), _sig(-5.0)], [_sig(-1.0), _sig(1.0), _sig(-1.0)]]
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_popularity_scores_by_hand():
    scores = recommend.popularity_scores(jnp.array([[0.1, 0.5, 0.2], [0.3, 0.1, 0.2]]))
    np.testing.assert_allclose(scores, [0.2, 0.3, 0.2], rtol=1e-6)


def test_oracle_recommends_the_users_best_item_every_step():
    s = _play("oracle", ENV, E1, jax.random.key(0))
    assert s.items.shape == s.clicks.shape == s.click_probs.shape == (H,)
    np.testing.assert_array_equal(s.items, np.zeros(H))
    np.testing.assert_allclose(s.click_probs, np.full(H, _sig(3.0)), rtol=1e-6)
    s = _play("oracle", ENV, _users([-0.5, 0.0]), jax.random.key(0))
    np.testing.assert_array_equal(s.items, np.full(H, 2))  # −e1 likes item 2: σ(1)
    np.testing.assert_allclose(s.click_probs, np.full(H, _sig(1.0)), rtol=1e-6)


def test_popularity_recommends_the_top_item_ties_to_lowest_index():
    s = _play("popularity", ENV, E1, jax.random.key(0), popularity=jnp.array([0.1, 0.7, 0.7]))
    np.testing.assert_array_equal(s.items, np.ones(H))
    np.testing.assert_allclose(s.click_probs, np.full(H, _sig(-1.0)), rtol=1e-6)


def test_clicks_are_the_envs_bernoulli_draws():
    clicks = _evaluate("oracle", ENV, _batch([]), jax.random.key(2)).clicks  # p = σ(3) ≈ 0.9526
    assert set(np.unique(clicks)) <= {0.0, 1.0}
    assert abs(float(clicks.mean()) - _sig(3.0)) < 4 * np.sqrt(0.05 / (N * H))


def test_evaluate_is_play_per_user_with_split_keys():
    users = _batch([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    key = jax.random.key(3)
    batch = _evaluate("oracle", ENV, users, key)
    np.testing.assert_array_equal(batch.items[:3], [[0] * H, [1] * H, [2] * H])
    for i, k in enumerate(jax.random.split(key, N)[:3]):
        one = _play("oracle", ENV, jax.tree.map(lambda x: x[i], users), k)
        np.testing.assert_array_equal(batch.items[i], one.items)
        np.testing.assert_array_equal(batch.clicks[i], one.clicks)


def test_real_env_popularity_from_training_users_and_oracle_bound():
    env, tasks = jmeta.make("cold-start-rec", num_items=10, embedding_dim=4)

    @jax.jit
    def run(key):
        k_train, k_test, k_play = jax.random.split(key, 3)
        popularity = recommend.popularity_scores(
            recommend.user_click_probs(env, tasks.train.sample_batch(k_train, 256)))
        users = tasks.test.sample_batch(k_test, 64)
        orc = recommend.evaluate("oracle", env, users, k_play)
        return popularity, recommend.user_click_probs(env, users), orc

    popularity, probs, orc = run(jax.random.key(0))
    assert popularity.shape == (10,) and bool(jnp.all((popularity > 0) & (popularity < 1)))
    # The oracle's expected CTR is every user's maximum click probability, never below the
    # popular item's.
    best = jnp.max(probs, axis=-1)
    np.testing.assert_allclose(orc.click_probs, jnp.broadcast_to(best[:, None], (64, 20)),
                               rtol=1e-6)
    assert bool(jnp.all(best >= probs[:, int(jnp.argmax(popularity))]))


def test_wrapped_env_and_params():
    env, tasks = jmeta.make("cold-start-rec", num_items=10, embedding_dim=4, obs_noise=0.1)
    assert isinstance(env, ObservationNoise)
    task = tasks.sample(jax.random.key(0))
    s = _play("oracle", env, task, jax.random.key(1), num_steps=3)
    assert int(s.items[0]) == int(jnp.argmax(env.click_probs(task.env_params)))


def test_jit_does_not_retrace():
    first = _play("oracle", ENV, E1, jax.random.key(0), num_steps=4)
    size = _play._cache_size()
    second = _play("oracle", ENV, _users([0.0, 1.0]), jax.random.key(1), num_steps=4)
    assert _play._cache_size() == size  # new user and key: no new compilation
    np.testing.assert_array_equal(first.items, np.zeros(4))
    np.testing.assert_array_equal(second.items, np.ones(4))


def test_window_ctr_by_hand():
    clicks = jnp.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(recommend.window_ctr(clicks, 2, 4), [2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(recommend.window_ctr(clicks[0], 1, 1), 1.0)


@pytest.mark.parametrize("call, message", [
    (lambda: recommend.play("random", ENV, E1, jax.random.key(0)),
     "unknown strategy 'random'; expected one of 'popularity', 'oracle'"),
    (lambda: recommend.play("popularity", ENV, E1, jax.random.key(0)),
     "strategy 'popularity' needs popularity= scores"),
    (lambda: recommend.play("oracle", ENV, E1, jax.random.key(0), popularity=jnp.ones(3)),
     "strategy 'oracle' takes no popularity scores"),
    (lambda: recommend.play("popularity", ENV, E1, jax.random.key(0), popularity=jnp.ones(4)),
     r"popularity must have shape \[3\] \(one score per catalogue item\), got \(4,\)"),
    (lambda: recommend.play("oracle", ENV, E1, jax.random.key(0), num_steps=H + 1),
     "num_steps 9 exceeds the session length"),
    (lambda: recommend.play("oracle", ENV, E1, jax.random.key(0), num_steps=0),
     "num_steps: expected a positive int, got 0"),
    (lambda: recommend.play("oracle", jmeta.make("bandit")[0], E1, jax.random.key(0)),
     "env must be the cold-start-rec environment"),
    (lambda: recommend.play("oracle", ENV, _users([1.0, 0.0, 0.0]), jax.random.key(0)),
     r"user must have shape \[2\] for this catalogue, got \(3,\)"),
    (lambda: recommend.play("oracle", ENV, jnp.ones(2), jax.random.key(0)),
     "expected cold-start-rec users \\(ColdStartParams\\), got ArrayImpl"),
    (lambda: recommend.evaluate("oracle", ENV, E1, jax.random.key(0)),
     r"user must have shape \[N, 2\] for this catalogue, got \(2,\)"),
    (lambda: recommend.user_click_probs(ENV, E1),
     r"user must have shape \[N, 2\]"),
    (lambda: recommend.popularity_scores(jnp.ones(3)),
     r"click_probs must be \[N, num_items\] \(rank 2\), got shape \(3,\)"),
    (lambda: recommend.popularity_scores(jnp.ones((0, 3))),
     "needs at least one user and one item"),
    (lambda: recommend.popularity_scores(jnp.full((2, 3), 1.5)),
     r"click_probs must be probabilities in \[0, 1\]"),
    (lambda: recommend.window_ctr(jnp.ones(20), 6, 21),
     "need 1 <= first <= last <= T = 20, got first=6, last=21"),
    (lambda: recommend.window_ctr(jnp.ones(20), 7, 6), "got first=7, last=6"),
    (lambda: recommend.window_ctr(jnp.ones(20), 0, 6), "first: expected a positive int, got 0"),
    (lambda: recommend.window_ctr(jnp.float32(1.0), 1, 1), "rank >= 1"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
