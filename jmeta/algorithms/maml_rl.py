"""MAML for reinforcement learning: a policy-gradient inner loop with TRPO, ProMP or PPO outer loops.

One meta-iteration (``update``) is one pure function, so ``jax.jit`` compiles it whole:

1. sample ``num_tasks`` tasks from ``tasks.train``;
2. per task (``vmap``): roll out ``num_episodes`` episodes with θ, fit the linear feature baseline,
   compute GAE advantages, take an inner policy-gradient step (``jmeta.algorithms.maml.adapt``);
   repeat ``inner_steps`` times; roll out the adapted policy θ';
3. meta-update θ on the post-adaptation surrogate, differentiating through the inner step(s).

Outer loops and their meta-gradient estimators:

* ``"trpo"`` (MAML-TRPO, Finn et al. 2017): the outer loss is the importance-sampled surrogate of
  the adapted policy on the post-adaptation trajectories; its gradient flows through the inner
  VPG step (second order, or first order with ``first_order=True``). The pre-update trajectories
  are treated as data: like the original MAML code, this estimator ignores the dependence of the
  pre-update sampling distribution on θ (a biased but low-variance meta-gradient). The natural
  gradient uses conjugate gradient on Hessian-vector products of the mean KL of the *adapted*
  policy w.r.t. θ, a max-KL step and a backtracking line search, all inside ``jit``
  (:func:`jmeta.algorithms.trpo.trpo_step`).
* ``"promp"`` (Rothfuss et al. 2019): the inner objective is the low-variance curvature (LVC)
  surrogate ``mean(π_θ/⊥π_θ · A)``, whose gradient equals the VPG gradient but whose Hessian adds
  the ``∇log π ∇log π^T A`` term that accounts for the pre-update sampling distribution's
  dependence on θ (the DiCE-style correction, restricted to one time step for low variance).
  The outer objective is PPO's clipped surrogate of the adapted policy, minus an inner KL penalty
  ``η · KL(π_θ_old ‖ π_θ)`` on each inner step's data; ``num_outer_steps`` Adam steps per
  meta-iteration; η optionally adapts towards ``target_inner_kl``.
* ``"ppo"``: ProMP's pieces without LVC and without the KL penalty: the VPG inner loss (MAML's
  estimator) and the clipped outer objective with Adam.

``adapt(state, task, key)`` is the meta-test protocol of the MAML paper: ``eval_steps`` VPG steps,
each on fresh rollouts of ``eval_episodes`` episodes, step size ``inner_lr`` for the first step and
``inner_lr · eval_lr_decay`` afterwards; it returns the mean return before each step and after the
last (``[eval_steps + 1]``).

>>> import jax, jmeta
>>> from jmeta.algorithms import maml_rl
>>> env, tasks = jmeta.make("point-nav")
>>> algo = maml_rl.make(maml_rl.Config(num_tasks=4, num_episodes=4), env, tasks)
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
from jmeta.networks.policies import CATEGORICAL, GAUSSIAN, CategoricalMLP, GaussianMLP
from jmeta.rollout import episode_returns, rollout
from jmeta.types import Trajectory

OUTER_LOOPS = ("trpo", "promp", "ppo")
POLICIES = ("auto", "gaussian", "categorical")


@dataclasses.dataclass(frozen=True)
class Config:
    """MAML-RL hyperparameters. Defaults: the 2D-navigation setting of Finn et al. 2017 as in
    pytorch-maml-rl (meta-batch 20, 20 trajectories, 64×64 tanh, inner lr 0.1, TRPO max-KL 0.01).

    Attributes:
      num_tasks: tasks per meta-iteration (meta-batch size).
      num_episodes: trajectories per task for each inner step and for the post-update rollouts.
      num_steps: rollout length T; ``None`` takes the tasks' static ``horizon``.
      inner_steps: inner policy-gradient steps k during meta-training (>= 1).
      inner_lr: inner step size α.
      first_order: FOMAML: ignore second derivatives through the inner step(s).
      outer: ``"trpo"``, ``"promp"`` or ``"ppo"`` (see the module docstring).
      pretrain: train a multi-task policy without meta-learning (the paper's "pretrained"
        baseline): the outer objective is the pre-update return and there is no inner step.
      policy: ``"auto"`` (Gaussian for Box actions, categorical for Discrete), ``"gaussian"``
        or ``"categorical"``.
      hidden_sizes: policy MLP widths.
      activation: policy hidden activation.
      init_log_std: initial log standard deviation of the Gaussian policy.
      gamma: discount γ.
      gae_lambda: GAE λ (1.0: Monte-Carlo returns minus the baseline).
      normalize_advantages: normalise advantages per task (mean 0, std 1 over valid steps).
      baseline_reg: ridge coefficient of the linear feature baseline.
      max_kl: TRPO trust-region size.
      cg_iters: conjugate-gradient iterations.
      cg_damping: damping added to the Fisher-vector products.
      fisher: how TRPO multiplies by the Hessian of the mean post-update KL w.r.t. θ:
        ``"gauss-newton"`` (default: ``Jᵀ F J``, exact at θ since the KL's gradient vanishes
        there, no third derivatives) or ``"exact"`` (forward-over-reverse through the KL of the
        adapted policy, as pytorch-maml-rl does; the same numbers, slower).
      ls_backtracks: line-search candidates.
      ls_ratio: line-search shrink factor.
      outer_lr: Adam learning rate of the ProMP/PPO outer loop.
      num_outer_steps: ProMP/PPO gradient steps per meta-iteration.
      clip_eps: ProMP/PPO clipping ε.
      inner_kl_coeff: ProMP's initial inner KL penalty η.
      adaptive_inner_kl: adapt η (halve below target/1.5, double above target·1.5).
      target_inner_kl: ProMP's target inner KL.
      max_grad_norm: clip ProMP/PPO outer gradients by global norm (``None``: no clipping).
      eval_steps: adaptation steps of the meta-test protocol (``adapt``).
      eval_episodes: trajectories per meta-test adaptation step (paper: 40 at H=100).
      eval_lr_decay: step size of meta-test steps after the first, relative to ``inner_lr``
        (paper: 0.5, "α then α/2").
    """

    num_tasks: int = 20
    num_episodes: int = 20
    num_steps: int | None = None
    inner_steps: int = 1
    inner_lr: float = 0.1
    first_order: bool = False
    outer: str = "trpo"
    pretrain: bool = False
    policy: str = "auto"
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    baseline_reg: float = 1e-5
    max_kl: float = 1e-2
    cg_iters: int = 10
    cg_damping: float = 1e-5
    fisher: str = "gauss-newton"
    ls_backtracks: int = 15
    ls_ratio: float = 0.8
    outer_lr: float = 1e-3
    num_outer_steps: int = 5
    clip_eps: float = 0.3
    inner_kl_coeff: float = 5e-4
    adaptive_inner_kl: bool = False
    target_inner_kl: float = 1e-2
    max_grad_norm: float | None = None
    eval_steps: int = 3
    eval_episodes: int = 40
    eval_lr_decay: float = 0.5

    def __post_init__(self):
        for f in ("num_tasks", "num_episodes", "inner_steps", "cg_iters", "ls_backtracks",
                  "num_outer_steps", "eval_steps", "eval_episodes"):
            check_positive_int(f, getattr(self, f))
        if self.num_steps is not None:
            check_positive_int("num_steps", self.num_steps)
        for f in ("inner_lr", "max_kl", "outer_lr", "clip_eps", "target_inner_kl",
                  "eval_lr_decay"):
            check_positive_float(f, getattr(self, f))
        for f in ("cg_damping", "baseline_reg", "inner_kl_coeff"):
            check_positive_float(f, getattr(self, f), allow_zero=True)
        for f in ("gamma", "gae_lambda"):
            v = check_positive_float(f, getattr(self, f), allow_zero=True)
            if v > 1.0:
                raise ValueError(f"{f}: expected a number in [0, 1], got {v!r}")
        if not 0.0 < self.ls_ratio < 1.0:
            raise ValueError(f"ls_ratio: expected a number in (0, 1), got {self.ls_ratio!r}")
        if self.outer not in OUTER_LOOPS:
            raise ValueError(f"outer: expected one of {OUTER_LOOPS}, got {self.outer!r}")
        if self.fisher not in ("gauss-newton", "exact"):
            raise ValueError(f"fisher: expected 'gauss-newton' or 'exact', got {self.fisher!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy: expected one of {POLICIES}, got {self.policy!r}")
        if self.max_grad_norm is not None:
            check_positive_float("max_grad_norm", self.max_grad_norm)
        object.__setattr__(self, "hidden_sizes", tuple(
            check_positive_int("hidden_sizes", h) for h in self.hidden_sizes))


# --- policy pieces ------------------------------------------------------------------------------
class PolicyFns(NamedTuple):
    """The distribution-level functions the losses need.

    Attributes:
      init: ``init(key) -> params``.
      dist: ``dist(params, obs) -> distribution parameters`` (``(mean, log_std)`` or logits).
      sample: ``sample(dist, key) -> action``.
      log_prob: ``log_prob(dist, action) -> [...]``.
      kl: ``kl(dist_p, dist_q) -> [...]`` = KL(p ‖ q).
    """

    init: Callable
    dist: Callable
    sample: Callable
    log_prob: Callable
    kl: Callable


def make_policy(config: Config, env: Environment) -> PolicyFns:
    """The Gaussian or categorical MLP policy of ``config`` for ``env``.

    Raises:
      ValueError: the policy kind does not fit the env's action space.
    """
    space = env.action_space()
    kind = config.policy
    if kind == "auto":
        kind = "gaussian" if isinstance(space, Box) else "categorical"
    if kind == "gaussian" and not isinstance(space, Box):
        raise ValueError(f"policy: 'gaussian' needs a Box action space; {env.name} has {space!r}")
    if kind == "categorical" and not isinstance(space, Discrete):
        raise ValueError(
            f"policy: 'categorical' needs a Discrete action space; {env.name} has {space!r}"
        )
    dummy = jnp.zeros(env.observation_space().shape, jnp.float32)
    if kind == "gaussian":
        module = GaussianMLP(space.shape[0], config.hidden_sizes, config.activation,
                             config.init_log_std)
        return PolicyFns(
            init=lambda key: module.init(key, dummy),
            dist=module.apply,
            sample=GAUSSIAN.sample,
            log_prob=GAUSSIAN.log_prob,
            kl=lambda p, q: pg.gaussian_kl(p[0], p[1], q[0], q[1]),
        )
    module = CategoricalMLP(space.n, config.hidden_sizes, config.activation)
    return PolicyFns(
        init=lambda key: module.init(key, dummy),
        dist=module.apply,
        sample=CATEGORICAL.sample,
        log_prob=CATEGORICAL.log_prob,
        kl=pg.categorical_kl,
    )


# --- data ---------------------------------------------------------------------------------------
@struct.dataclass
class Batch:
    """One task's trajectories as loss inputs, fields ``[E, T, ...]``.

    Attributes:
      obs, action, valid: from the trajectories.
      advantages: per-step advantages (data).
      old_dist: the behaviour policy's distribution parameters at ``obs`` (data).
      old_log_prob: log π_old(action | obs) (data).
    """

    obs: jax.Array
    action: jax.Array
    valid: jax.Array
    advantages: jax.Array
    old_dist: Any
    old_log_prob: jax.Array


@struct.dataclass
class OptState:
    """Outer optimiser state: the optax state (ProMP/PPO; empty for TRPO) and ProMP's per-inner-
    step KL penalty coefficients ``[inner_steps]``."""

    optax_state: Any
    inner_kl_coeff: jax.Array


@struct.dataclass
class Rollouts:
    """What ``sample`` hands to ``learn``: a task batch's data, leading axis ``[num_tasks]``.

    Attributes:
      tasks: the tasks' ``EnvParams``.
      pre: the pre-update batches, ``[num_tasks, inner_steps, ...]`` (values only).
      post: the post-update batch, ``[num_tasks, ...]``, with the adapted behaviour policy's
        distribution and log-probs.
      returns: ``[num_tasks, inner_steps + 1]`` mean episode return before each inner step and
        after the last.
    """

    tasks: Any
    pre: Batch
    post: Batch
    returns: jax.Array


class AdaptResult(NamedTuple):
    """Meta-test adaptation to one task.

    Attributes:
      params: the adapted policy parameters.
      returns: ``[eval_steps + 1]`` mean episode return before each adaptation step and after the
        last (return vs. experience).
    """

    params: Any
    returns: jax.Array



class Components(NamedTuple):
    """The pure pieces of a MAML-RL meta-iteration (for tests, analysis and custom loops).

    Attributes:
      algorithm: ``Algorithm(init, update, train, adapt)``.
      policy: the :class:`PolicyFns`.
      task_data: ``task_data(params, task, key) -> (pre [k] Batch, post Batch, returns [k+1])``.
      loss_and_kl: ``loss_and_kl(params, pre, post) -> (surrogate loss, mean KL)`` over a task
        batch (``pre``/``post`` with a leading task axis), through the inner step(s).
      gauss_newton_fvp: ``gauss_newton_fvp(params, pre, post) -> (v -> H v)``, H the Hessian of
        the mean KL at ``params``.
    """

    algorithm: Algorithm
    policy: PolicyFns
    task_data: Callable
    loss_and_kl: Callable
    gauss_newton_fvp: Callable


def make(config: Config, env: Environment, tasks: TaskDistribution, *,
         mesh: jax.sharding.Mesh | None = None) -> Algorithm:
    """Builds MAML-RL for ``env`` and its task distribution.

    Returns:
      ``Algorithm(init, update, train, adapt)``; ``adapt(state, task, key) -> AdaptResult``.

    Raises:
      ValueError: the policy does not fit the env's action space, or no rollout length.
    """
    return make_components(config, env, tasks, mesh=mesh).algorithm


def make_components(config: Config, env: Environment, tasks: TaskDistribution, *,
                    mesh: jax.sharding.Mesh | None = None) -> Components:
    """Like :func:`make`, also returning the meta-iteration's pieces (see :class:`Components`).

    Args:
      mesh: optional device mesh with an axis ``"tasks"``: each meta-iteration's task batch (and
        everything computed per task) is sharded over it; XLA inserts the reductions of the
        meta-gradient. ``num_tasks`` must be divisible by the axis size.
    """
    if mesh is not None:
        check_mesh(mesh, config.num_tasks)
    shard_tasks = task_constraint(mesh)
    map_tasks = functools.partial(task_map, mesh)
    policy = make_policy(config, env)
    num_steps = config.num_steps or task_horizon(tasks, "num_steps")
    k = config.inner_steps
    lvc = config.outer == "promp"
    if config.outer == "trpo":
        outer_opt = None
    else:
        outer_opt = maml.clipped_optimizer(optax.adam(config.outer_lr), config.max_grad_norm)

    def act(params, carry, obs, key):
        d = policy.dist(params, obs)
        a = policy.sample(d, key)
        return carry, a, {}

    def collect(params, task, key, num_episodes) -> Trajectory:
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(lambda kk: rollout(env, act, params, task, kk, num_steps)[1])(keys)

    def to_batch(params, traj: Trajectory) -> Batch:
        adv, _ = pg.advantages_with_linear_baseline(
            traj, config.gamma, config.gae_lambda, config.baseline_reg)
        if config.normalize_advantages:
            adv = pg.normalize_advantages(adv, traj.valid)
        d = policy.dist(params, traj.obs)
        return jax.lax.stop_gradient(Batch(
            obs=traj.obs, action=traj.action, valid=traj.valid, advantages=adv, old_dist=d,
            old_log_prob=policy.log_prob(d, traj.action),
        ))

    def inner_loss(params, batch: Batch, lvc: bool = lvc) -> jax.Array:
        logp = policy.log_prob(policy.dist(params, batch.obs), batch.action)
        if lvc:  # LVC: value -mean(A), gradient = VPG, Hessian with the sampling-dependence term
            ratio = jnp.exp(logp - jax.lax.stop_gradient(logp))
            return -pg.masked_mean(ratio * batch.advantages, batch.valid)
        return pg.vpg_loss(logp, batch.advantages, batch.valid)

    def vpg_loss(params, batch: Batch) -> jax.Array:
        # At meta-test the inner step is a plain VPG step for every outer loop (LVC has the same
        # gradient; only its second derivative differs, which meta-test does not use).
        return inner_loss(params, batch, lvc=False)

    def inner_step(params, batch: Batch, lr) -> Any:
        adapted, _ = maml.adapt(inner_loss, params, batch, num_steps=1, inner_lr=lr,
                                first_order=config.first_order, reuse_batch=True)
        return adapted

    # --- per task: collection (values only) ----------------------------------------------
    def task_data(params, task, key):
        """Pre-update batches [k] (or the single pretraining batch) and the post-update batch."""
        keys = jax.random.split(key, k + 1)
        pre, returns = [], []
        theta = params
        for i in range(k):
            traj = collect(theta, task, keys[i], config.num_episodes)
            returns.append(jnp.mean(episode_returns(traj)))
            batch = to_batch(theta, traj)
            pre.append(batch)
            if config.pretrain:
                return batch, batch, jnp.stack([returns[0], returns[0]])
            theta = inner_step(theta, batch, config.inner_lr)
        traj = collect(theta, task, keys[k], config.num_episodes)
        returns.append(jnp.mean(episode_returns(traj)))
        post = to_batch(theta, traj)
        pre = jax.tree.map(lambda *xs: jnp.stack(xs), *pre)
        return pre, post, jnp.stack(returns)

    # --- per task: the differentiable outer terms ------------------------------------------
    def task_adapted(params, pre: Batch):
        """θ' of one task as a function of θ (pre-update data fixed), and the per-inner-step
        KL(old ‖ current) on each inner step's data (ProMP's penalty)."""
        theta = params
        inner_kls = []
        if not config.pretrain:
            for i in range(k):
                batch = jax.tree.map(lambda x: x[i], pre)
                inner_kls.append(pg.masked_mean(
                    policy.kl(batch.old_dist, policy.dist(theta, batch.obs)), batch.valid))
                theta = inner_step(theta, batch, config.inner_lr)
        inner_kls = jnp.stack(inner_kls) if inner_kls else jnp.zeros((1,))
        return theta, inner_kls

    def post_terms(theta, post: Batch):
        """Post-update log-probs of one task's adapted policy and its KL to the behaviour policy."""
        d = policy.dist(theta, post.obs)
        kl = pg.masked_mean(policy.kl(post.old_dist, d), post.valid)
        return policy.log_prob(d, post.action), kl

    def outer_terms(params, pre, post):
        """Per-task post-update log-probs, KL to the behaviour policy and inner KLs, vmapped."""
        def one(pre_t, post_t):
            theta, inner_kls = task_adapted(params, pre_t)
            logp, kl = post_terms(theta, post_t)
            return logp, kl, inner_kls
        return jax.vmap(one)(pre, post)

    def loss_and_kl(params, pre, post):
        logp, kl, _ = outer_terms(params, pre, post)
        loss = pg.trpo_surrogate_loss(logp, post.old_log_prob, post.advantages, post.valid)
        return loss, jnp.mean(kl)

    def gauss_newton_fvp(params, pre, post):
        """``v -> H v`` for H the Hessian of the mean post-update KL w.r.t. θ at θ.

        KL_t(θ) = KL(π_old' ‖ π_θ'_t(θ)) is minimal (zero gradient in θ') at θ, so its Hessian is
        exactly ``J_tᵀ F_t J_t`` with J_t = dθ'_t/dθ (through the inner step(s)) and F_t the
        Hessian of the KL in θ'_t (the adapted policy's Fisher on the post-update data): no
        third derivatives.

        Each inner step ``θ_i ↦ θ_i − α ∇L_i(θ_i)`` (scalar α) has the *symmetric* Jacobian
        ``S_i = I − α ∇²L_i(θ_i)`` (``I`` with ``first_order``), so ``J_t = S_{k−1} ⋯ S_0`` and
        ``J_tᵀ = S_0 ⋯ S_{k−1}``: both directions are the same forward-over-reverse JVPs, each
        step linearised once (with a per-task tangent) and applied in either order. This avoids
        transposing a linearised reverse pass, which costs 2.6× a JVP here, and makes one CG
        iteration two JVPs through the inner step(s) plus one Fisher product.
        """
        num = jax.tree.leaves(post.obs)[0].shape[0]
        broadcast = lambda tree: jax.tree.map(  # noqa: E731
            lambda x: jnp.broadcast_to(x, (num,) + x.shape), tree)
        thetas, steps = broadcast(params), []
        if not config.pretrain:
            for i in range(k):
                def step_map(ths, i=i):
                    return jax.vmap(lambda th, pre_t: inner_step(
                        th, jax.tree.map(lambda x: x[i], pre_t), config.inner_lr))(ths, pre)
                thetas, lin = jax.linearize(step_map, thetas)
                steps.append(lin)
        kl_grads = lambda th: jax.vmap(jax.grad(lambda th_t, post_t: post_terms(th_t, post_t)[1]))(
            th, post)  # noqa: E731
        _, fisher_post = jax.linearize(kl_grads, thetas)

        def fvp(v):
            u = broadcast(v)
            for lin in steps:  # J v
                u = lin(u)
            u = fisher_post(u)
            for lin in reversed(steps):  # Jᵀ u = S_0 ⋯ S_{k−1} u (each S_i symmetric)
                u = lin(u)
            return jax.tree.map(lambda x: jnp.sum(x, axis=0) / num, u)

        return fvp

    def init(key: jax.Array) -> TrainState:
        k_params, k_state = jax.random.split(key)
        params = policy.init(k_params)
        opt = OptState(
            optax_state=outer_opt.init(params) if outer_opt is not None else (),
            inner_kl_coeff=jnp.full((k,), config.inner_kl_coeff, jnp.float32),
        )
        return TrainState(params=params, opt_state=opt, key=k_state,
                          iteration=jnp.zeros((), jnp.int32))

    def sample_from(params, k_tasks, k_data, num_tasks: int) -> Rollouts:
        task_batch = tasks.train.sample_batch(k_tasks, num_tasks)
        data_keys = jax.random.split(k_data, num_tasks)
        task_batch, data_keys = shard_tasks((task_batch, data_keys))
        pre, post, returns = map_tasks(task_data, (None, 0, 0))(params, task_batch, data_keys)
        return Rollouts(tasks=task_batch, pre=pre, post=post, returns=returns)

    def sample(params, key: jax.Array, num_tasks: int | None = None) -> Rollouts:
        """Samples ``num_tasks`` (default ``config.num_tasks``, static) training tasks and their
        pre- and post-adaptation data under ``params`` (values only: nothing here is
        differentiated)."""
        num_tasks = config.num_tasks if num_tasks is None else num_tasks
        k_tasks, k_data = jax.random.split(key)
        return sample_from(params, k_tasks, k_data, num_tasks)

    def update(state: TrainState):
        # == learn(state, sample(state.params, jax.random.split(state.key)[1]))
        key, k_sample = jax.random.split(state.key)
        return learn_from(state, sample(state.params, k_sample), key)

    def learn(state: TrainState, data: Rollouts):
        """The outer step on ``data`` (any number of tasks; sampled under ``state.params`` for
        the exact MAML gradient): the inner step(s) are recomputed from ``data.pre`` as functions
        of ``state.params``; the surrogate's ratio and the trust region are taken against the
        behaviour distributions stored in ``data.post`` (so data from slightly older parameters
        is importance-corrected in the outer objective, not in the inner step)."""
        return learn_from(state, data, jax.random.split(state.key)[0])

    def learn_from(state: TrainState, data: Rollouts, key: jax.Array):
        task_batch, returns = data.tasks, data.returns
        pre, post = shard_tasks((data.pre, data.post))

        def surrogate_loss(params):
            return loss_and_kl(params, pre, post)[0]

        def mean_kl(params):
            return loss_and_kl(params, pre, post)[1]

        metrics = {
            "return_pre": jnp.mean(returns[:, 0]),
            "return_post": jnp.mean(returns[:, -1]),
            # per task, so the host can explain the curves by task parameters
            "task_returns_pre": returns[:, 0],
            "task_returns_post": returns[:, -1],
            "task_params": task_batch,
        }
        if "log_std" in state.params.get("params", {}):  # Gaussian policy (GaussianMLP)
            metrics["log_std"] = jnp.mean(state.params["params"]["log_std"])
        opt_state = state.opt_state
        if config.outer == "trpo":
            params, info = trpo.trpo_step(
                surrogate_loss, mean_kl, state.params, max_kl=config.max_kl,
                cg_iters=config.cg_iters, cg_damping=config.cg_damping,
                backtrack_ratio=config.ls_ratio, max_backtracks=config.ls_backtracks,
                fisher_vp=(gauss_newton_fvp(state.params, pre, post)
                           if config.fisher == "gauss-newton" else None),
                loss_and_kl_fn=lambda p: loss_and_kl(p, pre, post))
            metrics.update(loss_before=info.loss_before, loss_after=info.loss_after, kl=info.kl,
                           step_accepted=info.step_accepted, grad_norm=info.grad_norm,
                           num_backtracks=info.num_backtracks)
        else:
            coeff = opt_state.inner_kl_coeff

            def ppo_loss(params):
                logp, kl, inner_kls = outer_terms(params, pre, post)
                ratio = jnp.exp(jnp.where(post.valid, logp - post.old_log_prob, 0.0))
                objective = pg.ppo_clip_objective(ratio, post.advantages, config.clip_eps,
                                                  post.valid)
                inner_kl = jnp.mean(inner_kls, axis=0)  # [k]
                penalty = jnp.sum(coeff * inner_kl) if lvc else 0.0
                return -objective + penalty, (jnp.mean(kl), inner_kl, objective)

            def outer_step(carry, _):
                params, ostate = carry
                (loss, aux), grads = jax.value_and_grad(ppo_loss, has_aux=True)(params)
                updates, ostate = outer_opt.update(grads, ostate, params)
                return (optax.apply_updates(params, updates), ostate), (loss, *aux)

            (params, optax_state), (losses, kls, inner_kls, objectives) = jax.lax.scan(
                outer_step, (state.params, opt_state.optax_state), None,
                length=config.num_outer_steps)
            last_inner_kl = inner_kls[-1]
            if lvc and config.adaptive_inner_kl:
                t = config.target_inner_kl
                coeff = jnp.where(last_inner_kl < t / 1.5, coeff / 2,
                                  jnp.where(last_inner_kl > t * 1.5, coeff * 2, coeff))
            opt_state = OptState(optax_state=optax_state, inner_kl_coeff=coeff)
            metrics.update(loss_before=losses[0], loss_after=losses[-1], kl=kls[-1],
                           inner_kl=jnp.mean(last_inner_kl), objective=objectives[-1])
        new_state = TrainState(params=params, opt_state=opt_state, key=key,
                               iteration=state.iteration + 1)
        return new_state, metrics

    def adapt(state: TrainState, task: Any, key: jax.Array) -> AdaptResult:
        """Meta-test: ``eval_steps`` VPG steps on fresh rollouts (α, then α·eval_lr_decay).

        The steps are one ``lax.scan`` (one rollout in the compiled program for all of them, then
        one for the final return): an MJX rollout costs tens of seconds of XLA compilation each.
        """
        keys = jax.random.split(key, config.eval_steps + 1)
        lrs = jnp.asarray([config.inner_lr] + [config.inner_lr * config.eval_lr_decay]
                          * (config.eval_steps - 1), jnp.float32)

        def vpg_step(theta, xs):
            k, lr = xs
            traj = collect(theta, task, k, config.eval_episodes)
            theta, _ = maml.adapt(vpg_loss, theta, to_batch(theta, traj), num_steps=1,
                                  inner_lr=lr, reuse_batch=True)
            return theta, jnp.mean(episode_returns(traj))

        theta, returns = jax.lax.scan(vpg_step, state.params, (keys[:-1], lrs))
        last = jnp.mean(episode_returns(collect(theta, task, keys[-1], config.eval_episodes)))
        return AdaptResult(params=theta, returns=jnp.concatenate([returns, last[None]]))

    algorithm = Algorithm(init=init, update=update, train=scan_train(update), adapt=adapt,
                          sample=sample, learn=learn)
    return Components(algorithm=algorithm, policy=policy, task_data=task_data,
                      loss_and_kl=loss_and_kl, gauss_newton_fvp=gauss_newton_fvp)
