"""Sharded runs in child processes, for tests/test_sharding.py (the device count is fixed when a
JAX process starts, so each layout gets its own process).

    python tests/_sharding_child.py single OUT.json WORK_DIR
        (with XLA_FLAGS=--xla_force_host_platform_device_count=4) one process, 4 host devices:
        MAML-RL through the Runner on 1 and 4 devices (run, resume, a 1-device run resumed on
        4), one RL² meta-iteration on 1 and 4 devices, the per-task layout, trace counts, the
        errors of a mesh that does not fit.
    python tests/_sharding_child.py multihost OUT.json
        one of 2 processes with 2 host devices each (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
        JAX_PROCESS_ID set by the parent): one MAML-RL meta-iteration on the 4-device global mesh.

Both write JSON: flattened parameters and scalar metrics as lists of floats.
"""

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

# The same tiny configurations as tests/test_sharding.py compares across processes. MAML-RL's
# outer step is PPO here (a second-order MAML gradient through the VPG inner step, then clipped
# PPO epochs); the TRPO step is checked on its own with a damped Fisher (see test_sharding.py).
MAML_ENV = {"horizon": 8}
MAML_CONFIG = {"num_tasks": 4, "num_episodes": 2, "hidden_sizes": [8], "eval_episodes": 2,
               "eval_steps": 1, "outer": "ppo"}
TRPO_DAMPING = (0.1,)  # bounds CG's conditioning (see tests/test_sharding.py)
RL2_ENV = {"num_arms": 3}
RL2_CONFIG = {"num_tasks": 4, "trial_episodes": 3, "hidden_size": 8, "cell": "gru",
              "num_minibatches": 2, "num_epochs": 1}


def flat(tree) -> list[float]:
    leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)]
    return np.concatenate(leaves).tolist()


def scalars(metrics) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if k.startswith("task_") or isinstance(v, dict):
            continue
        x = np.asarray(v)
        if x.size == 1:
            out[k] = float(x.reshape(()))
    return out


def error_of(fn) -> str:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return "no error"


def _collectives(hlo: str) -> int:
    """How many cross-device collectives a compiled program's HLO text holds."""
    return sum(hlo.count(op) for op in (" all-reduce(", " all-gather(", " all-to-all(",
                                         " collective-permute(", " all-reduce-start("))


def single(out_path: str, work: str):
    from jmeta import sharding
    from jmeta.algorithms import maml_rl, rl2
    from jmeta.training import Runner, RunSpec, runner as runner_mod, spec as spec_mod

    assert len(jax.devices()) == 4, jax.devices()
    result: dict = {"devices": len(jax.devices())}

    # --- MAML-RL through the Runner ----------------------------------------------------------
    spec = RunSpec("maml-rl", "point-nav", env_kwargs=MAML_ENV, algo_config=MAML_CONFIG)

    def runner(name, devices):
        return Runner(spec, os.path.join(work, name), chunk_size=1, devices=devices,
                      progress=False, tensorboard=False)

    maml = {}
    maml["one_1"] = flat(runner("a", None).run(1).params)      # a: 1 device, then resumed on 4
    maml["four_1"] = flat(runner("b", 4).run(1).params)        # b: 4 devices, resumed on 4
    maml["four_2"] = flat(runner("b", 4).run(2).params)
    maml["one_to_four_2"] = flat(runner("a", 4).run(2).params)
    maml["one_2"] = flat(runner("c", 1).run(2).params)         # c: 1 device throughout
    for name in "abc":
        lines = [json.loads(x) for x in open(os.path.join(work, name, "metrics.jsonl"))]
        maml[f"metrics_{name}"] = [scalars(line["metrics"]) for line in lines]
        events = [json.loads(x) for x in open(os.path.join(work, name, "events.jsonl"))]
        maml[f"events_{name}"] = [(e["event"], e.get("devices")) for e in events
                                  if e["event"] in ("start", "resume")]
    # compiled once per layout across both iterations, the resume and the new Runners
    maml["cache_size_1"] = runner_mod._built(spec, 1)[3]._cache_size()
    maml["cache_size_4"] = runner_mod._built(spec, 4)[3].jitted._cache_size()
    # the per-task layout: the task batch and its rollouts over the 4 devices
    env, tasks, algo4 = spec_mod.build(spec, mesh=sharding.task_mesh(4))
    state = algo4.init(jax.random.key(0))
    data = jax.jit(algo4.sample)(state.params, jax.random.key(1))
    maml["rollout_devices"] = sorted({len(x.sharding.device_set)
                                      for x in jax.tree.leaves(data.post)})
    maml["returns_spec"] = str(data.returns.sharding.spec)
    maml["returns_shard_shape"] = list(data.returns.sharding.shard_shape(data.returns.shape))
    result["maml"] = maml

    # --- MAML-TRPO: one meta-iteration, 1 vs 4 devices, two Fisher dampings -----------------
    env, tasks = __import__("jmeta").make("point-nav", **MAML_ENV)
    trpo = {}
    for damping in TRPO_DAMPING:
        config = maml_rl.Config(**{**MAML_CONFIG, "hidden_sizes": (8,), "outer": "trpo",
                                   "cg_damping": damping})
        for name, mesh in (("one", None), ("four", sharding.task_mesh(4))):
            algo = maml_rl.make(config, env, tasks, mesh=mesh)
            s1, m1 = jax.jit(algo.update)(algo.init(jax.random.key(0)))
            trpo[f"{name}_{damping}"] = {"params": flat(s1.params), "metrics": scalars(m1)}
    result["trpo"] = trpo

    # --- RL²: one meta-iteration, 1 vs 4 devices ------------------------------------------
    env, tasks = __import__("jmeta").make("bandit", **RL2_ENV)
    config = rl2.Config(**RL2_CONFIG)
    out = {}
    for name, mesh in (("one", None), ("four", sharding.task_mesh(4))):
        algo = rl2.make(config, env, tasks, mesh=mesh)
        traces = []

        def update(s, algo=algo, traces=traces):
            traces.append(1)  # only while tracing
            return algo.update(s)

        step = jax.jit(update)
        s0 = algo.init(jax.random.key(0))
        if mesh is not None:
            s0 = sharding.replicate(s0, mesh)
        s1, m1 = step(s0)
        s2, _ = step(s1)
        out[name] = {"params": flat(s1.params), "metrics": scalars(m1), "traces": len(traces),
                     "cache_size": step._cache_size(),
                     "task_returns_devices": len(m1["task_returns"].sharding.device_set),
                     "task_returns_spec": str(getattr(m1["task_returns"].sharding, "spec",
                                                      None)),
                     "params_replicated": bool(all(x.sharding.is_fully_replicated
                                                   for x in jax.tree.leaves(s2.params)))}
    result["rl2"] = out

    # --- task_map: a per-task while_loop runs on each device without collectives -----------------
    from jmeta.algorithms.base import shard_map_compiles, task_map, task_constraint

    def per_task(scale, x):  # a data-dependent trip count per task, as in MJX's solver
        return jax.lax.while_loop(lambda c: c[1] < x, lambda c: (c[0] + scale, c[1] + 1.0),
                                  (0.0, 0.0))[0]

    xs = jax.numpy.arange(8.0)
    mesh4 = sharding.task_mesh(4)
    mapped = jax.jit(task_map(mesh4, per_task, (None, 0)))
    constrained = jax.jit(lambda s, x: task_constraint(mesh4)(
        jax.vmap(per_task, in_axes=(None, 0))(s, task_constraint(mesh4)(x))))
    odd = jax.jit(task_map(mesh4, per_task, (None, 0)))(2.0, jax.numpy.arange(6.0))
    result["task_map"] = {
        "values": mapped(2.0, xs).tolist(),
        "vmap_values": jax.vmap(per_task, in_axes=(None, 0))(2.0, xs).tolist(),
        "spec": list(mapped(2.0, xs).sharding.spec),
        "collectives": _collectives(mapped.lower(2.0, xs).compile().as_text()),
        "constraint_collectives": _collectives(constrained.lower(2.0, xs).compile().as_text()),
        "not_divisible_values": odd.tolist(),
        "shard_map": shard_map_compiles(mesh4),
        "bad_in_axes": error_of(lambda: task_map(mesh4, per_task, (None, 1))),
    }

    # --- a mesh that does not fit --------------------------------------------------------------
    maml_config = maml_rl.Config(**{**MAML_CONFIG, "hidden_sizes": (8,), "num_tasks": 6})
    env, tasks = __import__("jmeta").make("point-nav", **MAML_ENV)
    other = jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    result["errors"] = {
        "not_divisible": error_of(lambda: maml_rl.make(maml_config, env, tasks,
                                                       mesh=sharding.task_mesh(4))),
        "no_tasks_axis": error_of(lambda: maml_rl.make(maml_config, env, tasks, mesh=other)),
        "too_many": error_of(lambda: sharding.task_mesh(8)),
        "runner_not_divisible": error_of(lambda: Runner(
            RunSpec("rl2", "bandit", env_kwargs=RL2_ENV,
                    algo_config={**RL2_CONFIG, "num_tasks": 6, "num_minibatches": 1}),
            os.path.join(work, "d"), devices=4, progress=False)),
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


def multihost(out_path: str):
    from jmeta import sharding

    sharding.use_host_devices(2)
    sharding.initialize_multihost(initialization_timeout=60)
    import jmeta
    from jmeta.algorithms import maml_rl

    env, tasks = jmeta.make("point-nav", **MAML_ENV)
    config = maml_rl.Config(**{**MAML_CONFIG, "hidden_sizes": tuple(MAML_CONFIG["hidden_sizes"])})
    mesh = sharding.task_mesh()
    algo = maml_rl.make(config, env, tasks, mesh=mesh)
    state = sharding.replicate(algo.init(jax.random.key(0)), mesh)
    state, metrics = sharding.jit_train(algo.train, mesh)(state, 1)
    metrics = sharding.to_host(metrics)
    result = {"process_index": jax.process_index(), "process_count": jax.process_count(),
              "global_devices": len(jax.devices()), "local_devices": len(jax.local_devices()),
              "params": flat(sharding.to_host(state.params)),
              "metrics": scalars(metrics)}
    with open(out_path, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"single": single, "multihost": multihost}[mode](*rest)
