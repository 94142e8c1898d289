"""Bad arguments raise what torch.nn raises: same exception type, same text."""
import pytest
import torch
from torch import nn

import rnnkern
from helpers import MODES, make_pair


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we compare whatever torch.nn raises
        return type(e), str(e)
    return None


def _assert_same_error(ref_call, our_call):
    expected = _raised(ref_call)
    assert expected is not None, "torch.nn accepted the call; the case is wrong"
    assert _raised(our_call) == expected


def _state(mode, *shape):
    h = torch.zeros(*shape, dtype=torch.float64)
    return (h, h.clone()) if mode == "LSTM" else h


FORWARD_CASES = {
    "input 1-D": lambda mode: (torch.zeros(3, dtype=torch.float64), None),
    "input 4-D": lambda mode: (torch.zeros(2, 3, 4, 5, dtype=torch.float64), None),
    "wrong input size": lambda mode: (torch.zeros(5, 2, 4, dtype=torch.float64), None),
    "batched input, 2-D hx": lambda mode: (torch.zeros(5, 2, 3, dtype=torch.float64),
                                           _state(mode, 1, 4)),
    "unbatched input, 3-D hx": lambda mode: (torch.zeros(5, 3, dtype=torch.float64),
                                             _state(mode, 1, 1, 4)),
    "wrong hidden size": lambda mode: (torch.zeros(5, 2, 3, dtype=torch.float64),
                                       _state(mode, 1, 2, 6)),
    "wrong hidden batch": lambda mode: (torch.zeros(5, 2, 3, dtype=torch.float64),
                                        _state(mode, 1, 3, 4)),
    "wrong hidden layers": lambda mode: (torch.zeros(5, 2, 3, dtype=torch.float64),
                                         _state(mode, 2, 2, 4)),
    "dtype mismatch": lambda mode: (torch.zeros(5, 2, 3, dtype=torch.float32), None),
    "sequence length 0": lambda mode: (torch.zeros(0, 2, 3, dtype=torch.float64), None),
    "unbatched sequence length 0": lambda mode: (torch.zeros(0, 3, dtype=torch.float64), None),
}


@pytest.mark.parametrize("case", FORWARD_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_forward_errors(mode, case):
    ref, ours = make_pair(mode, 3, 4)
    x, hx = FORWARD_CASES[case](mode)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


def test_lstm_cell_state_errors():
    ref, ours = make_pair("LSTM", 3, 4)
    x = torch.zeros(5, 2, 3, dtype=torch.float64)
    h = torch.zeros(1, 2, 4, dtype=torch.float64)
    for hx in [(h, torch.zeros(1, 2, 5, dtype=torch.float64)),   # wrong c size
               (h, torch.zeros(2, 4, dtype=torch.float64)),      # c of the wrong rank
               (torch.zeros(2, 4, dtype=torch.float64), h)]:     # h of the wrong rank
        _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


CONSTRUCTOR_CASES = [
    dict(input_size=3, hidden_size=4, dropout=1.5),
    dict(input_size=3, hidden_size=4, dropout=True),
    dict(input_size=3, hidden_size=4, dropout="0.1"),
    dict(input_size=3, hidden_size=0),
    dict(input_size=0, hidden_size=4),
    dict(input_size=3, hidden_size=4, num_layers=0),
    dict(input_size=3, hidden_size=4.0),
    dict(input_size=3, hidden_size=4, num_layers=1.5),
    dict(input_size=3, hidden_size=4, bias="yes"),
    dict(input_size=3, hidden_size=4, proj_size=2),
    dict(input_size=3, hidden_size=4, proj_size=4),
    dict(input_size=3, hidden_size=4, proj_size=-1),
]


@pytest.mark.parametrize("kwargs", CONSTRUCTOR_CASES, ids=str)
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_constructor_errors(name, kwargs):
    ref_cls, our_cls = getattr(nn, name), getattr(rnnkern, name)
    expected = _raised(lambda: ref_cls(**kwargs))
    if expected is None:  # accepted by torch.nn (proj_size=2 on an LSTM): see test_not_implemented
        return
    assert _raised(lambda: our_cls(**kwargs)) == expected


def test_unknown_nonlinearity():
    _assert_same_error(lambda: nn.RNN(3, 4, nonlinearity="gelu"),
                       lambda: rnnkern.RNN(3, 4, nonlinearity="gelu"))
    _assert_same_error(lambda: nn.RNN(3, 4, 1, "sigmoid"), lambda: rnnkern.RNN(3, 4, 1, "sigmoid"))


def test_dropout_warning_for_one_layer():
    with pytest.warns(UserWarning) as ref_warnings:
        nn.LSTM(3, 4, dropout=0.5)
    with pytest.warns(UserWarning) as our_warnings:
        rnnkern.LSTM(3, 4, dropout=0.5)
    assert [str(w.message) for w in our_warnings] == [str(w.message) for w in ref_warnings]


def test_op_rejects_inconsistent_arguments():
    x = torch.zeros(2, 1, 3)
    w_ih, w_hh = torch.zeros(4, 3), torch.zeros(4, 4)
    h = torch.zeros(1, 4)
    op = torch.ops.rnnkern.layer_forward
    with pytest.raises(RuntimeError, match="unknown mode"):
        op(7, x, None, h, None, w_ih, w_hh, None, None, None, False, False)
    with pytest.raises(RuntimeError, match="weight_hh must have shape"):
        op(2, x, None, h, h, w_ih, w_hh, None, None, None, False, False)
    with pytest.raises(RuntimeError, match="hx must have shape"):
        op(0, x, None, torch.zeros(2, 4), None, w_ih, w_hh, None, None, None, False, False)
    with pytest.raises(RuntimeError, match="batch_sizes must be positive and non-increasing"):
        op(0, torch.zeros(3, 3), torch.tensor([1, 2]), h, None, w_ih, w_hh, None, None, None, False,
           False)
    with pytest.raises(RuntimeError, match="batch_sizes sum to 3"):
        op(0, torch.zeros(4, 3), torch.tensor([2, 1]), torch.zeros(2, 4), None, w_ih, w_hh, None,
           None, None, False, False)
    with pytest.raises(RuntimeError, match="does not match input dtype"):
        op(0, x.double(), None, h.double(), None, w_ih, w_hh, None, None, None, False, False)
