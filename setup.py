"""Build of rnnkern: the Python package and its C++ extension rnnkern._C.

Build against the torch you already have:  pip install --no-build-isolation .

Environment knobs:
  RNNKERN_NATIVE=0     do not compile for the build machine's CPU (-march=native);
                       use for a binary that must run on other x86-64 machines.
  RNNKERN_BUILD_DIR    setuptools' build directory (default: build/), so that
                       builds against different torch versions do not mix objects.
  MAX_JOBS             parallel compile jobs (ninja).
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cxx_flags():
    flags = ["-O3", "-g0", "-fopenmp", "-DNDEBUG"]
    if os.environ.get("RNNKERN_NATIVE", "1") != "0":
        flags.append("-march=native")
    return flags


def extensions():
    sources = sorted(
        os.path.relpath(p, ROOT)
        for p in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
    )
    return [
        CppExtension(
            "rnnkern._C",
            sources,
            extra_compile_args={"cxx": cxx_flags()},
            extra_link_args=["-fopenmp"],
            py_limited_api=False,
        )
    ]


setup(
    name="rnnkern",
    version="0.1.0",
    description="Fused CPU kernels for RNN, LSTM and GRU time loops, drop-in for torch.nn",
    packages=find_packages(include=["rnnkern", "rnnkern.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"build": {"build_base": os.environ.get("RNNKERN_BUILD_DIR", "build")}},
    python_requires=">=3.9",
    install_requires=["torch"],
)
