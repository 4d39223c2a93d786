"""Trust-region policy optimisation pieces: conjugate gradient, Hessian-vector products, the step.

TRPO (Schulman et al. 2015) maximises the surrogate ``E[π/π_old · A]`` subject to
``mean KL(π_old ‖ π) ≤ δ``. Here, as everywhere in jmeta, the objective is a **loss to minimise**
(the negated surrogate, e.g. :func:`jmeta.algorithms.pg.trpo_surrogate_loss`). One step:

1. ``g = ∇ loss(θ)``;
2. ``s = F⁻¹ g`` by conjugate gradient, ``F v`` being the Hessian-vector product of the mean KL at
   ``θ`` (the Fisher information matrix there, plus ``cg_damping · v``);
3. full step ``β s`` with ``β = sqrt(2δ / sᵀFs)``, the step whose quadratic KL model equals ``δ``;
4. backtracking line search ``θ − rⁿ β s``, ``n = 0, 1, …``, accepting the first candidate that
   lowers the loss **and** keeps the KL within ``δ``; if none does, ``θ`` is returned unchanged
   (rllab's ``ConjugateGradientOptimizer`` and pytorch-maml-rl do the same).

MAML-RL (Finn et al. 2017) uses this step as its outer optimiser: ``loss_fn`` and ``kl_fn`` take the
meta-parameters only and close over the inner adaptation, so the gradient and the Fisher products
are meta-gradients through the adaptation.

Everything runs in ``lax`` control flow (``while_loop``), so :func:`trpo_step` jits and vmaps; the
while loops are not reverse-differentiable, which a TRPO step never needs.

>>> import jax.numpy as jnp
>>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
>>> kl = lambda p: 0.5 * jnp.sum(p**2)          # trust region around 0, Fisher = I
>>> new, info = trpo_step(loss, kl, jnp.zeros(2), max_kl=0.01)
>>> bool(info.step_accepted), bool(info.kl <= 0.01)
(True, True)
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jmeta.algorithms.pg import check_positive

__all__ = [
    "TRPOInfo",
    "conjugate_gradient",
    "hvp",
    "trpo_step",
]

PyTree = Any


def _check_positive_int(fn: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return int(value)


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    iters: int = 10,
    residual_tol: float = 1e-10,
    return_residual: bool = False,
) -> PyTree | tuple[PyTree, PyTree]:
    """Solves ``A x = b`` for symmetric positive-definite ``A`` given only ``v ↦ A v``.

    Hestenes & Stiefel (1952); the loop of rllab's ``krylov.cg`` and TRPO's Appendix C, starting
    from ``x = 0``. Runs at most ``iters`` iterations and stops as soon as ``‖r‖² ≤ residual_tol``
    (a ``lax.while_loop``, so converged solves skip the remaining matrix-vector products, which
    matters when each is a Hessian-vector product through a MAML adaptation). A zero curvature
    ``pᵀAp`` stops the loop instead of dividing by zero, so an already-solved system (``b = 0``)
    returns ``x = 0`` without NaNs.

    Args:
      matvec: ``v ↦ A v`` on the structure of ``b`` (a flat vector or any pytree of arrays).
      b: right-hand side: ``[n]`` or a pytree.
      iters: maximum number of iterations (``>= 1``; ``n`` suffice in exact arithmetic).
      residual_tol: stop when the squared residual norm is at most this.
      return_residual: also return the residual ``r = b − A x`` that CG keeps by recursion
        (so ``xᵀ A x = xᵀ (b − r)`` needs no further matrix-vector product).

    Returns:
      ``x`` with the structure of ``b`` (``(x, r)`` with ``return_residual``).

    >>> A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    >>> x = conjugate_gradient(lambda v: A @ v, jnp.array([1.0, 2.0]), iters=2)
    >>> [round(float(xi), 4) for xi in x]
    [0.0909, 0.6364]
    """
    fn = "conjugate_gradient"
    iters = _check_positive_int(fn, "iters", iters)
    check_positive(fn, "residual_tol", residual_tol, allow_zero=True)
    flat_b, unravel = ravel_pytree(b)
    dtype = jnp.result_type(flat_b.dtype, jnp.float32)
    flat_b = flat_b.astype(dtype)

    def flat_matvec(v):
        out, _ = ravel_pytree(matvec(unravel(v.astype(flat_b.dtype))))
        if out.shape != flat_b.shape:
            raise ValueError(
                f"{fn}: matvec must return the structure of b ({flat_b.shape[0]} numbers), "
                f"got {out.shape[0]}"
            )
        return out.astype(dtype)

    class _CG(NamedTuple):
        i: jax.Array
        x: jax.Array
        r: jax.Array
        p: jax.Array
        rdotr: jax.Array
        stalled: jax.Array

    def _cond(s: _CG):
        return (s.i < iters) & (s.rdotr > residual_tol) & ~s.stalled

    def _body(s: _CG) -> _CG:
        z = flat_matvec(s.p)
        pz = jnp.vdot(s.p, z)
        ok = (pz > 0) & jnp.isfinite(pz)
        alpha = jnp.where(ok, s.rdotr / jnp.where(ok, pz, 1.0), 0.0)
        x = s.x + alpha * s.p
        r = s.r - alpha * z
        new_rdotr = jnp.vdot(r, r)
        p = r + (new_rdotr / jnp.where(s.rdotr > 0, s.rdotr, 1.0)) * s.p
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        return _CG(s.i + 1, keep(x, s.x), keep(r, s.r), keep(p, s.p), keep(new_rdotr, s.rdotr),
                   ~ok)

    init = _CG(jnp.zeros((), jnp.int32), jnp.zeros_like(flat_b), flat_b, flat_b,
               jnp.vdot(flat_b, flat_b), jnp.zeros((), jnp.bool_))
    final = jax.lax.while_loop(_cond, _body, init)
    x = unravel(final.x.astype(flat_b.dtype))
    if return_residual:
        return x, unravel(final.r.astype(flat_b.dtype))
    return x


def hvp(
    f: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree, damping: float = 0.0
) -> PyTree:
    """Hessian-vector product ``(∇²f(params) + damping·I) v``, forward-over-reverse.

    ``jax.jvp(jax.grad(f), (params,), (v,))``: one forward-mode pass over the gradient, never
    building the Hessian (Pearlmutter 1994; the JAX autodiff cookbook's recommended mode).

    Args:
      f: scalar function of ``params``.
      params: the point, any pytree.
      v: the vector, a pytree with the structure of ``params``.
      damping: Tikhonov damping added as ``damping · v`` (TRPO's ``cg_damping``), ``>= 0``.

    Returns:
      a pytree with the structure of ``params``.
    """
    check_positive("hvp", "damping", damping, allow_zero=True)
    _, hv = jax.jvp(jax.grad(f), (params,), (v,))
    return jax.tree.map(lambda h, x: h + damping * x, hv, v)


class TRPOInfo(NamedTuple):
    """Diagnostics of one :func:`trpo_step` (all scalars).

    Attributes:
      loss_before: loss at the input parameters.
      loss_after: loss at the returned parameters (``loss_before`` when no step was accepted).
      kl: ``kl_fn`` at the returned parameters (at the input parameters when no step was accepted).
      step_accepted: bool, whether the line search accepted a step.
      num_backtracks: number of rejected candidates: 0 when the full step was accepted,
        ``max_backtracks`` when none was.
      step_size: the full step's scale ``β = sqrt(2δ / sᵀFs)``.
      grad_norm: Euclidean norm of the loss gradient.
    """

    loss_before: jax.Array
    loss_after: jax.Array
    kl: jax.Array
    step_accepted: jax.Array
    num_backtracks: jax.Array
    step_size: jax.Array
    grad_norm: jax.Array


def trpo_step(
    loss_fn: Callable[[PyTree], jax.Array],
    kl_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    max_kl: float,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
    fisher_vp: Callable[[PyTree], PyTree] | None = None,
    loss_and_kl_fn: Callable[[PyTree], tuple[jax.Array, jax.Array]] | None = None,
) -> tuple[PyTree, TRPOInfo]:
    """One TRPO update (Schulman et al. 2015, §6 and Appendix C) of ``params``.

    Args:
      loss_fn: ``params -> scalar`` loss to **minimise** (the negated surrogate advantage, e.g.
        :func:`jmeta.algorithms.pg.trpo_surrogate_loss`), a closure over the data.
      kl_fn: ``params -> scalar`` mean ``KL(π_old ‖ π_params)``, with ``π_old`` fixed (computed at
        ``params`` and held with ``stop_gradient``), so that ``kl_fn(params) = 0`` and its Hessian
        there is the Fisher matrix.
      params: the current parameters, any pytree.
      max_kl: trust-region radius δ ``> 0`` (MAML-RL: 0.01).
      cg_iters: conjugate-gradient iterations (``>= 1``).
      cg_damping: damping added to the Fisher products (``>= 0``).
      backtrack_ratio: step shrink factor in ``(0, 1)``.
      max_backtracks: number of line-search candidates (``>= 1``).
      fisher_vp: optional linear map ``v -> F v`` (pytrees, no damping) to use instead of the
        Hessian-vector product of ``kl_fn`` at ``params``; it must equal that Hessian (e.g. a
        Gauss-Newton product ``Jᵀ F' J`` when ``π`` depends on ``params`` through a map with
        Jacobian ``J``, as MAML's adapted policy does: at ``params`` the KL's gradient vanishes,
        so its Hessian is exactly ``Jᵀ F' J``). Cheaper when the KL's own Hessian would need
        third derivatives.
      loss_and_kl_fn: optional ``params -> (loss, kl)`` computing both at once for the line
        search (defaults to calling ``loss_fn`` and ``kl_fn``); must agree with them.

    Returns:
      ``(new_params, info)``: ``new_params`` has the structure of ``params`` (equal to it when no
      candidate lowered the loss within the trust region); ``info`` a :class:`TRPOInfo`.
    """
    fn = "trpo_step"
    check_positive(fn, "max_kl", max_kl)
    cg_iters = _check_positive_int(fn, "cg_iters", cg_iters)
    check_positive(fn, "cg_damping", cg_damping, allow_zero=True)
    if not isinstance(backtrack_ratio, jax.core.Tracer) and not 0.0 < float(backtrack_ratio) < 1.0:
        raise ValueError(f"{fn}: backtrack_ratio must be in (0, 1), got {backtrack_ratio!r}")
    max_backtracks = _check_positive_int(fn, "max_backtracks", max_backtracks)

    loss_before, grads = jax.value_and_grad(loss_fn)(params)
    flat_params, unravel = ravel_pytree(params)
    flat_g, _ = ravel_pytree(grads)
    dtype = flat_params.dtype

    if fisher_vp is None:
        # Linearise ∇KL once at params; each CG iteration then costs one linear (JVP) pass only.
        (kl_before, _), kl_grad_jvp = jax.linearize(jax.value_and_grad(kl_fn), params)
        base_fvp = lambda v: kl_grad_jvp(v)[1]  # noqa: E731
    else:
        kl_before = kl_fn(params)
        base_fvp = fisher_vp

    def damped_fvp(v_flat):
        return ravel_pytree(base_fvp(unravel(v_flat)))[0] + cg_damping * v_flat

    if loss_and_kl_fn is None:
        loss_and_kl_fn = lambda p: (loss_fn(p), kl_fn(p))  # noqa: E731

    direction, residual = conjugate_gradient(damped_fvp, flat_g, iters=cg_iters,
                                             return_residual=True)
    # sᵀ(F + λI)s = sᵀ(g − r): CG's residual r = g − (F + λI)s saves one more Fisher product
    # (the most expensive operation of a MAML-TRPO step).
    shs = jnp.vdot(direction, flat_g - residual)
    step_size = jnp.where(shs > 0, jnp.sqrt(2.0 * max_kl / jnp.where(shs > 0, shs, 1.0)), 0.0)
    full_step = (step_size * direction).astype(dtype)

    class _Search(NamedTuple):
        n: jax.Array
        accepted: jax.Array
        loss: jax.Array
        kl: jax.Array

    def _candidate(n):
        return unravel(flat_params - (backtrack_ratio ** n.astype(dtype)) * full_step)

    def _cond(s: _Search):
        return (s.n < max_backtracks) & ~s.accepted

    def _body(s: _Search) -> _Search:
        cand = _candidate(s.n)
        loss, kl = loss_and_kl_fn(cand)
        loss = jnp.asarray(loss).astype(loss_before.dtype)
        kl = jnp.asarray(kl).astype(kl_before.dtype)
        ok = (loss < loss_before) & (kl <= max_kl) & jnp.isfinite(loss) & jnp.isfinite(kl)
        return _Search(jnp.where(ok, s.n, s.n + 1), ok, loss, kl)

    # (astype: strong dtypes, so the loop carry's types cannot drift from weak to strong)
    loss_before = jnp.asarray(loss_before).astype(loss_before.dtype)
    kl_before = jnp.asarray(kl_before).astype(kl_before.dtype)
    init = _Search(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.bool_), loss_before, kl_before)
    search = jax.lax.while_loop(_cond, _body, init)

    accepted_params = _candidate(jnp.minimum(search.n, max_backtracks - 1))
    new_params = jax.tree.map(
        lambda new, old: jnp.where(search.accepted, new, old), accepted_params, params
    )
    info = TRPOInfo(
        loss_before=loss_before,
        loss_after=jnp.where(search.accepted, search.loss, loss_before),
        kl=jnp.where(search.accepted, search.kl, kl_before),
        step_accepted=search.accepted,
        num_backtracks=search.n,
        step_size=step_size,
        grad_norm=jnp.linalg.norm(flat_g),
    )
    return new_params, info
