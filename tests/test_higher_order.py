"""Derivatives beyond first-order backward of the layer op, checked numerically:
forward-mode AD, vmap over the backward, double backward (reverse over
reverse and forward over reverse), through the autograd.Function and the op."""
import pytest
import torch

from rnnkern import _ops
from rnnkern.functional import RNNLayerFunction

from test_gradcheck import _inputs

MODES = list(_ops.MODE_IDS)
# vmap over jvp is checked through torch.func.jacfwd in test_transforms.py
# (gradcheck's batched forward-grad check uses the legacy vmap).
CHECKS = dict(check_forward_ad=True, check_backward_ad=True, check_batched_grad=True,
              check_batched_forward_grad=False)


def _through(api, mode, reverse):
    mode_id = _ops.MODE_IDS[mode]

    def f(*args):
        if api == "function":
            out, hy, cy = RNNLayerFunction.apply(mode_id, *args, reverse, True)
        else:
            out, hy, cy = torch.ops.rnnkern.layer_forward(mode_id, *args, reverse, True)[:3]
        return (out, hy, cy) if mode == "LSTM" else (out, hy)

    return f


def _cases():
    for mode in MODES:
        yield mode, False, None, 0
        yield mode, True, [3, 2, 1], 0
    yield "LSTM", False, None, 2
    yield "LSTM", True, [3, 3, 1], 2


@pytest.mark.parametrize("api", ["function", "op"])
@pytest.mark.parametrize("mode,reverse,packed,proj", list(_cases()))
def test_forward_ad_and_batched_grads(api, mode, reverse, packed, proj):
    args = _inputs(mode, T=3, B=2, I=2, H=3 if not proj else 4, bias=True, packed_sizes=packed,
                   proj=proj)
    assert torch.autograd.gradcheck(_through(api, mode, reverse), args, **CHECKS)


@pytest.mark.parametrize("api", ["function", "op"])
@pytest.mark.parametrize("mode,reverse,packed,proj", list(_cases()))
def test_double_backward(api, mode, reverse, packed, proj):
    args = _inputs(mode, T=3, B=2, I=2, H=2 if not proj else 3, bias=True, packed_sizes=packed,
                   proj=proj)
    assert torch.autograd.gradgradcheck(_through(api, mode, reverse), args,
                                        check_fwd_over_rev=True, check_batched_grad=True)


@pytest.mark.parametrize("mode", MODES)
def test_double_backward_without_bias_and_frozen_weights(mode):
    x, bs, hx, cx, w_ih, w_hh, _, _, w_hr = _inputs(mode, T=3, B=2, I=2, H=2, bias=False)
    args = (x, bs, hx, cx, w_ih.detach(), w_hh, None, None, w_hr)
    assert torch.autograd.gradgradcheck(_through("function", mode, False), args)


def test_layer_backward_is_not_differentiated_silently():
    # The first-order formula op refuses to be differentiated rather than
    # return a gradient without a graph.
    args = _inputs("GRU", T=3, B=2, I=2, H=2, bias=True)
    out = torch.ops.rnnkern.layer_forward(3, *args, False, True)
    x, bs, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = args
    grad = torch.randn_like(out[0]).requires_grad_()
    with pytest.raises(RuntimeError, match="layer_backward is not differentiable"):
        torch.ops.rnnkern.layer_backward(3, x, bs, w_ih, w_hh, w_hr, out[0], *out[3:], grad,
                                         None, None, False, 2, [True, True, True, True])
