"""Host side of jmeta (shared/DESIGN.md §5): the Runner that drives an algorithm's jitted ``train``
in chunks, its logs (TensorBoard + JSONL), orbax checkpoints with exact resume, and ``doctor``,
which reads a run's logged curves and reports what went wrong.

Unlike the layers below it, this package touches files, the clock and the terminal.

>>> from jmeta.training import Runner, RunSpec, load
>>> spec = RunSpec("maml-rl", "point-nav", algo_config={"num_tasks": 4, "outer": "ppo"})
>>> state = Runner(spec, "runs/nav", chunk_size=10).run(50)          # doctest: +SKIP
>>> spec, env, tasks, algo, state = load("runs/nav")                  # doctest: +SKIP
"""

from jmeta.training.checkpoint import CheckpointError, Checkpoints
from jmeta.training.runner import Runner, load
from jmeta.training.spec import ALGORITHMS, RunSpec, SupervisedTasks, build

__all__ = [
    "ALGORITHMS",
    "CheckpointError",
    "Checkpoints",
    "RunSpec",
    "Runner",
    "SupervisedTasks",
    "build",
    "load",
]
