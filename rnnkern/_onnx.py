"""ONNX export: the standard ONNX ``RNN``/``LSTM``/``GRU`` operators.

During ``torch.onnx.export`` the modules and cells emit one standard ONNX node
per layer (both directions in one node) through ``torch.onnx.ops``, so the
exported model runs on any ONNX runtime, with no custom operator. torch.nn's
weights are reordered to ONNX's gate orders (LSTM i, o, f, c; GRU z, r, h with
``linear_before_reset=1``, which is torch's GRU). ONNX's LSTM has no
projection: ``proj_size > 0`` is refused with a clear error.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

# torch.nn's gate blocks in ONNX's order.
_GATE_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}
_ONNX_OP = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


# The exporters' own flags, which is_in_onnx_export() reads (importing them on
# every call, which a cell stepped from Python would pay each step);
# torch.compile's tracer folds is_in_onnx_export() itself to False.
try:
    from torch.onnx._internal.exporter import _flags
except ImportError:  # pragma: no cover
    _flags = None
try:
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
except ImportError:  # pragma: no cover
    GLOBALS = None


def exporting() -> bool:
    if _flags is None or GLOBALS is None:  # pragma: no cover
        return torch.onnx.is_in_onnx_export() or bool(getattr(_flags, "_is_onnx_exporting", False))
    if torch.compiler.is_compiling():  # the tracer does not go into GLOBALS' property
        return bool(_flags._is_onnx_exporting)
    return bool(_flags._is_onnx_exporting or GLOBALS.in_onnx_export)


def _reorder(mode: str, w: Tensor) -> Tensor:
    order = _GATE_ORDER.get(mode)
    if order is None:
        return w
    blocks = w.chunk(len(order), 0)
    return torch.cat([blocks[i] for i in order], 0)


def _layer_node(mode: str, x: Tensor, h0: Tensor, c0: Optional[Tensor],
                weights: Sequence[Sequence[Tensor]], hidden: int):
    """One ONNX node for one layer, all its directions. x: [T, B, I]; h0, c0:
    [D, B, H]; weights: per direction (w_ih, w_hh[, b_ih, b_hh])."""
    D = len(weights)
    W = torch.stack([_reorder(mode, w[0]) for w in weights])
    R = torch.stack([_reorder(mode, w[1]) for w in weights])
    inputs: List[Optional[Tensor]] = [x, W, R]
    if len(weights[0]) >= 4:
        inputs.append(torch.stack([torch.cat([_reorder(mode, w[2]), _reorder(mode, w[3])])
                                   for w in weights]))
    else:
        inputs.append(None)
    inputs += [None, h0]  # no sequence_lens: every sequence has all T steps
    attrs = {"hidden_size": hidden,
             "direction": "bidirectional" if D == 2 else "forward"}
    if mode == "GRU":
        attrs["linear_before_reset"] = 1
    if mode.startswith("RNN"):
        attrs["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * D
    T, B = x.shape[0], x.shape[1]
    shapes = [[T, D, B, hidden], [D, B, hidden]]
    if mode == "LSTM":
        inputs.append(c0)
        shapes.append([D, B, hidden])
    outs = torch.onnx.ops.symbolic_multi_out(
        _ONNX_OP[mode], inputs, attrs, dtypes=[x.dtype] * len(shapes), shapes=shapes,
        version=14)
    y = outs[0].permute(0, 2, 1, 3).reshape(T, B, D * hidden)  # [T, D, B, H] -> [T, B, D*H]
    return y, outs[1], (outs[2] if mode == "LSTM" else None)


def rnn_stack(mode: str, x: Tensor, hx: Tensor, cx: Optional[Tensor],
              weights: List[List[Tensor]], num_layers: int, bidirectional: bool,
              dropout: float, training: bool, hidden: int, proj_size: int = 0):
    """What functional.rnn_stack computes, as ONNX nodes (dense input)."""
    if proj_size > 0:
        raise RuntimeError(
            "rnnkern: an LSTM with proj_size > 0 cannot be exported to ONNX: the ONNX LSTM "
            "operator has no projection of the hidden state")
    D = 2 if bidirectional else 1
    h_n, c_n = [], []
    for layer in range(num_layers):
        rows = slice(layer * D, layer * D + D)
        x, h, c = _layer_node(mode, x, hx[rows], cx[rows] if cx is not None else None,
                              weights[layer * D:layer * D + D], hidden)
        h_n.append(h)
        c_n.append(c)
        if dropout > 0 and training and layer < num_layers - 1:
            x = torch.nn.functional.dropout(x, dropout, True)
    return x, torch.cat(h_n, 0), (torch.cat(c_n, 0) if cx is not None else None)
