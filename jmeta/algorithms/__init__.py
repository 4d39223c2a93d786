"""Meta-learning algorithms: each module has ``Config`` and ``make(config, ...) -> Algorithm``."""

from jmeta.algorithms.base import Algorithm, TrainState, scan_train

__all__ = [
    "Algorithm",
    "TrainState",
    "scan_train",
]
