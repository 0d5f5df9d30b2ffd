# Set-up happens here so the README's two commands work on a fresh machine.
# torch is installed on its own, pinned, before anything that depends on it: a bare `torch`
# requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rnnedge-installed

.PHONY: setup demo test lint fixtures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,export,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/rnnedge demo

test: $(STAMP)
	$(BIN)/ruff check rnnedge tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check rnnedge tests benchmarks
	$(BIN)/ruff format --check rnnedge tests benchmarks

fixtures: $(STAMP)
	$(BIN)/python tests/fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) runs .pytest_cache
