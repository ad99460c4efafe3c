# Two set-up-free entry points: `make quick` and `make test`.
# Both bootstrap .venv (idempotent: the stamp is rebuilt only when the dependency files change),
# provision data and FID weights, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The PyTorch build: empty = PyPI's wheels as requirements.lock pins them (on Linux x86_64 a CUDA 13 build,
# which needs a recent NVIDIA driver and puts ~3 GB of CUDA libraries into .venv). Otherwise uv's
# --torch-backend picks the build from PyTorch's index at the locked version: `cpu` (a laptop), `cu126`
# or `cu128` (a node whose driver offers CUDA 12), `auto` (uv reads the driver). README.md, "Which
# PyTorch build". .venv remembers the choice, so later `make` calls keep it; `TORCH_BACKEND=` goes back.
TORCH_BACKEND ?= $(shell cat $(VENV)/.torch-backend 2>/dev/null)
# One stamp per build: where .venv holds another build's stamp, torch and torchvision are reinstalled
# (the locked version is met by either build, so uv would otherwise keep the old one).
STAMP  := $(VENV)/.arelbo-installed$(if $(TORCH_BACKEND),-torch-$(TORCH_BACKEND))
TORCH_SWITCH := $(if $(wildcard $(VENV)/.arelbo-installed*),$(if $(wildcard $(STAMP)),,--reinstall-package torch --reinstall-package torchvision))
TORCH_BUILD := $(if $(TORCH_BACKEND),--torch-backend $(TORCH_BACKEND)) $(TORCH_SWITCH)
UV_VERSION := 0.13.9
CORES  ?= 2
# make quick's jobs take one thread each, so two run at once on a 2-core laptop: each job's start-up
# (importing torch) runs on one core (docs/engineering-notes.md, "make quick budget").
JOB_THREADS ?= 1
# The suite runs on TEST_WORKERS pytest-xdist workers (one per core of a 2-core CI machine; each takes
# its share of the cores as torch threads, tests/conftest.py). Tests that share a run or a module
# fixture go to one worker together (--dist loadgroup); the end-to-end units are queued first, in the
# order tests/conftest.py gives them (--no-loadscope-reorder). TEST_WORKERS=0: one process, as before.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=15

.PHONY: quick test test-fast lint provision bench gpu-bundle gpu-check clean-results help

help:
	@echo "make quick   - CPU-sized reproduction (config/quick.yaml) -> results/quick/"
	@echo "make test    - style checks (make lint), then the whole test suite"
	@echo "make lint    - ruff (lint + format) and snakefmt, as CI runs them"
	@echo "make test-fast - the suite without its end-to-end workflow runs (marker e2e): the inner loop while coding"
	@echo "make bench   - benchmarks (throughput ratios)"
	@echo "make gpu-bundle - wheels, MNIST and Inception weights for an offline GPU machine (.gpu-bundle/)"
	@echo "make gpu-check  - on that GPU machine: install the bundle, GPU tests, benchmarks, MNIST Tables 3+4 (docs/gpu-check.md)"

# --compile-bytecode: uv (unlike pip) installs no .pyc files, and where PYTHONDONTWRITEBYTECODE is set
# (some containers and CI images) Python then compiles torch, torchvision and Snakemake from source in
# every process: each workflow job paid ~2.5 s more for `import torch`, ~7 s more for an FID job's
# torchvision (docs/engineering-notes.md, "The test suite's time in CI"). ~50 s once, at install.
$(STAMP): pyproject.toml requirements.lock Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python --constraint requirements.lock --compile-bytecode $(TORCH_BUILD) --editable ".[test,slurm,lint]"
	@rm -f $(VENV)/.arelbo-installed*
	@echo "$(TORCH_BACKEND)" > $(VENV)/.torch-backend
	@touch $@

provision: $(STAMP)
	$(BIN)/arelbo provision all

quick: provision
	$(BIN)/snakemake --cores $(CORES) --max-threads $(JOB_THREADS) --configfile config/quick.yaml --rerun-incomplete
	$(BIN)/snakemake --cores 1 --configfile config/quick.yaml --report results/quick/report.html
	@$(BIN)/arelbo claims --results results/quick --no-write
	@echo "report: results/quick/report.html (claims first); claims with evidence: results/quick/claims.csv"

# Style first: a style error fails `make test` (and so CI) in seconds, before the suite.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/

test: provision lint
	$(PYTEST)

# Everything but the end-to-end workflow runs; CI runs the whole suite (make test).
test-fast: provision lint
	$(PYTEST) -m "not e2e"

bench: provision
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/fid_throughput.py
	$(BIN)/python benchmarks/frechet_distance.py

# Run on a machine with PyPI; carry .gpu-bundle/part-NN to the GPU machine (docs/gpu-check.md).
gpu-bundle: provision
	bash gpu/bundle.sh

# Run on the GPU machine (python3 with torch and CUDA; no .venv, no internet), every part of .gpu-bundle/ present.
gpu-check:
	bash gpu/check.sh all

clean-results:
	rm -rf results/quick results/ci
