"""Samplers streaming through NATS JetStream to a trainer (issue 8): throughput, trainer idle
fraction, learning parity with in-process training, and sharded vs single-device time.

For each sampler count (default 1, 2, 4): a fresh ``nats-server -js`` on 127.0.0.1 (the real
server of the ``distributed`` extra, user/password auth), one ``jmeta trainer`` process and that
many ``jmeta sampler`` processes, all on this machine, meta-training MAML-RL on point-nav for
``--iterations`` meta-iterations (20 tasks per update in batches of 5, ``max_lag 0``: exact
on-policy meta-gradients, so extra samplers' batches made with a superseded version are
dropped as ``stale``). Measured, in the steady state between the first and the last update
(compilation excluded):

* ``batches_per_s`` — batches the trainer received and decided on (``batches.jsonl``) per second,
  and ``used_batches_per_s`` — those it learned from; ``mb_per_s`` from the samplers' byte counts;
* ``idle_fraction`` — the trainer's share of that time spent waiting for batches (from its
  ``distributed.json``).

Learning parity: the same spec trained in-process by the Runner for the same number of
meta-iterations with ``--parity-seeds`` seeds (default 3; their spread is the seed-to-seed noise),
against the distributed runs (one per sampler count; their samplers draw other tasks and keys, so
a distributed run is another seed, not the same numbers); every final state meta-tested with
``jmeta.evaluate`` on the same 40 test tasks and keys (return before and after one adaptation
step); the headline returns are the means over the runs of each kind. Sharding: one MAML-RL
meta-iteration on 1 and on 4 forced host CPU devices (a child process with
``--xla_force_host_platform_device_count=4``); on 2 cores no speed-up is expected, the point is
that it runs and agrees (tests/test_sharding.py).

    python benchmarks/distributed.py [--quick] [--out PATH.json] [--samplers 1,2,4]
        [--iterations 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.distributed import settings  # noqa: E402
from jmeta.distributed.local import LocalNats  # noqa: E402
from jmeta.training import RunSpec, Runner  # noqa: E402
from jmeta.training.runner import load  # noqa: E402

# num_tasks 20: the paper's meta-batch, and divisible by the 4 devices of the sharding timing
FULL = {"num_tasks": 20, "num_episodes": 10, "inner_lr": 0.5, "hidden_sizes": (32, 32),
        "num_steps": 50}
QUICK = {"num_tasks": 4, "num_episodes": 2, "inner_lr": 0.5, "hidden_sizes": (8,),
         "num_steps": 20}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def cli_args(config: dict, seed: int) -> list[str]:
    out = ["maml-rl", "--env", "point-nav", "--seed", str(seed)]
    for k, v in config.items():
        v = "x".join(map(str, v)) if isinstance(v, tuple) else v
        out += ["--set", f"{k}={v}"]
    return out


def distributed_run(work: Path, samplers: int, config: dict, iterations: int,
                    tasks_per_batch: int, seed: int, log) -> dict:
    server = LocalNats(work / "nats", user="bench", password="bench").start()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", settings.ENV_URL: server.url,
           settings.ENV_USER: "bench", settings.ENV_PASSWORD: "bench"}
    run_dir = work / "run"
    procs = []

    def start(name, args):
        with open(work / f"{name}.out", "w") as out:
            p = subprocess.Popen([sys.executable, "-m", "jmeta.cli", *args], env=env,
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    t0 = time.perf_counter()
    try:
        trainer = start("trainer", ["trainer", *cli_args(config, seed), "--run-dir",
                                    str(run_dir), "--iterations", str(iterations), "--run",
                                    "bench", "--tasks-per-batch", str(tasks_per_batch),
                                    "--no-tensorboard"])
        for i in range(samplers):
            start(f"s{i}", ["sampler", "--run", "bench", "--sampler-id", f"s{i}", "--seed",
                            str(100 + i), "--log", str(work / f"s{i}.jsonl")])
        if trainer.wait(timeout=3600) != 0:
            raise RuntimeError(f"trainer exited {trainer.returncode}: "
                               f"{(work / 'trainer.out').read_text()[-2000:]}")
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        for p in procs[1:]:
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.kill()
    wall = time.perf_counter() - t0
    summary = json.loads((run_dir / "distributed.json").read_text())
    fates = _lines(run_dir / "batches.jsonl")
    used_t = [f["time"] for f in fates if f["fate"] == "used"]
    lo, hi = min(used_t), max(used_t)
    window = [f for f in fates if lo < f["time"] <= hi]  # after the first update's batches
    sizes = {r["batch_id"]: r["bytes"] for i in range(samplers)
             for r in _lines(work / f"s{i}.jsonl")}
    span = hi - lo
    out = {
        "samplers": samplers, "wall_s": wall, "steady_s": span,
        "batches_per_s": len(window) / span,
        "used_batches_per_s": sum(f["fate"] == "used" for f in window) / span,
        "mb_per_s": sum(sizes.get(f["batch_id"], 0) for f in window) / 1e6 / span,
        "idle_fraction": summary["idle_fraction"], "counts": summary["counts"],
        "published": len(sizes),
        "mean_batch_mb": float(np.mean(list(sizes.values()))) / 1e6 if sizes else None,
        "return_post": [r["metrics"]["return_post"] for r in _lines(run_dir / "metrics.jsonl")],
        "run_dir": str(run_dir),
    }
    log(f"{samplers} sampler(s): {out['batches_per_s']:.2f} batches/s "
        f"({out['used_batches_per_s']:.2f} used/s, {out['mb_per_s']:.2f} MB/s), trainer idle "
        f"{out['idle_fraction']:.0%}, counts {summary['counts']}, wall {wall:.0f} s")
    return out


def evaluate(algo, state, tasks, num_tasks: int) -> dict:
    ev = jmeta.evaluate(algo, state, tasks.test, jax.random.key(123), num_tasks=num_tasks)
    return {"mean": [float(x) for x in ev.mean], "sem": [float(x) for x in ev.sem]}


def sharding_timing(quick: bool, log) -> dict:
    """One MAML-RL meta-iteration on 1 and 4 host devices, timed in a child process."""
    code = f"""
import json, time, jax
import jmeta
from jmeta import sharding
from jmeta.algorithms import maml_rl
env, tasks = jmeta.make("point-nav")
config = maml_rl.Config(**{(QUICK if quick else FULL)!r})
out = {{}}
for name, mesh in (("single", None), ("sharded", sharding.task_mesh(4))):
    algo = maml_rl.make(config, env, tasks, mesh=mesh)
    state = algo.init(jax.random.key(0))
    if mesh is not None:
        state = sharding.replicate(state, mesh)
    update = jax.jit(algo.update)
    t0 = time.perf_counter()
    state, m = update(state); jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range({1 if quick else 5}):
        t0 = time.perf_counter()
        state, m = update(state); jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    out[name] = {{"sec_per_iter": sorted(times)[len(times) // 2], "times": times,
                 "first_call_s": compile_s, "return_post": float(m["return_post"])}}
print(json.dumps(out))
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"sharding: {out['single']['sec_per_iter']:.2f} s/iter on 1 device, "
        f"{out['sharded']['sec_per_iter']:.2f} s/iter on 4 host devices")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/distributed.json")
    ap.add_argument("--samplers", default=None, help="comma-separated counts (default 1,2,4)")
    ap.add_argument("--iterations", type=int, default=None, help="default 100")
    ap.add_argument("--test-tasks", type=_common.positive_int, default=None, help="default 40")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--parity-seeds", type=int, default=None,
                    help="in-process runs (seeds SEED, SEED+1, ...) for the parity (default 3)")
    ap.add_argument("--work-dir", default=None, help="default: a temporary directory")
    args = ap.parse_args(argv)
    q = args.quick
    counts = [int(x) for x in (args.samplers or ("1" if q else "1,2,4")).split(",")]
    iterations = args.iterations or (2 if q else 100)
    test_tasks = args.test_tasks or (4 if q else 40)
    config = QUICK if q else FULL
    args.parity_seeds = args.parity_seeds or (1 if q else 3)
    tasks_per_batch = 2 if q else 5
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="jmeta-bench-distributed-"))
    runs = {}
    for n in counts:
        runs[n] = distributed_run(work / f"samplers{n}", n, config, iterations, tasks_per_batch,
                                  args.seed, log)

    # learning parity: the in-process Runner on the same spec with --parity-seeds seeds (their
    # spread is the seed-to-seed noise), against the distributed runs (one per sampler count);
    # every final state meta-tested alike on the same test tasks and keys
    env, tasks = jmeta.make("point-nav")
    inproc = []
    for i in range(args.parity_seeds):
        spec = RunSpec("maml-rl", "point-nav", algo_config=config, seed=args.seed + i)
        t0 = time.perf_counter()
        runner = Runner(spec, work / f"inprocess{i}", chunk_size=iterations, progress=False,
                        tensorboard=False)
        state = runner.run(iterations)
        inproc.append({"seed": args.seed + i, "wall_s": time.perf_counter() - t0,
                       "eval": evaluate(runner.algo, state, tasks, test_tasks),
                       "return_post": [r["metrics"]["return_post"] for r in
                                       _lines(work / f"inprocess{i}" / "metrics.jsonl")]})
    dist_evals = {}
    for n in counts:
        _, _, dtasks, dalgo, dstate = load(runs[n]["run_dir"])
        dist_evals[n] = evaluate(dalgo, dstate, dtasks, test_tasks)
    parity = {
        name: {f"step{k}": {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))
                            if len(v) > 1 else None, "values": v}
               for k in (0, 1)
               for v in [[e["mean"][k] for e in evals]]}
        for name, evals in (("inprocess", [r["eval"] for r in inproc]),
                            ("distributed", list(dist_evals.values())))}
    for name, p in parity.items():
        log(f"{name}: return before/after 1 step on {test_tasks} test tasks, mean over "
            f"{len(p['step1']['values'])} run(s): {p['step0']['mean']:.2f} -> "
            f"{p['step1']['mean']:.2f} (runs {np.round(p['step1']['values'], 2).tolist()})")
    shard = sharding_timing(q, log)

    headline = {f"batches_per_s_{n}_sampler{'s' if n > 1 else ''}": runs[n]["batches_per_s"]
                for n in counts}
    headline.update({f"used_batches_per_s_{n}_sampler{'s' if n > 1 else ''}":
                     runs[n]["used_batches_per_s"] for n in counts})
    headline.update({f"mb_per_s_{n}_sampler{'s' if n > 1 else ''}": runs[n]["mb_per_s"]
                     for n in counts})
    headline.update({f"trainer_idle_fraction_{n}_sampler{'s' if n > 1 else ''}":
                     runs[n]["idle_fraction"] for n in counts})
    headline.update({
        "inprocess_return_step0": parity["inprocess"]["step0"]["mean"],
        "inprocess_return_step1": parity["inprocess"]["step1"]["mean"],
        "distributed_return_step0": parity["distributed"]["step0"]["mean"],
        "distributed_return_step1": parity["distributed"]["step1"]["mean"],
        "single_device_sec_per_iter": shard["single"]["sec_per_iter"],
        "sharded_4_devices_sec_per_iter": shard["sharded"]["sec_per_iter"],
    })
    cfg = {"env": "point-nav", "algo": "maml-rl", "maml": {k: list(v) if isinstance(v, tuple)
                                                           else v for k, v in config.items()},
           "iterations": iterations, "tasks_per_batch": tasks_per_batch, "max_lag": 0,
           "samplers": counts, "test_tasks": test_tasks, "seed": args.seed, "quick": q,
           "parity_seeds": args.parity_seeds, "processes": "all on this machine"}
    _common.write_json(args.out, headline, cfg, runs={str(n): r for n, r in runs.items()},
                       inprocess=inproc, parity=parity,
                       distributed_eval={str(n): e for n, e in dist_evals.items()},
                       sharding=shard)
    print(f"\n{'samplers':>8} {'batches/s':>10} {'used/s':>8} {'MB/s':>7} {'idle':>6}")
    for n in counts:
        r = runs[n]
        print(f"{n:>8} {r['batches_per_s']:>10.2f} {r['used_batches_per_s']:>8.2f} "
              f"{r['mb_per_s']:>7.2f} {r['idle_fraction']:>6.1%}")
    for name, p in parity.items():
        std = p["step1"]["std"]
        print(f"return after 1 step, {name}: {p['step1']['mean']:.2f}"
              + (f" (std over runs {std:.2f})" if std is not None else ""))
    return headline


if __name__ == "__main__":
    main()
