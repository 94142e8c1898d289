"""Registers, stack and spills of every CUDA kernel, from a build log made with
RNNKERN_PTXAS_VERBOSE=1 (ptxas -v). Prints a table; exits non-zero if any
kernel spills to local memory or the log holds no kernel at all, and if a
persistent kernel (persistent.h, grid_sync.h) uses local memory (a stack
frame), static shared memory (their tiles are sized at launch), or more
registers than its launch bound of PERSISTENT_THREADS threads on one SM
allows (REGISTER_FILE), for each architecture built.

    python tools/cuda_resources.py build-cuda/build.log
"""
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
REGISTERS = re.compile(r"Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")
PERSISTENT = re.compile(r"persistent_\w+_kernel|barrier_kernel")
PERSISTENT_THREADS = 256  # kPersistentThreads in persistent_common.h
REGISTER_FILE = 65536     # 32-bit registers per SM on sm_80 and sm_90
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
        return out if len(out) == len(names) else names
    except (OSError, subprocess.CalledProcessError):
        return names


def parse(lines):
    kernels, current = [], None
    for line in lines:
        if m := ENTRY.search(line):
            current = {"name": m.group(1), "arch": m.group(2), "registers": None,
                       "stack": None, "spill_stores": None, "spill_loads": None, "smem": 0}
            kernels.append(current)
        elif current is not None and (m := SPILLS.search(line)):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        elif current is not None and (m := REGISTERS.search(line)):
            current["registers"] = int(m.group(1))
            if sm := SMEM.search(line):
                current["smem"] = int(sm.group(1))
    return kernels


def main(path):
    with open(path, errors="replace") as f:
        kernels = parse(f)
    if not kernels:
        print(f"no ptxas report in {path}; build with RNNKERN_PTXAS_VERBOSE=1")
        return 1
    names = demangle([k["name"] for k in kernels])
    print(f"{'arch':<6} {'regs':>4} {'stack':>5} {'spill st':>8} {'spill ld':>8}  kernel")
    spilling = 0
    for k, name in zip(kernels, names):
        short = re.sub(r"^void rnnkern::cuda::", "", name)
        print(f"{k['arch']:<6} {k['registers'] or 0:>4} {k['stack'] or 0:>5} "
              f"{k['spill_stores'] or 0:>8} {k['spill_loads'] or 0:>8}  {short}")
        spilling += bool(k["spill_stores"] or k["spill_loads"])
    persistent = [(k, n) for k, n in zip(kernels, names) if PERSISTENT.search(n)]
    bad = []
    for k, name in persistent:
        regs = k["registers"] or 0
        if (k["stack"] or 0) or k["smem"] or regs * PERSISTENT_THREADS > REGISTER_FILE:
            bad.append(f"{k['arch']} {name}: {regs} registers x {PERSISTENT_THREADS} threads, "
                       f"{k['stack']} bytes stack, {k['smem']} bytes static shared memory")
    for line in bad:
        print("persistent kernel over its limits:", line)
    archs = sorted({k["arch"] for k, _ in persistent})
    print(f"{len(persistent)} persistent kernel builds ({', '.join(archs) or 'none'}): "
          f"{len(bad)} over the limits")
    print(f"{len(kernels)} kernel builds, {spilling} spilling")
    return 1 if spilling or bad or not persistent else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build-cuda/build.log"))
