# The two commands:
#   make bench   benchmark rnnkern against torch.nn on this machine (the main job)
#   make test    run the test suite
# Each sets itself up on a fresh machine (a virtualenv in .venv, torch, the
# build) and is safe to run again. Knobs: PYTHON, VENV, TORCH_SPEC, MAX_JOBS,
# BENCH_ARGS (e.g. BENCH_ARGS=--quick).
#
# The CUDA build (a CUDA build of torch in .venv-cuda, nvcc from CUDA_HOME):
#   make test-cuda       build the CUDA kernels, check they do not spill, run the
#                        suite (the GPU tests run when a GPU is present)
#   make cuda-resources  registers / stack / spills of every kernel

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
MAX_JOBS ?= 2
export MAX_JOBS

PY := $(VENV)/bin/python

CUDA_VENV ?= .venv-cuda
CUDA_TORCH_SPEC ?= torch==2.14.1
CUDA_HOME ?= /usr/local/cuda
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
CUDA_BUILD := build-cuda

.PHONY: bench test install clean test-cuda cuda-install cuda-resources

bench: install
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Test-only dependencies: the ONNX export tests run the exported models.
TEST_DEPS ?= onnx onnxscript onnxruntime

test: install $(VENV)/.test-deps
	$(VENV)/bin/pytest -q tests

$(VENV)/.test-deps: $(VENV)/.deps
	$(PY) -m pip install -q $(TEST_DEPS)
	touch $@

install: $(VENV)/.deps
	$(PY) -m pip install -q --no-build-isolation --no-deps .

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" pytest ninja pybind11 setuptools wheel numpy matplotlib
	touch $@

test-cuda: cuda-install
	$(CUDA_VENV)/bin/pytest -q tests

# ptxas reports only what it compiles: keep the last report when nothing was rebuilt.
cuda-install: $(CUDA_VENV)/.deps
	mkdir -p $(CUDA_BUILD)
	CUDA_HOME=$(CUDA_HOME) TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" RNNKERN_CUDA=1 \
	  RNNKERN_PTXAS_VERBOSE=1 RNNKERN_BUILD_DIR=$(CUDA_BUILD) \
	  $(CUDA_VENV)/bin/python -m pip install -v --no-build-isolation --no-deps . \
	  > $(CUDA_BUILD)/build.log 2>&1 || (tail -40 $(CUDA_BUILD)/build.log; exit 1)
	if grep -q "ptxas info" $(CUDA_BUILD)/build.log; then \
	  grep "ptxas info" $(CUDA_BUILD)/build.log > $(CUDA_BUILD)/ptxas.log; fi
	$(CUDA_VENV)/bin/python tools/cuda_resources.py $(CUDA_BUILD)/ptxas.log \
	  > $(CUDA_BUILD)/resources.txt || (cat $(CUDA_BUILD)/resources.txt; exit 1)
	tail -1 $(CUDA_BUILD)/resources.txt

cuda-resources: cuda-install
	cat $(CUDA_BUILD)/resources.txt

$(CUDA_VENV)/.deps: Makefile
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q "$(CUDA_TORCH_SPEC)" pytest ninja pybind11 setuptools wheel numpy \
	  $(TEST_DEPS)
	touch $@

clean:
	rm -rf build $(CUDA_BUILD) *.egg-info
