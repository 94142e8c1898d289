"""LSTM with proj_size: parameters, outputs, states and gradients equal torch.nn's."""
import itertools

import pytest
import torch
from torch import nn

import rnnkern
from helpers import make_pair, run_and_grad


@pytest.mark.parametrize(
    "num_layers,bidirectional,bias,batch_first,hx_given,unbatched",
    list(itertools.product([1, 2, 3], [False, True], [True, False], [False, True], [True, False],
                           [False, True])))
def test_projection_grid(num_layers, bidirectional, bias, batch_first, hx_given, unbatched):
    ref, ours = make_pair("LSTM", 3, 6, proj_size=2, num_layers=num_layers, bias=bias,
                          batch_first=batch_first, bidirectional=bidirectional)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    torch.manual_seed(8)
    shape = (4, 3) if unbatched else ((2, 4, 3) if batch_first else (4, 2, 3))
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    hx = None
    if hx_given:
        layers = num_layers * (2 if bidirectional else 1)
        lead = (layers,) if unbatched else (layers, 2)
        hx = (torch.randn(*lead, 2, dtype=torch.float64, requires_grad=True),
              torch.randn(*lead, 6, dtype=torch.float64, requires_grad=True))
    expected = run_and_grad(ref, x, hx, ref.parameters())
    got = run_and_grad(ours, x, hx, ours.parameters())
    torch.testing.assert_close(got[0], expected[0], atol=1e-10, rtol=0)
    for a, b in zip(got[1] + list(got[2]), expected[1] + list(expected[2])):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_projection_state_sizes_and_errors():
    ref, ours = make_pair("LSTM", 3, 6, proj_size=2)
    out, (h, c) = ours(torch.randn(5, 4, 3, dtype=torch.float64))
    assert out.shape == (5, 4, 2) and h.shape == (1, 4, 2) and c.shape == (1, 4, 6)
    assert ours.weight_hr_l0.shape == ref.weight_hr_l0.shape == (2, 6)
    assert repr(ours) == repr(ref)
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    wrong = (torch.zeros(1, 4, 6, dtype=torch.float64), torch.zeros(1, 4, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError) as ours_error:
        ours(x, wrong)
    with pytest.raises(RuntimeError) as ref_error:
        ref(x, wrong)
    assert str(ours_error.value) == str(ref_error.value)


def test_convert_keeps_projection():
    model = nn.Sequential(nn.LSTM(3, 6, proj_size=2, num_layers=2).double())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    expected = model(x)[0]
    rnnkern.convert(model)
    assert type(model[0]) is rnnkern.LSTM and model[0].proj_size == 2
    torch.testing.assert_close(model(x)[0], expected, atol=1e-12, rtol=0)
