# Two entry points: `make run` (serve the shipped model) and `make test` (run the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean chromium blender image lock

# Installs say what they do: a line before each step, then pip's own lines (what it collects, downloads and
# installs; a progress bar on a terminal). PIP_FLAGS="--quiet" silences pip again.
PIP_FLAGS ?= --progress-bar on --disable-pip-version-check

$(BIN)/python:
	@echo "==> creating the virtual environment $(VENV) ($(PYTHON))"
	$(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip"
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	@echo "==> installing facerecon for serving: .[serve,cpu] (ONNX Runtime, FastAPI; about a minute the first time)"
	$(BIN)/pip install $(PIP_FLAGS) -e ".[serve,cpu]"
	touch $@

$(VENV)/.train: pyproject.toml | $(BIN)/python
	@echo "==> installing facerecon with training and test tools: .[serve,cpu,train,test] (torch and more;" \
	      "a few minutes the first time)"
	$(BIN)/pip install $(PIP_FLAGS) -e ".[serve,cpu,train,test]"
	touch $@

node_modules/.package-lock.json: package.json
	@if command -v npm >/dev/null 2>&1; then echo "==> installing the glTF validator (npm)"; \
	  npm install --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the glTF validator test will be skipped"; fi

# The web page's browser test drives Debian's chromium; where apt-get (as root) is missing or
# fails, the test skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  echo "==> installing Debian's chromium (apt-get) for the web page's browser test" && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "chromium could not be installed: the web page's browser test will be skipped"

# The Blender import test opens the exported meshes in Debian's blender; where apt-get (as root) is
# missing or fails, the test skips.
blender:
	@command -v blender >/dev/null 2>&1 || \
	{ command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  echo "==> installing Debian's blender (apt-get) for the Blender import test" && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq blender >/dev/null; } || \
	echo "blender could not be installed: the Blender import test will be skipped"

run: $(VENV)/.serve
	$(BIN)/facerecon serve

# ruff (lint and import order) and mypy (types) run before the tests; both must be clean.
lint: $(VENV)/.train
	@echo "==> ruff (lint) and mypy (types)"
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint node_modules/.package-lock.json chromium blender
	@echo "==> the test suite (pytest)"
	$(BIN)/python -m pytest

bench: $(VENV)/.train
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_renderer.py
	$(BIN)/python benchmarks/bench_detector.py
	$(BIN)/python benchmarks/bench_service.py

# Both serving images built with Podman (installed with apt-get as root when missing) on a local stand-in base,
# the CPU container and the compose service smoke-tested, everything removed afterwards (README, Deployment);
# tests/test_deployment.py runs the same script.
image:
	bash docker/build-and-smoke.sh

# The images' exact dependencies with hashes (docker/requirements-*.lock), from pyproject.toml's extras, by uv.
lock: | $(BIN)/python
	@echo "==> installing uv (locks the images' dependencies)"
	$(BIN)/pip install $(PIP_FLAGS) "uv>=0.5"
	@echo "==> locking: docker/requirements-{cpu,gpu,build,smoke}.lock"
	bash docker/lock.sh $(BIN)/uv

clean:
	rm -rf $(VENV) node_modules
