"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, with tiny settings.

Each notebook is executed with nbclient in a ``python3`` kernel started from this interpreter, with
``JMETA_NOTEBOOK_QUICK=1`` in the kernel's environment (the notebooks' quick settings) and a fresh
temporary working directory, so the run directories a notebook writes (``runs/...``) do not land
in the repository. Any cell error fails the test with the cell's traceback.
"""

import ast
import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # one cell; the slowest (an MJX compile) takes ~1 min on a loaded CPU


def _first_code_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_cleared(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    stale = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not stale, f"{path.name}: code cells {stale} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_installs_only_in_colab(path, monkeypatch):
    source = _first_code_cell(path)
    assert "google.colab" in source
    tree = ast.parse(source)  # plain Python: no %pip / ! lines, which a local kernel would run
    # Every statement other than imports is guarded by the Colab check...
    guarded = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    assert guarded and all(isinstance(s, ast.If) and "google.colab" in ast.unparse(s.test)
                           for s in guarded), source
    # ...and, run here, it does nothing: no subprocess is started.
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"{path.name}: the first cell ran {args!r} outside Colab")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, f"{path.name}[first code cell]", "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    # The kernel inherits this process's environment (jupyter_client starts it with
    # sys.executable for the python3 kernel).
    monkeypatch.setenv("JMETA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        failure = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # IPython's traceback, uncoloured
    if failure is not None:
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
