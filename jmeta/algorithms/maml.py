"""The one gradient-based inner loop every MAML-family method shares (shared/DESIGN.md §4).

``adapt`` runs ``num_steps`` gradient steps on ``loss_fn`` as one ``lax.scan``. It is pure, so it
can be jitted, vmapped over a batch of tasks, and differentiated:

* second order (MAML, Finn et al. 2017): the meta-gradient flows through every inner step,
  Hessian-vector products included;
* ``first_order=True`` (FOMAML, same paper §5.2): the inner gradient is wrapped in
  ``stop_gradient``, so d(adapted)/d(params) is the identity and no second derivative is computed;
* ``remat=True``: each inner step is wrapped in ``jax.checkpoint``. The backward pass keeps only the
  step's inputs (the parameters, plus the inner optimiser's state) and recomputes the step's
  activations and its inner backward pass when they are needed, so second-order memory no longer
  holds every step's activations and Hessian-vector residuals. What remains per step is one copy
  of the parameters (see benchmarks/maml_sinusoid.py for measured numbers).

Meta-SGD (Li et al. 2017) is ``adapt`` with ``inner_lr`` a pytree of per-parameter rates that are
themselves meta-trained; Reptile (Nichol et al. 2018) uses ``reptile_direction``, built on ``adapt``.

>>> import jax, jax.numpy as jnp
>>> loss = lambda p, b: jnp.sum((p - b) ** 2)
>>> adapted, metrics = adapt(loss, jnp.zeros(2), jnp.ones(2), num_steps=3, inner_lr=0.1,
...                          reuse_batch=True)
>>> metrics.loss.shape
(3,)
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "AdaptMetrics",
    "adapt",
    "clipped_optimizer",
    "reptile_direction",
]

Params = Any
Batch = Any
LossFn = Callable[[Params, Batch], jax.Array]


class AdaptMetrics(NamedTuple):
    """Per-inner-step metrics returned by ``adapt``.

    Attributes:
      loss: ``[num_steps]`` inner loss *before* each step (``loss[0]`` is the pre-adaptation loss).
      grad_norm: ``[num_steps]`` global norm of the inner gradient at each step.
    """

    loss: jax.Array
    grad_norm: jax.Array


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _validate_lr(inner_lr: Any, params: Params) -> None:
    """Checks a scalar or per-parameter learning rate; only concrete values can be range-checked."""
    if isinstance(inner_lr, bool):
        raise ValueError(f"inner_lr must be a positive number or a pytree of rates, got {inner_lr!r}")
    if isinstance(inner_lr, numbers.Number):
        if not (float(inner_lr) > 0.0):  # also rejects NaN
            raise ValueError(f"inner_lr must be > 0, got {inner_lr!r}")
        return
    leaves = jax.tree_util.tree_leaves(inner_lr)
    if len(leaves) == 1 and jnp.ndim(leaves[0]) == 0 and not isinstance(inner_lr, (dict, list, tuple)):
        # a 0-d array: a shared rate
        if _is_concrete(leaves[0]) and not (float(np.asarray(leaves[0])) > 0.0):
            raise ValueError(f"inner_lr must be > 0, got {float(np.asarray(leaves[0]))!r}")
        return
    # a pytree of per-parameter rates (Meta-SGD): same structure, each leaf broadcastable.
    lr_def = jax.tree_util.tree_structure(inner_lr)
    p_def = jax.tree_util.tree_structure(params)
    if lr_def != p_def:
        raise ValueError(
            "inner_lr: a pytree of per-parameter rates must have the structure of params; "
            f"got {lr_def} for params {p_def}"
        )
    for path, (lr, p) in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        zip(jax.tree_util.tree_leaves(inner_lr), jax.tree_util.tree_leaves(params)),
    ):
        try:
            np.broadcast_shapes(np.shape(lr), np.shape(p))
        except ValueError:
            raise ValueError(
                f"inner_lr at {jax.tree_util.keystr(path[0])} has shape {np.shape(lr)}, not "
                f"broadcastable to the parameter's shape {np.shape(p)}"
            ) from None


def _validate_batches(batches: Batch, num_steps: int, reuse_batch: bool) -> None:
    leaves = jax.tree_util.tree_leaves(batches)
    if not leaves:
        raise ValueError("batches must hold at least one array")
    if reuse_batch:
        return
    bad = [np.shape(x) for x in leaves if np.ndim(x) == 0 or np.shape(x)[0] != num_steps]
    if bad:
        raise ValueError(
            f"batches: every leaf needs a leading [num_steps]={num_steps} axis (one batch per inner "
            f"step), or pass reuse_batch=True to use one batch at every step; got leaf shapes "
            f"{[np.shape(x) for x in leaves]}"
        )


def adapt(
    loss_fn: LossFn,
    params: Params,
    batches: Batch,
    *,
    num_steps: int,
    inner_lr: float | jax.typing.ArrayLike | Params | None = None,
    inner_opt: optax.GradientTransformation | None = None,
    first_order: bool = False,
    remat: bool | str = False,
    reuse_batch: bool = False,
) -> tuple[Params, AdaptMetrics]:
    """Adapts ``params`` to one task with ``num_steps`` gradient steps on ``loss_fn``.

    Pure and jit-able; ``jax.vmap`` it over a batch of tasks (``params`` unbatched via
    ``in_axes=None``, ``batches`` batched) and differentiate the query loss of the result with
    ``jax.grad`` for the MAML meta-gradient. Finn et al., ICML 2017, Algorithm 2, inner loop.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` inner (support) loss.
      params: pytree of parameters to adapt (the meta-learned initialisation).
      batches: a pytree of arrays. By default every leaf has a leading ``[num_steps]`` axis and step
        ``t`` uses ``batch[t]``. With ``reuse_batch=True`` it is a single batch used at every step
        (the sinusoid protocol of Finn et al.: the same K support points at every step).
      num_steps: number of inner gradient steps, a static Python int >= 1.
      inner_lr: SGD step size, either a positive scalar, or (Meta-SGD) a pytree of rates with the
        structure of ``params`` whose leaves broadcast to the parameter shapes. Rates may be traced
        (meta-learned); only concrete scalars are checked to be positive. Give exactly one of
        ``inner_lr`` and ``inner_opt``.
      inner_opt: any optax transformation used as the inner optimiser instead of SGD; its state is
        initialised from ``params`` at the start of adaptation.
      first_order: if True, ``stop_gradient`` on each inner gradient (FOMAML): the meta-gradient
        ignores second derivatives. With Meta-SGD rates the rates still receive gradients.
      remat: memory/compute trade-off of the backward pass through the inner loop (the values are
        identical in every mode):

        * ``False``: the scan stores every step's activations and Hessian-vector residuals;
          second-order memory grows by all of them per step.
        * ``True`` or ``"step"``: each inner step is wrapped in ``jax.checkpoint``; the backward
          pass keeps only each step's input (parameters and inner-optimiser state) and recomputes
          the rest, about 1.3x the compute. Memory still grows by one parameter copy per step.
        * ``"full"``: memory does not grow with ``num_steps``: only the initial parameters are
          kept and the backward pass recomputes each step's input from them (O(num_steps^2)
          inner steps of compute; a ``jax.custom_vjp``, so no derivatives above the second order
          of ``loss_fn`` through ``adapt``).
      reuse_batch: see ``batches``.

    Returns:
      ``(adapted_params, AdaptMetrics)`` where ``AdaptMetrics`` fields have shape ``[num_steps]``.

    Raises:
      ValueError: ``num_steps`` < 1 or not an int, ``inner_lr`` not positive or of the wrong
        structure, both or neither of ``inner_lr``/``inner_opt``, or batches without the
        ``[num_steps]`` leading axis, or an unknown ``remat``.

    The returned metrics are diagnostics: they carry no gradient.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    num_steps = int(num_steps)
    if (inner_lr is None) == (inner_opt is None):
        raise ValueError("give exactly one of inner_lr (SGD step size or Meta-SGD rates) and inner_opt")
    if inner_lr is not None:
        _validate_lr(inner_lr, params)
    _validate_batches(batches, num_steps, reuse_batch)

    if inner_opt is None:
        per_param = not (
            isinstance(inner_lr, numbers.Number)
            or (
                len(jax.tree_util.tree_leaves(inner_lr)) == 1
                and jnp.ndim(jax.tree_util.tree_leaves(inner_lr)[0]) == 0
                and not isinstance(inner_lr, (dict, list, tuple))
            )
        )

        def apply_update(grads, opt_state, p):
            if per_param:
                new = jax.tree_util.tree_map(lambda x, g, a: x - a * g, p, grads, inner_lr)
            else:
                new = jax.tree_util.tree_map(lambda x, g: x - inner_lr * g, p, grads)
            return new, opt_state

        opt_state0 = ()
    else:

        def apply_update(grads, opt_state, p):
            updates, opt_state = inner_opt.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state

        opt_state0 = inner_opt.init(params)

    def inner_step(carry, batch):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        new_p, opt_state = apply_update(grads, opt_state, p)
        return (new_p, opt_state), AdaptMetrics(loss=loss, grad_norm=optax.tree.norm(grads))

    if remat not in (False, True, "step", "full"):
        raise ValueError(f"remat must be False, True/'step' or 'full', got {remat!r}")
    if remat == "full":
        adapted, metrics = _scan_recompute(
            inner_step, (params, opt_state0), batches, num_steps, reuse_batch
        )
        return adapted[0], jax.lax.stop_gradient(metrics)
    if remat:
        inner_step = jax.checkpoint(inner_step)

    if reuse_batch:
        body = lambda carry, _: inner_step(carry, batches)  # noqa: E731
        xs = None
    else:
        body, xs = inner_step, batches
    (adapted, _), metrics = jax.lax.scan(body, (params, opt_state0), xs, length=num_steps)
    return adapted, jax.lax.stop_gradient(metrics)


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _split(tree: Any) -> tuple[list, list]:
    """Float leaves (differentiated) and the other leaves (carried as they are)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return [x for x in leaves if _is_float(x)], [x for x in leaves if not _is_float(x)]


def _merge(like: Any, floats: list, others: list) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(like)
    fi, oi = iter(floats), iter(others)
    return jax.tree_util.tree_unflatten(
        treedef, [next(fi) if _is_float(x) else next(oi) for x in leaves]
    )


def _zero_cotangent(x: Any) -> Any:
    if _is_float(x):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


def _scan_recompute(step, carry0, batches, num_steps: int, reuse_batch: bool):
    """``lax.scan`` of ``step`` whose backward pass keeps only ``carry0``: O(1) memory in steps.

    The backward pass walks t = n-1, ..., 0 and recomputes the carry at step t from ``carry0``
    (a ``fori_loop`` of t forward steps) before taking the VJP of step t, so it costs
    n (n - 1) / 2 extra forward steps and holds a constant number of carries whatever n is.
    Values that ``step`` closes over (learned rates, tracers captured by ``loss_fn``) are hoisted
    with ``jax.closure_convert`` and receive their cotangents.
    """
    batch0 = batches if reuse_batch else jax.tree_util.tree_map(lambda x: x[0], batches)
    conv, consts = jax.closure_convert(step, carry0, batch0)

    def batch_at(bs, t):
        if reuse_batch:
            return bs
        return jax.tree_util.tree_map(
            lambda x: jax.lax.dynamic_index_in_dim(x, t, keepdims=False), bs
        )

    def forward(carry0, bs, consts):
        body = lambda c, b: conv(c, batch_at(bs, 0) if reuse_batch else b, *consts)  # noqa: E731
        return jax.lax.scan(body, carry0, None if reuse_batch else bs, length=num_steps)

    @jax.custom_vjp
    def run(carry0, bs, consts):
        return forward(carry0, bs, consts)

    def run_fwd(carry0, bs, consts):
        return forward(carry0, bs, consts), (carry0, bs, consts)

    def run_bwd(res, cts):
        carry0, bs, consts = res
        ct_carry, _ = cts  # per-step metrics are not differentiated
        ct_cf, _ = _split(ct_carry)
        kf0, _ = _split(list(consts))
        acc_b = [jnp.zeros_like(x) for x in _split(bs)[0]]
        acc_k = [jnp.zeros_like(x) for x in kf0]

        def back(i, state):
            ct_cf, acc_b, acc_k = state
            t = num_steps - 1 - i
            carry_t = jax.lax.fori_loop(
                0, t, lambda j, c: conv(c, batch_at(bs, j), *consts)[0], carry0
            )
            b_t = batch_at(bs, t)
            cf, ci = _split(carry_t)
            bf, bi = _split(b_t)
            kf, ki = _split(list(consts))

            def step_f(cf, bf, kf):
                c = _merge(carry_t, cf, ci)
                b = _merge(b_t, bf, bi)
                k = _merge(list(consts), kf, ki)
                return _split(conv(c, b, *k)[0])[0]

            _, vjp = jax.vjp(step_f, cf, bf, kf)
            d_cf, d_bf, d_kf = vjp(ct_cf)
            if reuse_batch:
                acc_b = [a + d for a, d in zip(acc_b, d_bf)]
            else:
                acc_b = [jax.lax.dynamic_update_index_in_dim(a, d, t, 0) for a, d in zip(acc_b, d_bf)]
            acc_k = [a + d for a, d in zip(acc_k, d_kf)]
            return d_cf, acc_b, acc_k

        ct_cf, acc_b, acc_k = jax.lax.fori_loop(0, num_steps, back, (ct_cf, acc_b, acc_k))

        def rebuild(like, floats):
            others = [_zero_cotangent(x) for x in jax.tree_util.tree_leaves(like) if not _is_float(x)]
            return _merge(like, floats, others)

        return rebuild(carry0, ct_cf), rebuild(bs, acc_b), tuple(rebuild(list(consts), acc_k))

    run.defvjp(run_fwd, run_bwd)
    return run(carry0, batches, tuple(consts))


def reptile_direction(params: Params, adapted: Params) -> Params:
    """Reptile's outer "gradient" ``params - adapted`` (Nichol et al. 2018, Algorithm 1).

    Feeding it to an optax optimiser as a gradient moves ``params`` towards the adapted parameters
    (with plain SGD at rate ε this is exactly ``params + ε (adapted - params)``). No derivative is
    taken through ``adapted``.
    """
    return jax.tree_util.tree_map(
        lambda p, a: p - jax.lax.stop_gradient(a), params, adapted
    )


def clipped_optimizer(
    optimizer: optax.GradientTransformation, max_grad_norm: float | None
) -> optax.GradientTransformation:
    """Prepends clipping by global norm to any optax outer optimiser (``None`` = no clipping)."""
    if max_grad_norm is None:
        return optimizer
    if not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optimizer)
