"""The torch.nn module contract: parameters, state_dict, hooks into torch utilities,
pickling, dropout, autograd behaviour, and convert()."""
import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import rnnkern
from helpers import MODES, make_pair

CONFIGS = [dict(num_layers=1), dict(num_layers=2, bidirectional=True),
           dict(num_layers=3, bias=False, batch_first=True)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_parameters_names_shapes_order_and_init(mode, config):
    ref_cls, our_cls, extra = MODES[mode]
    torch.manual_seed(5)
    ref = ref_cls(3, 4, **extra, **config)
    torch.manual_seed(5)
    ours = our_cls(3, 4, **extra, **config)
    ref_params, our_params = list(ref.named_parameters()), list(ours.named_parameters())
    assert [n for n, _ in our_params] == [n for n, _ in ref_params]
    for (_, a), (_, b) in zip(our_params, ref_params):
        assert torch.equal(a, b)  # same init rule, same random stream
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [[w.shape for w in ws] for ws in ours.all_weights] == \
        [[w.shape for w in ws] for ws in ref.all_weights]
    assert ours._flat_weights_names == ref._flat_weights_names
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_both_ways(mode):
    ref_cls, our_cls, extra = MODES[mode]
    ref = ref_cls(3, 4, num_layers=2, bidirectional=True, **extra).double()
    ours = our_cls(3, 4, num_layers=2, bidirectional=True, **extra).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-12, rtol=0)
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(0.5)
    back = ref_cls(3, 4, num_layers=2, bidirectional=True, **extra).double()
    back.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(back(x)[0], ours(x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_weight_norm(mode):
    ref, ours = make_pair(mode, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm is deprecated, still used
        ref = nn.utils.weight_norm(ref, "weight_hh_l0")
        ours = nn.utils.weight_norm(ours, "weight_hh_l0")
    with torch.no_grad():
        for m in (ref, ours):
            m.weight_hh_l0_g.mul_(1.7)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, ref_out = ours(x)[0], ref(x)[0]
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    out.sum().backward()
    ref_out.sum().backward()
    torch.testing.assert_close(ours.weight_hh_l0_g.grad, ref.weight_hh_l0_g.grad, atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_functional_call(mode):
    ref, ours = make_pair(mode, 3, 4, num_layers=2)
    params = {n: torch.randn_like(p) for n, p in ref.named_parameters()}
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ref_out = torch.func.functional_call(ref, params, (x,))[0]
    out = torch.func.functional_call(ours, params, (x,))[0]
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    # The module's own parameters are untouched and used again afterwards.
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_flatten_parameters_pickle_deepcopy_save(mode):
    _, ours = make_pair(mode, 3, 4, num_layers=2, bidirectional=True)
    ours.flatten_parameters()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    expected = ours(x)[0]
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    clones = [pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours),
              torch.load(buffer, weights_only=False)]
    for clone in clones:
        assert type(clone) is type(ours)
        torch.testing.assert_close(clone(x)[0], expected, atol=0, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_dropout_matches_torch_nn(mode):
    ref, ours = make_pair(mode, 3, 6, num_layers=3, dropout=0.4, bidirectional=True)
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    torch.manual_seed(11)
    ref_out = ref(x)[0]
    torch.manual_seed(11)
    out = ours(x)[0]
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    # Dropout is active in training (another seed, other masks) ...
    torch.manual_seed(12)
    assert not torch.allclose(ours(x)[0], out)
    # ... and off in eval mode.
    ref.eval()
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_repeated_backward_with_retain_graph(mode):
    _, ours = make_pair(mode, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = ours(x)
    loss = (out ** 2).sum()
    first = torch.autograd.grad(loss, [x] + list(ours.parameters()), retain_graph=True)
    second = torch.autograd.grad(loss, [x] + list(ours.parameters()))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_only_where_required(mode):
    ref, ours = make_pair(mode, 3, 4, num_layers=2)
    ours.weight_ih_l0.requires_grad_(False)
    ref.weight_ih_l0.requires_grad_(False)
    x = torch.randn(5, 2, 3, dtype=torch.float64)  # no grad for the input
    ours(x)[0].sum().backward()
    ref(x)[0].sum().backward()
    assert x.grad is None
    assert ours.weight_ih_l0.grad is None
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_no_grad_builds_no_graph(mode):
    _, ours = make_pair(mode, 3, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        out, _ = ours(x)
    assert out.grad_fn is None and not out.requires_grad
    with torch.inference_mode():
        out, _ = ours(x)
    assert out.is_inference()


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.encoder = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.blocks = nn.ModuleList([nn.GRU(16, 5), nn.RNN(5, 5, nonlinearity="relu")])
        self.head = nn.Linear(5, 3)

    def forward(self, tokens):
        x, _ = self.encoder(self.embed(tokens))
        x = x.transpose(0, 1)
        for block in self.blocks:
            x, _ = block(x)
        return self.head(x)


class _CustomLSTM(nn.LSTM):
    pass


def test_convert_model():
    torch.manual_seed(0)
    model = _Tagger().double().eval()
    tokens = torch.randint(0, 10, (3, 7))
    expected = model(tokens)
    encoder_weight = model.encoder.weight_ih_l0
    converted = rnnkern.convert(model)
    assert converted is model
    assert type(model.encoder) is rnnkern.LSTM
    assert type(model.blocks[0]) is rnnkern.GRU
    assert type(model.blocks[1]) is rnnkern.RNN and model.blocks[1].nonlinearity == "relu"
    assert model.encoder.weight_ih_l0 is encoder_weight  # the same Parameter objects
    assert not model.encoder.training
    torch.testing.assert_close(model(tokens), expected, atol=1e-12, rtol=0)
    # Training works through the converted model.
    model.train()
    model(tokens).sum().backward()
    assert encoder_weight.grad is not None


def test_convert_top_level_and_subclasses():
    lstm = nn.GRU(3, 4, batch_first=True)
    converted = rnnkern.convert(lstm)
    assert type(converted) is rnnkern.GRU and converted.batch_first
    custom = nn.Sequential(_CustomLSTM(3, 4))
    assert type(rnnkern.convert(custom)[0]) is _CustomLSTM
