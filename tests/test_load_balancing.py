"""Server load balancing (issue 9): queue dynamics by hand, FIFO parity, baselines, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.baselines import load_balancing as lb
from jmeta.envs.load_balancing import LoadBalancingParams, drain


def _deterministic_env(**overrides):
    env, tasks = jmeta.make("load-balancing", num_servers=2, horizon=3, job_size="constant",
                           arrivals="constant", **overrides)
    return env, tasks


def _run(env, params, actions):
    obs, state = env.reset(jax.random.key(0), params)
    out = [obs]
    for t, a in enumerate(actions):
        obs, state, r, term, trunc, info = env.step(jax.random.key(t + 1), state,
                                                   jnp.int32(a), params)
        out.append((obs, float(r), bool(term), bool(trunc), float(info["latency"]),
                    float(info["backlog"])))
    return out


# --- dynamics ----------------------------------------------------------------------------------
def test_queue_dynamics_by_hand():
    # rates 2 and 0.5, one job of size 1 every time unit (λ = 1).
    env, _ = _deterministic_env()
    params = LoadBalancingParams(rates=jnp.array([2.0, 0.5]), arrival_rate=jnp.array(1.0),
                                 horizon=3)
    obs0, *steps = _run(env, params, [1, 1, 0])
    np.testing.assert_allclose(obs0, [0.0, 0.0, 1.0, 0.0])
    # job 1 -> server 1: latency 1/0.5 = 2; work [0, 1] drains by [2, 0.5] -> [0, 0.5]
    # job 2 -> server 1: waits 0.5 of work: (0.5 + 1)/0.5 = 3; [0, 1.5] -> [0, 1.0]
    # job 3 -> server 0: 1/2 = 0.5; [1, 1] -> [0, 0.5]; the episode is truncated at the horizon
    want_obs = [[0.0, 0.5, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0], [0.0, 0.5, 1.0, 1.0]]
    want = [(-2.0, 2.0, 1.0), (-3.0, 3.0, 1.5), (-0.5, 0.5, 2.0)]
    for (obs, r, term, trunc, latency, backlog), w_obs, (w_r, w_lat, w_back), last in zip(
            steps, want_obs, want, [False, False, True]):
        np.testing.assert_allclose(obs, w_obs, atol=1e-6)
        assert (r, latency, backlog) == pytest.approx((w_r, w_lat, w_back))
        assert not term and trunc == last


def test_backlog_reward_and_units_by_hand():
    # The same jobs with reward="backlog": −∫ Σ W dt until the next arrival. Step 1: server 1
    # holds 1 and drains 0.5 over Δ = 1: 1·1 − 0.5·1²/2 = 0.75. Step 2: 1.5 − 0.25 = 1.25.
    # Step 3: server 0 holds 1, empties at t = 0.5: 1²/(2·2) = 0.25, plus server 1's 0.75.
    env, _ = _deterministic_env(reward="backlog")
    params = LoadBalancingParams(rates=jnp.array([2.0, 0.5]), arrival_rate=jnp.array(1.0),
                                 horizon=3)
    _, *steps = _run(env, params, [1, 1, 0])
    assert [s[1] for s in steps] == pytest.approx([-0.75, -1.25, -1.0])
    assert [s[4] for s in steps] == pytest.approx([2.0, 3.0, 0.5])  # latency still in info
    # Units: jobs of size 2 (mean_job_size = 2): latency 2/0.5 = 4, the observation counts work
    # in job sizes: server 1 holds 2 − 0.5 = 1.5 of work = 0.75 jobs; the backlog is halved.
    env2, _ = _deterministic_env(reward="backlog", mean_job_size=2.0)
    obs0, (obs, r, _, _, latency, backlog) = _run(env2, params, [1])
    np.testing.assert_allclose(obs0, [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(obs, [0.0, 0.75, 1.0, 1.0])
    assert (latency, backlog) == pytest.approx((4.0, 1.0))
    assert r == pytest.approx(-(2.0 - 0.25) / 2.0)


def test_drain_integral_matches_numerical_integration():
    work, rates, dt = jnp.array([0.3, 2.0, 0.0]), jnp.array([1.0, 0.5, 2.0]), jnp.array(0.7)
    after, integral = drain(work, rates, dt)
    np.testing.assert_allclose(after, [0.0, 1.65, 0.0], atol=1e-6)
    t = np.linspace(0.0, 0.7, 70001)
    w = np.maximum(np.asarray(work)[:, None] - np.asarray(rates)[:, None] * t, 0.0)
    np.testing.assert_allclose(integral, np.trapezoid(w, t, axis=1), atol=1e-6)


def test_latency_is_the_fifo_sojourn_time_of_an_event_simulation():
    """Parity with an independent per-job FIFO simulation (arrival times and completion times)."""
    env, tasks = jmeta.make("load-balancing", num_servers=3, horizon=40)
    params = tasks.test.sample(jax.random.key(3))
    act = lb.make_policy("random", 3)
    _, traj = jmeta.rollout.rollout(env, act, None, params, jax.random.key(4), 40,
                                    init_carry=lb.INIT_CARRY)
    sizes = np.asarray(traj.obs[:, 3], np.float64)  # mean_job_size = 1
    arrivals = np.concatenate([[0.0], np.cumsum(np.asarray(traj.next_obs[:-1, 4], np.float64))])
    rates = np.asarray(params.rates, np.float64)
    free_at = np.zeros(3)
    want = []
    for t, a in enumerate(np.asarray(traj.action)):
        free_at[a] = max(free_at[a], arrivals[t]) + sizes[t] / rates[a]
        want.append(free_at[a] - arrivals[t])
    np.testing.assert_allclose(traj.info["latency"], want, rtol=1e-4)
    assert bool(traj.truncated[-1]) and not bool(jnp.any(traj.terminated))
    assert int(jnp.sum(traj.truncated)) == 1


def test_stochastic_arrivals_and_sizes_have_the_documented_distributions():
    env, _ = jmeta.make("load-balancing", num_servers=2, mean_job_size=2.0, horizon=5000)
    params = LoadBalancingParams(rates=jnp.array([1.0, 3.0]), arrival_rate=jnp.array(1.6),
                                 horizon=5000)
    act = lb.make_policy("jsq", 2)
    _, traj = jax.jit(lambda k: jmeta.rollout.rollout(env, act, None, params, k, 5000,
                                                      init_carry=lb.INIT_CARRY))(
        jax.random.key(0))
    sizes = np.asarray(traj.obs[:, 2]) * 2.0
    dts = np.asarray(traj.next_obs[:, 3])
    # Exponential: mean and std both equal the mean (5000 draws: SEM ~1.4 %).
    assert sizes.mean() == pytest.approx(2.0, rel=0.05)
    assert sizes.std() == pytest.approx(2.0, rel=0.07)
    assert dts.mean() == pytest.approx(1 / 1.6, rel=0.05)
    assert dts.std() == pytest.approx(1 / 1.6, rel=0.07)


def test_task_distribution_and_splits():
    _, tasks = jmeta.make("load-balancing", num_servers=4, load=0.5)
    train = tasks.train.sample_batch(jax.random.key(0), 500)
    ood = tasks.ood.sample_batch(jax.random.key(0), 500)
    r = np.asarray(train.rates)
    assert r.shape == (500, 4) and r.min() >= 0.2 and r.max() <= 2.0
    assert r.std(axis=1).mean() > 0.3  # heterogeneous pools
    np.testing.assert_allclose(train.arrival_rate, 0.5 * r.sum(axis=1), rtol=1e-6)
    ro = np.asarray(ood.rates)
    assert ro.min() >= 0.05 and ro.max() <= 3.0 and ro.min() < 0.2 and ro.max() > 2.0
    assert tasks.ood.active_ranges["service_rate"] == (0.05, 3.0)
    assert jmeta.envs.describe("load-balancing")["num_servers"] == 5


# --- baselines ---------------------------------------------------------------------------------
def test_policies_by_hand():
    n = 3
    zeros = jnp.zeros(())
    rr = lb.make_policy("round_robin", n)
    carry, actions = lb.INIT_CARRY, []
    for t in range(7):
        carry, a, _ = rr(None, carry, jnp.zeros(n + 2), jax.random.key(t))
        actions.append(int(a))
    assert actions == [0, 1, 2, 0, 1, 2, 0] and int(carry) == 7
    # oracle: work [0, 1, 5], size 1, rates [0.5, 4, 100]: delays 2, 0.5, 0.06 -> server 2
    orc = lb.make_policy("oracle", n)
    obs = jnp.array([0.0, 1.0, 5.0, 1.0, 0.3])
    assert int(orc(jnp.array([0.5, 4.0, 100.0]), zeros, obs, jax.random.key(0))[1]) == 2
    assert int(orc(jnp.array([0.5, 4.0, 1.0]), zeros, obs, jax.random.key(0))[1]) == 1
    keys = jax.random.split(jax.random.key(1), 3000)

    def freq(strategy, obs):
        act = lb.make_policy(strategy, n)
        a = jax.vmap(lambda k: act(None, zeros, obs, k)[1])(keys)
        return np.bincount(np.asarray(a), minlength=n) / len(keys)

    # JSQ: the least work; ties uniform.
    np.testing.assert_allclose(freq("jsq", jnp.array([2.0, 0.5, 1.0, 1.0, 0.0])), [0, 1, 0])
    np.testing.assert_allclose(freq("jsq", jnp.array([0.0, 0.0, 0.0, 1.0, 0.0])), [1 / 3] * 3,
                               atol=0.04)
    # power of two: server 0 (least work) wins whenever drawn, i.e. in 2 of the 3 pairs; of the
    # other pair {1, 2}, server 1 (less work than 2) wins.
    np.testing.assert_allclose(freq("power_of_two", jnp.array([0.0, 4.0, 9.0, 1.0, 0.0])),
                               [2 / 3, 1 / 3, 0.0], atol=0.04)
    np.testing.assert_allclose(freq("random", jnp.array([0.0, 4.0, 9.0, 1.0, 0.0])),
                               [1 / 3] * 3, atol=0.04)
    assert int(lb.make_policy("power_of_two", 1)(None, zeros, jnp.zeros(3), keys[0])[1]) == 0


@pytest.fixture(scope="module")
def small():
    env, tasks = jmeta.make("load-balancing", num_servers=4, horizon=40)
    return env, tasks, tasks.test.sample_batch(jax.random.key(0), 32)


def test_jsq_beats_round_robin_and_oracle_beats_jsq(small):
    env, _, pools = small
    run = jax.jit(lb.evaluate, static_argnames=("strategy", "env", "num_steps", "num_episodes"))
    lat = {s: float(run(s, env, pools, jax.random.key(1), num_episodes=2).mean())
           for s in lb.STRATEGIES}
    # Heterogeneous pools (rates U[0.2, 2]): round-robin overloads the slow servers.
    assert lat["jsq"] < 0.6 * lat["round_robin"], lat
    assert lat["power_of_two"] < lat["round_robin"], lat
    assert lat["oracle"] <= 0.95 * lat["jsq"], lat
    assert lat["jsq"] < lat["random"], lat


def test_evaluate_vmap_matches_python_loop_of_play(small):
    env, _, pools = small
    key = jax.random.key(5)
    batch = lb.evaluate("power_of_two", env, pools, key, num_steps=10, num_episodes=2)
    play = jax.jit(lb.play, static_argnames=("strategy", "env", "num_steps"))
    for i, k in enumerate(jax.random.split(key, 32)[:4]):
        pool = jax.tree.map(lambda x: x[i], pools)
        eps = [play("power_of_two", env, pool, kk, num_steps=10).latency
               for kk in jax.random.split(k, 2)]
        assert float(batch[i]) == pytest.approx(float(jnp.mean(jnp.stack(eps))), rel=1e-5)


def test_play_jit_matches_no_jit_and_is_deterministic(small):
    env, _, pools = small
    pool = jax.tree.map(lambda x: x[0], pools)
    eager = lb.play("oracle", env, pool, jax.random.key(2), num_steps=8)
    jitted = jax.jit(lb.play, static_argnames=("strategy", "env", "num_steps"))(
        "oracle", env, pool, jax.random.key(2), num_steps=8)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-6)
    again = lb.play("oracle", env, pool, jax.random.key(2), num_steps=8)
    chex.assert_trees_all_equal(eager, again)
    other = lb.play("oracle", env, pool, jax.random.key(3), num_steps=8)
    assert not np.allclose(eager.latency, other.latency)
    # Common random numbers: another policy on the same key sees the same job stream.
    rr = lb.play("round_robin", env, pool, jax.random.key(2), num_steps=8)
    assert not np.array_equal(rr.servers, eager.servers)
    _, traj_o = jmeta.rollout.rollout(env, lb.make_policy("oracle", 4), pool.rates, pool,
                                      jax.random.key(2), 8, init_carry=lb.INIT_CARRY)
    _, traj_r = jmeta.rollout.rollout(env, lb.make_policy("round_robin", 4), None, pool,
                                      jax.random.key(2), 8, init_carry=lb.INIT_CARRY)
    np.testing.assert_array_equal(traj_o.obs[:, 4:], traj_r.obs[:, 4:])  # sizes and Δ


def test_no_recompilation_for_new_tasks(small):
    env, tasks, _ = small
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(pools, key):
        return lb.evaluate("jsq", env, pools, key, num_steps=5)

    for seed in range(3):
        run(tasks.test.sample_batch(jax.random.key(seed), 8), jax.random.key(seed))


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_servers": 0}, r"num_servers: expected a positive int, got 0"),
        ({"horizon": 0}, r"horizon: expected a positive int, got 0"),
        ({"service_rate": (-1.0, 1.0)}, r"service_rate: low must be >= 0.0, got \(-1.0, 1.0\)"),
        ({"service_rate": (0.0, 1.0)}, r"service_rate: service rates must be > 0"),
        ({"service_rate": (2.0, 1.0)}, r"service_rate: low must be <= high, got \(2.0, 1.0\)"),
        ({"ood_service_rate": (3.0, 1.0)}, r"ood_service_rate: low must be <= high"),
        ({"load": 0.0}, r"load: utilisation must be > 0, got \(0.0, 0.0\)"),
        ({"load": (0.9, 0.5)}, r"load: low must be <= high"),
        ({"mean_job_size": -1.0}, r"mean_job_size: expected a finite positive number"),
        ({"reward": "queue"}, r"reward: expected one of 'latency', 'backlog', got 'queue'"),
        ({"job_size": "pareto"}, r"job_size: expected one of 'exponential', 'constant'"),
        ({"arrivals": "burst"}, r"arrivals: expected one of 'poisson', 'constant'"),
    ],
)
def test_bad_config_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        jmeta.make("load-balancing", **overrides)


def test_bad_baseline_inputs(small):
    env, _, pools = small
    pool = jax.tree.map(lambda x: x[0], pools)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"load_balancing.play: unknown strategy 'jsw'; "
                                         r"expected one of 'random', 'round_robin'"):
        lb.play("jsw", env, pool, key)
    with pytest.raises(ValueError, match=r"load_balancing.evaluate: env must be the "
                                         r"load-balancing environment"):
        lb.evaluate("jsq", jmeta.make("bandit")[0], pools, key)
    with pytest.raises(ValueError, match=r"load_balancing.play: rates must have shape \[4\] "
                                         r"for this env, got \(32, 4\)"):
        lb.play("jsq", env, pools, key)
    with pytest.raises(ValueError, match=r"load_balancing.evaluate: rates must have shape "
                                         r"\[num_tasks, 4\] for this env, got \(4,\)"):
        lb.evaluate("jsq", env, pool, key)
    with pytest.raises(ValueError, match=r"load_balancing.play: expected load-balancing pools"):
        lb.play("jsq", env, jmeta.make("bandit")[1].sample(key), key)
    with pytest.raises(ValueError, match=r"num_steps: expected a positive int, got 0"):
        lb.play("jsq", env, pool, key, num_steps=0)
    with pytest.raises(ValueError, match=r"num_episodes: expected a positive int, got 0"):
        lb.evaluate("jsq", env, pools, key, num_episodes=0)
    with pytest.raises(ValueError, match=r"num_servers: expected a positive int, got 0"):
        lb.make_policy("jsq", 0)
