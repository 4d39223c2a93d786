"""Classical baselines of the meta-RL benchmarks (RL²'s, Duan et al. 2016, Tables 1 and 2; the
queueing policies of load balancing), as pure, jittable functions.

* :mod:`jmeta.baselines.bandits`: random, greedy, epsilon-greedy, UCB1, Thompson sampling and
  Gittins-index strategies for Bernoulli bandits (``jmeta.make("bandit")``).
* :mod:`jmeta.baselines.mdp`: random, PSRL, greedy and ε-greedy for random tabular MDPs
  (``jmeta.make("tabular-mdp")``).
* :mod:`jmeta.baselines.recommend`: popularity (no adaptation) and oracle recommenders for
  cold-start recommendation (``jmeta.make("cold-start-rec")``).
* :mod:`jmeta.baselines.load_balancing`: random, round-robin, join-shortest-queue,
  power-of-two-choices and an oracle that knows the service rates, for server load balancing
  (``jmeta.make("load-balancing")``); ``evaluate`` returns the mean job latency per task.

Each module has ``STRATEGIES``, ``play(strategy, task, key, n, **options)`` (one trial) and
``evaluate(strategy, tasks, key, n, **options)`` (total reward per task, vmapped);
``recommend.play``/``evaluate`` also take the env (its catalogue is the click model) and return
the per-interaction items and clicks.

>>> import jax, jmeta
>>> from jmeta.baselines import bandits
>>> _, tasks = jmeta.make("bandit", num_arms=5)
>>> arm_means = tasks.sample_batch(jax.random.key(0), 500).arm_means
>>> mean_total = bandits.evaluate("thompson", arm_means, jax.random.key(1), num_pulls=10).mean()
"""

from jmeta.baselines import bandits, load_balancing, mdp, recommend
from jmeta.baselines.bandits import gittins_index_table
from jmeta.baselines.mdp import value_iteration

__all__ = [
    "bandits",
    "gittins_index_table",
    "load_balancing",
    "mdp",
    "recommend",
    "value_iteration",
]
