"""MAML meta-iterations per second: jmeta (second order, first order, remat) vs two PyTorch references.

    python benchmarks/maml_speed.py [--quick] [--out PATH.json]

One meta-iteration is Finn et al.'s sinusoid step: sample 25 tasks, K=10 support + 10 query points
each, one inner SGD step (α = 0.01) on an MLP 1-40-40-1 ReLU, meta-gradient of the query MSE
(second order unless stated), one Adam (1e-3) update. Every implementation does all of it,
sampling included.

* jmeta: ``supervised.make(...).train`` jitted, a ``lax.scan`` over 1,000 meta-iterations per call
  (how the library is meant to run); ``jax_per_call`` is the same ``update`` jitted and called once
  per iteration from Python, for reference.
* torch.func: ``functional_call`` + ``grad``, ``vmap`` over tasks (benchmarks/_torch_maml.py).
* higher: the classic loop over tasks with ``higher.innerloop_ctx``.

Measurements are interleaved round-robin (each method timed for a few seconds per round, several
rounds) and each method's best round is kept, so a busy neighbour process biases no method more than
another. PyTorch runs with 1 and with 2 intra-op threads; the faster is kept. If torch or higher is
not installed (``pip install torch==2.13.0 higher``) their rows and the speedup keys are left out and
the JSON says why.

Headline keys: speedup_vs_torch_func, speedup_vs_higher (jmeta second order / reference second
order), and the iterations per second of every row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from jmeta.algorithms import supervised as sv  # noqa: E402

TORCH_FUNC_PUBLISHED_NOTE = "issue: ~400 it/s (torch.func) and ~40 it/s (higher) on this kind of machine"


def jax_runner(config: sv.Config, k: int, chunk: int):
    algo = sv.make(config, sv.sinusoid(k, k))
    train = jax.jit(algo.train, static_argnames="num_iterations")
    state = algo.init(jax.random.key(0))
    state, m = train(state, num_iterations=chunk)  # compile + warm up
    jax.block_until_ready(m)
    box = {"state": state}

    def run(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            box["state"], m = train(box["state"], num_iterations=chunk)
            jax.block_until_ready(m)
            n += chunk
        return n / (time.perf_counter() - t0)

    return run


def jax_per_call_runner(config: sv.Config, k: int):
    algo = sv.make(config, sv.sinusoid(k, k))
    update = jax.jit(algo.update)
    box = {"state": algo.init(jax.random.key(0))}
    for _ in range(3):
        box["state"], m = update(box["state"])
    jax.block_until_ready(m)

    def run(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            box["state"], m = update(box["state"])
            n += 1
        jax.block_until_ready(m)
        return n / (time.perf_counter() - t0)

    return run


def torch_runner(kind: str, k: int, first_order: bool, threads: int):
    import torch

    import _torch_maml as tm

    cls = tm.TorchFuncMAML if kind == "torch_func" else tm.HigherMAML
    torch.set_num_threads(threads)
    m = cls(k=k, first_order=first_order)
    for _ in range(3):
        m.step()

    def run(seconds: float) -> float:
        torch.set_num_threads(threads)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            m.step()
            n += 1
        return n / (time.perf_counter() - t0)

    return run


def torch_status() -> str | None:
    """None if the references can run, else the reason they are skipped."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "skipped: torch not installed (pip install torch==2.13.0 higher)"
    try:
        import higher  # noqa: F401
    except ImportError:
        return "skipped: higher not installed (pip install higher)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke configuration (< 2 min)")
    ap.add_argument("--out", default="benchmarks/out/maml_speed.json")
    args = ap.parse_args()
    k = 10
    rounds, seconds, chunk = (1, 1.0, 200) if args.quick else (4, 4.0, 1000)

    runners = {
        "jax_second_order": jax_runner(sv.Config(method="maml"), k, chunk),
        "jax_first_order": jax_runner(sv.Config(method="fomaml"), k, chunk),
        "jax_remat": jax_runner(sv.Config(method="maml", remat=True), k, chunk),
    }
    if not args.quick:
        runners["jax_remat_full"] = jax_runner(sv.Config(method="maml", remat="full"), k, chunk)
        runners["jax_second_order_per_call"] = jax_per_call_runner(sv.Config(method="maml"), k)
    skipped = torch_status()
    if skipped is None:
        import torch

        thread_options = (1, 2) if not args.quick else (1,)
        for threads in thread_options:
            runners[f"torch_func_second_order@{threads}t"] = torch_runner("torch_func", k, False, threads)
            runners[f"higher_second_order@{threads}t"] = torch_runner("higher", k, False, threads)
            if not args.quick:
                runners[f"torch_func_first_order@{threads}t"] = torch_runner("torch_func", k, True, threads)
                runners[f"higher_first_order@{threads}t"] = torch_runner("higher", k, True, threads)

    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            per_round[name].append(run(seconds))

    best_raw = {name: max(v) for name, v in per_round.items()}
    best: dict[str, float] = {}
    threads_used: dict[str, str] = {}
    for name, v in best_raw.items():
        base = name.split("@")[0]
        if v > best.get(base, -1.0):
            best[base] = v
            if "@" in name:
                threads_used[base] = name.split("@")[1]

    headline = {f"{name}_its": v for name, v in best.items()}
    if skipped is None:
        headline["speedup_vs_torch_func"] = best["jax_second_order"] / best["torch_func_second_order"]
        headline["speedup_vs_higher"] = best["jax_second_order"] / best["higher_second_order"]
        if "torch_func_first_order" in best:
            headline["first_order_speedup_vs_torch_func"] = (
                best["jax_first_order"] / best["torch_func_first_order"]
            )
    config = {
        "quick": args.quick, "K": k, "meta_batch": 25, "inner_steps": 1, "inner_lr": 0.01,
        "hidden": [40, 40], "rounds": rounds, "seconds_per_measurement": seconds,
        "jax_iterations_per_call": chunk,
        "torch_threads_tried": None if skipped else ([1] if args.quick else [1, 2]),
    }
    versions = {}
    if skipped is None:
        from importlib.metadata import version

        versions = {"torch": version("torch"), "higher": version("higher")}
    out = _common.write_json(
        args.out, headline, config, per_round=per_round, torch_threads_best=threads_used,
        torch_reference="ran" if skipped is None else skipped, versions=versions,
        targets={"speedup_vs_torch_func": 5.0, "speedup_vs_higher": 30.0},
        published_note=TORCH_FUNC_PUBLISHED_NOTE,
    )
    print(f"wrote {args.out}  (machine: {out['machine']['cpu']}, {out['machine']['cores']} cores)")
    print("\nMAML sinusoid meta-iterations per second (best round)")
    for name, v in best.items():
        print(f"  {name:28s} {v:10.1f}")
    if skipped is None:
        print(f"speedup vs torch.func (second order): {headline['speedup_vs_torch_func']:.1f}x  (target >= 5)")
        print(f"speedup vs higher     (second order): {headline['speedup_vs_higher']:.1f}x  (target >= 30)")
    else:
        print(f"PyTorch references {skipped}")


if __name__ == "__main__":
    main()
