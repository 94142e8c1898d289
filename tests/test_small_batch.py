"""The small-batch loops (batch <= 8: per-thread resident weights, spinning
barrier) against torch.nn in float32, on every instruction set this CPU has:
hidden sizes that are not vector multiples, packed sequences, both directions,
forward and backward, one and two threads."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from helpers import MODES, flat, make_pair, run_and_grad
from test_cpu_dispatch import capability  # noqa: F401  (the fixture)


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}threads")
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def _close(got, want, tol=2e-5):
    scale = want.abs().max().item() + 1e-6
    assert (got - want).abs().max().item() <= tol * scale


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch,hidden", [(1, 200), (3, 33), (8, 72)])
def test_dense_forward_and_backward(capability, threads, mode, batch, hidden):  # noqa: F811
    ref, ours = make_pair(mode, 24, hidden, bidirectional=True, dtype=torch.float32)
    x = torch.randn(12, batch, 24, requires_grad=True)
    want = run_and_grad(ref, x, None, list(ref.parameters()))
    got = run_and_grad(ours, x, None, list(ours.parameters()))
    for a, b in zip([got[0]] + got[1] + list(got[2]), [want[0]] + want[1] + list(want[2])):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("batch,hidden,proj", [(1, 200, 72), (3, 33, 5), (8, 72, 40)])
def test_projected_lstm(capability, threads, batch, hidden, proj):  # noqa: F811
    ref, ours = make_pair("LSTM", 24, hidden, proj_size=proj, bidirectional=True,
                          dtype=torch.float32)
    x = torch.randn(12, batch, 24, requires_grad=True)
    want = run_and_grad(ref, x, None, list(ref.parameters()))
    got = run_and_grad(ours, x, None, list(ours.parameters()))
    for a, b in zip([got[0]] + got[1] + list(got[2]), [want[0]] + want[1] + list(want[2])):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("mode,proj", [(m, 0) for m in MODES] + [("LSTM", 17)])
def test_packed_sequences_join_and_leave(capability, threads, mode, proj):  # noqa: F811
    kwargs = {"proj_size": proj} if proj else {}
    ref, ours = make_pair(mode, 5, 40, dtype=torch.float32, **kwargs)
    torch.manual_seed(3)
    seqs = [torch.randn(n, 5) for n in (9, 7, 7, 4, 1)]
    packed = pack_sequence(seqs)
    with torch.no_grad():
        want, want_h = ref(packed)
        got, got_h = ours(packed)
    _close(got.data, want.data)
    for a, b in zip(flat(got_h), flat(want_h)):
        _close(a, b)


def test_read_bandwidth_probe_runs():
    gbps = torch.ops.rnnkern._read_bandwidth_gbps(1 << 18, 1)
    assert 0.1 < gbps < 100_000


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 5, 12])
def test_bidirectional_layers_run_both_directions_in_one_call(mode, batch, monkeypatch):
    from rnnkern import _bidirectional, _ops, _stack
    monkeypatch.setattr(_stack, "ENABLED", False)  # the per-layer path, which this op serves
    calls = []
    real = _ops.layer_forward_bidirectional

    def spy(*args):
        calls.append(args[-1])
        return real(*args)

    ref, ours = make_pair(mode, 6, 20, num_layers=2, bidirectional=True)
    x = torch.randn(7, batch, 6, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(_ops, "layer_forward_bidirectional", spy)
    got = run_and_grad(ours, x, None, list(ours.parameters()))
    assert calls == [True, True]  # one call per layer, both directions, saving for backward
    monkeypatch.setattr(_bidirectional, "ENABLED", False)
    separate = run_and_grad(ours, x, None, list(ours.parameters()))
    want = run_and_grad(ref, x, None, list(ref.parameters()))
    assert len(calls) == 2
    for a, b, c in zip([got[0]] + got[1] + list(got[2]), [separate[0]] + separate[1] +
                       list(separate[2]), [want[0]] + want[1] + list(want[2])):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        torch.testing.assert_close(a, c, atol=1e-10, rtol=0)
