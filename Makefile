# make train: set up .venv (once) and train the default ResNet-20 on CIFAR-10.
# make test:  set up .venv with the dev tools and the search extra (once) and run the fast tests
#   (in process, not marked slow); make test-full: every test, what CI (.ci/run) runs.
# make bench: the speed harness, scripts/benchmark.py (README, Performance).
# make gpu-check: speed harness + Table-6 grid + report on one GPU in 9 minutes
#   (docs/gpu_check.md): DATA_DIR=/data/cifar make gpu-check; ARGS=--dry-run on the CPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test test-full bench gpu-check lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev,search]'
	touch $@ $(VENV)/.installed

train: $(VENV)/.installed
	$(BIN)/reslab-train $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-full: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(ARGS)

bench: $(VENV)/.installed
	$(BIN)/python scripts/benchmark.py $(ARGS)

gpu-check: $(VENV)/.installed
	PY=$(BIN)/python bash scripts/gpu_check.sh $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

clean:
	rm -rf $(VENV) logs .pytest_cache
