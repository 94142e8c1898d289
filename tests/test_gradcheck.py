"""torch.autograd.gradcheck of the fused layer op, per mode, direction and layout."""
import pytest
import torch

from rnnkern import _ops
from rnnkern.functional import RNNLayerFunction

MODES = list(_ops.MODE_IDS)


def _gates(mode):
    return {"LSTM": 4, "GRU": 3}.get(mode, 1)


def _inputs(mode, T, B, I, H, bias, packed_sizes=None, proj=0):
    torch.manual_seed(0)
    G = _gates(mode)
    R = proj or H

    def rand(*shape):
        return (torch.randn(*shape, dtype=torch.float64) * 0.5).requires_grad_()

    if packed_sizes is not None:
        batch_sizes = torch.tensor(packed_sizes, dtype=torch.int64)
        x = rand(int(batch_sizes.sum()), I)
        B = packed_sizes[0]
    else:
        batch_sizes = None
        x = rand(T, B, I)
    hx = rand(B, R)
    cx = rand(B, H) if mode == "LSTM" else None
    w_ih, w_hh = rand(G * H, I), rand(G * H, R)
    b_ih, b_hh = (rand(G * H), rand(G * H)) if bias else (None, None)
    w_hr = rand(R, H) if proj else None
    return x, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr


def _fn(mode, reverse):
    mode_id = _ops.MODE_IDS[mode]

    def f(*args):
        out, hy, cy = RNNLayerFunction.apply(mode_id, *args, reverse, True)
        return (out, hy, cy) if mode == "LSTM" else (out, hy)

    return f


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_dense(mode, reverse, bias):
    args = _inputs(mode, T=4, B=3, I=2, H=3, bias=bias)
    assert torch.autograd.gradcheck(_fn(mode, reverse), args)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_packed(mode, reverse):
    # Sequences of lengths 3, 2, 2, 1: rows join and leave the batch.
    args = _inputs(mode, T=None, B=None, I=2, H=3, bias=True, packed_sizes=[4, 3, 1])
    assert torch.autograd.gradcheck(_fn(mode, reverse), args)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_lstm_projection(reverse, packed, bias):
    args = _inputs("LSTM", T=4, B=3, I=2, H=4, bias=bias, proj=2,
                   packed_sizes=[3, 3, 2, 1] if packed else None)
    assert torch.autograd.gradcheck(_fn("LSTM", reverse), args)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_only_some_inputs(mode):
    # Gradients flow to the inputs that ask for them, and to no others.
    x, bs, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = _inputs(mode, T=3, B=2, I=2, H=2, bias=True)
    args = (x, bs, hx, cx, w_ih.detach(), w_hh, b_ih.detach(), b_hh, w_hr)
    assert torch.autograd.gradcheck(_fn(mode, False), args)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_layout_equals_each_sequence_alone(mode, reverse):
    torch.manual_seed(1)
    lengths = [5, 3, 3, 1]
    I, H, G = 3, 4, _gates(mode)
    seqs = [torch.randn(n, I, dtype=torch.float64) for n in lengths]
    packed = torch.nn.utils.rnn.pack_sequence(seqs)
    w_ih = torch.randn(G * H, I, dtype=torch.float64)
    w_hh = torch.randn(G * H, H, dtype=torch.float64)
    hx = torch.randn(len(lengths), H, dtype=torch.float64)
    cx = torch.randn(len(lengths), H, dtype=torch.float64) if mode == "LSTM" else None
    mode_id = _ops.MODE_IDS[mode]
    out, hy, cy = RNNLayerFunction.apply(mode_id, packed.data, packed.batch_sizes, hx, cx, w_ih,
                                         w_hh, None, None, None, reverse, False)
    unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(
        torch.nn.utils.rnn.PackedSequence(out, packed.batch_sizes))
    for b, seq in enumerate(seqs):
        o, h, c = RNNLayerFunction.apply(mode_id, seq[:, None], None, hx[b:b + 1],
                                         cx[b:b + 1] if cx is not None else None, w_ih, w_hh,
                                         None, None, None, reverse, False)
        torch.testing.assert_close(unpacked[: lengths[b], b], o[:, 0], atol=1e-12, rtol=0)
        torch.testing.assert_close(hy[b], h[0], atol=1e-12, rtol=0)
        if cx is not None:
            torch.testing.assert_close(cy[b], c[0], atol=1e-12, rtol=0)
