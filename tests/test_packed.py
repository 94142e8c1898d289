"""PackedSequence input: equals torch.nn, and equals running each sequence on its own."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

from helpers import MODES, flat, make_pair

LENGTHS = [6, 4, 4, 1, 3]  # unsorted on purpose


def _sequences(I, dtype=torch.float64, seed=3):
    torch.manual_seed(seed)
    return [torch.randn(n, I, dtype=dtype, requires_grad=True) for n in LENGTHS]


def _initial_state(mode, module, batch):
    layers = module.num_layers * (2 if module.bidirectional else 1)
    real = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    torch.manual_seed(4)
    h = torch.randn(layers, batch, real, dtype=torch.float64, requires_grad=True)
    if mode == "LSTM":
        return (h, torch.randn(layers, batch, module.hidden_size, dtype=torch.float64,
                               requires_grad=True))
    return h


CASES = [(mode, layers, bidir, proj)
         for mode, layers, bidir, proj in itertools.product(MODES, [1, 2, 3], [False, True], [0, 3])
         if proj == 0 or mode == "LSTM"]


@pytest.mark.parametrize("mode,num_layers,bidirectional,proj", CASES)
@pytest.mark.parametrize("hx_given", [False, True])
def test_packed_unsorted_equals_torch_nn(mode, num_layers, bidirectional, proj, hx_given):
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional)
    if proj:
        kwargs["proj_size"] = proj
    ref, ours = make_pair(mode, 2, 5, **kwargs)
    seqs = _sequences(2)
    packed = pack_sequence(seqs, enforce_sorted=False)
    hx = _initial_state(mode, ref, len(LENGTHS)) if hx_given else None
    results = []
    for module in (ref, ours):
        out, hidden = module(packed, hx) if hx_given else module(packed)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        assert torch.equal(out.sorted_indices, packed.sorted_indices)
        assert torch.equal(out.unsorted_indices, packed.unsorted_indices)
        torch.manual_seed(0)
        loss = (out.data * torch.randn_like(out.data)).sum()
        for h in flat(hidden):
            loss = loss + (h * torch.randn_like(h)).sum()
        inputs = seqs + (flat(hx) if hx_given else []) + list(module.parameters())
        grads = torch.autograd.grad(loss, inputs, retain_graph=True)  # the packing is shared
        results.append([out.data, *flat(hidden), *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_equals_each_sequence_alone(mode, bidirectional):
    _, ours = make_pair(mode, 2, 5, num_layers=2, bidirectional=bidirectional)
    seqs = _sequences(2)
    out, hidden = ours(pack_sequence(seqs, enforce_sorted=False))
    padded, lengths = pad_packed_sequence(out)
    grads = torch.autograd.grad(padded.sum() + sum(h.sum() for h in flat(hidden)), seqs)
    for b, seq in enumerate(seqs):
        seq_alone = seq.detach().requires_grad_()
        o, h = ours(seq_alone[:, None])
        torch.testing.assert_close(padded[: LENGTHS[b], b], o[:, 0], atol=1e-12, rtol=0)
        for final, alone in zip(flat(hidden), flat(h)):
            torch.testing.assert_close(final[:, b], alone[:, 0], atol=1e-12, rtol=0)
        (g,) = torch.autograd.grad(o.sum() + sum(x.sum() for x in flat(h)), seq_alone)
        torch.testing.assert_close(grads[b], g, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_packed_sorted_batch_first_and_dropout(mode):
    ref, ours = make_pair(mode, 2, 5, num_layers=3, dropout=0.3, batch_first=True)
    lengths = sorted(LENGTHS, reverse=True)
    torch.manual_seed(5)
    padded = torch.randn(len(lengths), max(lengths), 2, dtype=torch.float64)
    packed = pack_padded_sequence(padded, lengths, batch_first=True)
    torch.manual_seed(6)
    ref_out, _ = ref(packed)
    torch.manual_seed(6)
    out, _ = ours(packed)
    torch.testing.assert_close(out.data, ref_out.data, atol=1e-12, rtol=0)
    assert out.sorted_indices is None and out.unsorted_indices is None
