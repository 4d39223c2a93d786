"""One XLA host device per core for the benchmarks that shard over the CPU.

Imported for its effect, before ``import jax`` (the device count is read when JAX starts): unless
``XLA_FLAGS`` already forces a count, it asks for one host CPU device per core this process may
run on (``os.sched_getaffinity``: under ``taskset -c 0`` that is one). Has no JAX import of its
own, so it can run first.
"""

import os

FLAG = "--xla_force_host_platform_device_count"

if FLAG not in os.environ.get("XLA_FLAGS", ""):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FLAG}={_cores or 1}".strip()
