"""Autocast for the rnnkern modules.

Under autocast the fused kernels run in the autocast dtype (the input,
states and weights are cast on the way in, differentiably). The dtypes of
the results follow what torch.nn's module returns under the same autocast on
the CPU, where results are float32 wherever torch.nn's math meets a float32
state (GRU, GRUCell, LSTMCell, an LSTM's cell state with a projection).
"""
import torch

# module kind -> (dtype rule for the output / h, for c): "low" = autocast dtype.
_CPU_RESULT_DTYPES = {
    "RNN": ("low", None),
    "LSTM": ("low", "low"),
    "LSTM_PROJ": ("low", "float32"),
    "GRU": ("float32", None),
    "RNNCell": ("low", None),
    "LSTMCell": ("float32", "float32"),
    "GRUCell": ("float32", None),
}


def autocast_dtype(input):
    """The dtype to compute in under autocast, or None when autocast does not apply."""
    device = input.device.type
    if input.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def cast(tensors, dtype):
    return [t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors]


def result_dtypes(kind, low_dtype, device_type):
    """(dtype of the output and h, dtype of c) that torch.nn returns."""
    if device_type != "cpu":
        return low_dtype, low_dtype
    out_rule, c_rule = _CPU_RESULT_DTYPES[kind]
    pick = {"low": low_dtype, "float32": torch.float32, None: None}
    return pick[out_rule], pick[c_rule]
