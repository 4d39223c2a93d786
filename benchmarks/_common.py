"""Helpers shared by the benchmark scripts (machine description, JSON output, timing)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax


def machine_info() -> dict[str, Any]:
    """CPU/GPU model, core count and library versions, for the JSON's ``"machine"`` field."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": devices[0].platform,
        "devices": [d.device_kind for d in devices],
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def write_json(path: str | os.PathLike, headline: dict[str, float], config: dict[str, Any],
               **detail: Any) -> dict[str, Any]:
    """Writes ``{"headline", "config", "machine", **detail}`` to ``path`` and returns it."""
    out = {"headline": headline, "config": config, "machine": machine_info(), **detail}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


def time_call(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` (blocking on its result) over ``repeats`` calls, and all times."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times
