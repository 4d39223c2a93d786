"""MuJoCo MJX task suites (shared/DESIGN.md §3): one ``mjx.Model`` per env, each task's physics
applied inside ``step`` with ``tree_replace``.

The configs (``jmeta.envs.mjx.config``) import without MuJoCo, so ``import jmeta`` stays light;
the simulator is imported when an MJX env is built or one of the names below is first used.
"""

import importlib

from jmeta.envs.mjx.config import MJXConfig, check_positive_range

_LAZY = {
    "MJXEnv": "jmeta.envs.mjx.base",
    "MJXState": "jmeta.envs.mjx.base",
    "Physics": "jmeta.envs.mjx.base",
    "asset_path": "jmeta.envs.mjx.base",
    "derived_constants": "jmeta.envs.mjx.base",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jmeta.envs.mjx' has no attribute {name!r}")


__all__ = [
    "MJXConfig",
    "MJXEnv",
    "MJXState",
    "Physics",
    "asset_path",
    "check_positive_range",
    "derived_constants",
]
