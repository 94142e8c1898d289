"""torch.autograd.gradcheck of the fused layer op, per mode, direction and layout."""
import pytest
import torch

from rnnkern.functional import RNNLayerFunction
from rnnkern import _ops

MODES = list(_ops.MODE_IDS)


def _gates(mode):
    return {"LSTM": 4, "GRU": 3}.get(mode, 1)


def _inputs(mode, T, B, I, H, bias, packed_sizes=None):
    torch.manual_seed(0)
    G = _gates(mode)

    def rand(*shape):
        return (torch.randn(*shape, dtype=torch.float64) * 0.5).requires_grad_()

    if packed_sizes is not None:
        batch_sizes = torch.tensor(packed_sizes, dtype=torch.int64)
        x = rand(int(batch_sizes.sum()), I)
        B = packed_sizes[0]
    else:
        batch_sizes = None
        x = rand(T, B, I)
    hx = rand(B, H)
    cx = rand(B, H) if mode == "LSTM" else None
    w_ih, w_hh = rand(G * H, I), rand(G * H, H)
    b_ih, b_hh = (rand(G * H), rand(G * H)) if bias else (None, None)
    return x, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh


def _fn(mode, reverse):
    mode_id = _ops.MODE_IDS[mode]

    def f(x, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh):
        out, hy, cy = RNNLayerFunction.apply(mode_id, x, batch_sizes, hx, cx, w_ih, w_hh, b_ih,
                                             b_hh, reverse, True)
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


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_only_some_inputs(mode):
    # Gradients flow to the inputs that ask for them, and to no others.
    x, bs, hx, cx, w_ih, w_hh, b_ih, b_hh = _inputs(mode, T=3, B=2, I=2, H=2, bias=True)
    w_ih = w_ih.detach()
    b_ih = b_ih.detach()
    assert torch.autograd.gradcheck(_fn(mode, False), (x, bs, hx, cx, w_ih, w_hh, b_ih, b_hh))


def test_packed_equals_each_sequence_alone():
    # The op's packed layout: each sequence gives what it gives when run alone.
    torch.manual_seed(1)
    lengths = [5, 3, 3, 1]
    I, H = 3, 4
    seqs = [torch.randn(n, I, dtype=torch.float64) for n in lengths]
    packed = torch.nn.utils.rnn.pack_sequence(seqs)
    w_ih, w_hh = torch.randn(4 * H, I, dtype=torch.float64), torch.randn(4 * H, H, dtype=torch.float64)
    hx = torch.randn(len(lengths), H, dtype=torch.float64)
    cx = torch.randn(len(lengths), H, dtype=torch.float64)
    for reverse in (False, True):
        out, hy, cy = RNNLayerFunction.apply(2, packed.data, packed.batch_sizes, hx, cx, w_ih,
                                             w_hh, None, None, reverse, False)
        unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(
            torch.nn.utils.rnn.PackedSequence(out, packed.batch_sizes))
        for b, seq in enumerate(seqs):
            o, h, c = RNNLayerFunction.apply(2, seq[:, None], None, hx[b:b + 1], cx[b:b + 1],
                                             w_ih, w_hh, None, None, reverse, False)
            torch.testing.assert_close(unpacked[: lengths[b], b], o[:, 0], atol=1e-12, rtol=0)
            torch.testing.assert_close(hy[b], h[0], atol=1e-12, rtol=0)
            torch.testing.assert_close(cy[b], c[0], atol=1e-12, rtol=0)
