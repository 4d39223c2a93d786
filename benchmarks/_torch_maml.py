"""PyTorch references of the same sinusoid MAML meta-iteration, for benchmarks/maml_speed.py.

Both do what one jmeta meta-iteration does (Finn et al. 2017 sinusoid: MLP 1-40-40-1 ReLU,
meta-batch 25, K support + K query points, inner SGD lr 0.01, Adam 1e-3 outer, second order unless
``first_order``), including sampling the tasks:

* ``TorchFuncMAML``: functional, ``torch.func.functional_call`` + ``torch.func.grad`` for the inner
  step, ``torch.func.vmap`` over the 25 tasks, ``torch.func.grad`` of the meta-loss.
* ``HigherMAML``: the classic loop over tasks with the ``higher`` library
  (``higher.innerloop_ctx``), as in the facebookresearch/higher MAML example and most PyTorch MAML
  code.

Optional: needs ``torch`` (CPU wheel) and ``higher``; the caller skips when they are missing.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def _sample(rng: np.random.Generator, batch: int, k: int):
    a = rng.uniform(0.1, 5.0, (batch, 1, 1))
    p = rng.uniform(0.0, math.pi, (batch, 1, 1))
    x = rng.uniform(-5.0, 5.0, (batch, 2 * k, 1))
    y = a * np.sin(x - p)
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    return t(x[:, :k]), t(y[:, :k]), t(x[:, k:]), t(y[:, k:])


class TorchFuncMAML:
    """Second-order (or first-order) MAML with torch.func: vmap over tasks, nested grad."""

    def __init__(self, k: int = 10, meta_batch: int = 25, inner_lr: float = 0.01,
                 num_inner_steps: int = 1, first_order: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.model = _mlp()
        self.params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.opt = torch.optim.Adam(list(self.params.values()), lr=1e-3)
        self.rng = np.random.default_rng(seed)
        self.k, self.meta_batch = k, meta_batch
        from torch.func import functional_call, grad, vmap

        def loss(params, x, y):
            return torch.mean((functional_call(self.model, params, (x,)) - y) ** 2)

        inner_grad = grad(loss)

        def task_loss(params, xs, ys, xq, yq):
            p = params
            for _ in range(num_inner_steps):
                g = inner_grad(p, xs, ys)
                if first_order:
                    g = {n: v.detach() for n, v in g.items()}
                p = {n: p[n] - inner_lr * g[n] for n in p}
            return loss(p, xq, yq)

        def meta_loss(params, xs, ys, xq, yq):
            return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean()

        self.meta_grad = grad(meta_loss)

    def step(self) -> None:
        xs, ys, xq, yq = _sample(self.rng, self.meta_batch, self.k)
        g = self.meta_grad(self.params, xs, ys, xq, yq)
        for n, p in self.params.items():
            p.grad = g[n]
        self.opt.step()


class HigherMAML:
    """The classic loop-over-tasks MAML with ``higher.innerloop_ctx``."""

    def __init__(self, k: int = 10, meta_batch: int = 25, inner_lr: float = 0.01,
                 num_inner_steps: int = 1, first_order: bool = False, seed: int = 0):
        import higher

        self.higher = higher
        torch.manual_seed(seed)
        self.model = _mlp()
        self.meta_opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.inner_opt = torch.optim.SGD(self.model.parameters(), lr=inner_lr)
        self.rng = np.random.default_rng(seed)
        self.k, self.meta_batch, self.steps = k, meta_batch, num_inner_steps
        self.first_order = first_order

    def step(self) -> None:
        xs, ys, xq, yq = _sample(self.rng, self.meta_batch, self.k)
        self.meta_opt.zero_grad()
        for i in range(self.meta_batch):
            with self.higher.innerloop_ctx(
                self.model, self.inner_opt, copy_initial_weights=False,
                track_higher_grads=not self.first_order,
            ) as (fmodel, diffopt):
                for _ in range(self.steps):
                    diffopt.step(torch.mean((fmodel(xs[i]) - ys[i]) ** 2))
                qloss = torch.mean((fmodel(xq[i]) - yq[i]) ** 2) / self.meta_batch
                qloss.backward()
        self.meta_opt.step()


def iterations_per_second(maker, seconds: float = 5.0, warmup: int = 3) -> float:
    """Meta-iterations per second of ``maker().step()`` over about ``seconds`` of wall time."""
    m = maker()
    for _ in range(warmup):
        m.step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m.step()
        n += 1
    return n / (time.perf_counter() - t0)
