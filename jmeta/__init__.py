"""jmeta: meta-reinforcement learning in JAX.

>>> import jmeta
>>> env, tasks = jmeta.make("point-nav")
"""

from jmeta import algorithms, envs
from jmeta.envs import make

__version__ = "0.1.0"

__all__ = [
    "algorithms",
    "envs",
    "make",
    "__version__",
]
