# The two commands:
#   make bench   benchmark rnnkern against torch.nn on this machine (the main job)
#   make test    run the test suite
# Each sets itself up on a fresh machine (a virtualenv in .venv, torch, the
# build) and is safe to run again. Knobs: PYTHON, VENV, TORCH_SPEC, MAX_JOBS,
# BENCH_ARGS (e.g. BENCH_ARGS=--quick).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
MAX_JOBS ?= 2
export MAX_JOBS

PY := $(VENV)/bin/python

.PHONY: bench test install clean

bench: install
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

test: install
	$(VENV)/bin/pytest -q tests

install: $(VENV)/.deps
	$(PY) -m pip install -q --no-build-isolation --no-deps .

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" pytest ninja pybind11 setuptools wheel numpy
	touch $@

clean:
	rm -rf build *.egg-info
