"""benchmarks/maml_speed.py says so when the PyTorch references cannot run.

(tests/test_benchmarks.py runs every script with --quick and checks the JSON convention and the
headline keys each issue names.)
"""

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"

def test_speed_without_torch_says_so(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import maml_speed
    finally:
        sys.path.remove(str(BENCH_DIR))
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert maml_speed.torch_status().startswith("skipped: torch not installed")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
