"""Build of rnnkern: the Python package, its extension rnnkern._C, and
rnnkern._simt (the CUDA kernels compiled for the CPU through the SIMT
emulation harness; used by the tests).

Build against the torch you already have:  pip install --no-build-isolation .

With a CUDA build of torch and the CUDA toolkit, the CUDA kernels are built too.
Environment knobs:
  RNNKERN_CUDA=0|1         force the CUDA kernels off / on (default: on when torch
                           has CUDA and a toolkit is found)
  CUDA_HOME                the CUDA toolkit (default: $CUDA_HOME, else /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST     GPU architectures (default here: "8.0;9.0")
  RNNKERN_PTXAS_VERBOSE=1  print the kernels' register/spill report (-Xptxas -v)
  RNNKERN_BUILD_DIR        setuptools' build directory (default: build/), so that
                           builds against different torch versions do not mix objects
  MAX_JOBS                 parallel compile jobs (ninja)
"""
import glob
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    # Set before torch.utils.cpp_extension guesses it from the nvcc on PATH.
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def sources(*patterns):
    found = []
    for pattern in patterns:
        found += glob.glob(os.path.join(ROOT, "csrc", pattern), recursive=True)
    return sorted(os.path.relpath(p, ROOT) for p in found)


def cxx_flags():
    # No -march: the binary runs on any x86-64 CPU. The CPU kernels are compiled
    # once per instruction set (csrc/cpu/isa/) and chosen at run time.
    # -fno-trapping-math: without it GCC keeps the gate math's clamps and selects
    # as branches wherever it lacks AVX-512 masks, and the pointwise loops stay
    # scalar on AVX2 and baseline CPUs (nothing here uses floating-point traps).
    return ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-DNDEBUG"]


def build_cuda():
    wanted = os.environ.get("RNNKERN_CUDA")
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if wanted == "1" and not available:
        raise RuntimeError("RNNKERN_CUDA=1 needs a CUDA build of torch and a CUDA toolkit")
    return available if wanted is None else wanted == "1"


def pip_cuda_include_dirs():
    """Headers (cuBLAS, cuSPARSE, ...) that come with the nvidia-* pip wheels
    rather than with the toolkit; ATen's CUDA headers include them."""
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for root in nvidia.__path__:
        dirs += glob.glob(os.path.join(root, "*", "include"))
    return sorted(d for d in dirs if os.path.isdir(d))


def pip_cublas_link_args():
    """Link cuBLAS from the nvidia-* pip wheels that torch itself loads (the toolkit
    may come without it)."""
    try:
        import nvidia
    except ImportError:
        return ["-lcublas"]
    for root in nvidia.__path__:
        for lib in sorted(glob.glob(os.path.join(root, "*", "lib", "libcublas.so*"))):
            return [f"-L{os.path.dirname(lib)}", f"-l:{os.path.basename(lib)}"]
    return ["-lcublas"]


def extensions():
    core = sources("core/*.cpp", "cpu/*.cpp", "cpu/isa/*.cpp", "ops.cpp", "cell_autograd.cpp")
    common = dict(extra_link_args=["-fopenmp"], py_limited_api=False)
    if build_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        if os.environ.get("RNNKERN_PTXAS_VERBOSE") == "1":
            nvcc.append("-Xptxas=-v")
        main = cpp_extension.CUDAExtension(
            "rnnkern._C", core + sources("cuda/*.cu"),
            include_dirs=pip_cuda_include_dirs(),
            extra_compile_args={"cxx": cxx_flags(), "nvcc": nvcc},
            extra_link_args=common["extra_link_args"] + pip_cublas_link_args(),
            py_limited_api=False)
    else:
        main = cpp_extension.CppExtension(
            "rnnkern._C", core, extra_compile_args={"cxx": cxx_flags()}, **common)
    emulation = cpp_extension.CppExtension(
        "rnnkern._simt", sources("simt/*.cpp", "core/*.cpp"),
        extra_compile_args={"cxx": cxx_flags()}, **common)
    return [main, emulation]


setup(
    name="rnnkern",
    version="0.1.0",
    description="Fused kernels for RNN, LSTM and GRU time loops, drop-in for torch.nn",
    packages=find_packages(include=["rnnkern", "rnnkern.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    options={"build": {"build_base": os.environ.get("RNNKERN_BUILD_DIR", "build")}},
    python_requires=">=3.9",
    install_requires=["torch"],
)
