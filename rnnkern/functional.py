"""The autograd functions over the fused C++ time loops: the functional API.

``rnn_layer`` runs one layer in one direction; ``rnn_stack`` stacks layers and
directions exactly as torch.nn does (dropout between layers in training,
directions concatenated on the feature dimension), in one op call where it can
(``_stack``).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _autograd, _bidirectional, _ops, _stack


class RNNLayerFunction(_autograd.LayerFunction):
    """One layer-direction of RNN_TANH / RNN_RELU / LSTM / GRU, as a
    ``torch.autograd.Function`` (backward, double backward, jvp, vmap).

    Arguments: ``(mode_id, input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh,
    w_hr, reverse, train)``. input is ``[T, B, I]`` (or packed ``[rows, I]``
    with ``batch_sizes``); hx is ``[B, R]`` and cx ``[B, H]``. With ``train``
    the state for backward is saved. Returns ``(output, h_n, c_n)``; ``c_n`` is
    an empty tensor except for the LSTM.
    """

    @classmethod
    def apply(cls, *args):
        # Through LayerFunction itself: functorch re-enters the Function's own
        # apply and must see all six outputs there.
        return _autograd.LayerFunction.apply(*args)[:3]


def _needs_grad(tensors: Sequence[Optional[Tensor]]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rnn_layer(
    mode: str,
    input: Tensor,
    hx: Tensor,
    cx: Optional[Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
    w_hr: Optional[Tensor] = None,
    reverse: bool = False,
    batch_sizes: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """One layer-direction. Returns ``(output, h_n, c_n)``; ``c_n`` is None
    except for ``mode == "LSTM"``. ``w_hr`` is the LSTM's projection
    (``proj_size > 0``)."""
    mode_id = _ops.MODE_IDS[mode]
    train = _needs_grad((input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr))
    args = (mode_id, input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train)
    # The op's Autograd kernel (_autograd) takes the autograd.Function only when
    # something is differentiated (backward or forward mode).
    output, hy, cy = _ops.layer_forward(*args)[:3]
    return output, hy, (cy if mode == "LSTM" else None)


def _unpack_weights(w: Sequence[Tensor]):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) from one layer-direction's weights in torch.nn's order."""
    if len(w) == 2:
        return w[0], w[1], None, None, None
    if len(w) == 3:
        return w[0], w[1], None, None, w[2]
    return w[0], w[1], w[2], w[3], (w[4] if len(w) == 5 else None)


def rnn_stack(
    mode: str,
    input: Tensor,
    hx: Tensor,
    cx: Optional[Tensor],
    weights: List[List[Tensor]],
    num_layers: int,
    bidirectional: bool,
    dropout: float = 0.0,
    training: bool = False,
    batch_sizes: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """All layers and directions, as torch.nn's modules run them.

    input: ``[T, B, I]`` (sequence first) or packed ``[rows, I]``; hx, cx:
    ``[num_layers * num_directions, B, H]``; weights: per layer-direction
    torch.nn's order, ``[w_ih, w_hh]`` + ``[b_ih, b_hh]`` with biases + ``[w_hr]``
    with a projection.
    Returns ``(output, h_n, c_n)``.
    """
    five = [w for layer in weights for w in _unpack_weights(layer)]
    p = dropout if training else 0.0
    if _stack.applies(input):  # every layer in one op call
        output, h_n, c_n = _stack.stack(_ops.MODE_IDS[mode], input, batch_sizes, hx, cx, five,
                                        num_layers, bidirectional, p)
        return output, h_n, (c_n if mode == "LSTM" else None)
    return _layers(mode, input, hx, cx, five, num_layers, bidirectional, p, batch_sizes)


def _layers(mode, input, hx, cx, five, num_layers, bidirectional, p, batch_sizes):
    """rnn_stack one op call per layer (or per layer-direction): the path that
    forward AD, functorch and torch.compile differentiate and trace."""
    num_directions = 2 if bidirectional else 1
    h_n, c_n = [], []
    layer_input = input
    together = bidirectional and _bidirectional.applies()
    for layer in range(num_layers):
        outputs = []
        if together:  # both directions in one op call, at once
            args = [(hx[i], cx[i] if cx is not None else None, *five[5 * i:5 * i + 5])
                    for i in (2 * layer, 2 * layer + 1)]
            train = _needs_grad((layer_input, *args[0], *args[1]))
            for output, h, c in _bidirectional.bidirectional_layer(
                    _ops.MODE_IDS[mode], layer_input, batch_sizes, *args, train):
                outputs.append(output)
                h_n.append(h)
                c_n.append(c if mode == "LSTM" else None)
        for direction in range(num_directions if not together else 0):
            index = layer * num_directions + direction
            output, h, c = rnn_layer(
                mode, layer_input, hx[index], cx[index] if cx is not None else None,
                *five[5 * index:5 * index + 5], reverse=direction == 1, batch_sizes=batch_sizes,
            )
            outputs.append(output)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, -1)
        if p > 0 and layer < num_layers - 1:
            layer_input = torch.nn.functional.dropout(layer_input, p, True)
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if cx is not None else None)
