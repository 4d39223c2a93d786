"""RL²: meta-RL by a recurrent policy trained with PPO over whole trials (Duan et al. 2016).

A *trial* is ``trial_episodes`` episodes of one task (:class:`jmeta.envs.TrialWrapper`): the
agent sees the observation, its previous action and reward and a done flag, and its recurrent
state runs across the trial's episode boundaries, so it can learn *within* the trial which task it
is in. Meta-training maximises the trial's return; meta-test adaptation is the forward pass.

One meta-iteration (``update``), one pure function:

1. sample ``num_tasks`` tasks from ``tasks.train`` and roll out one trial on each (``vmap``), the
   hidden state starting from zeros at the trial's first step and never reset inside it (each
   rollout is exactly one trial, so there is no reset flag to be off by one step: the
   ``done_t`` vs ``done_{t-1}`` bug of purejaxrl#23 and Mava#1006 cannot occur; a test pins the
   state at an episode boundary);
2. GAE(γ, λ) over each trial; the trial's end is a termination (nothing bootstrapped); a rollout
   cut before the trial ends (``num_steps`` shorter than the trial) bootstraps from the critic's
   value of the next observation with the carried state;
3. ``num_epochs`` of PPO (clipped surrogate, value loss, entropy bonus) over minibatches of whole
   trials, each re-run from the zero state so gradients flow through the whole trial (BPTT), with
   gradients clipped by global norm (Adam). With ``outer="trpo"`` (Duan et al.'s own outer step)
   instead: one TRPO step of the policy on all the trials (surrogate plus entropy bonus, mean
   KL ≤ ``max_kl``, conjugate gradient on Fisher-vector products through the whole trial), then
   ``num_epochs`` of Adam on the value loss alone over minibatches of trials; the critic has its
   own recurrent core (``separate_critic``), so fitting it cannot move the policy out of the
   trust region.

``adapt(state, task, key)`` runs one trial and returns the return of each of its episodes
(``[trial_episodes]``), so :func:`jmeta.evaluate` reports "return vs. experience" as for MAML.

>>> import jax, jmeta
>>> from jmeta.algorithms import rl2
>>> env, tasks = jmeta.make("bandit", num_arms=5)
>>> algo = rl2.make(rl2.Config(num_tasks=8, trial_episodes=10, hidden_size=16,
...                            num_minibatches=2), env, tasks)
>>> state = algo.init(jax.random.key(0))
>>> state, metrics = jax.jit(algo.update)(state)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jmeta.algorithms import maml, pg, trpo
from jmeta.algorithms.base import (Algorithm, TrainState, check_mesh, scan_train, task_constraint,
                                  task_map)
from jmeta.envs.base import Environment
from jmeta.envs.spaces import Box, Discrete
from jmeta.envs.tasks import (
    TaskDistribution,
    check_positive_float,
    check_positive_int,
    task_horizon,
)
from jmeta.envs.wrappers import TrialWrapper
from jmeta.networks.policies import CATEGORICAL, GAUSSIAN
from jmeta.networks.recurrent import CELLS, RecurrentActorCritic
from jmeta.networks.transformer import TransformerActorCritic
from jmeta.rollout import rollout
from jmeta.types import Trajectory


MEMORIES = CELLS + ("transformer",)
OUTERS = ("ppo", "trpo")


@dataclasses.dataclass(frozen=True)
class Config:
    """RL² hyperparameters.

    Attributes:
      num_tasks: trials per meta-iteration (one task each).
      trial_episodes: episodes per trial (Duan et al.'s n).
      num_steps: rollout length; ``None`` takes ``trial_episodes × horizon`` (the whole trial).
      cell: the memory: ``"lstm"``, ``"gru"`` (Duan et al.: GRU), ``"lngru"`` (a layer-normalised
        GRU with a ReLU candidate, :class:`jmeta.networks.recurrent.LayerNormGRUCell`) or
        ``"transformer"`` (:class:`jmeta.networks.TransformerActorCritic`). Measured: ``"lngru"``
        with ``separate_critic=True`` and ``clip_eps=0.1`` needs 4× fewer iterations or less than
        the GRU for its level on the bandit and MDP benchmarks and ends higher on both (MDP
        n = 10: 137.0 against 124.2 at 2,400 iterations, 146.6 at 4,000;
        ``benchmarks/RESULTS.md``, sessions 15–17); the default stays Duan et al.'s GRU.
      hidden_size: recurrent width (Duan et al.: 256), or the Transformer's token width.
      num_layers: Transformer blocks.
      num_heads: Transformer attention heads (must divide ``hidden_size``).
      context: Transformer attention window in steps; ``None``: the whole rollout.
      learning_rate: Adam step size.
      learning_rate_schedule: piecewise-constant changes of the step size, ``((iteration,
        value), ...)`` with strictly increasing iterations ≥ 1: the meta-iterations from the
        ``iteration``-th (counting from 0, so after that many updates) on use ``value``; before the
        first, ``learning_rate``. ``()``: constant. Applied by scaling Adam's update (which is
        linear in the step size), so the optimiser state does not change with it. On the
        command line: ``600:1e-4`` or ``400:2e-4,800:1e-4``.
      num_epochs: PPO epochs per meta-iteration.
      num_minibatches: minibatches of whole trials per epoch (must divide ``num_tasks``).
      clip_eps: PPO clipping ε.
      vf_coef: value-loss coefficient.
      ent_coef: entropy-bonus coefficient.
      ent_coef_schedule: piecewise-constant changes of ``ent_coef``, as
        ``learning_rate_schedule``. Measured on bandits n = 100: lowering the bonus from 0.03 to
        0.01 once the training return has levelled off gained about 1 in total reward
        (``benchmarks/RESULTS.md``, session 16).
      max_grad_norm: clip gradients by this global norm (recurrent nets need it).
      gamma: discount γ within the trial (across its episodes).
      gae_lambda: GAE λ.
      normalize_advantages: normalise advantages per minibatch over valid steps.
      reward_scale: multiplies the rewards the critic and the advantages are computed from (the
        training signal only: returns, metrics and the observed previous reward stay unscaled).
        Keeps value targets near unit scale where rewards are large or a trial long (tabular MDPs:
        about 1 per step over 100+ steps), so the value loss does not swamp the policy gradient
        under global-norm clipping.
      init_log_std: initial log-std of a Gaussian policy (continuous actions).
      task_critic: an asymmetric (privileged) critic: the value head also reads the task's
        parameters (:func:`task_features`), which the simulator knows during meta-training. The
        actor never reads them, so the policy and meta-test adaptation are unchanged; only the
        baseline is, so the advantages need not carry the error of a critic that must infer the
        task from the trial so far. A tanh layer over ``[memory, task]`` before the value.
        Measured on the bandit and MDP benchmarks: no gain (``benchmarks/RESULTS.md``).
      outer: the meta-update: ``"ppo"`` (default) or ``"trpo"`` (module docstring, step 3).
        Measured on the bandit and MDP benchmarks: TRPO is ahead for the first 100–250
        iterations, then levels off below PPO (``benchmarks/RESULTS.md``).
      max_kl: TRPO's trust-region radius (mean KL over the valid steps; Duan et al.: 0.01).
      cg_iters: TRPO's conjugate-gradient iterations.
      cg_damping: damping added to TRPO's Fisher-vector products.
      gauss_newton: TRPO's Fisher-vector products in Gauss-Newton form (``Jᵀ M J``: one linear
        pass forward and one backward through the trials per CG iteration), which equals the
        KL's Hessian at the current parameters; ``False``: forward-over-reverse through the KL's
        gradient (the reference the form is tested against).
      fisher_subsample: TRPO's Fisher-vector products use every ``fisher_subsample``-th trial
        (the gradient and the line search use all of them), as OpenAI baselines' TRPO does (5):
        the conjugate gradient is most of a TRPO step's cost.
      separate_critic: the critic has its own recurrent core
        (:class:`RecurrentActorCritic`'s ``separate_critic``); ``None``: ``True`` for TRPO, which
        needs it, ``False`` for PPO.
      task_prediction_coef: weight of an auxiliary task-inference loss (Humplik et al. 2019;
        0: off): a linear head on the memory regresses the task's parameters
        (:func:`task_features`) at every step of the trial. It predicts each feature
        standardised by the training distribution's mean and standard deviation
        (:func:`task_feature_stats`), so the loss, the squared error averaged over features and
        valid steps, is the fraction of variance left unexplained: 1 for a prediction of the
        prior mean, whatever the features' scales (features that do not vary are left out). Its
        optimum is the posterior mean of the task given the trial so far, so the loss trains the
        memory to hold a belief, with a dense supervised signal; the policy still reads only the
        trial, and meta-test is unchanged. Measured on the bandit and MDP benchmarks: no gain.
    """

    num_tasks: int = 64
    trial_episodes: int = 10
    num_steps: int | None = None
    cell: str = "gru"
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    context: int | None = None
    learning_rate: float = 1e-3
    learning_rate_schedule: tuple[tuple[int, float], ...] = ()
    num_epochs: int = 4
    num_minibatches: int = 4
    clip_eps: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    ent_coef_schedule: tuple[tuple[int, float], ...] = ()
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    normalize_advantages: bool = True
    reward_scale: float = 1.0
    init_log_std: float = 0.0
    task_critic: bool = False
    task_prediction_coef: float = 0.0
    outer: str = "ppo"
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    separate_critic: bool | None = None
    gauss_newton: bool = True
    fisher_subsample: int = 1

    def __post_init__(self):
        for f in ("num_tasks", "trial_episodes", "hidden_size", "num_epochs", "num_minibatches",
                  "num_layers", "num_heads"):
            check_positive_int(f, getattr(self, f))
        for f in ("num_steps", "context"):
            if getattr(self, f) is not None:
                check_positive_int(f, getattr(self, f))
        if self.cell not in MEMORIES:
            raise ValueError(f"cell: expected one of {MEMORIES}, got {self.cell!r}")
        if self.context is not None and self.cell != "transformer":
            raise ValueError(f"context: only the 'transformer' memory has a window; "
                             f"cell is {self.cell!r}")
        if self.cell == "transformer" and self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads: {self.num_heads} does not divide hidden_size "
                             f"{self.hidden_size}")
        for f in ("learning_rate", "clip_eps", "max_grad_norm", "reward_scale"):
            check_positive_float(f, getattr(self, f))
        for f in ("vf_coef", "ent_coef", "task_prediction_coef"):
            check_positive_float(f, getattr(self, f), allow_zero=True)
        object.__setattr__(self, "learning_rate_schedule",
                           check_schedule("learning_rate_schedule", self.learning_rate_schedule))
        object.__setattr__(self, "ent_coef_schedule",
                           check_schedule("ent_coef_schedule", self.ent_coef_schedule,
                                          allow_zero=True))
        for f in ("gamma", "gae_lambda"):
            v = check_positive_float(f, getattr(self, f), allow_zero=True)
            if v > 1.0:
                raise ValueError(f"{f}: expected a number in [0, 1], got {v!r}")
        if self.num_tasks % self.num_minibatches:
            raise ValueError(f"num_minibatches: {self.num_minibatches} does not divide num_tasks "
                             f"{self.num_tasks} (minibatches are made of whole trials)")
        if self.outer not in OUTERS:
            raise ValueError(f"outer: expected one of {OUTERS}, got {self.outer!r}")
        check_positive_float("max_kl", self.max_kl)
        check_positive_int("cg_iters", self.cg_iters)
        check_positive_int("fisher_subsample", self.fisher_subsample)
        if self.fisher_subsample > self.num_tasks:
            raise ValueError(f"fisher_subsample: {self.fisher_subsample} exceeds num_tasks "
                             f"{self.num_tasks} (the Fisher needs at least one trial)")
        check_positive_float("cg_damping", self.cg_damping, allow_zero=True)
        if self.separate_critic is not None and not isinstance(self.separate_critic, bool):
            raise ValueError(f"separate_critic: expected True, False or None, got "
                             f"{self.separate_critic!r}")
        if self.critic_core and self.cell == "transformer":
            raise ValueError("separate_critic: only the recurrent memories ('lstm', 'gru', "
                             "'lngru') have a separate critic core; the Transformer's trunk is "
                             "shared (outer='trpo' needs one: use a recurrent cell, or "
                             "outer='ppo')")
        if self.outer == "trpo":
            if self.separate_critic is False:
                raise ValueError("separate_critic: outer='trpo' needs the critic's own core (the "
                                 "value fit would otherwise move the policy out of the trust "
                                 "region); leave it None or set it True")
            if self.task_prediction_coef > 0:
                raise ValueError("task_prediction_coef: the auxiliary loss trains the policy's "
                                 "memory, which outer='trpo' moves only by its trust-region step; "
                                 "use outer='ppo'")

    @property
    def critic_core(self) -> bool:
        """Whether the critic has its own recurrent core (``separate_critic`` resolved)."""
        return self.outer == "trpo" if self.separate_critic is None else self.separate_critic


def check_schedule(field: str, schedule: Any, *, allow_zero: bool = False
                   ) -> tuple[tuple[int, float], ...]:
    """A piecewise-constant schedule ``((iteration, value), ...)`` (lists accepted, as YAML gives
    them) as a tuple of ``(int, float)`` pairs, else a ValueError naming ``field``: iterations
    positive ints in strictly increasing order, values finite and positive (≥ 0 with
    ``allow_zero``)."""
    if not isinstance(schedule, (tuple, list)):
        raise ValueError(f"{field}: expected a sequence of (iteration, value) pairs, got "
                         f"{schedule!r}")
    out, last = [], 0
    for entry in schedule:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise ValueError(f"{field}: expected (iteration, value) pairs, got {entry!r}")
        iteration = check_positive_int(f"{field} iteration", entry[0])
        if iteration <= last:
            raise ValueError(f"{field}: iterations must increase strictly, got {iteration} "
                             f"after {last}")
        out.append((iteration, check_positive_float(f"{field} value", entry[1],
                                                    allow_zero=allow_zero)))
        last = iteration
    return tuple(out)


def scheduled(base: float, schedule: tuple[tuple[int, float], ...],
              iteration: jax.Array) -> jax.Array:
    """The value of a piecewise-constant schedule (:func:`check_schedule`) at the 0-based
    meta-iteration ``iteration``: ``base`` before the first boundary."""
    value = jnp.asarray(base, jnp.float32)
    for boundary, v in schedule:
        value = jnp.where(iteration >= boundary, jnp.float32(v), value)
    return value


@struct.dataclass
class Rollouts:
    """What ``sample`` hands to ``learn``: one trial per task, leading axis ``[num_tasks]``.

    Attributes:
      tasks: the tasks' ``EnvParams``.
      trajectory: the trials, with the behaviour's ``extras["log_prob"]`` and ``extras["value"]``.
      bootstrap: ``[num_tasks]`` the behaviour critic's value of the observation after the last
        step (used when the rollout ends before the trial does).
    """

    tasks: Any
    trajectory: Trajectory
    bootstrap: jax.Array


class AdaptResult(NamedTuple):
    """Meta-test on one task: one trial.

    Attributes:
      returns: ``[trial_episodes]`` return of each episode of the trial (return vs. experience).
      trajectory: the trial (``[num_steps, ...]``).
    """

    returns: jax.Array
    trajectory: Trajectory


class Components(NamedTuple):
    """RL²'s pure pieces (for tests and analysis).

    Attributes:
      algorithm: ``Algorithm(init, update, train, adapt)``.
      network: the :class:`RecurrentActorCritic` or :class:`TransformerActorCritic`.
      env: the trial environment (the task env wrapped in a :class:`TrialWrapper`).
      collect: ``collect(params, task, key) -> (trajectory [T], bootstrap value)`` of one trial.
      unroll: ``unroll(params, obs [T, ...], task=None) -> (dist, values [T])`` re-run from the
        zero state (the Transformer's whole-trial masked attention); a ``task_critic`` needs the
        ``task``.
      advantages: ``advantages(trajectory, bootstrap) -> (GAE advantages [T], value targets [T])``
        of one collected trial.
      loss: ``loss(params, (trajectories, advantages, targets, tasks), ent_coef=None) -> (loss,
        metrics)``, PPO's loss on a minibatch of trials (leading axis: trials), with the auxiliary
        task-prediction term when ``task_prediction_coef > 0``; ``ent_coef`` (default
        ``Config.ent_coef``) is the entropy bonus's weight, which ``update`` takes from
        ``Config.ent_coef_schedule``.
      num_steps: the rollout length T.
    """

    algorithm: Algorithm
    network: RecurrentActorCritic
    env: Environment
    collect: Callable
    unroll: Callable
    advantages: Callable
    loss: Callable
    num_steps: int


def task_features(task: Any) -> jax.Array:
    """One task's parameters as a flat float32 vector: every floating-point leaf of its
    ``EnvParams``, raveled and concatenated in pytree order (static fields such as the horizon
    are not leaves). What a ``Config.task_critic`` reads and ``Config.task_prediction_coef``'s
    auxiliary head predicts.

    Raises:
      ValueError: the task has no floating-point leaf.
    """
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(task)
              if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    if not leaves:
        raise ValueError(f"task: a task_critic needs floating-point task parameters; "
                         f"{type(task).__name__} has none")
    return jnp.concatenate(leaves)


def task_feature_stats(tasks: TaskDistribution, num_tasks: int = 4096,
                       key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation of :func:`task_features` over ``num_tasks`` tasks sampled
    from ``tasks`` (``key`` defaults to ``jax.random.key(0)``, so the statistics are fixed for a
    given distribution): how ``Config.task_prediction_coef``'s targets are standardised."""
    key = jax.random.key(0) if key is None else key
    feats = jax.vmap(task_features)(tasks.sample_batch(key, num_tasks))
    return jnp.mean(feats, axis=0), jnp.std(feats, axis=0)


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make(config: Config, env: Environment, tasks: TaskDistribution, *,
         mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Builds RL² for ``env`` (unwrapped: trials are made here) and its task distribution.

    Returns:
      ``Algorithm(init, update, train, adapt)``; ``adapt(state, task, key) -> AdaptResult``.

    Raises:
      ValueError: ``env`` is already a TrialWrapper, its action space is neither Discrete nor
        Box, the tasks have no static horizon and ``num_steps`` is not set, or ``num_tasks``
        is not divisible by the ``mesh``'s ``"tasks"`` axis.
    """
    return make_components(config, env, tasks, mesh=mesh).algorithm


def make_components(config: Config, env: Environment, tasks: TaskDistribution, *,
                    mesh: jax.sharding.Mesh | None = None) -> Components:
    """Like :func:`make`, also returning the pieces (see :class:`Components`).

    Args:
      mesh: optional device mesh with an axis ``"tasks"``: the trials (and their advantages) are
        sharded over it; each PPO minibatch is a gather across it, and XLA inserts the gradient
        reductions. ``num_tasks`` must be divisible by the axis size.
    """
    if mesh is not None:
        check_mesh(mesh, config.num_tasks)
    shard_tasks = task_constraint(mesh)
    map_tasks = functools.partial(task_map, mesh)
    if isinstance(env, TrialWrapper):
        raise ValueError("env: pass the task env itself; rl2 makes the trials "
                         "(Config.trial_episodes sets their length)")
    space = env.action_space()
    if isinstance(space, Discrete):
        discrete, action_dim = True, space.n
    elif isinstance(space, Box) and len(space.shape) == 1:
        discrete, action_dim = False, space.shape[0]
    else:
        raise ValueError(f"env: RL² needs a Discrete or 1-D Box action space, got {space!r}")
    trial_env = TrialWrapper(env, config.trial_episodes)
    task_dim = 0  # width of the task-prediction head (0: no auxiliary loss)
    if config.task_prediction_coef > 0:
        feat_mean, feat_std = task_feature_stats(tasks.train)
        task_dim = feat_mean.shape[0]
        varies = feat_std > 1e-6  # constant features are left out of the loss
        feat_scale = jnp.where(varies, 1.0 / jnp.where(varies, feat_std, 1.0), 0.0)
    num_steps = config.num_steps or config.trial_episodes * task_horizon(tasks, "num_steps")
    if config.cell == "transformer":
        net = TransformerActorCritic(action_dim=action_dim, discrete=discrete,
                                     d_model=config.hidden_size, num_heads=config.num_heads,
                                     num_layers=config.num_layers,
                                     context=config.context or num_steps,
                                     init_log_std=config.init_log_std,
                                     task_critic=config.task_critic,
                                     task_prediction=task_dim)
    else:
        net = RecurrentActorCritic(action_dim=action_dim, discrete=discrete,
                                   hidden_size=config.hidden_size, cell=config.cell,
                                   init_log_std=config.init_log_std,
                                   task_critic=config.task_critic,
                                   task_prediction=task_dim,
                                   separate_critic=config.critic_core)
    obs_dim = trial_env.observation_space().shape
    optimizer = maml.clipped_optimizer(optax.adam(config.learning_rate), config.max_grad_norm)

    sample_action, log_prob, entropy = CATEGORICAL if discrete else GAUSSIAN
    if discrete:
        kl_div = pg.categorical_kl
    else:
        kl_div = lambda p, q: pg.gaussian_kl(p[0], p[1], q[0], q[1])  # noqa: E731

    def features(task):  # what the critic reads besides the memory: None unless task_critic
        return task_features(task) if config.task_critic else None

    def collect(params, task, key):
        """One trial; returns the trajectory and V(next obs) after its last step."""
        feats = features(task)

        def act(params, carry, obs, key):
            carry, dist, value = net.apply(params, carry, obs, feats)
            action = sample_action(dist, key)
            return carry, action, {"log_prob": log_prob(dist, action), "value": value}

        final, traj = rollout(trial_env, act, params, task, key, num_steps,
                              init_carry=net.initial_carry())
        _, _, bootstrap = net.apply(params, final.policy_carry, final.obs, feats)
        return traj, bootstrap

    def unroll(params, obs, task=None):
        dist, values, _ = unroll_predicting(params, obs, task, predict=False)
        return dist, values

    def unroll_predicting(params, obs, task, predict: bool):
        """``unroll``, also returning the sown task predictions ``[T, task_dim]`` (``None``
        unless ``predict``)."""
        feats = features(task) if task is not None else None
        mutable = ["intermediates"] if predict else False

        def prediction(inter):
            return inter["intermediates"]["task_prediction"][0] if predict else None

        if config.cell == "transformer":  # one masked attention over the trial (= the cache)
            out = net.apply(params, obs, feats, method=TransformerActorCritic.sequence,
                            mutable=mutable)
            (dist, values), inter = out if predict else (out, None)
            return dist, values, prediction(inter)

        def step(carry, o):
            out = net.apply(params, carry, o, feats, mutable=mutable)
            (carry, dist, value), inter = out if predict else (out, None)
            return carry, (dist, value, prediction(inter))

        _, (dist, values, preds) = jax.lax.scan(step, net.initial_carry(), obs)
        return dist, values, preds

    def advantages(traj: Trajectory, bootstrap):
        values = traj.extras["value"]
        next_values = jnp.concatenate([values[1:], bootstrap[None]])
        # A rollout cut before the trial's end is a truncation: bootstrap V(next obs).
        cut = traj.valid[-1] & ~traj.terminated[-1]
        truncated = traj.truncated.at[-1].set(traj.truncated[-1] | cut)
        adv = pg.gae(traj.reward * config.reward_scale, values, next_values, traj.terminated,
                     truncated, traj.valid, config.gamma, config.gae_lambda)
        return adv, adv + values

    def init(key: jax.Array) -> TrainState:
        k_params, k_state = jax.random.split(key)
        feats = features(tasks.train.sample(jax.random.key(0))) if config.task_critic else None
        variables = net.init(k_params, net.initial_carry(), jnp.zeros(obs_dim, jnp.float32), feats)
        params = {"params": variables["params"]}  # not the sown task predictions
        return TrainState(params=params, opt_state=optimizer.init(params), key=k_state,
                          iteration=jnp.zeros((), jnp.int32))

    def ppo_loss(params, mb, ent_coef=None):
        ent_coef = config.ent_coef if ent_coef is None else ent_coef
        traj, adv, targets, task_batch = mb
        predict = config.task_prediction_coef > 0
        dist, values, preds = jax.vmap(unroll_predicting, in_axes=(None, 0, 0, None))(
            params, traj.obs, task_batch, predict)
        logp = log_prob(dist, traj.action)
        valid = traj.valid
        if config.normalize_advantages:
            adv = pg.normalize_advantages(adv, valid)
        log_ratio = jnp.where(valid, logp - traj.extras["log_prob"], 0.0)
        ratio = jnp.exp(log_ratio)
        objective = pg.ppo_clip_objective(ratio, adv, config.clip_eps, valid)
        value_loss = 0.5 * pg.masked_mean((values - targets) ** 2, valid)
        ent = pg.masked_mean(entropy(dist), valid)
        loss = -objective + config.vf_coef * value_loss - ent_coef * ent
        approx_kl = pg.masked_mean((ratio - 1.0) - log_ratio, valid)
        aux = {"value_loss": value_loss, "entropy": ent, "approx_kl": approx_kl}
        if predict:
            # standardised truth [tasks, 1, task_dim]; 0 where a feature does not vary
            truth = ((jax.vmap(task_features)(task_batch) - feat_mean) * feat_scale)[:, None, :]
            per_step = jnp.sum(jnp.where(varies, (preds - truth) ** 2, 0.0), axis=-1) \
                / jnp.maximum(jnp.sum(varies), 1)
            aux["task_prediction_loss"] = pg.masked_mean(per_step, valid)
            loss = loss + config.task_prediction_coef * aux["task_prediction_loss"]
        return loss, aux

    # the policy's outputs and the values over a batch of trials, each re-run from the zero state
    unroll_trials = jax.vmap(unroll, in_axes=(None, 0, 0))

    def value_loss_only(params, mb):
        """TRPO's critic fit: the value loss on a minibatch of trials (the critic's own core and
        head are the only parameters it reaches)."""
        traj, _, targets, task_batch = mb
        _, values = unroll_trials(params, traj.obs, task_batch)
        value_loss = 0.5 * pg.masked_mean((values - targets) ** 2, traj.valid)
        return config.vf_coef * value_loss, {"value_loss": value_loss}

    def trpo_policy_step(params, data, ent_coef):
        """One TRPO step of the policy on all the trials: maximise the importance-weighted
        advantage (ratios against the behaviour log-probs) plus ``ent_coef`` × entropy, within
        mean KL(π_params ‖ π_new) ≤ ``max_kl`` over the valid steps."""
        traj, adv, _, task_batch = data
        valid = traj.valid
        if config.normalize_advantages:
            adv = pg.normalize_advantages(adv, valid)

        def policy(p):
            return unroll_trials(p, traj.obs, task_batch)[0]

        dist_old = jax.lax.stop_gradient(policy(params))

        def loss_and_kl(p):
            dist = policy(p)
            ratio = jnp.exp(jnp.where(valid, log_prob(dist, traj.action)
                                      - traj.extras["log_prob"], 0.0))
            surrogate = pg.masked_mean(ratio * adv, valid)
            ent = pg.masked_mean(entropy(dist), valid)
            kl = pg.masked_mean(kl_div(dist_old, dist), valid)
            return -(surrogate + ent_coef * ent), kl

        # The Fisher (the KL's Hessian at params) from every fisher_subsample-th trial.
        sub = lambda x: x[::config.fisher_subsample]  # noqa: E731
        obs_f, tasks_f, valid_f = sub(traj.obs), jax.tree.map(sub, task_batch), sub(valid)
        dist_old_f = jax.tree.map(sub, dist_old)

        def policy_f(p):
            return unroll_trials(p, obs_f, tasks_f)[0]

        def kl_f(dist):
            return pg.masked_mean(kl_div(dist_old_f, dist), valid_f)

        if config.gauss_newton:
            # The KL's gradient in the policy's outputs vanishes at dist_old, so its Hessian in
            # the parameters is exactly Jᵀ M J (J: the Jacobian of the outputs over the trials,
            # M: the KL's Hessian in the outputs, a few-by-few block per step): one linear pass
            # forward and one backward per CG iteration, against forward-over-reverse of the
            # trials' KL gradient (about 2× the cost, measured).
            _, outputs_jvp = jax.linearize(policy_f, params)
            _, outputs_vjp = jax.vjp(policy_f, params)
            _, kl_output_hvp = jax.linearize(jax.grad(kl_f), dist_old_f)

            def fisher_vp(v):
                return outputs_vjp(kl_output_hvp(outputs_jvp(v)))[0]
        else:
            _, kl_grad_jvp = jax.linearize(jax.grad(lambda p: kl_f(policy_f(p))), params)
            fisher_vp = kl_grad_jvp

        new_params, info = trpo.trpo_step(
            lambda p: loss_and_kl(p)[0], lambda p: loss_and_kl(p)[1], params,
            max_kl=config.max_kl, cg_iters=config.cg_iters, cg_damping=config.cg_damping,
            fisher_vp=fisher_vp, loss_and_kl_fn=loss_and_kl)
        dist = jax.lax.stop_gradient(policy(new_params))
        return new_params, {
            "entropy": pg.masked_mean(entropy(dist), valid),
            "approx_kl": info.kl,
            "policy_loss": info.loss_after,
            "step_accepted": info.step_accepted.astype(jnp.float32),
            "num_backtracks": info.num_backtracks,
        }

    def sample_from(params, k_tasks, k_roll, num_tasks: int) -> Rollouts:
        task_batch = shard_tasks(tasks.train.sample_batch(k_tasks, num_tasks))
        roll_keys = shard_tasks(jax.random.split(k_roll, num_tasks))
        traj, bootstrap = map_tasks(collect, (None, 0, 0))(params, task_batch, roll_keys)
        return Rollouts(tasks=task_batch, trajectory=traj, bootstrap=bootstrap)

    def sample(params, key: jax.Array, num_tasks: int | None = None) -> Rollouts:
        """One trial on each of ``num_tasks`` (default ``config.num_tasks``, static) training
        tasks under ``params``, with the behaviour log-probs and values (values only)."""
        num_tasks = config.num_tasks if num_tasks is None else num_tasks
        k_tasks, k_roll = jax.random.split(key)
        return sample_from(params, k_tasks, k_roll, num_tasks)

    def update(state: TrainState):
        # == learn(state, sample(state.params, jax.random.split(state.key, 3)[1]))
        key, k_sample, k_perm = jax.random.split(state.key, 3)
        return learn_from(state, sample(state.params, k_sample), key, k_perm)

    def learn(state: TrainState, data: Rollouts):
        """PPO epochs on ``data`` (``config.num_tasks`` trials): advantages from the stored
        behaviour values, ratios against the stored behaviour log-probs (so trials from slightly
        older parameters are importance-weighted and clipped, as PPO's own later epochs are)."""
        key, _, k_perm = jax.random.split(state.key, 3)
        return learn_from(state, data, key, k_perm)

    def learn_from(state: TrainState, data_in: Rollouts, key, k_perm):
        task_batch, traj, bootstrap = data_in.tasks, data_in.trajectory, data_in.bootstrap
        if jax.tree.leaves(traj.obs)[0].shape[0] != config.num_tasks:
            raise ValueError(f"data: learn takes {config.num_tasks} trials (num_tasks), got "
                             f"{jax.tree.leaves(traj.obs)[0].shape[0]}")
        adv, targets = shard_tasks(jax.vmap(advantages)(traj, bootstrap))
        data = (traj, adv, targets, task_batch)
        params, trpo_aux = state.params, None
        ent_coef = scheduled(config.ent_coef, config.ent_coef_schedule, state.iteration)
        # Adam's update is linear in its step size: the schedule scales it.
        lr_factor = scheduled(config.learning_rate, config.learning_rate_schedule,
                              state.iteration) / config.learning_rate
        if config.outer == "trpo":
            params, trpo_aux = trpo_policy_step(params, data, ent_coef)
        mb_size = config.num_tasks // config.num_minibatches
        step_loss = value_loss_only if config.outer == "trpo" else functools.partial(
            ppo_loss, ent_coef=ent_coef)

        def epoch(carry, k):
            params, opt_state = carry
            perm = jax.random.permutation(k, config.num_tasks)
            batches = jax.tree.map(
                lambda x: x[perm].reshape((config.num_minibatches, mb_size) + x.shape[1:]), data)

            def minibatch(carry, mb):
                params, opt_state = carry
                (loss, aux), grads = jax.value_and_grad(step_loss, has_aux=True)(params, mb)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                updates = jax.tree.map(lambda u: u * lr_factor, updates)
                aux = {**aux, "loss": loss, "grad_norm": _global_norm(grads)}
                return (optax.apply_updates(params, updates), opt_state), aux

            return jax.lax.scan(minibatch, (params, opt_state), batches)

        (params, opt_state), aux = jax.lax.scan(
            epoch, (params, state.opt_state), jax.random.split(k_perm, config.num_epochs))
        aux = {k: v[-1, -1] for k, v in aux.items()}
        if trpo_aux is not None:
            aux = {**aux, **trpo_aux}
        episode_returns = jax.vmap(per_episode_returns)(traj)
        metrics = {
            "trial_return": jnp.mean(jnp.sum(episode_returns, axis=-1)),
            "episode_returns": jnp.mean(episode_returns, axis=0),
            # per task, so the host can explain the curves by task parameters
            "task_returns": jnp.sum(episode_returns, axis=-1),
            "task_params": task_batch,
            **aux,
        }
        new_state = TrainState(params=params, opt_state=opt_state, key=key,
                               iteration=state.iteration + 1)
        return new_state, metrics

    def per_episode_returns(traj: Trajectory) -> jax.Array:
        episode = jnp.clip(traj.info["episode"], 0, config.trial_episodes - 1)
        return jax.ops.segment_sum(jnp.where(traj.valid, traj.reward, 0.0), episode,
                                   num_segments=config.trial_episodes)

    def adapt(state: TrainState, task: Any, key: jax.Array) -> AdaptResult:
        """Meta-test: one trial on ``task``; adaptation happens in the recurrent state."""
        traj, _ = collect(state.params, task, key)
        return AdaptResult(returns=per_episode_returns(traj), trajectory=traj)

    algorithm = Algorithm(init=init, update=update, train=scan_train(update), adapt=adapt,
                          sample=sample, learn=learn)
    return Components(algorithm=algorithm, network=net, env=trial_env, collect=collect,
                      unroll=unroll, advantages=advantages, loss=ppo_loss, num_steps=num_steps)
