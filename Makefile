# lightning_seg: every target installs what it needs first (uv, then .venv from uv.lock).
#   make train [EXP=name] [ARGS="--trainer.max_epochs=3 ..."]    make test    make lint
SHELL := bash
.DEFAULT_GOAL := help

UV_VERSION ?= 0.9.30
TOOLS := .tools
# Use the uv on PATH when there is one; otherwise a pinned uv in the git-ignored tools folder.
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/uv/bin/uv)
PY := .venv/bin/python
STAMP := .venv/.synced
DEV_STAMP := .venv/.synced-dev

EXP ?= quickstart
# --experiment only when EXP was given: a checkpoint is otherwise evaluated with its own run's config.
NAMED_EXP := $(if $(filter command line environment,$(origin EXP)),--experiment $(EXP))
ARGS ?=

export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE ?= copy
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help env train validate evaluate models check-data compare sync predict export tune bench-accuracy bench-crossval bench-select bench-models bench-predict bench-data test test-all lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(TOOLS)/uv/bin/uv:
	python3 -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# Rebuild the environment only when the dependencies changed. Running needs the project and its
# extras; `make test`/`lint` add the dev group (pytest, ruff, scikit-image). --inexact: a later
# `make train` keeps the dev tools a `make test` installed.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras --no-dev --inexact
	@touch $@

$(DEV_STAMP): $(STAMP)
	$(UV) sync --locked --all-extras --inexact
	@touch $@

env: $(STAMP) ## build .venv from uv.lock with what running needs (done by every other target)

train: $(STAMP) ## train an experiment: make train EXP=quickstart ARGS="--trainer.max_epochs=3"
	$(PY) -m lightning_seg fit --experiment $(EXP) $(ARGS)

validate: $(STAMP) ## validate a checkpoint: make validate CKPT=path
	$(PY) -m lightning_seg validate $(NAMED_EXP) $(if $(CKPT),--ckpt_path $(CKPT)) $(ARGS)

evaluate: $(STAMP) ## test a checkpoint on the test split of its own run's data: make evaluate CKPT=path
	$(PY) -m lightning_seg test $(NAMED_EXP) --ckpt_path $(CKPT) $(ARGS)

models: $(STAMP) ## list the networks with parameters and GFLOPs at 256x256
	$(PY) -m lightning_seg models $(ARGS)

check-data: $(STAMP) ## audit an experiment's dataset: make check-data EXP=segnet_bce
	$(PY) -m lightning_seg check-data --experiment $(EXP) $(ARGS)

compare: $(STAMP) ## table and plot of local runs: make compare [ARGS="unet_bce segnet_bce"], or ARGS="RUN_A RUN_B --paired"
	$(PY) -m lightning_seg compare $(ARGS)

sync: $(STAMP) ## upload every offline W&B run not yet uploaded
	$(PY) -m lightning_seg sync $(ARGS)

predict: $(STAMP) ## masks for new images: make predict CKPT=path INPUT=folder OUTPUT=folder [ARGS="--tta flips --overlay"]
	$(PY) -m lightning_seg predict --ckpt_path $(CKPT) --input $(INPUT) --output $(OUTPUT) $(ARGS)

export: $(STAMP) ## ONNX or TorchScript: make export CKPT=path FORMAT=onnx OUTPUT=model.onnx
	$(PY) -m lightning_seg export --ckpt_path $(CKPT) --format $(or $(FORMAT),onnx) $(if $(OUTPUT),--output $(OUTPUT)) $(ARGS)

bench-predict: $(STAMP) ## predict images/s on PH2-sized images, with and without TTA
	$(PY) benchmarks/predict.py $(ARGS)

bench-data: $(STAMP) ## data loading images/s for PH2 with and without the cache (needs PH2)
	$(PY) benchmarks/dataloader.py $(ARGS)

tune: $(STAMP) ## hyper-parameter search (Optuna): make tune EXP=unet_bce [TRIALS=20] [ARGS="--storage URL"]
	$(PY) -m lightning_seg tune --experiment $(EXP) $(if $(TRIALS),--trials $(TRIALS)) $(ARGS)

bench-accuracy: $(STAMP) ## fit + test every PH2 experiment, table in benchmarks/results/accuracy.md [EXP="a b"]
	$(PY) benchmarks/accuracy.py $(if $(NAMED_EXP),--experiments $(EXP)) $(ARGS)

bench-crossval: $(STAMP) ## 4-fold cross-validated test IoU of PH2 experiments, benchmarks/results/crossval.md [EXP="a b"]
	$(PY) benchmarks/crossval.py $(if $(NAMED_EXP),--experiments $(EXP)) $(ARGS)

bench-select: $(STAMP) ## compare PH2 recipes on val IoU over all 120 non-test images (nested CV), benchmarks/results/selection.md EXP="a b"
	$(PY) benchmarks/selection.py $(if $(NAMED_EXP),--experiments $(EXP)) $(ARGS)

bench-models: $(STAMP) ## measure training throughput of every network (benchmarks/results/models.md)
	$(PY) benchmarks/models.py $(ARGS)

# A pytest-xdist worker per core, each on one thread, tests handed out as workers free up:
# 4.6 min instead of 7.6-8.3 on 2 cores (most tests wait on imports and subprocesses, not math).
XDIST := -n auto --dist worksteal

test: $(DEV_STAMP) ## run the fast test suite (what CI runs)
	$(PY) -m pytest $(XDIST) $(ARGS)

test-all: $(DEV_STAMP) ## run every test, slow ones included
	$(PY) -m pytest $(XDIST) -m "" $(ARGS)

lint: $(DEV_STAMP) ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(DEV_STAMP) ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: ## remove runs and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
