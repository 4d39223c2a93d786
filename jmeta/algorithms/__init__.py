"""Meta-learning algorithms: each module has ``Config`` and ``make(config, ...) -> Algorithm``."""

from jmeta.algorithms import maml, maml_rl, pg, rl2, supervised, trpo
from jmeta.algorithms.base import Algorithm, TrainState, scan_train

__all__ = [
    "Algorithm",
    "TrainState",
    "maml",
    "maml_rl",
    "pg",
    "rl2",
    "scan_train",
    "supervised",
    "trpo",
]
