"""Every CUDA kernel's source, run on the CPU through the SIMT emulation
(rnnkern._simt), against the CPU ops: forward and backward of every mode, dense
and packed, with projections, in every dtype, with launch configurations that
leave threads idle and make the grid-stride loops wrap."""
import os
import re
import shutil

import pytest
import torch

from rnnkern import _ops
import rnnkern._simt  # noqa: F401  (registers torch.ops.rnnkern_simt)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMT = torch.ops.rnnkern_simt

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2,
             torch.float16: 2e-3}
# (threads per block, grid cap): the default, and a tiny grid that forces every
# 1-D kernel through several grid-stride iterations and partial blocks.
LAUNCH_CONFIGS = [(256, 4096), (32, 2), (96, 1)]


@pytest.fixture(autouse=True)
def default_launch_config():
    yield
    SIMT.set_launch_config(256, 4096, 1)


def layer_args(mode, T, B, I, H, packed, proj, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    R = proj or H

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.7).to(dtype)

    if packed:
        lengths = sorted(torch.randint(1, T + 1, (B,), generator=gen).tolist(), reverse=True)
        lengths[0] = T
        batch_sizes = torch.tensor([sum(n > t for n in lengths) for t in range(T)])
        x = rand(int(batch_sizes.sum()), I)
    else:
        batch_sizes = None
        x = rand(T, B, I)
    cx = rand(B, H) if mode == "LSTM" else None
    return [_ops.MODE_IDS[mode], x, batch_sizes, rand(B, R), cx, rand(G * H, I), rand(G * H, R),
            rand(G * H), rand(G * H), rand(R, H) if proj else None]


def compare(expected, got, dtype):
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def run_both(args, reverse):
    fwd_args = args + [reverse, True]
    expected = torch.ops.rnnkern.layer_forward(*fwd_args)
    got = SIMT.layer_forward(*fwd_args)
    mode, x, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = args
    out, hy, cy = expected[:3]
    gen = torch.Generator().manual_seed(7)
    grads = [torch.randn(t.shape, generator=gen).to(t.dtype) if t.numel() else None
             for t in (out, hy, cy)]
    bwd_args = [mode, x, batch_sizes, w_ih, w_hh, w_hr, *expected[:1], *expected[3:], *grads,
                reverse, hx.shape[0], [True, True, True, True]]
    data_args = bwd_args[:-1] + [True]  # the backward's gate gradients (per-sample gradients)
    return (expected, got,
            torch.ops.rnnkern.layer_backward(*bwd_args), SIMT.layer_backward(*bwd_args),
            torch.ops.rnnkern.layer_backward_data(*data_args), SIMT.layer_backward_data(*data_args))


CASES = [(mode, packed, 0) for mode in _ops.MODE_IDS for packed in (False, True)] + \
    [("LSTM", False, 3), ("LSTM", True, 3)]
SIZES = [  # (T, B, I, H): awkward on purpose
    (3, 5, 7, 33),   # rows * H not a multiple of the block size
    (2, 1, 1, 1),    # batch 1, H = 1
    (4, 9, 3, 70),   # more elements than any tiny grid covers
]


@pytest.mark.parametrize("mode,packed,proj", CASES)
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("launch", LAUNCH_CONFIGS, ids=str)
def test_kernels_match_cpu_float64(mode, packed, proj, size, launch):
    T, B, I, H = size
    if proj and H == 1:
        proj = 0  # a projection must be smaller than H
    SIMT.set_launch_config(*launch, 11)
    for reverse in (False, True):
        expected, got, grads_expected, grads_got, data_expected, data_got = run_both(
            layer_args(mode, T, B, I, H, packed, proj, torch.float64), reverse)
        compare(expected, got, torch.float64)
        compare(grads_expected, grads_got, torch.float64)
        compare(data_expected, data_got, torch.float64)


@pytest.mark.parametrize("mode,packed,proj", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_kernels_match_cpu_other_dtypes(mode, packed, proj, dtype):
    SIMT.set_launch_config(64, 3, 5)
    expected, got, grads_expected, grads_got, _, _ = run_both(
        layer_args(mode, 3, 4, 5, 17, packed, proj, dtype), reverse=True)
    compare(expected, got, dtype)
    compare(grads_expected, grads_got, dtype)


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 33), (64, 40), (0, 5), (13, 300)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_column_sum_kernel(rows, cols, seed):
    # cols over 32 x max_blocks makes the blocks walk several tiles.
    SIMT.set_launch_config(256, 2, seed)
    x = torch.randn(rows, cols, dtype=torch.float64)
    torch.testing.assert_close(SIMT.column_sum(x), x.sum(0), atol=1e-12, rtol=0)


def test_wrong_launch_configuration_is_caught():
    # The bias reduction assumes 8 rows of threads per block; with 4, half of
    # its shared memory is never written and the (poisoned) sums come out wrong.
    x = torch.randn(16, 40, dtype=torch.float64)
    torch.testing.assert_close(SIMT.column_sum(x, 8), x.sum(0), atol=1e-12, rtol=0)
    assert not torch.allclose(SIMT.column_sum(x, 4), x.sum(0))


def _build_mutant(tmp_path, replace, by, name):
    """The emulated ops built from a copy of csrc/ with one edit in kernels.h."""
    from torch.utils import cpp_extension
    src = tmp_path / "csrc"
    shutil.copytree(os.path.join(ROOT, "csrc"), src)
    kernels = src / "cuda" / "kernels.h"
    text = kernels.read_text()
    assert text.count(replace) == 1, "the mutation no longer applies; update the test"
    kernels.write_text(text.replace(replace, by))
    build = tmp_path / "build"
    build.mkdir()
    cpp_extension.load(
        name=name, build_directory=str(build), is_python_module=False, verbose=False,
        sources=[str(src / "simt" / "emulated_ops.cpp"), str(src / "core" / "layer_checks.cpp")],
        extra_cflags=["-O1", "-g0", f"-DRNNKERN_SIMT_OPS={name}"])
    return getattr(torch.ops, name)


def test_planted_indexing_bug_is_caught(tmp_path):
    # A wrong row stride in the forward kernel's index arithmetic: the emulated
    # run must then disagree with the CPU op, as every test above would.
    mutant = _build_mutant(
        tmp_path, "forward_element<M>(s, i / s.hidden, i % s.hidden);",
        "forward_element<M>(s, i / (s.hidden + 1), i % s.hidden);", "rnnkern_simt_mutant")
    args = layer_args("GRU", 3, 2, 3, 5, False, 0, torch.float64) + [False, True]
    expected = torch.ops.rnnkern.layer_forward(*args)
    torch.testing.assert_close(SIMT.layer_forward(*args)[0], expected[0], atol=1e-12, rtol=0)
    assert not torch.allclose(mutant.layer_forward(*args)[0], expected[0])


@pytest.mark.parametrize("mode", list(_ops.MODE_IDS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_cell_op_kernels_match_cpu(mode, dtype):
    args = layer_args(mode, 1, 3, 4, 21, False, 0, dtype)
    m, x, _, hx, cx, w_ih, w_hh, b_ih, b_hh, _ = args
    cell = [m, x[0], hx, cx, w_ih, w_hh, b_ih, b_hh]
    compare(torch.ops.rnnkern.cell_forward(*cell), SIMT.cell_forward(*cell), dtype)
