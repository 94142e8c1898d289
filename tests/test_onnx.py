"""torch.onnx.export of models holding rnnkern modules and cells: the standard
ONNX RNN/LSTM/GRU operators, run by onnxruntime, equal PyTorch's outputs."""
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

import rnnkern


def _export_and_run(model, args, tmp_path):
    model.eval()
    path = str(tmp_path / "model.onnx")
    torch.onnx.export(model, args, path, dynamo=True, verbose=False)
    ops = [node.op_type for node in onnx.load(path).graph.node]
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    with torch.no_grad():
        expected = model(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)
    return ops


class Tagger(nn.Module):
    """Embedding -> 2-layer LSTM -> Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.lstm = rnnkern.LSTM(8, 16, num_layers=2, batch_first=True, dropout=0.3)
        self.out = nn.Linear(16, 5)

    def forward(self, tokens):
        return self.out(self.lstm(self.embed(tokens))[0])


class Returns(nn.Module):
    """A recurrent module's output and final state, with a given initial state."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *state):
        out, hidden = self.rnn(x, state if len(state) == 2 else state[0])
        return (out, *hidden) if isinstance(hidden, tuple) else (out, hidden)


def test_embedding_lstm_linear(tmp_path):
    torch.manual_seed(0)
    ops = _export_and_run(Tagger(), (torch.randint(0, 30, (3, 7)),), tmp_path)
    assert ops.count("LSTM") == 2


@pytest.mark.parametrize("mode,kw", [
    ("GRU", {"bidirectional": True, "num_layers": 2}),
    ("RNN", {"nonlinearity": "tanh"}),
    ("RNN", {"nonlinearity": "relu", "bidirectional": True}),
    ("LSTM", {"bidirectional": True, "bias": False}),
])
def test_modules_with_state(mode, kw, tmp_path):
    torch.manual_seed(1)
    rnn = getattr(rnnkern, mode)(6, 10, **kw)
    layers = rnn.num_layers * (2 if rnn.bidirectional else 1)
    x = torch.randn(5, 3, 6)
    state = [torch.randn(layers, 3, 10) for _ in range(2 if mode == "LSTM" else 1)]
    ops = _export_and_run(Returns(rnn), (x, *state), tmp_path)
    assert ops.count(mode) == rnn.num_layers
    assert not any(op.startswith("rnnkern") for op in ops)


class CellLoop(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        state = None
        for t in range(x.shape[0]):
            state = self.cell(x[t], state)
        return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells(cell, tmp_path):
    torch.manual_seed(2)
    ops = _export_and_run(CellLoop(getattr(rnnkern, cell)(4, 6)), (torch.randn(3, 2, 4),),
                          tmp_path)
    assert ops.count({"RNNCell": "RNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}[cell]) == 3


def test_projection_is_refused_with_a_clear_error(tmp_path):
    model = Returns(rnnkern.LSTM(4, 8, proj_size=3)).eval()
    x = torch.randn(5, 2, 4)
    state = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 8))
    with pytest.raises(Exception, match="proj_size > 0 cannot be exported to ONNX"):
        torch.onnx.export(model, (x, *state), str(tmp_path / "m.onnx"), dynamo=True)
