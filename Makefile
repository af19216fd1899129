# umap-assets: `make demo` runs the whole pipeline on the demo data; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOME_DIR ?= data
DATASET ?= fashion-mnist
SLICES ?= 7

.PHONY: setup demo demo-data test ui bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The constraints file pins torch to the CPU wheel (a bare `torch` pulls a multi-GB CUDA build).
	$(BIN)/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,spark,postgres,map]"
	# Compile umap-learn's numba kernels once, into the virtualenv, instead of in the first fit.
	$(BIN)/python -m umap_assets.warmup
	touch $(STAMP)

setup: $(STAMP)

demo-data: setup
	@# Fashion-MNIST comes from Debian's package where apt is available (best effort, as root).
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || true; fi
	$(BIN)/umap-assets demo-data --home $(HOME_DIR) --dataset $(DATASET) --slices $(SLICES)

demo: demo-data
	$(BIN)/umap-assets run --home $(HOME_DIR)

test: setup
	$(BIN)/python -m pytest -q

ui: setup
	$(BIN)/umap-assets ui --home $(HOME_DIR)

bench: setup
	$(BIN)/python bench/bench_transform.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
