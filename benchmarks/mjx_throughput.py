"""MJX throughput: env steps/s and physics steps/s of every MJX task, with and without per-task
physics; and the speed/accuracy trade-off of capped constraint-solver iterations.

Throughput. Each measurement is one jitted ``jmeta.rollout.rollout_batch`` of ``batch`` parallel
rollouts (one task each) of T env steps under uniform random actions, with automatic resets, timed
as the median of several calls after compilation. ``physics`` on: every task has its own friction
U[0.5, 0.9], per-body mass and inertia ×U[0.8, 1.2] and joint damping ×U[0.8, 1.2], written into
the model with ``tree_replace`` inside ``step``; off: the MJCF's physics, the model untouched.
Physics steps/s = env steps/s × frame skip. Compile time is ``lower().compile()`` wall time; peak
memory is XLA's buffer assignment for the compiled computation (arguments + outputs + temporaries,
``compiled.memory_analysis()``, where XLA's CPU backend reports it: it gave zeros for these
programs with jax 0.10.2, so each row also records the process's peak resident memory so far,
``getrusage``, an upper bound that only grows across rows). As in ``env_throughput``, every core is a host device and the
batch is sharded over them (``devices`` column); the headline configuration is also run on one.

Solver trade-off (halfcheetah-vel). For each solver setting, the one-env-step error against
MuJoCo C (``mj_step``, float64, the MJCF's own solver settings) from the same states: 256 states
along C rollouts under random actions, each advanced by one env step (5 physics steps) by both;
error = ``|Δqvel_mjx − Δqvel_C| / |Δqvel_C|`` (median over states), and the forward-velocity error
in m/s. The setting's throughput is measured at batch 256 with per-task physics.

    python benchmarks/mjx_throughput.py [--quick] [--out PATH.json]

Headline: ``halfcheetah_vel_env_steps_per_s`` (best batch, per-task physics on, default solver
settings; issue target ≥ 15 k/s at batch ≥ 256 on 2 CPU cores, ≥ 1 M/s on one H100).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _host_devices  # noqa: E402,F401  (one host device per core; before JAX starts)

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import _common  # noqa: E402

import jmeta  # noqa: E402
from jmeta.envs.mjx.config import MJXConfig  # noqa: E402
from jmeta.rollout import rollout_batch  # noqa: E402

PHYSICS = {"friction": (0.5, 0.9), "mass_scale": (0.8, 1.2), "damping_scale": (0.8, 1.2)}
SOLVER_SETTINGS = {  # name -> (solver, iterations, ls_iterations); None keeps the MJCF's
    "mjcf": (None, None, None),
    "newton-1-4": ("newton", 1, 4),
    "newton-2-8": ("newton", 2, 8),
    "cg-1-4": ("cg", 1, 4),
}
DEFAULT_SOLVER = "newton-1-4"  # jmeta's MJXConfig default


def mjx_env_names() -> list[str]:
    return [n for n in jmeta.envs.names() if issubclass(jmeta.envs.config_class(n), MJXConfig)]


def make(name: str, physics: bool, solver: str = DEFAULT_SOLVER):
    s, it, ls = SOLVER_SETTINGS[solver]
    overrides = dict(solver=s, iterations=it, ls_iterations=ls)
    if physics:
        overrides.update(PHYSICS)
    return jmeta.make(name, **overrides)


def measure(name: str, batch: int, physics: bool, num_steps: int, repeats: int, devices: int,
            solver: str = DEFAULT_SOLVER) -> dict:
    env, tasks = make(name, physics, solver)
    space = env.action_space()

    def act(params, carry, obs, key):
        return carry, space.sample(key), {}

    env_params = tasks.sample_batch(jax.random.key(1), batch)
    if devices > 1:
        mesh = Mesh(jax.devices()[:devices], ("tasks",))
        env_params = jax.device_put(env_params, NamedSharding(mesh, PartitionSpec("tasks")))

    def run(env_params, key):
        _, traj = rollout_batch(env, act, None, env_params, key, num_steps, num_episodes=1,
                                auto_reset=True)
        return jnp.sum(traj.reward)

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(env_params, jax.random.key(2)).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = None if mem is None else int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                        + mem.temp_size_in_bytes)
    peak = peak or None  # zeros: not reported
    keys = iter(jax.random.split(jax.random.key(3), repeats + 1))
    jax.block_until_ready(compiled(env_params, next(keys)))
    median_s, _ = _common.time_call(lambda: compiled(env_params, next(keys)), repeats)
    sps = batch * num_steps / median_s
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"env": name, "batch": batch, "physics": physics, "solver": solver,
            "devices": devices, "num_steps": num_steps, "env_steps_per_s": sps,
            "physics_steps_per_s": sps * env.frame_skip, "median_s": median_s,
            "compile_s": compile_s, "peak_bytes": peak, "process_peak_rss_bytes": rss_peak}


def solver_accuracy(num_states: int = 256, rollout_len: int = 32) -> list[dict]:
    """One-env-step error of each solver setting against MuJoCo C (see module docstring)."""
    import mujoco
    from mujoco import mjx

    ref_env, _ = jmeta.make("halfcheetah-vel", solver=None, iterations=None, ls_iterations=None)
    m = ref_env.mj_model
    fs = ref_env.frame_skip
    rng = np.random.default_rng(0)
    starts, ctrls, deltas = [], [], []
    for _ in range(num_states // rollout_len):
        d = mujoco.MjData(m)
        d.qpos[:] = m.qpos0 + rng.uniform(-0.1, 0.1, m.nq)
        d.qvel[:] = 0.1 * rng.standard_normal(m.nv)
        for _ in range(rollout_len):
            u = rng.uniform(-1, 1, m.nu)
            starts.append((d.qpos.copy(), d.qvel.copy(), d.qacc_warmstart.copy()))
            v0 = d.qvel.copy()
            d.ctrl[:] = u
            for _ in range(fs):
                mujoco.mj_step(m, d)
            ctrls.append(u)
            deltas.append(d.qvel - v0)
    qpos, qvel, warm = (jnp.asarray(np.stack(x), jnp.float32) for x in zip(*starts))
    ctrl = jnp.asarray(np.stack(ctrls), jnp.float32)
    dv_c = np.stack(deltas)
    out = []
    for name in SOLVER_SETTINGS:
        env, _ = make("halfcheetah-vel", False, name)
        model = env.model

        def one(qp, qv, w, u):
            data = mjx.make_data(model).replace(qpos=qp, qvel=qv, qacc_warmstart=w, ctrl=u)
            data = jax.lax.fori_loop(0, fs, lambda _, dd: mjx.step(model, dd), data)
            return data.qvel - qv

        dv = np.asarray(jax.jit(jax.vmap(one))(qpos, qvel, warm, ctrl), np.float64)
        rel = np.linalg.norm(dv - dv_c, axis=1) / np.maximum(np.linalg.norm(dv_c, axis=1), 1e-9)
        out.append({"solver": name, "settings": SOLVER_SETTINGS[name],
                    "median_rel_dqvel_error": float(np.median(rel)),
                    "p90_rel_dqvel_error": float(np.quantile(rel, 0.9)),
                    "median_forward_velocity_error": float(np.median(np.abs(dv[:, 0] - dv_c[:, 0]))),
                    "num_states": len(rel)})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small configuration (smoke run)")
    ap.add_argument("--out", default="benchmarks/results/mjx_throughput.json")
    ap.add_argument("--steps", type=int, default=None, help="rollout length T (default 50)")
    ap.add_argument("--envs", default=None, help="comma-separated MJX task names (default all)")
    ap.add_argument("--batches", default=None,
                    help="comma-separated halfcheetah-vel batch sizes (default 1,16,64,256,1024)")
    ap.add_argument("--skip-accuracy", action="store_true", help="skip the solver trade-off")
    args = ap.parse_args(argv)

    on_gpu = jax.devices()[0].platform == "gpu"
    num_devices = len(jax.devices())
    num_steps = args.steps or (10 if args.quick else 50)
    repeats = 2 if args.quick else 5
    names = args.envs.split(",") if args.envs else (
        ["halfcheetah-vel"] if args.quick else mjx_env_names())
    if args.quick:
        cheetah_batches, other_batches = [16], [16]
    else:
        cheetah_batches = [1, 16, 64, 256, 1024] + ([4096, 16384] if on_gpu else [])
        other_batches = [256] + ([4096] if on_gpu else [])
    if args.batches:
        cheetah_batches = [int(b) for b in args.batches.split(",")]
    rows = []

    def add(row):
        rows.append(row)
        # Written after every row, so a run stopped part-way keeps the rows it measured.
        _common.write_json(args.out, {}, {"partial": True}, rows=rows)
        print(f"{row['env']:16s} batch {row['batch']:6d} physics {str(row['physics']):5s} "
              f"solver {row['solver']:10s} devices {row['devices']}: "
              f"{row['env_steps_per_s']:10.0f} env steps/s  {row['physics_steps_per_s']:10.0f} "
              f"physics steps/s  (compile {row['compile_s']:.1f} s, peak "
              f"{(row['peak_bytes'] or 0) / 2**20:.0f} MiB)", flush=True)

    for name in names:
        batches = cheetah_batches if name == "halfcheetah-vel" else other_batches
        for batch in batches:
            # --quick measures per-task physics only: each row is an MJX compile (~40 s on one
            # core), and the nominal path is covered by tests/test_mjx.py.
            for physics in (True,) if args.quick else (True, False):
                # --quick stays on one device: the test suite runs it, on whatever cores it has.
                devs = num_devices if batch % num_devices == 0 and not args.quick else 1
                add(measure(name, batch, physics, num_steps, repeats, devs))
            if name == "halfcheetah-vel" and batch >= 256 and num_devices > 1 and not args.quick:
                add(measure(name, batch, True, num_steps, repeats, 1))

    accuracy = []
    if not args.quick and not args.skip_accuracy and "halfcheetah-vel" in names:
        accuracy = solver_accuracy()
        for acc in accuracy:
            if acc["solver"] != DEFAULT_SOLVER:
                row = measure("halfcheetah-vel", 256, True, num_steps, repeats, num_devices,
                              acc["solver"])
                add(row)
            acc["env_steps_per_s_batch256"] = next(
                r["env_steps_per_s"] for r in rows if r["env"] == "halfcheetah-vel"
                and r["batch"] == 256 and r["physics"] and r["solver"] == acc["solver"]
                and r["devices"] == num_devices)

    cheetah = [r for r in rows if r["env"] == "halfcheetah-vel" and r["physics"]
               and r["solver"] == DEFAULT_SOLVER]
    headline = {}
    if cheetah:
        headline["halfcheetah_vel_env_steps_per_s"] = max(r["env_steps_per_s"] for r in cheetah)
        headline["halfcheetah_vel_physics_steps_per_s"] = max(
            r["physics_steps_per_s"] for r in cheetah)
    for name in names:
        for physics in (True, False):
            sel = [r for r in rows if r["env"] == name and r["physics"] == physics
                   and r["solver"] == DEFAULT_SOLVER]
            if not sel:
                continue
            key = f"{name.replace('-', '_')}_{'physics' if physics else 'nominal'}_env_steps_per_s"
            headline[key] = max(r["env_steps_per_s"] for r in sel)
    config = {"num_steps": num_steps, "repeats": repeats, "quick": args.quick,
              "physics_ranges": PHYSICS, "solver_settings": SOLVER_SETTINGS,
              "default_solver": DEFAULT_SOLVER, "policy": "uniform random actions",
              "auto_reset": True, "host_devices": num_devices}
    _common.write_json(args.out, headline, config, rows=rows, solver_accuracy=accuracy)

    print(f"\n{'env':16s} {'batch':>6s} {'physics':>7s} {'solver':>10s} {'dev':>3s} "
          f"{'env st/s':>10s} {'phys st/s':>10s} {'compile':>7s} {'MiB':>6s}")
    for r in rows:
        print(f"{r['env']:16s} {r['batch']:6d} {str(r['physics']):>7s} {r['solver']:>10s} "
              f"{r['devices']:3d} {r['env_steps_per_s']:10.0f} {r['physics_steps_per_s']:10.0f} "
              f"{r['compile_s']:7.1f} {(r['peak_bytes'] or 0) / 2**20:6.0f}")
    if accuracy:
        print(f"\n{'solver':10s} {'settings':>20s} {'med rel err':>11s} {'p90':>8s} "
              f"{'|dv_x| m/s':>10s} {'env st/s b256':>13s}")
        for a in accuracy:
            print(f"{a['solver']:10s} {str(a['settings']):>20s} "
                  f"{a['median_rel_dqvel_error']:11.4f} {a['p90_rel_dqvel_error']:8.4f} "
                  f"{a['median_forward_velocity_error']:10.4f} "
                  f"{a['env_steps_per_s_batch256']:13.0f}")
    if "halfcheetah_vel_env_steps_per_s" in headline:
        print(f"\nhalfcheetah_vel_env_steps_per_s (per-task physics, best batch): "
              f"{headline['halfcheetah_vel_env_steps_per_s']:.0f} (target >= 15000 on 2 CPU cores)")
    return headline


if __name__ == "__main__":
    main()
