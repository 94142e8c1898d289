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
#
# On a machine with one GPU:
#   make gpu-check       build for that GPU, then benchmarks/gpu_check.py: versions,
#                        grid-barrier cost, a determinism check, the GPU tests twice,
#                        compute-sanitizer, the benchmark against cuDNN; all into
#                        GPU_CHECK_OUT (default gpu-check-results/). GPU_PYTHON=python3
#                        uses that interpreter's CUDA torch instead of .venv-cuda (no
#                        download); GPU_CHECK_BUDGET: seconds for the benchmark.
#   make gpu-check DRY=1 the same without a GPU, on the CPU emulation (run by CI)

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

.PHONY: bench test install clean test-cuda cuda-install cuda-resources gpu-check

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

GPU_CHECK_OUT ?= gpu-check-results
GPU_CHECK_BUDGET ?= 150
GPU_PYTHON ?=
GPU_CHECK := benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) --budget-s $(GPU_CHECK_BUDGET)

ifeq ($(DRY),1)
gpu-check: install
	$(PY) $(GPU_CHECK) --dry
else ifneq ($(GPU_PYTHON),)
# Only the visible GPU's architecture: the build is most of the check's time.
gpu-check:
	CUDA_HOME=$(CUDA_HOME) RNNKERN_CUDA=1 RNNKERN_BUILD_DIR=$(CUDA_BUILD) MAX_JOBS=$$(nproc) \
	  TORCH_CUDA_ARCH_LIST="$$($(GPU_PYTHON) -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')" \
	  $(GPU_PYTHON) -m pip install -q --no-build-isolation --no-deps .
	$(GPU_PYTHON) $(GPU_CHECK)
else
gpu-check: cuda-install
	$(CUDA_VENV)/bin/python $(GPU_CHECK)
endif

$(CUDA_VENV)/.deps: Makefile
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q "$(CUDA_TORCH_SPEC)" pytest ninja pybind11 setuptools wheel numpy \
	  $(TEST_DEPS)
	touch $@

clean:
	rm -rf build $(CUDA_BUILD) *.egg-info $(GPU_CHECK_OUT)
