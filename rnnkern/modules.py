"""Drop-in replacements for torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU.

The classes derive from ``torch.nn.RNNBase``, so construction, validation,
parameter names/shapes/init, ``state_dict``, ``all_weights``, ``_flat_weights``,
``flatten_parameters``, ``repr`` and pickling are torch.nn's own. Only
``forward`` differs: it checks its arguments as torch.nn does, then runs the
fused kernels (``functional.rnn_stack``) instead of ``torch._VF``.
They are deliberately not subclasses of ``torch.nn.RNN/LSTM/GRU``.
"""
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _autocast, _onnx, _ops
from .functional import rnn_stack

__all__ = ["RNNBase", "RNN", "LSTM", "GRU"]


def check_dtype(dtype):
    if dtype not in _ops.SUPPORTED_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in _ops.SUPPORTED_DTYPES)
        raise NotImplementedError(f"rnnkern: dtype {dtype} is not supported ({names} are)")


class RNNBase(nn.RNNBase):
    """torch.nn.RNNBase with the fused rnnkern forward."""

    def forward(self, input, hx=None):
        lstm = self.mode == "LSTM"
        name = "LSTM" if lstm else ("GRU" if self.mode == "GRU" else "RNN")
        num_directions = 2 if self.bidirectional else 1
        real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        orig_input = input
        batch_sizes = sorted_indices = unsorted_indices = None
        is_batched = True
        batch_dim = 0 if self.batch_first else 1

        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            batch = int(batch_sizes[0])
        else:
            if input.dim() not in (2, 3):
                # torch.nn's own wording, which differs by class.
                what = "tensor instead" if name == "RNN" else "instead"
                raise ValueError(
                    f"{name}: Expected input to be 2D or 3D, got {input.dim()}D {what}")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            batch = input.size(0) if self.batch_first else input.size(1)

        if hx is None:
            zeros = dict(dtype=input.dtype, device=input.device)
            layers = self.num_layers * num_directions
            h0 = torch.zeros(layers, batch, real_hidden_size, **zeros)
            hx = (h0, torch.zeros(layers, batch, self.hidden_size, **zeros)) if lstm else h0
        elif batch_sizes is None:
            hx = self._batched_hx(hx, is_batched, lstm)
        if lstm and batch_sizes is None:
            self.check_forward_args(input, hx, batch_sizes)
        hx = self.permute_hidden(hx, sorted_indices)
        if not lstm or batch_sizes is not None:
            self.check_forward_args(input, hx, batch_sizes)
        if batch_sizes is None and input.size(1 if self.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

        h0, c0 = hx if lstm else (hx, None)
        # Looked up by name on every call rather than read from _flat_weights,
        # so that functional_call, weight_norm, torch.compile and torch.export
        # see the current tensors without the module mutating itself in forward.
        weights = [getattr(self, name) for name in self._flat_weights_names]
        low = _autocast.autocast_dtype(input)
        if low is not None:
            input, h0, c0, *weights = _autocast.cast([input, h0, c0, *weights], low)
        check_dtype(input.dtype)

        x = input.transpose(0, 1) if self.batch_first and batch_sizes is None else input
        per = len(weights) // (self.num_layers * num_directions)
        grouped = [weights[i:i + per] for i in range(0, len(weights), per)]
        if _onnx.exporting():
            if batch_sizes is not None:
                raise RuntimeError(
                    "rnnkern: a PackedSequence input cannot be exported to ONNX; export the "
                    "model on padded input")
            output, h_n, c_n = _onnx.rnn_stack(
                self.mode, x, h0, c0, grouped, self.num_layers, self.bidirectional,
                self.dropout, self.training, self.hidden_size, self.proj_size)
        else:
            output, h_n, c_n = rnn_stack(
                self.mode, x, h0, c0, grouped, self.num_layers, self.bidirectional,
                self.dropout, self.training, batch_sizes,
            )
        if low is not None:
            kind = "LSTM_PROJ" if self.proj_size > 0 else name
            out_dtype, c_dtype = _autocast.result_dtypes(kind, low, input.device.type)
            output, h_n = output.to(out_dtype), h_n.to(out_dtype)
            c_n = c_n.to(c_dtype) if c_n is not None else None

        hidden = (h_n, c_n) if lstm else h_n
        if batch_sizes is not None:
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = (h_n.squeeze(1), c_n.squeeze(1)) if lstm else h_n.squeeze(1)
        return output, hidden

    @staticmethod
    def _batched_hx(hx, is_batched, lstm):
        """torch.nn's rank checks of a given hx, and its unsqueeze for unbatched input."""
        if lstm:
            want = 3 if is_batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            return hx if is_batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if is_batched:
            if hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            return hx
        if hx.dim() != 2:
            raise RuntimeError(
                f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
        return hx.unsqueeze(1)


class RNN(RNNBase):
    """Drop-in for :class:`torch.nn.RNN` (``nonlinearity`` ``'tanh'`` or ``'relu'``)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(
                f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__(mode, *args, **kwargs)


class LSTM(RNNBase):
    """Drop-in for :class:`torch.nn.LSTM`, ``proj_size`` included."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    # torch.nn.LSTM's hidden-state checks, for (h, c) tuples.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class GRU(RNNBase):
    """Drop-in for :class:`torch.nn.GRU`."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)
