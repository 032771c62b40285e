# Two commands for a newcomer:   make run   (set-up + train the seed model)   and   make test
# `make install` only sets up .venv. Variables: PYTHON (interpreter for the venv), SEED, ARGS (extra train flags).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SEED   ?= 0
ARGS   ?=

.PHONY: install run test lint bench bench-keras clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,serve,transfer,experiments,tensorboard]"
	@touch $(STAMP)

run: install
	$(BIN)/cifar10cnn train --seed $(SEED) --report $(ARGS)

test: install
	$(BIN)/python -m pytest -q --durations=20

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/cifar10cnn bench --batch-size 32
	$(BIN)/cifar10cnn bench --batch-size 128

clean-venv:
	rm -rf $(VENV)

# The seed's Keras code vs cifar10cnn on this machine (installs tensorflow-cpu into .venv-keras once)
.venv-keras/bin/python:
	$(PYTHON) -m venv .venv-keras
	.venv-keras/bin/python -m pip install --quiet --disable-pip-version-check tensorflow-cpu

bench-keras: install .venv-keras/bin/python
	$(BIN)/python benchmarks/keras_vs_torch.py --keras-python .venv-keras/bin/python --batch-sizes 32 128 \
		--out benchmarks/results/speed/keras_vs_torch.json
