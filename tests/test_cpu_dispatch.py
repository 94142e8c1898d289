"""The CPU kernels compiled per instruction set and chosen at run time.

Every capability this CPU has is tested here: the packed GEMM against torch.mm
over awkward shapes, and every mode's forward and backward against torch.nn
(float64) and against the baseline path (float32). The binary itself is
checked to keep wide instructions inside the kernels compiled for them, so
that it runs on any x86-64 CPU whatever machine built it.
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch

import rnnkern
from rnnkern import _ops

from helpers import MODES, flat, make_pair, run_and_grad

ORDER = ["default", "avx2", "avx512"]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_capability():
    """What the CPU supports, from the kernel's own report of its flags."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "default"
    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


SUPPORTED = ORDER[: ORDER.index(best_capability()) + 1]


@pytest.fixture(params=SUPPORTED)
def capability(request):
    previous = _ops.set_cpu_capability(request.param)
    assert rnnkern.cpu_capability() == request.param
    yield request.param
    _ops.set_cpu_capability(previous)


def _capability_in_subprocess(value):
    env = dict(os.environ, RNNKERN_CPU_CAPABILITY=value)
    code = "import rnnkern; print(rnnkern.cpu_capability())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(__file__), timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip(), run.stderr


def test_the_best_capability_is_chosen():
    if os.environ.get("RNNKERN_CPU_CAPABILITY"):
        pytest.skip("RNNKERN_CPU_CAPABILITY is set for this run")
    assert rnnkern.cpu_capability() == best_capability()


@pytest.mark.parametrize("wanted", ORDER)
def test_environment_forces_a_lower_capability(wanted):
    got, _ = _capability_in_subprocess(wanted)
    # A capability the CPU lacks is not taken: the best one below it is.
    expected = wanted if wanted in SUPPORTED else SUPPORTED[-1]
    assert got == expected


def test_unknown_capability_warns_and_uses_the_best():
    got, err = _capability_in_subprocess("sse9")
    assert got == best_capability()
    assert "RNNKERN_CPU_CAPABILITY=sse9" in err


def test_setting_an_unsupported_capability_is_an_error():
    with pytest.raises(RuntimeError, match="unknown CPU capability"):
        _ops.set_cpu_capability("neon")
    if "avx512" not in SUPPORTED:
        with pytest.raises(RuntimeError, match="does not support avx512"):
            _ops.set_cpu_capability("avx512")


# (m, n, k): rows around every register-block height (1-14) and the small-row
# limit (8), columns around the panel widths (8, 16, 32), K around the K blocks;
# K of 1-8 with a transposed A (weight gradients of a few rows), on one thread
# and split over threads; fewer than 64 rows times a weight of 32K+ elements
# (packed on the fly when transposed, else BLAS); with a packed op(B) wide
# enough that a row block of C kept in L2 has only a few strips.
GEMM_SHAPES = [(1, 5, 3), (8, 33, 17), (9, 31, 129), (13, 64, 200), (14, 32, 1), (15, 100, 257),
               (29, 7, 64), (64, 96, 513), (170, 65, 300), (600, 40, 33), (37, 1030, 70),
               (32, 257, 128), (256, 77, 5), (1030, 260, 8), (300, 1000, 9),
               (200, 3000, 260)]


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
@pytest.mark.parametrize("pack_b", [False, True])
def test_gemm_matches_torch_mm(capability, m, n, k, trans_a, trans_b, pack_b):
    torch.manual_seed(m * 1000 + n + k)
    a = torch.randn(k, m) if trans_a else torch.randn(m, k)
    b = torch.randn(n, k) if trans_b else torch.randn(k, n)
    got = torch.ops.rnnkern._gemm(a, b, trans_a, trans_b, pack_b, 2)
    want = (a.double().t() if trans_a else a.double()) @ (b.double().t() if trans_b else b.double())
    assert got.shape == (m, n)
    torch.testing.assert_close(got.double(), want, atol=2e-5 * max(k, 1) ** 0.5 * 4, rtol=1e-5)


def test_gemm_with_empty_k_is_zero(capability):
    got = torch.ops.rnnkern._gemm(torch.randn(20, 0), torch.randn(0, 40), False, False, True)
    assert torch.equal(got, torch.zeros(20, 40))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 3, 20])
def test_float64_parity_on_every_path(capability, mode, batch):
    ref, ours = make_pair(mode, 7, 24, num_layers=2, bidirectional=True)
    x = torch.randn(9, batch, 7, dtype=torch.float64, requires_grad=True)
    want = run_and_grad(ref, x, None, list(ref.parameters()))
    got = run_and_grad(ours, x, None, list(ours.parameters()))
    torch.testing.assert_close(got[0], want[0], atol=1e-10, rtol=0)
    for a, b in zip(got[1] + list(got[2]), want[1] + list(want[2])):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


@pytest.mark.parametrize("mode,proj", [(m, 0) for m in MODES] + [("LSTM", 20)])
@pytest.mark.parametrize("batch", [1, 6, 40])
def test_float32_paths_equal_the_default_path(capability, mode, proj, batch):
    kwargs = dict(num_layers=2, dtype=torch.float32)
    if proj:
        kwargs["proj_size"] = proj
    _, ours = make_pair(mode, 48, 72, **kwargs)
    x = torch.randn(30, batch, 48, requires_grad=True)

    def run(cap):
        previous = _ops.set_cpu_capability(cap)
        try:
            return run_and_grad(ours, x, None, list(ours.parameters()))
        finally:
            _ops.set_cpu_capability(previous)

    base, this = run("default"), run(capability)
    for a, b in zip([this[0]] + this[1] + list(this[2]), [base[0]] + base[1] + list(base[2])):
        scale = b.abs().max().item() + 1e-6
        assert (a - b).abs().max().item() <= 2e-5 * scale


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("batch", [1, 5, 33])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cell_inference_on_every_path(capability, cell, batch, dtype):
    # The cell operator's GEMMs and pointwise step, per instruction set.
    torch.manual_seed(batch)
    ref = getattr(torch.nn, cell)(40, 56).to(dtype)
    ours = getattr(rnnkern, cell)(40, 56).to(dtype)
    ours.load_state_dict(ref.state_dict())
    x, h = torch.randn(batch, 40, dtype=dtype), torch.randn(batch, 56, dtype=dtype)
    state = (h, h * 0.5) if cell == "LSTMCell" else h
    with torch.no_grad():
        want, got = ref(x, state), ours(x, state)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(want if isinstance(want, tuple) else [want],
                    got if isinstance(got, tuple) else [got]):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)


def _extension_binary():
    return glob.glob(os.path.join(os.path.dirname(_ops.__file__), "_C*.so"))[0]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 instruction sets only")
def test_wide_instructions_stay_in_their_kernels():
    # Library code (std, ATen, c10 inline functions) compiled inside an AVX-512
    # kernel file could be the copy the linker keeps, and crash an AVX2 CPU.
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", _extension_binary()],
                          capture_output=True, text=True, check=True).stdout
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    avx512_reg = re.compile(r"%zmm|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|%k[0-7]\b")
    function, seen, misplaced = None, {"avx512": 0, "avx": 0}, {}
    for line in text.splitlines():
        match = header.match(line)
        if match:
            function = match.group(1)
            continue
        if "\t" not in line or function is None:
            continue
        instruction = line.split("\t", 1)[1].strip()
        if avx512_reg.search(instruction):
            seen["avx512"] += 1
            allowed = ("isa_avx512",)
        elif instruction.startswith("v"):  # VEX-encoded: AVX and up
            seen["avx"] += 1
            allowed = ("isa_avx2", "isa_avx512")
        else:
            continue
        if not any(name in function for name in allowed):
            misplaced.setdefault(function, instruction)
    assert seen["avx512"] > 0 and seen["avx"] > 0, "no per-capability kernels were found"
    assert not misplaced, f"wide instructions outside their kernels: {list(misplaced.items())[:5]}"


def test_fma_peak_probe_runs(capability):
    gflops = torch.ops.rnnkern._fma_peak_gflops(1)
    assert 0.1 < gflops < 10_000
