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

from . import _ops
from .functional import rnn_stack

__all__ = ["RNNBase", "RNN", "LSTM", "GRU"]


class RNNBase(nn.RNNBase):
    """torch.nn.RNNBase with the fused rnnkern forward."""

    def __init__(self, mode, *args, **kwargs):
        super().__init__(mode, *args, **kwargs)
        if self.proj_size > 0:
            raise NotImplementedError("rnnkern: LSTM with proj_size > 0 is not supported yet")

    def _check_supported(self, input, batch_sizes):
        if input.dtype not in _ops.SUPPORTED_DTYPES:
            raise NotImplementedError(
                f"rnnkern: dtype {input.dtype} is not supported yet (float32 and float64 are)"
            )

    def forward(self, input, hx=None):
        self._update_flat_weights()
        if isinstance(input, PackedSequence):
            raise NotImplementedError("rnnkern: PackedSequence input is not supported yet")
        lstm = self.mode == "LSTM"
        name = "LSTM" if lstm else ("GRU" if self.mode == "GRU" else "RNN")
        num_directions = 2 if self.bidirectional else 1

        if input.dim() not in (2, 3):
            # torch.nn's own wording, which differs by class.
            what = "tensor instead" if name == "RNN" else "instead"
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D {what}")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        batch = input.size(0) if self.batch_first else input.size(1)

        if hx is None:
            zeros = dict(dtype=input.dtype, device=input.device)
            h0 = torch.zeros(self.num_layers * num_directions, batch, self.hidden_size, **zeros)
            hx = (h0, torch.zeros_like(h0)) if lstm else h0
        elif lstm:
            want = 3 if is_batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            if not is_batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        else:
            if is_batched and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor"
                )
            if not is_batched:
                if hx.dim() != 2:
                    raise RuntimeError(
                        f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor"
                    )
                hx = hx.unsqueeze(1)
        self.check_forward_args(input, hx, None)
        if input.size(0 if not self.batch_first else 1) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        self._check_supported(input, None)

        x = input.transpose(0, 1) if self.batch_first else input
        h0, c0 = hx if lstm else (hx, None)
        output, h_n, c_n = rnn_stack(
            self.mode, x, h0, c0, self._flat_weights_by_layer(), self.num_layers,
            self.bidirectional, self.dropout, self.training,
        )
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        return output, ((h_n, c_n) if lstm else h_n)

    def _flat_weights_by_layer(self):
        per = len(self._flat_weights) // (self.num_layers * (2 if self.bidirectional else 1))
        w = self._flat_weights
        return [w[i : i + per] for i in range(0, len(w), per)]


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
    """Drop-in for :class:`torch.nn.LSTM`."""

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
