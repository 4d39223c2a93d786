"""Task-batch sharding over a device mesh and several hosts (pure placement).

A meta-iteration's task batch, and everything computed per task (rollouts, adapted parameters,
per-task losses), is laid out along a mesh axis named ``"tasks"``; the parameters, optimiser state
and key are replicated, and XLA inserts the all-reduce of the meta-gradient. The algorithms take
``mesh=`` (``maml_rl.make``, ``rl2.make``; ``num_tasks`` must be divisible by the axis size) and
constrain their per-task arrays with :func:`task_constraint`; this module builds the meshes and
places the state. Layering: ``training/`` uses this module; ``algorithms/`` never imports it (the
low-level :data:`TASK_AXIS`, :func:`check_mesh`, :func:`task_constraint` live in
:mod:`jmeta.algorithms.base` and are re-exported here).

From the command line::

    jmeta train maml-rl --env point-nav --logdir runs/nav --iterations 500 --devices 4

On a machine whose accelerators are fewer than ``N`` this is an error (exit 2, one line); on a
CPU-only machine the CLI makes ``N`` host devices itself (``jax_num_cpu_devices``), which splits the
host's cores between them (:func:`use_host_devices`).

From Python, with the Runner (the device count is not part of a run's identity: a run started on
one device may be resumed on four, and the numbers agree within float32 round-off)::

    from jmeta.training import Runner, RunSpec
    Runner(RunSpec("maml-rl", "point-nav", algo_config={"num_tasks": 20}), "runs/nav",
           devices=4).run(500)

or by hand::

    mesh = jmeta.sharding.task_mesh(4)
    algo = maml_rl.make(config, env, tasks, mesh=mesh)
    train = jmeta.sharding.jit_train(algo.train, mesh)
    state, metrics = train(algo.init(jax.random.key(0)), num_iterations=10)

Several hosts (multi-controller JAX): every process runs the same program; call
:func:`initialize_multihost` first, before anything else touches JAX, then ``task_mesh()`` spans
the devices of all processes (``jax.devices()``) and the same code runs. The coordinator is
``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0, read by ``jax.distributed.initialize``);
jmeta adds ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, which jax itself does not read (it takes
them as arguments or detects them under SLURM, Open MPI, Kubernetes, Cloud TPU or mpi4py);
``JAX_LOCAL_DEVICE_IDS`` (comma-separated) restricts a process to some local GPUs. For example, two
processes of 2 CPU devices each on one machine::

    JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python train.py &
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python train.py

with ``train.py`` calling ``use_host_devices(2)`` and ``initialize_multihost()`` before building
``task_mesh()`` (4 devices). The state must be placed with :func:`replicate` (every process holds
the same values); metrics sharded over processes are fetched with :func:`to_host`. On CPU the
cross-process collectives are gloo (jax 0.10's default ``jax_cpu_collectives_implementation``).
The :class:`~jmeta.training.Runner` is single-process (it writes the run directory); it refuses to
run in a multi-process job, where the loop above is driven by hand.

What is tested (``tests/test_sharding.py``, on forced host CPU devices): one MAML-RL and one RL²
meta-iteration on 4 devices equal the single-device result (parameters and scalar metrics within
rtol 1e-5, atol 1e-6), the per-task arrays are laid out over the 4 devices, a second iteration
does not retrace, the Runner with ``devices=4`` runs, resumes, and resumes a 1-device run; and a
MAML-RL meta-iteration on 2 processes × 2 CPU devices (``jax.distributed`` on 127.0.0.1, gloo)
equals the single-process result.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jmeta import _host_threads
from jmeta.algorithms.base import TASK_AXIS, check_mesh, task_constraint

__all__ = [
    "TASK_AXIS",
    "check_mesh",
    "initialize_multihost",
    "jit_train",
    "mesh_size",
    "replicate",
    "replicated",
    "task_constraint",
    "task_mesh",
    "task_sharding",
    "to_host",
    "use_host_devices",
]

# Environment variables of a multi-host run (jax reads the first; jmeta the other two).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _host_devices_hint(n: int) -> str:
    return (f"on CPU, make {n} host devices before JAX starts: "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n}, or "
            f"jax.config.update('jax_num_cpu_devices', {n}) right after `import jax` "
            f"(jmeta.sharding.use_host_devices({n}))")


def task_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with the axis ``"tasks"`` (``AxisType.Auto``: XLA propagates the layout).

    Args:
      devices: ``None``: every device of the job (``jax.devices()``, all processes' in a
        multi-host run); an int ``N >= 1``: the first ``N`` of them; or the devices themselves.

    Returns:
      The ``jax.sharding.Mesh``; pass it as ``mesh=`` to ``maml_rl.make``/``rl2.make``.

    Raises:
      ValueError: ``N`` is not a positive int, more devices are asked for than exist (says how
        to make host devices on CPU), or an empty/duplicated device list.

    >>> mesh = task_mesh(1)
    >>> mesh.axis_names, mesh.shape["tasks"]
    (('tasks',), 1)
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = int(devices)
        if n < 1:
            raise ValueError(f"devices: expected an int >= 1, got {n}")
        if n > len(available):
            hint = f"; {_host_devices_hint(n)}" if available[0].platform == "cpu" else ""
            raise ValueError(f"devices: asked for {n} but JAX has {len(available)} "
                             f"{available[0].platform} device(s){hint}")
        chosen = available[:n]
    elif isinstance(devices, Sequence) and not isinstance(devices, str):
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices: an empty list of devices")
        bad = [d for d in chosen if not isinstance(d, jax.Device)]
        if bad:
            raise ValueError(f"devices: expected jax.Device objects, got {type(bad[0]).__name__}")
        if len(set(chosen)) != len(chosen):
            raise ValueError("devices: the list holds a device twice")
    else:
        raise ValueError(f"devices: expected None, an int >= 1 or a list of jax devices, got "
                         f"{devices!r}")
    return jax.make_mesh((len(chosen),), (TASK_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,), devices=chosen)


def mesh_size(mesh: Mesh | None) -> int:
    """The size of the ``"tasks"`` axis (1 for ``None``)."""
    if mesh is None:
        return 1
    check_mesh(mesh, 0)
    return int(mesh.shape[TASK_AXIS])


def task_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P("tasks"))``: the leading (task) axis over the mesh."""
    check_mesh(mesh, 0)
    return NamedSharding(mesh, PartitionSpec(TASK_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every array leaf replicated over ``mesh`` (``jax.device_put``).

    The state of a sharded run (params, optimiser state, key, iteration) is replicated; a leaf
    already placed so is returned as it is. In a multi-host run every process must pass the same
    values (the state from ``algo.init`` of the same key is).
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)

    def put(x):  # several processes: device_put takes host values (checked equal across them)
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(put, tree)


def jit_train(train: Callable[..., Any], mesh: Mesh | None = None) -> Callable[..., Any]:
    """``jax.jit(train, static_argnames="num_iterations")``, with the state and the outputs
    replicated over ``mesh`` (when given).

    The state argument is moved onto the mesh (a state restored from a checkpoint on one device
    is accepted), and the new state and the stacked metrics come back replicated, so the host
    reads them as usual, on one process or several.

    Args:
      train: an ``Algorithm.train`` built with the same ``mesh``.
      mesh: ``None`` for a plain single-device jit.
    """
    if mesh is None:
        return jax.jit(train, static_argnames="num_iterations")
    rep = replicated(mesh)
    jitted = jax.jit(train, static_argnums=1, in_shardings=(rep,), out_shardings=rep)

    def sharded_train(state, num_iterations: int):  # jit with in_shardings takes no kwargs
        # placed first, so a fresh state and a restored (single-device) one hit one cache entry
        return jitted(replicate(state, mesh), num_iterations)

    sharded_train.jitted = jitted  # for cache inspection (``jitted._cache_size()``)
    return sharded_train


def to_host(tree: Any) -> Any:
    """``tree``'s arrays as numpy arrays on this host, gathering the shards held by other
    processes (``multihost_utils.process_allgather``) where an array is not fully addressable.
    In a multi-host run every process must call it (it is a collective)."""
    from jax.experimental import multihost_utils

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)


def use_host_devices(n: int) -> None:
    """Makes the CPU backend have ``n`` devices (``jax.config.update('jax_num_cpu_devices', n)``).

    Must run before JAX initialises its backends (before the first array or ``jax.devices()``).
    Accelerators are unaffected: on a GPU machine ``jax.devices()`` are still the GPUs. The host's
    cores are shared by the ``n`` devices: on a machine with fewer cores than devices this tests
    sharded code without adding compute; with a device per core, one process uses every core
    (halfcheetah-vel rollouts at batch 256 on 2 cores: 10.0 k env steps/s on one device, 18.0 k
    on two; benchmarks/RESULTS.md).

    It also sizes XLA:CPU's thread pool for ``n`` devices (``NPROC``, unless you set it): with a
    pool of ``n`` threads or fewer, programs over the devices deadlock (:mod:`jmeta._host_threads`).

    Raises:
      ValueError: ``n`` is not a positive int; the backends are already initialised with a
        different number of CPU devices; or your ``NPROC`` is not above ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"devices: expected an int >= 1, got {n!r}")
    _host_threads.ensure(int(n), check_user_value=True)
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as err:
        have = len(jax.devices("cpu"))
        if have == n:
            return
        raise ValueError(f"devices: JAX already started with {have} CPU device(s), too late to "
                         f"make {n}; {_host_devices_hint(n)}") from err


def initialize_multihost(coordinator_address: str | None = None,
                         num_processes: int | None = None, process_id: int | None = None,
                         local_device_ids: int | Sequence[int] | None = None, *,
                         initialization_timeout: int = 300) -> None:
    """``jax.distributed.initialize``, reading the usual environment variables.

    Call it first thing in every process of a multi-host job, before anything touches JAX (and
    after :func:`use_host_devices`, if used). Afterwards ``jax.devices()`` (so
    :func:`task_mesh`) spans all processes and ``jax.process_index()`` tells them apart.

    Args:
      coordinator_address: ``host:port`` of process 0 (default ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: the number of processes (default ``$JAX_NUM_PROCESSES``).
      process_id: this process's index in ``[0, num_processes)`` (default ``$JAX_PROCESS_ID``).
      local_device_ids: this process's local GPUs (default ``$JAX_LOCAL_DEVICE_IDS``).
      initialization_timeout: seconds to wait for all processes to connect.

    Anything still unset after the environment is left to jax's cluster detection (SLURM,
    Open MPI, Kubernetes, Cloud TPU, mpi4py); if that finds nothing, this raises: there is no
    silent single-process fallback.

    Raises:
      ValueError: a malformed environment variable, or nothing tells the coordinator / process
        count / process id (the message names the variables).
    """
    def env_int(value, name):
        if value is not None:
            return value
        text = os.environ.get(name)
        if text is None or text == "":
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"${name}: expected an int, got {text!r}") from None

    num_processes = env_int(num_processes, ENV_NUM_PROCESSES)
    process_id = env_int(process_id, ENV_PROCESS_ID)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    except ValueError as err:
        raise ValueError(f"multi-host: {err} Set ${ENV_COORDINATOR} (host:port of process 0), "
                         f"${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID} in every process, or pass "
                         f"them as arguments") from None
