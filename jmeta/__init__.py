"""jmeta: meta-reinforcement learning in JAX.

>>> import jmeta
>>> env, tasks = jmeta.make("point-nav")
"""

from jmeta import algorithms, envs
from jmeta.envs import make
from jmeta.evaluation import EvalResult, evaluate

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "evaluate",
    "algorithms",
    "envs",
    "make",
    "__version__",
]
