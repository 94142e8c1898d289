"""Builds and runs the self-test of the CPU SIMT emulation harness.

The harness (csrc/simt/simt_emulation.h) lets the CUDA kernels run on the CPU,
so the kernel tests are only as good as it is: this checks barriers, the
randomised thread order, shared-memory poisoning and error reporting.
"""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tests", "simt", "harness_selftest.cpp")
CXX = shutil.which("g++")
BASE_FLAGS = ["-std=c++17", "-O1", "-Wall", "-Werror"]

# Every check the self-test prints; a check that silently disappears fails too.
EXPECTED_CHECKS = {"a", "b1", "b2", "b3", "c", "c2", "d", "e", "f1", "f2", "f3", "g"}

pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++")


def _compile(tmp_path, name, extra_flags):
    exe = tmp_path / name
    cmd = [CXX, *BASE_FLAGS, *extra_flags, SOURCE, "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return exe


def _asan_works(tmp_path):
    probe, exe = tmp_path / "asan_probe.cpp", tmp_path / "asan_probe"
    probe.write_text("int main() { return 0; }\n")
    cmd = [CXX, "-fsanitize=address", str(probe), "-o", str(exe)]
    if subprocess.run(cmd, capture_output=True, timeout=120).returncode != 0:
        return False
    return subprocess.run([str(exe)], capture_output=True, timeout=60).returncode == 0


def _run(exe):
    # A broken barrier could deadlock the scheduler; the timeout turns that into a failure.
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, f"self-test failed (rc={proc.returncode}):\n{out}\n{proc.stderr}"
    assert not re.search(r"^FAIL", out, re.M), out
    passed = set(re.findall(r"^PASS (\w+):", out, re.M))
    assert passed == EXPECTED_CHECKS, f"missing checks {EXPECTED_CHECKS - passed}:\n{out}"
    assert re.search(r"^OK: 0 failed$", out, re.M), out
    return out


def _check_output(out):
    caught = re.search(r"missing barrier caught by (\d+)/(\d+) seeds", out)
    assert caught, out
    assert int(caught.group(1)) > 0, "a missing barrier went unnoticed for every seed"
    assert "divergent __syncthreads" in out
    timing = re.search(r"INFO g: .*?([\d.]+) us per launch with one barrier, ([\d.]+) us empty",
                       out)
    assert timing, out
    return float(timing.group(1)), float(timing.group(2))


# ASan works with ucontext fibers because the harness annotates every stack
# switch (__sanitizer_start/finish_switch_fiber); ASan still prints a one-line
# warning about swapcontext on stderr, which is expected.
@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_simt_harness_selftest(tmp_path, sanitize):
    if sanitize and not _asan_works(tmp_path):
        pytest.skip("-fsanitize=address does not link or run here")
    extra = ["-fsanitize=address", "-fno-omit-frame-pointer"] if sanitize else []
    exe = _compile(tmp_path, "harness_selftest" + ("_asan" if sanitize else ""), extra)
    barrier_us, empty_us = _check_output(_run(exe))
    if not sanitize:
        # Generous bound (the target is well under 1 ms): catches stacks being
        # created per launch instead of pooled, not ordinary machine noise.
        assert barrier_us < 5000 and empty_us < 5000, (barrier_us, empty_us)


GRID_SOURCE = os.path.join(ROOT, "tests", "simt", "grid_selftest.cpp")
GRID_CHECKS = {"w1", "w2", "w3", "g1", "g2", "g3", "g4"}


def test_simt_grid_selftest(tmp_path):
    # Warp shuffles and votes, mma.sync's fragment layout, co-resident blocks meeting at grid_sync.h's
    # barrier, the deadlock report of an oversized grid, and the weak memory
    # model catching a missing release fence.
    exe = tmp_path / "grid_selftest"
    cmd = [CXX, *BASE_FLAGS, GRID_SOURCE, "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(re.findall(r"^PASS (\w+):", run.stdout, re.M)) == GRID_CHECKS, run.stdout
