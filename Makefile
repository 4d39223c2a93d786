# Two-command quickstart (see README): `make demo` and `make test` each create .venv if needed,
# install jmeta with what they need, and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install-dev bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install-dev: $(VENV)/bin/python
	$(PY) -m pip install -e ".[dev]"

demo: install-dev
	$(VENV)/bin/jmeta demo --logdir runs/demo

test: install-dev
	$(PY) -m pytest -q -n auto --durations=15 tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
