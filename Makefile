# The two commands a fresh machine needs: `make run` (the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast test-long

$(BIN)/faceproc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/faceproc

run: install
	$(BIN)/faceproc run

test: install
	$(BIN)/faceproc fetch-data
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/faceproc fetch-data
	$(BIN)/python -m pytest -m "not slow and not long"

test-long: install
	$(BIN)/faceproc fetch-data
	$(BIN)/python -m pytest -m long
