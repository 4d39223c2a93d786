"""XLA:CPU's thread pool (jmeta/_host_threads.py): how jmeta sizes it, that it leaves a user's
NPROC alone, and the deadlock it prevents (an MJX program sharded over 2 host devices)."""

import os
import subprocess
import sys
import textwrap

import pytest

from jmeta import _host_threads, sharding


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("NPROC", "JMETA_NPROC", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    # This process's backend is up: the sizing tests here are not about the too-late warning
    # (tested in child processes below).
    monkeypatch.setattr(_host_threads, "backend_started", lambda: False)
    return monkeypatch


def _run_child(code: str, host_devices: int | None = None,
               timeout: int = 120) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh Python with no NPROC of ours (and ``host_devices`` forced)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "JMETA_NPROC")}
    if host_devices is not None:
        env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                     f"--xla_force_host_platform_device_count={host_devices}"])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_requested_host_devices_reads_xla_flags_and_jax_env(clean_env):
    assert _host_threads.requested_host_devices() == 1
    clean_env.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                                  "--xla_force_host_platform_device_count=3 "
                                  "--xla_force_host_platform_device_count=6")
    assert _host_threads.requested_host_devices() == 6  # the last one wins, as in XLA
    clean_env.setenv("JAX_NUM_CPU_DEVICES", "8")
    assert _host_threads.requested_host_devices() == 8


def test_threads_for_leaves_two_spare_threads(clean_env):
    cpus = _host_threads.schedulable_cpus()
    assert _host_threads.threads_for(1) == max(cpus, 4)
    assert _host_threads.threads_for(2) == max(cpus, 4)
    assert _host_threads.threads_for(7) == max(cpus, 9)


def test_ensure_sets_nproc_and_marks_it(clean_env):
    clean_env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=5")
    n = _host_threads.ensure()
    assert n == max(_host_threads.schedulable_cpus(), 7)
    assert os.environ["NPROC"] == os.environ["JMETA_NPROC"] == str(n)
    # jmeta's own value (inherited by a child process) is recomputed for more devices ...
    assert _host_threads.ensure(9) == max(_host_threads.schedulable_cpus(), 11)
    # ... and never lowered
    assert _host_threads.ensure(1) == max(_host_threads.schedulable_cpus(), 11)


def test_a_users_nproc_is_left_alone(clean_env):
    clean_env.setenv("NPROC", "3")
    assert _host_threads.ensure(2) == 3
    assert os.environ["NPROC"] == "3" and "JMETA_NPROC" not in os.environ
    clean_env.setenv("NPROC", "many")  # e.g. a build tool's variable: import jmeta must not fail
    assert _host_threads.ensure() == 0


@pytest.mark.parametrize("value,devices,match", [
    ("2", 2, "NPROC=2 gives XLA:CPU 2 thread"),
    ("1", 4, "at least 6"),
    ("lots", 2, "expected a positive int"),
])
def test_a_users_too_small_nproc_is_an_error_for_host_devices(clean_env, value, devices, match):
    clean_env.setenv("NPROC", value)
    with pytest.raises(ValueError, match=match):
        _host_threads.ensure(devices, check_user_value=True)
    with pytest.raises(ValueError, match=match):
        sharding.use_host_devices(devices)


def test_import_jmeta_sizes_the_pool():
    proc = _run_child("import os, jmeta; print(os.environ['NPROC'], os.environ['JMETA_NPROC'])",
                      host_devices=3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.split()
    assert out == [str(max(_host_threads.schedulable_cpus(), 5))] * 2


def test_sharded_mjx_sample_on_two_host_devices_returns():
    """The deadlock this module prevents: this program never returned with a pool of 1 or 2
    threads (0 % CPU; benchmarks/RESULTS.md, session 11), on any number of cores."""
    proc = _run_child("""
        import jax, jmeta
        from jax.sharding import Mesh
        from jmeta.algorithms import maml_rl
        env, tasks = jmeta.make("halfcheetah-vel", horizon=5)
        cfg = maml_rl.Config(num_tasks=4, num_episodes=2, hidden_sizes=(8,))
        algo = maml_rl.make(cfg, env, tasks, mesh=Mesh(jax.devices()[:2], ("tasks",)))
        state = algo.init(jax.random.key(0))
        data = jax.jit(algo.sample)(state.params, jax.random.key(1))
        print(jax.block_until_ready(data.returns).shape, "done")
    """, host_devices=2, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("done")


def test_import_after_the_backend_started_warns_on_a_small_machine():
    # One CPU in the affinity mask: the pool JAX made (1 thread) is below jmeta's 4.
    proc = _run_child("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        import jax.numpy as jnp
        jnp.ones(2).block_until_ready()
        import jmeta
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RuntimeWarning: JAX started its CPU backend before jmeta was imported" in proc.stderr
    assert "NPROC=4" in proc.stderr


def test_import_before_the_backend_starts_does_not_warn():
    proc = _run_child("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        import jax.numpy as jnp, jmeta
        jnp.ones(2).block_until_ready()
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RuntimeWarning" not in proc.stderr
