# vlaunch: every target sets up .venv itself (torch is pinned and installed first, so pip
# never pulls the multi-GB CUDA wheels on a CPU machine).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-fast lint format bench golden clean help

help:
	@echo "make demo   - fine-tune a tiny VLM on the bundled synthetic dataset (CPU ok)"
	@echo "make test   - the whole test suite (starts a local Ray and a local Slurm cluster)"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - the CPU benchmarks (writes bench/results/ and docs/benchmarks.md)"
	@echo "make golden - regenerate the golden files (rendered sbatch scripts, Helm output)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/vlaunch data synth examples/data/shapes --if-missing
	$(BIN)/vlaunch local examples/demo.yaml

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not ray and not slurm and not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python -m bench.run_cpu

golden: venv
	VLAUNCH_REGEN_GOLDEN=1 $(BIN)/python -m pytest tests -k golden -q

clean:
	rm -rf runs build dist .pytest_cache .mypy_cache .ruff_cache
