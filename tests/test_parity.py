"""Outputs, final states and every gradient equal torch.nn's, over the whole flag grid."""
import itertools

import pytest
import torch

from helpers import MODES, hidden_like, make_pair, run_and_grad

GRID = list(
    itertools.product(
        MODES,            # mode
        [1, 2, 3],        # num_layers
        [False, True],    # bidirectional
        [False, True],    # batch_first
        [True, False],    # bias
        [True, False],    # hx given
        [False, True],    # unbatched
    )
)


def _check(mode, num_layers, bidirectional, batch_first, bias, hx_given, unbatched, T, B, I, H,
           dtype=torch.float64, atol=1e-10, rtol=0.0):
    ref, ours = make_pair(mode, I, H, num_layers=num_layers, bias=bias, batch_first=batch_first,
                          bidirectional=bidirectional, dtype=dtype, seed=T * 7 + H)
    torch.manual_seed(99)
    if unbatched:
        shape = (T, I)
    else:
        shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    hx = hidden_like(mode, ref, B, dtype=dtype, unbatched=unbatched) if hx_given else None
    ref_out, ref_h, ref_g = run_and_grad(ref, x, hx, ref.parameters())
    out, h, g = run_and_grad(ours, x, hx, ours.parameters())
    torch.testing.assert_close(out, ref_out, atol=atol, rtol=rtol)
    assert len(h) == len(ref_h)
    for a, b in zip(h, ref_h):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    assert len(g) == len(ref_g)
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@pytest.mark.parametrize("mode,num_layers,bidirectional,batch_first,bias,hx_given,unbatched", GRID)
def test_float64_grid(mode, num_layers, bidirectional, batch_first, bias, hx_given, unbatched):
    _check(mode, num_layers, bidirectional, batch_first, bias, hx_given, unbatched,
           T=4, B=3, I=5, H=7)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T,B,I,H", [(1, 2, 3, 4), (5, 1, 1, 1), (1, 1, 1, 1), (3, 4, 2, 1),
                                     (6, 3, 33, 70)])
def test_float64_odd_sizes(mode, T, B, I, H):
    _check(mode, 2, True, False, True, True, False, T=T, B=B, I=I, H=H)


@pytest.mark.parametrize("mode", MODES)
def test_float64_long_and_wide(mode):
    # A hidden size over the CPU's column block (512) and enough rows that the
    # pointwise step runs on several threads.
    _check(mode, 1, True, False, True, True, False, T=20, B=40, I=16, H=530)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("B,H", [(5, 17), (19, 45), (40, 64)])  # small-batch and packed-GEMM paths
def test_float32(mode, bidirectional, B, H):
    _check(mode, 2, bidirectional, False, True, True, False, T=12, B=B, I=9, H=H,
           dtype=torch.float32, atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_batch_size_zero(mode):
    ref, ours = make_pair(mode, 3, 4, num_layers=2)
    x = torch.randn(5, 0, 3, dtype=torch.float64, requires_grad=True)
    ref_out, ref_h = ref(x)
    out, h = ours(x)
    assert out.shape == ref_out.shape == (5, 0, 4)
    for a, b in zip(
        h if isinstance(h, tuple) else [h], ref_h if isinstance(ref_h, tuple) else [ref_h]
    ):
        assert a.shape == b.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("mode", MODES)
def test_extreme_values_saturate_like_torch(mode):
    ref, ours = make_pair(mode, 3, 5)
    x = torch.tensor([[[-800.0, 0.0, 800.0]], [[1e-30, -1e-30, 40.0]]], dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_nan_propagates(mode):
    ref, ours = make_pair(mode, 3, 5)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    x[1, 0, 1] = float("nan")
    ref_out, _ = ref(x)
    out, _ = ours(x)
    assert torch.equal(torch.isnan(out), torch.isnan(ref_out))
