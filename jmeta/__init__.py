"""jmeta: meta-reinforcement learning in JAX.

>>> import jmeta
>>> env, tasks = jmeta.make("point-nav")
"""

from jmeta import _host_threads

_host_threads.ensure()  # before JAX starts its CPU backend: see jmeta/_host_threads.py

from jmeta import algorithms, envs  # noqa: E402
from jmeta.envs import make  # noqa: E402
from jmeta.evaluation import EvalResult, evaluate  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "evaluate",
    "algorithms",
    "envs",
    "make",
    "__version__",
]
