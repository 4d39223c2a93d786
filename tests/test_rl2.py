"""RL²: recurrent actor-critic, trial semantics, PPO over trials."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.algorithms import rl2
from jmeta.envs import TrialWrapper
from jmeta.envs.bandit import BanditParams
from jmeta.networks import RecurrentActorCritic

TINY = dict(num_tasks=8, trial_episodes=4, hidden_size=8, num_minibatches=2, num_epochs=1)


def bandit(k=3):
    return jmeta.make("bandit", num_arms=k)


@pytest.mark.parametrize("cell", ["lstm", "gru", "lngru"])
def test_network_shapes_and_zero_initial_state(cell):
    net = RecurrentActorCritic(action_dim=3, discrete=True, hidden_size=6, cell=cell)
    carry = net.initial_carry((2,))
    leaves = jax.tree.leaves(carry)
    assert len(leaves) == (2 if cell == "lstm" else 1)
    assert all(x.shape == (2, 6) and not np.any(x) for x in leaves)
    params = net.init(jax.random.key(0), carry, jnp.ones((2, 5)))
    carry, logits, value = net.apply(params, carry, jnp.ones((2, 5)))
    assert logits.shape == (2, 3) and value.shape == (2,)
    gauss = RecurrentActorCritic(action_dim=2, discrete=False, hidden_size=6, cell=cell)
    p = gauss.init(jax.random.key(0), gauss.initial_carry(), jnp.ones(4))
    _, (mean, log_std), _ = gauss.apply(p, gauss.initial_carry(), jnp.ones(4))
    assert mean.shape == (2,) and np.allclose(log_std, 0.0)


def test_layer_norm_gru_cell_by_hand():
    # One step of LayerNormGRUCell against its equations written out in numpy, from a non-zero
    # state, with the layer norms' gains and biases moved off their (1, 0) initial values.
    from jmeta.networks.recurrent import LayerNormGRUCell
    cell = LayerNormGRUCell(features=3, update_bias=1.0)
    x = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    h = np.array([0.3, -0.2, 0.8], np.float32)
    params = cell.init(jax.random.key(0), jnp.asarray(h), jnp.asarray(x))["params"]
    params = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(1), v.shape),
                          params)
    p = jax.tree.map(np.asarray, params)

    def proj(v, name):
        y = v @ p[name]["kernel"]
        y = (y - y.mean()) / np.sqrt(y.var() + 1e-6)  # flax LayerNorm's epsilon
        return y * p[name + "_ln"]["scale"] + p[name + "_ln"]["bias"]

    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    ur = proj(x, "x_gates") + proj(h, "h_gates")
    u, r = sig(ur[:3] - 1.0), sig(ur[3:])
    cand = np.maximum(proj(x, "x_cand") + r * proj(h, "h_cand"), 0.0)
    expected = (1 - u) * h + u * cand
    new_h, out = cell.apply({"params": params}, jnp.asarray(h), jnp.asarray(x))
    np.testing.assert_allclose(new_h, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_h, out)
    # from the zero state the update gate is σ(LN(W x)_u − 1): mostly closed
    h0, _ = LayerNormGRUCell(features=3).apply(
        LayerNormGRUCell(features=3).init(jax.random.key(0), jnp.zeros(3), jnp.asarray(x)),
        jnp.zeros(3), jnp.asarray(x))
    assert np.all(np.asarray(h0) >= 0.0)  # a convex mix of 0 and a ReLU


def test_trial_inputs_line_up_with_the_previous_step():
    env, tasks = bandit(3)
    comp = rl2.make_components(rl2.Config(**TINY), env, tasks)
    state = comp.algorithm.init(jax.random.key(0))
    task = BanditParams(arm_means=jnp.array([0.0, 1.0, 0.5]))
    traj, _ = comp.collect(state.params, task, jax.random.key(1))
    assert traj.obs.shape == (4, 1 + 3 + 2)  # [bandit obs, one-hot prev action, prev reward, done]
    np.testing.assert_array_equal(traj.obs[0, 1:], 0.0)  # nothing before the first pull
    for t in range(1, 4):
        np.testing.assert_array_equal(traj.obs[t, 1:4], np.eye(3)[int(traj.action[t - 1])])
        assert float(traj.obs[t, 4]) == float(traj.reward[t - 1])
        assert float(traj.obs[t, 5]) == 1.0  # every pull ends an episode
    # deterministic arms: the reward is the arm's mean
    np.testing.assert_array_equal(traj.reward, task.arm_means[traj.action])
    assert bool(traj.terminated[-1]) and not np.any(traj.terminated[:-1])


def test_state_starts_at_zero_and_is_not_reset_at_episode_boundaries():
    # A hand-built trial of 4 one-pull episodes: the value at step t must be the network run from
    # the zero state over obs[0..t] (state carried across episode ends); resetting the state at
    # episode boundaries (or using done_t instead of done_{t-1}) would give net(zero, obs[t]).
    env, tasks = bandit(3)
    comp = rl2.make_components(rl2.Config(**TINY), env, tasks)
    net, params = comp.network, comp.algorithm.init(jax.random.key(0)).params
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(7), x.shape),
                          params)  # break the small-init symmetry so the state matters
    task = BanditParams(arm_means=jnp.array([0.0, 1.0, 0.5]))
    traj, _ = comp.collect(params, task, jax.random.key(1))
    _, values = comp.unroll(params, traj.obs)
    np.testing.assert_allclose(values, traj.extras["value"], rtol=1e-5, atol=1e-6)
    carry = net.initial_carry()
    for t in range(4):
        _, _, v_reset = net.apply(params, net.initial_carry(), traj.obs[t])
        carry, _, v = net.apply(params, carry, traj.obs[t])
        np.testing.assert_allclose(v, traj.extras["value"][t], rtol=1e-5, atol=1e-6)
        if t == 0:
            np.testing.assert_allclose(v_reset, v, rtol=1e-6)
        else:
            assert abs(float(v_reset) - float(v)) > 1e-4
    # the next trial starts from zero again: its first value is net(zero, obs0)
    traj2, _ = comp.collect(params, task, jax.random.key(2))
    _, _, v0 = net.apply(params, net.initial_carry(), traj2.obs[0])
    np.testing.assert_allclose(traj2.extras["value"][0], v0, rtol=1e-6)


def test_recomputed_log_probs_match_the_rollout():
    env, tasks = jmeta.make("tabular-mdp")
    comp = rl2.make_components(rl2.Config(**{**TINY, "cell": "lstm"}), env, tasks)
    params = comp.algorithm.init(jax.random.key(0)).params
    traj, _ = comp.collect(params, tasks.sample(jax.random.key(3)), jax.random.key(4))
    assert traj.obs.shape[0] == 4 * 10  # trial_episodes × horizon
    logits, values = comp.unroll(params, traj.obs)
    logp = jax.nn.log_softmax(logits)[jnp.arange(40), traj.action]
    np.testing.assert_allclose(logp, traj.extras["log_prob"], rtol=1e-5, atol=1e-6)


def test_cut_rollout_bootstraps_from_the_next_value():
    # num_steps shorter than the trial: the last step is a truncation whose target includes
    # γ·V(next obs); a full trial ends in a termination.
    env, tasks = jmeta.make("tabular-mdp")
    comp = rl2.make_components(rl2.Config(**{**TINY, "num_steps": 15}), env, tasks)
    params = comp.algorithm.init(jax.random.key(0)).params
    traj, bootstrap = comp.collect(params, tasks.sample(jax.random.key(3)), jax.random.key(4))
    assert traj.obs.shape[0] == 15 and not bool(traj.terminated[-1])
    carry = comp.network.initial_carry()
    for t in range(15):
        carry, _, _ = comp.network.apply(params, carry, traj.obs[t])
    _, _, v_next = comp.network.apply(params, carry, traj.next_obs[-1])
    np.testing.assert_allclose(bootstrap, v_next, rtol=1e-5, atol=1e-6)


def test_reward_scale_scales_the_training_signal_only():
    # GAE is linear in (rewards, values): with the critic's values fixed, scaling the rewards by
    # s adds (s - 1)·GAE(rewards, values = 0) to the advantages; the trajectory (and so the
    # reported returns) does not change.
    env, tasks = jmeta.make("tabular-mdp")
    one = rl2.make_components(rl2.Config(**TINY), env, tasks)
    three = rl2.make_components(rl2.Config(**TINY, reward_scale=3.0), env, tasks)
    params = one.algorithm.init(jax.random.key(0)).params
    task, key = tasks.sample(jax.random.key(3)), jax.random.key(4)
    traj, bootstrap = one.collect(params, task, key)
    traj3, _ = three.collect(params, task, key)
    chex.assert_trees_all_equal(traj, traj3)
    adv1, targets1 = one.advantages(traj, bootstrap)
    adv3, targets3 = three.advantages(traj, bootstrap)
    zero = traj.extras["value"] * 0.0
    reward_only, _ = one.advantages(traj._replace(extras={**traj.extras, "value": zero}),
                                    jnp.zeros(()))
    np.testing.assert_allclose(adv3 - adv1, 2.0 * reward_only, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(targets3 - targets1, adv3 - adv1, rtol=1e-5, atol=1e-5)


def test_adapt_returns_per_episode_returns_and_is_deterministic():
    env, tasks = bandit(3)
    algo = rl2.make(rl2.Config(**TINY), env, tasks)
    state = algo.init(jax.random.key(0))
    task = BanditParams(arm_means=jnp.array([1.0, 1.0, 1.0]))
    out = jax.jit(algo.adapt)(state, task, jax.random.key(5))
    np.testing.assert_array_equal(out.returns, np.ones(4))  # every pull pays 1
    again = algo.adapt(state, tasks.sample(jax.random.key(1)), jax.random.key(5))
    again_jit = jax.jit(algo.adapt)(state, tasks.sample(jax.random.key(1)), jax.random.key(5))
    np.testing.assert_array_equal(again.returns, again_jit.returns)
    ev = jmeta.evaluate(algo, state, tasks.test, jax.random.key(2), 6)
    assert ev.returns.shape == (6, 4)


def test_continuous_actions_train_under_jit():
    # A Box action space (Gaussian head) through the TrialWrapper inside jit: the previous action
    # is part of the observation, and its size must be static (it once was traced and failed).
    env, tasks = jmeta.make("point-nav", horizon=5)
    algo = rl2.make(rl2.Config(**{**TINY, "trial_episodes": 2}), jmeta.envs.RescaleAction(env),
                    tasks)
    state, metrics = jax.jit(algo.update)(algo.init(jax.random.key(0)))
    assert metrics["episode_returns"].shape == (2,)
    assert np.isfinite(float(metrics["loss"]))
    out = jax.jit(algo.adapt)(state, tasks.sample(jax.random.key(1)), jax.random.key(2))
    assert out.trajectory.action.shape == (10, 2) and out.trajectory.obs.shape == (10, 2 + 2 + 2)


def test_update_compiles_once():
    chex.clear_trace_counter()
    env, tasks = bandit(3)
    algo = rl2.make(rl2.Config(**TINY), env, tasks)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state):
        return algo.update(state)

    state = algo.init(jax.random.key(0))
    state, m1 = update(state)
    state, m2 = update(state)
    assert int(state.iteration) == 2
    assert np.isfinite(float(m2["loss"])) and m2["episode_returns"].shape == (4,)


def test_short_bandit_run_beats_random_clearly():
    # 5-armed bandit, 10 pulls: random play averages 5.0; a tiny GRU gets clearly more.
    env, tasks = jmeta.make("bandit", num_arms=5)
    algo = rl2.make(rl2.Config(num_tasks=64, trial_episodes=10, hidden_size=32,
                               num_minibatches=4, learning_rate=3e-3, gae_lambda=0.3), env, tasks)
    state = algo.init(jax.random.key(0))
    state, _ = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=200)
    ev = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))(
        algo, state, tasks.test, jax.random.key(1), 400)
    total = float(jnp.mean(jnp.sum(ev.returns, axis=-1)))
    assert total > 5.8, total  # ~13 SEMs above random
    # later pulls pay more than the first: the agent adapts within the trial
    assert float(jnp.mean(ev.returns[:, -3:])) > float(jnp.mean(ev.returns[:, 0])) + 0.08


@pytest.mark.parametrize("kwargs,message", [
    (dict(trial_episodes=0), "trial_episodes"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(num_tasks=6, num_minibatches=4), "does not divide"),
    (dict(cell="rnn"), "cell: expected one of"),
    (dict(gamma=1.5), "gamma"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(reward_scale=0.0), "reward_scale"),
    (dict(task_prediction_coef=-1.0), "task_prediction_coef"),
    (dict(cell="lstm", context=8), "only the 'transformer' memory has a window"),
    (dict(outer="sgd"), "outer: expected one of"),
    (dict(outer="trpo", max_kl=0.0), "max_kl"),
    (dict(outer="trpo", cg_iters=0), "cg_iters"),
    (dict(outer="trpo", fisher_subsample=0), "fisher_subsample"),
    (dict(outer="trpo", num_tasks=8, num_minibatches=2, fisher_subsample=9), "exceeds num_tasks"),
    (dict(outer="trpo", cell="transformer"), "Transformer's trunk is shared"),
    (dict(outer="trpo", separate_critic=False), "needs the critic's own core"),
    (dict(outer="trpo", task_prediction_coef=1.0), "use outer='ppo'"),
    (dict(cell="transformer", separate_critic=True), "only the recurrent memories"),
])
def test_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rl2.Config(**kwargs)


def test_scheduled_values_by_hand():
    schedule = ((2, 0.01), (4, 0.0))
    got = [float(rl2.scheduled(0.03, schedule, jnp.int32(i))) for i in range(6)]
    np.testing.assert_allclose(got, [0.03, 0.03, 0.01, 0.01, 0.0, 0.0])
    assert float(rl2.scheduled(0.5, (), jnp.int32(7))) == 0.5
    # lists (as YAML gives them) become tuples
    assert rl2.Config(ent_coef_schedule=[[3, 0.01]]).ent_coef_schedule == ((3, 0.01),)


@pytest.mark.parametrize("kwargs,message", [
    (dict(ent_coef_schedule=((4, 0.01), (2, 0.0))), "iterations must increase strictly, got 2 "
                                                     "after 4"),
    (dict(ent_coef_schedule=((0, 0.01),)), "ent_coef_schedule iteration: expected a positive"),
    (dict(ent_coef_schedule=((3, -0.1),)), "ent_coef_schedule value: expected a finite "
                                           "non-negative"),
    (dict(learning_rate_schedule=((3, 0.0),)), "learning_rate_schedule value: expected a finite "
                                               "positive"),
    (dict(learning_rate_schedule=(3,)), "expected \\(iteration, value\\) pairs, got 3"),
    (dict(learning_rate_schedule=0.1), "expected a sequence of \\(iteration, value\\) pairs"),
])
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rl2.Config(**kwargs)


def test_schedules_switch_the_update_at_their_iteration():
    # Scheduled: ent 0.05 and lr 1e-3 for the first update, then ent 0 and lr 3e-4. The same two
    # updates from constant configs (the second from the first's state) must agree, and the
    # scheduled update compiles once.
    chex.clear_trace_counter()
    env, tasks = bandit(3)
    base = dict(TINY, ent_coef=0.05, learning_rate=1e-3)
    algo = rl2.make(rl2.Config(**base, ent_coef_schedule=((1, 0.0),),
                               learning_rate_schedule=((1, 3e-4),)), env, tasks)
    update = jax.jit(chex.assert_max_traces(algo.update, n=1))
    s0 = algo.init(jax.random.key(0))
    s1, _ = update(s0)
    s2, _ = update(s1)
    first = rl2.make(rl2.Config(**base), env, tasks).update
    second = rl2.make(rl2.Config(**{**base, "ent_coef": 0.0, "learning_rate": 3e-4}), env,
                      tasks).update
    r1, _ = jax.jit(first)(s0)
    r2, _ = jax.jit(second)(r1)
    chex.assert_trees_all_close(s1.params, r1.params, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(s2.params, r2.params, rtol=1e-5, atol=1e-6)
    # and the switch is real: the second update without the schedule differs
    r2_const, _ = jax.jit(first)(r1)
    diff = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                        s2.params, r2_const.params))
    assert max(diff) > 1e-4


def test_bad_envs():
    env, tasks = bandit(3)
    with pytest.raises(ValueError, match="rl2 makes the trials"):
        rl2.make(rl2.Config(**TINY), TrialWrapper(env, 3), tasks)
    with pytest.raises(ValueError, match="hidden_size"):
        RecurrentActorCritic(action_dim=2, hidden_size=0).initial_carry()


@pytest.mark.parametrize("cell", ["gru", "transformer"])
def test_task_critic_reads_the_task_and_the_actor_does_not(cell):
    # Config.task_critic: the value depends on the task's parameters, the policy never does, so
    # meta-test behaviour is a function of the trial alone.
    env, tasks = bandit(3)
    comp = rl2.make_components(rl2.Config(**TINY, cell=cell, task_critic=True, num_heads=2),
                               env, tasks)
    state = comp.algorithm.init(jax.random.key(0))
    a = BanditParams(arm_means=jnp.array([0.0, 1.0, 0.5]))
    b = BanditParams(arm_means=jnp.array([0.9, 0.1, 0.3]))
    np.testing.assert_array_equal(rl2.task_features(a), [0.0, 1.0, 0.5])
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
    dist_a, values_a = comp.unroll(state.params, obs, a)
    dist_b, values_b = comp.unroll(state.params, obs, b)
    np.testing.assert_array_equal(dist_a, dist_b)
    assert float(jnp.max(jnp.abs(values_a - values_b))) > 1e-4
    # the rollout's stored values are the unroll's with the same task
    traj, _ = comp.collect(state.params, a, jax.random.key(1))
    _, values = comp.unroll(state.params, traj.obs, a)
    np.testing.assert_allclose(traj.extras["value"], values, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs the task features"):
        comp.unroll(state.params, obs)


def test_task_critic_trains_without_retracing():
    env, tasks = bandit(3)
    algo = rl2.make(rl2.Config(**TINY, task_critic=True), env, tasks)
    state = algo.init(jax.random.key(0))
    update = jax.jit(chex.assert_max_traces(algo.update, n=1))
    state, m1 = update(state)
    state, m2 = update(state)
    assert int(state.iteration) == 2 and np.isfinite(float(m2["value_loss"]))
    assert "critic_task" in state.params["params"]


def test_task_critic_errors():
    net = RecurrentActorCritic(action_dim=2, hidden_size=4, cell="gru")
    params = net.init(jax.random.key(0), net.initial_carry(), jnp.ones(3))
    with pytest.raises(ValueError, match="only a task_critic network"):
        net.apply(params, net.initial_carry(), jnp.ones(3), jnp.ones(2))
    with pytest.raises(ValueError, match="floating-point task parameters; dict has none"):
        rl2.task_features({"index": jnp.arange(3)})


def _with_task_head(params, bias):
    """``params`` with the task-prediction head replaced by the constant ``bias``."""
    head = params["params"]["task_head"]
    new_head = {"kernel": jnp.zeros_like(head["kernel"]), "bias": jnp.asarray(bias, jnp.float32)}
    return {"params": {**params["params"], "task_head": new_head}}


@pytest.mark.parametrize("cell", ["gru", "transformer"])
def test_task_prediction_loss_by_hand(cell):
    # The head predicts each arm mean standardised by the prior's mean m and std s (arms
    # U[0, 1]: m ≈ 1/2, s ≈ 1/√12). The prediction 0 (the prior mean) on tasks a, b leaves
    # ((a − m)² + (b − m)²) / 2s² per arm; predicting task a's standardised arms exactly leaves 0
    # on a and (a − b)² / s² on b.
    env, tasks = bandit(3)
    m, s = rl2.task_feature_stats(tasks.train)
    np.testing.assert_allclose(m, 0.5, atol=0.02)
    np.testing.assert_allclose(s, 1 / np.sqrt(12), atol=0.01)
    comp = rl2.make_components(rl2.Config(**{**TINY, "num_tasks": 2, "num_minibatches": 1},
                                          cell=cell, num_heads=2, task_prediction_coef=1.0),
                               env, tasks)
    state = comp.algorithm.init(jax.random.key(0))
    a, b = jnp.array([0.2, 0.5, 0.9]), jnp.array([0.6, 0.5, 0.1])
    batch = BanditParams(arm_means=jnp.stack([a, b]))
    traj, boot = jax.vmap(comp.collect, in_axes=(None, 0, 0))(
        state.params, batch, jax.random.split(jax.random.key(1), 2))
    adv, targets = jax.vmap(comp.advantages)(traj, boot)
    mb = (traj, adv, targets, batch)
    cases = ((jnp.zeros(3), np.mean(((a - m) ** 2 + (b - m) ** 2) / (2 * s ** 2))),
             ((a - m) / s, np.mean((a - b) ** 2 / s ** 2) / 2))
    for bias, expected in cases:
        _, aux = comp.loss(_with_task_head(state.params, bias), mb)
        np.testing.assert_allclose(aux["task_prediction_loss"], expected, rtol=1e-5)
    # the coefficient weighs the term into the loss; coefficient 0 has no head and no term
    off = rl2.make_components(rl2.Config(**{**TINY, "num_tasks": 2, "num_minibatches": 1},
                                         cell=cell, num_heads=2), env, tasks)
    off_params = off.algorithm.init(jax.random.key(0)).params
    assert "task_head" not in off_params["params"]
    _, aux_off = off.loss(off_params, mb)
    assert "task_prediction_loss" not in aux_off
    # the sown head does not change what the network computes for acting
    dist, values = comp.unroll(state.params, traj.obs[0])
    np.testing.assert_allclose(values, traj.extras["value"][0], rtol=1e-5, atol=1e-5)


def test_task_prediction_is_learned():
    # the auxiliary loss falls from about 1 (the prior mean) as the memory learns a belief:
    # 0.95 over the first 15 iterations, about 0.7 after 100 (seed 0)
    env, tasks = bandit(3)
    algo = rl2.make(rl2.Config(num_tasks=32, trial_episodes=10, hidden_size=16,
                               num_minibatches=2, learning_rate=3e-3, task_prediction_coef=5.0),
                    env, tasks)
    state = algo.init(jax.random.key(0))
    _, m = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=120)
    losses = np.asarray(m["task_prediction_loss"])
    assert losses[-30:].mean() < 0.85 * losses[:15].mean(), losses


def test_task_prediction_leaves_out_constant_features():
    # tabular MDPs: the reward noise std is the same in every task, so it is not predicted
    env, tasks = jmeta.make("tabular-mdp", num_states=2, num_actions=2, horizon=2)
    comp = rl2.make_components(rl2.Config(num_tasks=2, trial_episodes=1, hidden_size=8,
                                          num_minibatches=1, task_prediction_coef=1.0),
                               env, tasks)
    m, s = rl2.task_feature_stats(tasks.train)
    assert m.shape == (4 + 8 + 1,) and float(s[-1]) == 0.0 and np.all(np.asarray(s[:-1]) > 0)
    state = comp.algorithm.init(jax.random.key(0))
    batch = tasks.train.sample_batch(jax.random.key(3), 2)
    traj, boot = jax.vmap(comp.collect, in_axes=(None, 0, 0))(
        state.params, batch, jax.random.split(jax.random.key(1), 2))
    adv, targets = jax.vmap(comp.advantages)(traj, boot)
    _, aux = comp.loss(_with_task_head(state.params, jnp.zeros(13)), (traj, adv, targets, batch))
    z = (jax.vmap(rl2.task_features)(batch)[:, :-1] - m[:-1]) / s[:-1]
    np.testing.assert_allclose(aux["task_prediction_loss"], np.mean(np.square(z)), rtol=1e-5)


# --- TRPO as the outer step (Duan et al.'s own), with the critic's own recurrent core ----------


@pytest.mark.parametrize("cell", ["lstm", "gru", "lngru"])
def test_separate_critic_core_splits_actor_and_critic(cell):
    shared = RecurrentActorCritic(action_dim=3, hidden_size=6, cell=cell)
    split = RecurrentActorCritic(action_dim=3, hidden_size=6, cell=cell, separate_critic=True)
    carry = split.initial_carry((2,))
    assert jax.tree.structure(carry) == jax.tree.structure(
        (shared.initial_carry((2,)), shared.initial_carry((2,))))
    obs = jax.random.normal(jax.random.key(1), (2, 5))
    params = split.init(jax.random.key(0), carry, obs)["params"]
    assert set(params) == {"core", "critic_core", "actor", "critic"}
    # the actor's pathway is exactly the shared network's with the same core and head
    shared_params = {"params": {k: params[k] for k in ("core", "actor", "critic")}}
    _, logits_shared, _ = shared.apply(shared_params, carry[0], obs)
    (actor_c, critic_c), logits, value = split.apply({"params": params}, carry, obs)
    np.testing.assert_allclose(logits, logits_shared, rtol=1e-6)
    # the logits never read the critic's core, the value never reads the actor's
    g_logits = jax.grad(lambda p: jnp.sum(split.apply({"params": p}, carry, obs)[1]))(params)
    g_value = jax.grad(lambda p: jnp.sum(split.apply({"params": p}, carry, obs)[2]))(params)
    assert all(not np.any(x) for x in jax.tree.leaves(g_logits["critic_core"]))
    assert all(not np.any(x) for x in jax.tree.leaves(g_value["core"]))
    assert any(np.any(x) for x in jax.tree.leaves(g_value["critic_core"]))
    # two distinct recurrent states
    assert not np.allclose(jax.tree.leaves(actor_c)[0], jax.tree.leaves(critic_c)[0])


def test_trpo_step_stays_in_the_trust_region_and_the_value_fit_leaves_the_policy():
    env, tasks = bandit(3)
    config = rl2.Config(**{**TINY, "outer": "trpo", "max_kl": 0.02, "num_epochs": 2})
    assert config.critic_core and not rl2.Config(**TINY).critic_core
    comp = rl2.make_components(config, env, tasks)
    algo = comp.algorithm
    state = algo.init(jax.random.key(0))
    data = jax.jit(algo.sample)(state.params, jax.random.key(3))
    new_state, metrics = jax.jit(algo.learn)(state, data)
    obs = data.trajectory.obs
    old_logits, _ = jax.vmap(comp.unroll, in_axes=(None, 0))(state.params, obs)
    new_logits, _ = jax.vmap(comp.unroll, in_axes=(None, 0))(new_state.params, obs)
    kl = float(jnp.mean(jax.vmap(jax.vmap(jmeta.algorithms.pg.categorical_kl))(
        old_logits, new_logits)))
    assert bool(metrics["step_accepted"])
    assert 0.0 < kl <= 0.02 * 1.0001, kl  # the policy moved, within the trust region
    # approx_kl is the TRPO step's, measured before the value epochs: equal to the KL after
    # them, so Adam's value epochs moved the critic only and the policy is the TRPO step's
    np.testing.assert_allclose(kl, float(metrics["approx_kl"]), rtol=1e-4)
    for name in ("core", "actor"):
        moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                             state.params["params"][name], new_state.params["params"][name])
        assert max(jax.tree.leaves(moved)) > 0
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(state.params["params"]["critic_core"]),
        jax.tree.leaves(new_state.params["params"]["critic_core"]))) > 0
    # the objective improved: before the step the ratios are 1 and the normalised advantages
    # average 0, so the loss was -ent_coef × (the old policy's entropy)
    old_entropy = float(jnp.mean(jmeta.networks.policies.categorical_entropy(old_logits)))
    assert float(metrics["policy_loss"]) < -config.ent_coef * old_entropy - 1e-4


def test_trpo_update_compiles_once():
    chex.clear_trace_counter()
    env, tasks = bandit(3)
    algo = rl2.make(rl2.Config(**{**TINY, "outer": "trpo"}), env, tasks)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state):
        return algo.update(state)

    state, _ = update(algo.init(jax.random.key(0)))
    state, metrics = update(state)
    assert int(state.iteration) == 2 and np.isfinite(float(metrics["value_loss"]))


def test_short_trpo_bandit_run_beats_random_clearly():
    # 5-armed bandit, 10 pulls: random play averages 5.0.
    env, tasks = jmeta.make("bandit", num_arms=5)
    algo = rl2.make(rl2.Config(num_tasks=64, trial_episodes=10, hidden_size=32, outer="trpo",
                               num_minibatches=2, learning_rate=3e-3, gamma=1.0, gae_lambda=1.0),
                    env, tasks)
    state = algo.init(jax.random.key(0))
    state, _ = jax.jit(algo.train, static_argnames="num_iterations")(state, num_iterations=150)
    ev = jax.jit(jmeta.evaluate, static_argnums=(0, 2, 4))(
        algo, state, tasks.test, jax.random.key(1), 400)
    total = float(jnp.mean(jnp.sum(ev.returns, axis=-1)))
    assert total > 5.8, total


@pytest.mark.parametrize("actions", ["discrete", "gaussian"])
def test_trpo_gauss_newton_fisher_equals_the_kl_hessian(actions):
    # The Gauss-Newton products (the default) and forward-over-reverse through the KL's gradient
    # are the same matrix, so the same data give the same step (damped for conditioning); for the
    # Gaussian head the KL's output Hessian also covers the state-independent log-std.
    if actions == "discrete":
        env, tasks = bandit(3)
    else:
        env, tasks = jmeta.make("point-nav", horizon=3)
        env = jmeta.envs.RescaleAction(env)
    states = {}
    for gn in (True, False):
        algo = rl2.make(rl2.Config(**{**TINY, "outer": "trpo", "cg_damping": 1e-2,
                                      "gauss_newton": gn, "fisher_subsample": 2}),
                        env, tasks)
        state = algo.init(jax.random.key(0))
        data = jax.jit(algo.sample)(state.params, jax.random.key(3))
        states[gn] = jax.jit(algo.learn)(state, data)
    chex.assert_trees_all_close(states[True][0].params, states[False][0].params,
                                rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(states[True][1]["approx_kl"]),
                               float(states[False][1]["approx_kl"]), rtol=1e-4)
