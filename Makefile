# Two commands for a newcomer:   make run   (set-up + train the seed model)   and   make test
# `make install` only sets up .venv. Variables: PYTHON (interpreter for the venv), SEED, ARGS (extra train flags).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SEED   ?= 0
ARGS   ?=

.PHONY: install run test lint bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

run: install
	$(BIN)/cifar10cnn train --seed $(SEED) $(ARGS)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/cifar10cnn bench --batch-size 32
	$(BIN)/cifar10cnn bench --batch-size 128

clean-venv:
	rm -rf $(VENV)
