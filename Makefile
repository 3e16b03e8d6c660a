# Entry points. `make repro` and `make test` work on a fresh Debian/Ubuntu machine (they install what they need).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
DATA_PACKAGE_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data repro test test-fast bench report
setup: $(VENV)/.installed data

# Python dependencies (pinned in pyproject.toml), reinstalled when it changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# The offline copy of Fashion-MNIST that `fetch.source: auto` finds first (Kaggle needs network access).
data:
	@[ -d $(DATA_PACKAGE_DIR) ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: setup
	PATH="$(abspath $(BIN)):$$PATH" pytest

test-fast: setup
	PATH="$(abspath $(BIN)):$$PATH" pytest -m "not slow"

bench: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro prepare && $(BIN)/python -m fmnist.bench --presets seed,default,fast,nondeterministic --repeats 3 --out bench.md

report: setup
	PATH="$(abspath $(BIN)):$$PATH" python -m fmnist.report --base main
