# Every target creates or reuses .venv, so `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-all lint check bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cfs dev-cluster --nodes 3 --data-dir .cfs-data

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format cfs_cluster tests
	$(BIN)/ruff check --fix cfs_cluster tests

check: $(STAMP)
	$(BIN)/ruff format --diff cfs_cluster tests
	$(BIN)/ruff check cfs_cluster tests
	$(BIN)/mypy

clean:
	rm -rf .cfs-data .pytest_cache .mypy_cache .ruff_cache
