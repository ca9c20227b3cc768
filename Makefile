# vlaunch: every target sets up .venv itself, from the lock (requirements/lock.txt): exactly
# the versions the suite was run with, torch 2.14.1 + torchvision 0.29.1 included. pip installs
# it (pip takes torch from local files where a machine has them; uv and poetry do not).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-fast lint format bench golden lock clean help

help:
	@echo "make demo   - fine-tune a tiny VLM on the bundled synthetic dataset (CPU ok)"
	@echo "make test   - the whole test suite (starts a local Ray and a local Slurm cluster)"
	@echo "make lint   - ruff + mypy + import contracts"
	@echo "make bench  - the CPU benchmarks (writes bench/results/ and docs/benchmarks.md)"
	@echo "make golden - regenerate the golden files (rendered sbatch scripts, Helm output)"
	@echo "make lock   - re-resolve requirements/lock.txt (PACKAGE=name==version: only that one)"

# --no-deps: the lock is complete (every transitive dependency pinned); `pip check` proves it.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "pip==26.3"
	$(BIN)/python -m pip install -q --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# Our own modules compiled once: a run starts several Python processes (the CLI, Ray Train's
# workers), and where PYTHONDONTWRITEBYTECODE is set each would compile them again. A
# module edited since is compiled in memory as usual (Python checks the source's mtime).
venv: $(STAMP)
	$(BIN)/python -m compileall -q launcher trainer vlaunch_core bench

demo: venv
	$(BIN)/vlaunch data synth examples/data/shapes --if-missing
	$(BIN)/vlaunch local examples/demo.yaml

# Two pytest processes at once, both must pass, splitting the suite by folder: (a) the tests
# on the local Slurm cluster (their jobs run Ray on 127.0.0.11/12 with their own ports and temp
# dirs), which mostly wait on their jobs, plus tests/after and tests/models; (b) every other
# folder. Measured (2026-12-07): Slurm 10.7 min (beside the rest), the tests that are neither
# ray nor slow 12.2 min alone (110% CPU), the ray and slow ones 11.3 min alone (74% CPU): the suite
# used to run as Slurm vs all the rest (27.5 min, while the Slurm process idled after 11),
# this split gives each process about half: on a clean clone (.ci/run, venv included, 20.3
# and 23.4 min) (a) took 15.4-16.2 min and (b) 17.3-19.5 min (a third process for the end-to-end runs was
# measured slower: the cores are the limit). Output is live, each line prefixed; the full
# output of each is kept in build/test-logs/, with the slowest tests listed at its end; the
# last lines name every failed test, so that the tail of a CI log says which.
TEST_LOGS := build/test-logs
PYTEST := $(BIN)/python -u -m pytest --durations=15
TESTS_A := tests/slurm tests/after tests/models
test: venv
	@mkdir -p $(TEST_LOGS)
	@set -o pipefail; \
	( $(PYTEST) $(TESTS_A) 2>&1 | tee $(TEST_LOGS)/a.log \
	  | sed -u 's/^/[a] /' ) & a=$$!; \
	( $(PYTEST) $(addprefix --ignore=,$(TESTS_A)) 2>&1 | tee $(TEST_LOGS)/b.log \
	  | sed -u 's/^/[b] /' ); b=$$?; \
	wait $$a; a=$$?; \
	echo "make test: (a) $(TESTS_A): $$(tail -n1 $(TEST_LOGS)/a.log)"; \
	echo "make test: (b) the other folders: $$(tail -n1 $(TEST_LOGS)/b.log)"; \
	grep -h -E '^(FAILED|ERROR) ' $(TEST_LOGS)/a.log $(TEST_LOGS)/b.log | cut -c1-300 \
	  | sed 's/^/make test: /' || true; \
	[ $$a -eq 0 ] && [ $$b -eq 0 ]

test-fast: venv
	$(BIN)/python -m pytest -m "not ray and not slurm and not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python -m bench.run_cpu

golden: venv
	VLAUNCH_REGEN_GOLDEN=1 $(BIN)/python -m pytest tests -k golden -q

# The lock: pyproject.toml's ranges (train + dev extras) plus requirements/constraints.txt, for
# CPython 3.11 on x86_64 Linux. `make lock` moves every package to its newest allowed release;
# `make lock PACKAGE=transformers==5.26.0` changes only that one. Then: make test, commit.
PACKAGE ?=
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra train --extra dev \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  -c requirements/constraints.txt --no-emit-package vlaunch \
	  --custom-compile-command "make lock" \
	  $(if $(PACKAGE),--upgrade-package "$(PACKAGE)",--upgrade) -o $(LOCK)

clean:
	rm -rf runs build dist .pytest_cache .mypy_cache .ruff_cache
