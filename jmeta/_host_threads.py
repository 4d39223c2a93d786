"""The size of XLA:CPU's thread pool, set before JAX starts its CPU backend.

XLA:CPU runs a program's work on one pool of threads, sized by jaxlib from the environment
variable ``NPROC`` when it is set and otherwise from the CPUs the process may run on. On a small
machine that pool can be too small for the programs jmeta compiles, and the program then
*deadlocks*: every thread parked in a futex, 0 % CPU, ``block_until_ready`` never returning. On
the 2-core machine of benchmarks/RESULTS.md (jax 0.10.2; the session-11 subsection of the
MAML-TRPO speed section):

* a MAML-RL ``sample`` of halfcheetah-vel sharded over 2 host devices hung with a pool of 1 or 2
  threads and ran with 3, 4 or 8;
* one vmapped MJX evaluation of 80 warehouse tasks on *one* device hung with 2 threads, was still
  running 120 s in with 3 or 4 (then stopped), and ran to the end with 8.

The pool needs at least one thread more than there are host devices, and some headroom beyond
that, so jmeta asks for ``max(CPUs, host devices + 2, 4)`` threads (:func:`threads_for`).
The extra threads are idle when there is no work for them (one device, halfcheetah-vel at batch
256: 10.3 k env steps/s with the default 2 threads, 10.2 k with 4).

:func:`ensure` runs when ``jmeta`` is imported, and again from
:func:`jmeta.sharding.use_host_devices`; it sets ``NPROC`` only if the user has not, and only
matters if JAX has not started its CPU backend yet (jaxlib reads ``NPROC`` then): if it has, and
the pool it made is smaller than jmeta's size, ``import jmeta`` warns (``RuntimeWarning``). It also sets
``JMETA_NPROC`` to the same value, so a child process (which inherits both) recomputes the size
for its own device count instead of taking jmeta's value for the user's. On a GPU or TPU the pool
only runs host-side work; the setting is harmless there.
"""

from __future__ import annotations

import os
import re
import warnings

ENV = "NPROC"
MARK = "JMETA_NPROC"  # the value jmeta set, so that child processes can tell it from a user's


def schedulable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), as jaxlib counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def requested_host_devices() -> int:
    """Host devices asked for in the environment (``XLA_FLAGS``'s
    ``--xla_force_host_platform_device_count`` or ``JAX_NUM_CPU_DEVICES``), else 1."""
    found = re.findall(r"--xla_force_host_platform_device_count=(\d+)",
                       os.environ.get("XLA_FLAGS", ""))
    counts = [int(found[-1])] if found else []
    if os.environ.get("JAX_NUM_CPU_DEVICES", "").strip().isdigit():
        counts.append(int(os.environ["JAX_NUM_CPU_DEVICES"]))
    return max(counts + [1])


def backend_started() -> bool:
    """Whether JAX has started its backends (then ``NPROC`` comes too late). Uses jax's private
    ``xla_bridge.backends_are_initialized``; where that has moved, ``False`` (no warning)."""
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def threads_for(devices: int) -> int:
    """The pool size jmeta asks for with ``devices`` host devices (see the module docstring)."""
    return max(schedulable_cpus(), devices + 2, 4)


def ensure(devices: int | None = None, *, check_user_value: bool = False) -> int:
    """Sets ``NPROC`` for ``devices`` host devices (default: what the environment asks for),
    unless the user set it; returns the value in effect.

    Args:
      check_user_value: raise if the user's own ``NPROC`` is not above ``devices``
        (:func:`jmeta.sharding.use_host_devices` checks; ``import jmeta`` does not, as ``NPROC`` is
        also a common build-tool variable).

    Raises:
      ValueError: ``check_user_value`` and the user's ``NPROC`` is not an int above ``devices``:
        with that pool a program sharded over the devices can deadlock.
    """
    devices = requested_host_devices() if devices is None else devices
    set_by_jmeta = ENV in os.environ and os.environ.get(MARK) == os.environ[ENV]
    user_value = None if set_by_jmeta else os.environ.get(ENV)
    if user_value is not None:
        if not check_user_value:
            return int(user_value) if user_value.strip().isdigit() else 0
        try:
            threads = int(user_value)
        except ValueError:
            raise ValueError(f"{ENV}={user_value!r}: expected a positive int (the size of "
                             f"XLA:CPU's thread pool)") from None
        if threads <= devices:
            raise ValueError(
                f"{ENV}={threads} gives XLA:CPU {threads} thread(s) for {devices} host device(s): "
                f"programs over them can deadlock (0 % CPU, never returning); unset {ENV} or set "
                f"it to at least {threads_for(devices)}")
        return threads
    threads = threads_for(devices)
    if set_by_jmeta and int(os.environ[ENV]) >= threads:
        return int(os.environ[ENV])
    cpus = schedulable_cpus()
    if not set_by_jmeta and cpus < threads and backend_started():
        warnings.warn(
            f"JAX started its CPU backend before jmeta was imported, so XLA:CPU's thread pool has "
            f"{cpus} thread(s), where jmeta would give it {threads}: large MJX "
            f"programs can deadlock with that pool (0 % CPU, never returning). Import jmeta "
            f"before creating arrays, or set {ENV}={threads} before starting Python "
            f"(jmeta/_host_threads.py).", RuntimeWarning, stacklevel=3)
    os.environ[ENV] = os.environ[MARK] = str(threads)
    return threads
