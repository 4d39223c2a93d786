"""Task-batch sharding (jmeta.sharding): 4 forced host devices equal 1, and 2 processes x 2 devices
(jax.distributed on loopback) equal 1 process. The device count is fixed when JAX starts, so the
runs happen in child processes (tests/_sharding_child.py) and these tests compare their JSON."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jmeta import sharding

CHILD = Path(__file__).with_name("_sharding_child.py")
RTOL, ATOL = 1e-5, 1e-6


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", **extra)
    # Keep conftest's compile-time setting (the optimisation level) in the children.
    level = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if f.startswith("--xla_backend_optimization_level")]
    if level:
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *level]).strip()
    return env


def _close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _close_metrics(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        # loss_before is a mean of advantage-weighted ratios of 1, i.e. ~1e-8 of round-off
        _close(a[k], b[k], atol=1e-6 if k != "loss_before" else 1e-7)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process with 4 host devices: the Runner, TRPO and RL² on 1 and on 4 devices."""
    tmp = tmp_path_factory.mktemp("sharding")
    out = tmp / "out.json"
    proc = subprocess.run(
        [sys.executable, str(CHILD), "single", str(out), str(tmp / "work")],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_child_sees_four_devices(single):
    assert single["devices"] == 4


def test_maml_rl_runner_on_four_devices_equals_one(single):
    m = single["maml"]
    _close(m["four_1"], m["one_1"])
    _close(m["four_2"], m["one_2"], rtol=1e-4)  # two iterations: round-off compounds
    _close(m["one_to_four_2"], m["one_2"], rtol=1e-4)  # a 1-device run resumed on 4
    for name in "ab":
        for got, want in zip(single["maml"][f"metrics_{name}"], m["metrics_c"]):
            _close_metrics(got, want)
    assert m["events_a"] == [["start", 1], ["resume", 4]]
    assert m["events_b"] == [["start", 4], ["resume", 4]]


def test_task_map_runs_per_task_loops_without_collectives(single):
    """jmeta.algorithms.base.task_map: shard_map over the task axis equals vmap, lays the result
    along "tasks", and a per-task while_loop compiles with no collective, where the same vmap under
    a sharding constraint needs one per iteration of the loop's condition. (With jax >= 0.11 on
    CPU host devices task_map takes that constraint path: XLA:CPU crashes compiling shard-mapped
    MJX programs there, see ``base.shard_map_compiles``.)"""
    t = single["task_map"]
    assert t["values"] == t["vmap_values"] == [2.0 * i for i in range(8)]
    assert t["spec"] == ["tasks"]
    assert t["constraint_collectives"] >= 1, t
    assert t["shard_map"] == (tuple(jax.__version_info__[:2]) < (0, 11))  # CPU host devices
    if t["shard_map"]:
        assert t["collectives"] == 0
    else:
        assert t["collectives"] == t["constraint_collectives"]
    assert t["not_divisible_values"] == [2.0 * i for i in range(6)]  # 6 tasks on 4 devices
    assert t["bad_in_axes"] == "task_map: in_axes must each be 0 or None, got (None, 1)"


def test_no_recompilation_across_iterations_resumes_and_runners(single):
    assert single["maml"]["cache_size_1"] == 1
    assert single["maml"]["cache_size_4"] == 1
    for layout in ("one", "four"):
        assert single["rl2"][layout]["traces"] == 1
        assert single["rl2"][layout]["cache_size"] == 1


def test_per_task_arrays_are_laid_out_over_the_mesh(single):
    m = single["maml"]
    assert m["rollout_devices"] == [4]
    assert m["returns_spec"] == "P('tasks',)"
    assert m["returns_shard_shape"][0] == 1  # 4 tasks over 4 devices
    four = single["rl2"]["four"]
    assert four["task_returns_devices"] == 4 and four["task_returns_spec"] == "P('tasks',)"
    assert four["params_replicated"]


def test_trpo_meta_iteration_on_four_devices_equals_one(single):
    """With cg_damping=0.1. At the default 1e-5, CG on the nearly singular Fisher of this tiny
    problem amplifies the float32 reduction-order difference of the all-reduce: the parameters
    then differ by up to 3e-2 (measured) although each layout is deterministic."""
    trpo = single["trpo"]
    _close(trpo["four_0.1"]["params"], trpo["one_0.1"]["params"], rtol=1e-4, atol=1e-5)
    _close_metrics(trpo["four_0.1"]["metrics"], trpo["one_0.1"]["metrics"])


def test_rl2_meta_iteration_on_four_devices_equals_one(single):
    rl2 = single["rl2"]
    _close(rl2["four"]["params"], rl2["one"]["params"])
    _close_metrics(rl2["four"]["metrics"], rl2["one"]["metrics"])


def test_meshes_that_do_not_fit_are_clear_errors(single):
    e = single["errors"]
    assert e["not_divisible"] == "num_tasks: 6 is not divisible by the mesh's 'tasks' axis of size 4"
    assert e["runner_not_divisible"] == e["not_divisible"]
    assert e["no_tasks_axis"] == "mesh: needs an axis named 'tasks', got ('batch',)"
    assert e["too_many"].startswith("devices: asked for 8 but JAX has 4 cpu device(s)")
    assert "xla_force_host_platform_device_count=8" in e["too_many"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_equal_one_process(single, tmp_path):
    """jax.distributed on 127.0.0.1 (gloo collectives): 2 processes x 2 CPU devices form one
    4-device mesh; one MAML-RL meta-iteration equals the single-process run of `single`."""
    port = _free_port()
    procs = []
    for pid in range(2):
        env = _env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, str(CHILD), "multihost", str(tmp_path / f"p{pid}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(x[-2000:] for x in logs)
    results = [json.loads((tmp_path / f"p{pid}.json").read_text()) for pid in range(2)]
    for pid, r in enumerate(results):
        assert (r["process_index"], r["process_count"]) == (pid, 2)
        assert (r["global_devices"], r["local_devices"]) == (4, 2)
        _close(r["params"], single["maml"]["one_1"])
    assert results[0]["params"] == results[1]["params"]
    want = single["maml"]["metrics_c"][0]
    _close_metrics({k: results[0]["metrics"][k] for k in want}, want)


# --- in this process (one CPU device) --------------------------------------------------------
def test_task_map_without_a_mesh_is_vmap():
    from jmeta.algorithms.base import task_map
    got = task_map(None, lambda s, x: s * x, (None, 0))(2.0, jax.numpy.arange(3.0))
    assert got.tolist() == [0.0, 2.0, 4.0]
    with pytest.raises(ValueError, match=r"in_axes must each be 0 or None, got \(None, 1\)"):
        task_map(None, lambda s, x: s * x, (None, 1))


def test_task_mesh_in_one_device_process():
    mesh = sharding.task_mesh(1)
    assert mesh.axis_names == ("tasks",) and sharding.mesh_size(mesh) == 1
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    assert sharding.mesh_size(None) == 1
    assert sharding.task_mesh(jax.devices()[:1]).devices.tolist() == jax.devices()[:1]


@pytest.mark.parametrize("devices, message", [
    (0, "devices: expected an int >= 1, got 0"),
    ("4", "devices: expected None, an int >= 1 or a list of jax devices, got '4'"),
    ([], "devices: an empty list of devices"),
    ([1, 2], "devices: expected jax.Device objects, got int"),
])
def test_task_mesh_bad_inputs(devices, message):
    with pytest.raises(ValueError) as err:
        sharding.task_mesh(devices)
    assert str(err.value) == message


def test_task_mesh_asks_for_more_devices_than_exist():
    n = len(jax.devices()) + 1
    with pytest.raises(ValueError, match=f"xla_force_host_platform_device_count={n}"):
        sharding.task_mesh(n)


def test_use_host_devices_after_jax_started_is_an_error():
    jax.devices()  # the backend is up in this process
    sharding.use_host_devices(len(jax.devices("cpu")))  # the count it already has: fine
    with pytest.raises(ValueError, match="too late"):
        sharding.use_host_devices(len(jax.devices("cpu")) + 3)
    with pytest.raises(ValueError, match="expected an int >= 1"):
        sharding.use_host_devices(0)


def test_initialize_multihost_bad_environment(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES: expected an int, got 'two'"):
        sharding.initialize_multihost()


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "jmeta.cli", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_cli_devices_errors_are_one_line(tmp_path):
    proc = _cli("train", "maml-rl", "--env", "point-nav", "--logdir", str(tmp_path / "a"),
                "--iterations", "1", "--set", "num_tasks=6", "--devices", "4", "--no-progress")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("jmeta: error: num_tasks: 6 is not divisible by the mesh's "
                                   "'tasks' axis of size 4")
    proc = _cli("train", "maml", "--env", "sinusoid", "--logdir", str(tmp_path / "b"),
                "--iterations", "1", "--devices", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("jmeta: error: --devices: task-batch sharding is for maml-rl "
                                   "and rl2, not maml")
