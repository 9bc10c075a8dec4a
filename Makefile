# Two entry points: `make run` (serve the shipped model) and `make test` (run the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[serve,cpu]"
	touch $@

$(VENV)/.train: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[serve,cpu,train,test]"
	touch $@

node_modules/.package-lock.json: package.json
	@if command -v npm >/dev/null 2>&1; then npm install --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the glTF validator test will be skipped"; fi

# The web page's browser test drives Debian's chromium; where apt-get (as root) is missing or
# fails, the test skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "chromium could not be installed: the web page's browser test will be skipped"

run: $(VENV)/.serve
	$(BIN)/facerecon serve

# ruff (lint and import order) and mypy (types) run before the tests; both must be clean.
lint: $(VENV)/.train
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint node_modules/.package-lock.json chromium
	$(BIN)/python -m pytest

bench: $(VENV)/.train
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_renderer.py
	$(BIN)/python benchmarks/bench_detector.py
	$(BIN)/python benchmarks/bench_service.py

clean:
	rm -rf $(VENV) node_modules
