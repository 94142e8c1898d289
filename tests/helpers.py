"""Shared helpers: build a torch.nn module and its rnnkern twin with equal weights."""
import torch
from torch import nn

import rnnkern

# mode -> (torch.nn class, rnnkern class, extra constructor kwargs)
MODES = {
    "RNN_TANH": (nn.RNN, rnnkern.RNN, {"nonlinearity": "tanh"}),
    "RNN_RELU": (nn.RNN, rnnkern.RNN, {"nonlinearity": "relu"}),
    "LSTM": (nn.LSTM, rnnkern.LSTM, {}),
    "GRU": (nn.GRU, rnnkern.GRU, {}),
}


def make_pair(mode, *args, dtype=torch.float64, seed=0, **kwargs):
    """(torch.nn module, rnnkern module) with the same configuration and weights."""
    ref_cls, our_cls, extra = MODES[mode]
    torch.manual_seed(seed)
    ref = ref_cls(*args, **extra, **kwargs).to(dtype)
    ours = our_cls(*args, **extra, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def hidden_like(mode, ref, batch, dtype=torch.float64, unbatched=False, requires_grad=True):
    """A random initial state of the right shape: a tensor, or (h, c) for LSTM."""
    layers = ref.num_layers * (2 if ref.bidirectional else 1)
    shape = (layers, ref.hidden_size) if unbatched else (layers, batch, ref.hidden_size)

    def rand():
        return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)

    return (rand(), rand()) if mode == "LSTM" else rand()


def flat(hidden):
    """The state as a list of tensors."""
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def run_and_grad(module, x, hx, params):
    """Forward, then gradients of a weighted sum of every output w.r.t. x, hx and params."""
    out, hidden = module(x) if hx is None else module(x, hx)
    torch.manual_seed(1234)
    loss = (out * torch.randn_like(out)).sum()
    for h in flat(hidden):
        loss = loss + (h * torch.randn_like(h)).sum()
    inputs = [x] + (flat(hx) if hx is not None else []) + list(params)
    grads = torch.autograd.grad(loss, inputs)
    return out, flat(hidden), grads
