"""Drop-in replacements for torch.nn.RNNCell, torch.nn.LSTMCell and torch.nn.GRUCell.

In eager mode a step is one call of a cell operator: ``cell_forward`` (two
GEMMs and the fused pointwise step, nothing saved) when nothing differentiates
it (inference, or frozen weights and inputs), else ``cell_train_step``, an
autograd node in C++ whose forward is ``cell_forward_train`` and backward
``cell_backward`` (double backward by a differentiable recomputation). Under
forward-mode AD, functorch transforms and torch.compile a step is the fused
layer operator on a one-step sequence, with its jvp and vmap. All compute with
the same kernels as the full modules.
Parameters, init, ``repr`` and ``state_dict`` come from ``torch.nn.RNNCellBase``.
"""
import torch
from torch import nn

from . import _autocast, _autograd, _onnx, _ops
from .functional import rnn_layer
from .modules import check_dtype

__all__ = ["RNNCell", "LSTMCell", "GRUCell"]


class _FusedCell(nn.RNNCellBase):
    _mode = None  # set per class; RNNCell decides by nonlinearity

    def _mode_name(self):
        return self._mode

    def _check_input_and_state(self, input, states):
        """torch.nn's checks of the cell functions (same texts)."""
        if input.size(1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for index, state in enumerate(states):
            if input.size(0) != state.size(0):
                raise RuntimeError(
                    f"Input batch size {input.size(0)} doesn't match hidden{index} batch size "
                    f"{state.size(0)}")
            if state.size(1) != self.hidden_size:
                raise RuntimeError(
                    f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected "
                    f"{self.hidden_size}")

    def _step(self, input, h, c, kind):
        weights = self._weights()
        # The common step, checked in as few Python operations as can check it:
        # shapes and dtypes as torch.nn wants them, no autocast, plain eager, no
        # ONNX export. Anything else takes the full path below (the same
        # results, or torch.nn's errors).
        if (input.dtype is weights[0].dtype and input.dtype in _ops.SUPPORTED_DTYPES
                and input.shape[1] == self.input_size and h.shape[0] == input.shape[0]
                and h.shape[1] == self.hidden_size and (c is None or c.shape == h.shape)
                and not torch._C._is_any_autocast_enabled() and _plain_eager()
                and not _onnx.exporting()):
            return self._eager_step(input, h, c, weights)
        self._check_input_and_state(input, [h] if c is None else [h, c])
        low = _autocast.autocast_dtype(input)
        if low is not None:
            input, h, c, *weights = _autocast.cast([input, h, c, *weights], low)
        if input.dtype != weights[0].dtype:
            raise RuntimeError(
                f"mat1 and mat2 must have the same dtype, but got "
                f"{_short(input.dtype)} and {_short(weights[0].dtype)}")
        check_dtype(input.dtype)
        if _onnx.exporting():  # a one-step ONNX RNN/LSTM/GRU node
            _, h_new, c_new = _onnx.rnn_stack(
                self._mode_name(), input.unsqueeze(0), h.unsqueeze(0),
                c.unsqueeze(0) if c is not None else None,
                [[w for w in weights if w is not None]], 1, False, 0.0, False, self.hidden_size)
            h_new, c_new = h_new[0], (c_new[0] if c_new is not None else None)
        elif _plain_eager():
            h_new, c_new = self._eager_step(input, h, c, weights)
        else:
            _, h_new, c_new = rnn_layer(self._mode_name(), input.unsqueeze(0), h, c, *weights)
        if low is not None:
            out_dtype, c_dtype = _autocast.result_dtypes(kind, low, input.device.type)
            h_new = h_new.to(out_dtype)
            c_new = c_new.to(c_dtype) if c_new is not None else None
        return h_new, c_new

    def _eager_step(self, input, h, c, weights):
        """One op call: cell_train_step where something differentiates the step."""
        mode = _ops.MODE_IDS[self._mode_name()]
        if _differentiated(input, h, c, weights):
            h_new, c_new = _ops.cell_train_step(mode, input, h, c, *weights)
        else:
            h_new, c_new = _ops.cell_forward(mode, input, h, c, *weights)
        return h_new, (c_new if c is not None else None)

    def _weights(self):
        # From the parameter dict: a module attribute lookup per parameter costs
        # more than the rest of a small step's Python. A parametrization or
        # weight_norm takes a parameter out of the dict: then by attribute.
        params = self._parameters
        try:
            return [params["weight_ih"], params["weight_hh"], params["bias_ih"],
                    params["bias_hh"]]
        except KeyError:
            return [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]

    def _one_state_forward(self, name, input, hx):
        """forward() of the cells with one state (RNNCell, GRUCell), as torch.nn's."""
        is_batched = _batched(name, input, hx)
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                             device=input.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        h, _ = self._step(input, hx, None, name)
        return h if is_batched else h.squeeze(0)


def _plain_eager():
    """No tracer or transform that needs the layer op (and its jvp, vmap)."""
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
                or _autograd._forward_ad_active())


def _differentiated(input, h, c, weights):
    return torch.is_grad_enabled() and (
        input.requires_grad or h.requires_grad or (c is not None and c.requires_grad)
        or any(w is not None and w.requires_grad for w in weights))


def _short(dtype):
    # The names torch's matmul uses in its dtype-mismatch message.
    return {torch.float64: "Double", torch.float32: "Float", torch.float16: "Half",
            torch.bfloat16: "BFloat16"}.get(dtype, str(dtype))


def _batched(cell_name, input, hx, what="hidden"):
    if input.dim() not in (1, 2):
        raise ValueError(f"{cell_name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None and hx.dim() not in (1, 2):
        raise ValueError(f"{cell_name}: Expected {what} to be 1D or 2D, got {hx.dim()}D instead")
    return input.dim() == 2


class RNNCell(_FusedCell):
    """Drop-in for :class:`torch.nn.RNNCell`."""

    __constants__ = ["input_size", "hidden_size", "bias", "nonlinearity"]

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _mode_name(self):
        if self.nonlinearity == "tanh":
            return "RNN_TANH"
        if self.nonlinearity == "relu":
            return "RNN_RELU"
        raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")

    def forward(self, input, hx=None):
        return self._one_state_forward("RNNCell", input, hx)


class LSTMCell(_FusedCell):
    """Drop-in for :class:`torch.nn.LSTMCell`."""

    _mode = "LSTM"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(
                f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for index, state in enumerate(hx):
                if state.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {state.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                                device=input.device)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        h, c = self._step(input, hx[0], hx[1], "LSTMCell")
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_FusedCell):
    """Drop-in for :class:`torch.nn.GRUCell`."""

    _mode = "GRU"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        return self._one_state_forward("GRUCell", input, hx)
