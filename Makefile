# The README's two commands are `make repro` and `make test`; each builds the virtual environment
# first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Stage commands in dvc.yaml run `python -m stages...`: put the venv's python first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

# Offline by default: no analytics calls from DVC or Prefect.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup repro test bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch==2.13.0 first: it is the CPU wheel on local disk here; left to the resolver, a
	# looser spec would pull several GB of CUDA builds.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

# ruff first (lint and format, 120 columns: pyproject.toml): seconds, and a style slip fails fast
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --dist loadgroup -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
