"""Task-batch sharding over a device mesh and several hosts (pure placement).

A meta-iteration's task batch, and everything computed per task (rollouts, adapted parameters,
per-task losses), is laid out along a mesh axis named ``"tasks"``; XLA inserts the reductions of
the meta-gradient. The algorithms take ``mesh=`` (``maml_rl.make``, ``rl2.make``) and constrain
their per-task arrays with :func:`task_constraint`; this module builds the meshes.
"""

from __future__ import annotations

from jmeta.algorithms.base import TASK_AXIS, check_mesh, task_constraint

__all__ = ["TASK_AXIS", "check_mesh", "task_constraint"]
