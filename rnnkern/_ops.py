"""Loads the C++ extension, which registers the ``torch.ops.rnnkern`` operators."""
import torch

from . import _C  # noqa: F401  (importing runs the operator registrations)

MODE_IDS = {"RNN_TANH": 0, "RNN_RELU": 1, "LSTM": 2, "GRU": 3}

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

layer_forward = torch.ops.rnnkern.layer_forward
layer_backward = torch.ops.rnnkern.layer_backward
