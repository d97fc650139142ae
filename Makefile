# The two set-up commands of the README: `make train` and `make test`. Both create the virtual
# environment on first use. torch is installed first, pinned, so that pip takes the CPU wheel
# and no later requirement pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast lint format bench gpu-wheels gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m loftr.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not learning" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(STAMP)
	$(PY) -m experiments.bench.run_all $(ARGS)

# The GPU check (experiments/gpu/check.py). `make gpu-wheels` here, with the package index:
# the Python 3.12 wheels of what a bare GPU machine lacks, into experiments/gpu/wheels/.
# `make gpu-check` there: our venv's Python when there is one, else the machine's python3 with
# its own CUDA torch; without CUDA it prints one line and exits 0.
GPU_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))

gpu-wheels: $(STAMP)
	$(PY) -m experiments.gpu.wheels

gpu-check:
	$(GPU_PY) -m experiments.gpu.check $(ARGS)
