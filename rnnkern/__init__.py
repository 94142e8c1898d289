"""rnnkern: fused CPU kernels for the time loops of RNN, LSTM and GRU.

Drop-in replacements for ``torch.nn.RNN``, ``torch.nn.LSTM``, ``torch.nn.GRU``
and their cells: same constructor, parameters, ``state_dict``, results,
gradients and errors. ``convert(model)`` swaps them into an existing model.
"""
from . import _autograd, _ops, _vmap  # noqa: F401  (torch.ops.rnnkern, autograd, vmap)
from .cells import GRUCell, LSTMCell, RNNCell
from .convert import convert
from .functional import rnn_layer, rnn_stack
from .modules import GRU, LSTM, RNN, RNNBase

__all__ = ["RNN", "LSTM", "GRU", "RNNBase", "RNNCell", "LSTMCell", "GRUCell", "convert",
           "rnn_layer", "rnn_stack", "cpu_capability"]


def cpu_capability() -> str:
    """The instruction set of the CPU kernels in use: ``"avx512"``, ``"avx2"`` or
    ``"default"`` (any x86-64 or other CPU). The best the CPU supports, unless the
    environment variable ``RNNKERN_CPU_CAPABILITY`` (read at import) asks for a
    lower one, as ``ATEN_CPU_CAPABILITY`` does for torch."""
    return _ops.cpu_capability()
__version__ = "0.1.0"
