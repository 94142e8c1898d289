"""Non-contiguous inputs and states, weights that are views, very long sequences."""
import pytest
import torch

from helpers import MODES, flat, make_pair, run_and_grad


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_input_and_state(mode):
    ref, ours = make_pair(mode, 3, 4, num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    x = torch.randn(2, 6, 7, dtype=torch.float64)[:, ::2, ::2].transpose(0, 1)  # (3, 2, 4)->view
    x = x[..., :3].detach().requires_grad_()
    assert not x.is_contiguous()
    big = torch.randn(4, 2, 8, dtype=torch.float64)
    h0 = big[:, :, ::2].detach().requires_grad_()
    assert not h0.is_contiguous()
    hx = (h0, big[:, :, 1::2].detach().requires_grad_()) if mode == "LSTM" else h0
    expected = run_and_grad(ref, x, hx, ref.parameters())
    got = run_and_grad(ours, x, hx, ours.parameters())
    torch.testing.assert_close(got[0], expected[0], atol=1e-10, rtol=0)
    for a, b in zip(got[1] + list(got[2]), expected[1] + list(expected[2])):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_weights_that_are_views(mode):
    ref, ours = make_pair(mode, 3, 4)
    # Every weight a (transposed / strided) view into one storage.
    names = [n for n, _ in ref.named_parameters()]
    storage = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    views, offset = {}, 0
    for name in names:
        shape = getattr(ref, name).shape
        n = shape.numel()
        flat_view = storage[offset:offset + 2 * n:2]
        views[name] = flat_view.view(shape[::-1]).t() if len(shape) == 2 else flat_view
        offset += 2 * n
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    expected = torch.func.functional_call(ref, views, (x,))[0]
    got = torch.func.functional_call(ours, views, (x,))[0]
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    (g_ref,) = torch.autograd.grad(expected.sum(), storage)
    (g_ours,) = torch.autograd.grad(got.sum(), storage)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_very_long_sequence(mode):
    # T = 10 000: an iterative C++ loop, memory linear in T, no recursion.
    ref, ours = make_pair(mode, 4, 8, dtype=torch.float32)
    torch.manual_seed(0)
    x = torch.randn(10_000, 2, 4, requires_grad=True)
    out, hidden = ours(x)
    with torch.no_grad():
        ref_out, ref_hidden = ref(x)
    torch.testing.assert_close(out, ref_out, atol=1e-4, rtol=1e-4)
    for a, b in zip(flat(hidden), flat(ref_hidden)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0
