"""rnnkern: fused CPU kernels for the time loops of RNN, LSTM and GRU.

Drop-in replacements for ``torch.nn.RNN``, ``torch.nn.LSTM``, ``torch.nn.GRU``
and their cells: same constructor, parameters, ``state_dict``, results,
gradients and errors. ``convert(model)`` swaps them into an existing model.
"""
from . import _ops  # noqa: F401  (registers torch.ops.rnnkern)
from .cells import GRUCell, LSTMCell, RNNCell
from .convert import convert
from .functional import rnn_layer, rnn_stack
from .modules import GRU, LSTM, RNN, RNNBase

__all__ = ["RNN", "LSTM", "GRU", "RNNBase", "RNNCell", "LSTMCell", "GRUCell", "convert",
           "rnn_layer", "rnn_stack"]
__version__ = "0.1.0"
