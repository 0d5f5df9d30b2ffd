# Set-up happens here so the README's two commands work on a fresh machine.
# torch is installed on its own, pinned, before anything that depends on it: a bare `torch`
# requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rnnedge-installed

SERVING_VENV ?= .venv-serving
SERVING_STAMP := $(SERVING_VENV)/.rnnedge-serving-installed

.PHONY: setup serving-setup demo test lint fixtures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,export,dev,triton,ray,openvino]'
	touch $(STAMP)

setup: $(STAMP)

# Triton's Python-backend stub (nvidia-pytriton) needs an interpreter with a shared libpython
# matching its own: Debian's python3.11, in a venv of its own without torch.
$(SERVING_STAMP): pyproject.toml scripts/setup-serving.sh
	VENV_SERVING=$(SERVING_VENV) bash scripts/setup-serving.sh

serving-setup: $(SERVING_STAMP)

demo: $(STAMP)
	$(BIN)/rnnedge demo --force

test: $(STAMP) $(SERVING_STAMP)
	$(BIN)/ruff check rnnedge tests benchmarks examples
	$(BIN)/python -m pytest -q
	$(SERVING_VENV)/bin/python -m pytest -q tests/serving/test_server.py

# ruff, then the layer contract in pyproject.toml ([tool.importlinter]): a module importing from
# a layer above its own fails here, lazy imports inside functions included.
LINT_PATHS := rnnedge tests benchmarks examples scripts

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports

fixtures: $(STAMP)
	$(BIN)/python tests/fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) $(SERVING_VENV) runs .pytest_cache
