"""Both directions of a bidirectional layer in one op call.

``layer_forward_bidirectional`` / ``layer_backward_bidirectional`` run the two
directions at once on the CPU (one core each, each with its own weights in its
cache). ``rnn_stack`` takes this path for plain eager autograd and inference;
under forward-mode AD, functorch transforms and torch.compile it keeps the
per-direction op (``_autograd.LayerFunction``), which those know how to handle.
Double backward works here too: a graph of the backward is made by the same
differentiable recomputation, one direction at a time.
"""
import types

import torch

from . import _autograd, _ops

# Positions of one direction's arguments within BidirectionalFunction's, and
# within layer_forward's (hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr).
_FIRST = (3, 10)
_LAYER_POSITIONS = (3, 4, 5, 6, 7, 8, 9)


# False runs the directions one after the other, as separate op calls (for
# measurements and tests).
ENABLED = True


def applies() -> bool:
    return ENABLED and not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
                or _autograd._forward_ad_active())


class BidirectionalFunction(torch.autograd.Function):
    """Arguments: (mode, input, batch_sizes, then per direction hx, cx, w_ih,
    w_hh, b_ih, b_hh, w_hr, then train). Returns per direction (output, h_n, c_n)."""

    @staticmethod
    def forward(ctx, mode, input, batch_sizes, *rest):
        directions, train = (list(rest[0:7]), list(rest[7:14])), rest[14]
        results = _ops.layer_forward_bidirectional(mode, input, batch_sizes, *directions, train)
        ctx.set_materialize_grads(False)
        ctx.mode, ctx.trained, ctx.batch = mode, train, directions[0][0].shape[0]
        ctx.has_bias = directions[0][4] is not None
        ctx.mark_non_differentiable(*(r[2] for r in results if mode != _ops.LSTM))
        ctx.save_for_backward(input, batch_sizes, *directions[0], *results[0][:1],
                              *results[0][3:], *directions[1], *results[1][:1], *results[1][3:])
        return (*results[0][:3], *results[1][:3])

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        input, batch_sizes = saved[:2]
        per = [saved[2:13], saved[13:24]]  # inputs (7), output, h_prev, gates, extra
        grads = (grads[0:3], grads[3:6])
        result = [None] * 18
        if _autograd._graph_of_backward_wanted((*saved[2:9], *saved[13:20], input,
                                                *grads[0], *grads[1])):
            for d in (0, 1):
                _differentiable_direction(ctx, d, input, batch_sizes, per[d][:7], grads[d],
                                          result)
            return tuple(result)
        if not ctx.trained:
            raise RuntimeError(
                "rnnkern: the forward pass ran with train=False and saved no state for backward")
        need = ctx.needs_input_grad
        wanted = [[need[f + k] for k in range(7)] for f in _FIRST]
        mask = [need[1], any(w[0] or w[1] for w in wanted),
                any(w[2] or w[3] or w[6] for w in wanted),
                ctx.has_bias and any(w[4] or w[5] for w in wanted)]
        if not any(mask):
            return tuple(result)
        args = [[p[2], p[3], p[6], p[7], p[8], p[9], p[10], *g] for p, g in zip(per, grads)]
        both = _ops.layer_backward_bidirectional(ctx.mode, input, batch_sizes, *args, ctx.batch,
                                                 mask)
        if need[1]:
            result[1] = both[0][0] + both[1][0]
        for d, grads_d in enumerate(both):
            # layer_backward's order: input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr
            for k, g in zip((0, 1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5, 6, 7)):
                if wanted[d][k]:
                    result[_FIRST[d] + k] = grads_d[g]
        return tuple(result)


def _differentiable_direction(ctx, d, input, batch_sizes, inputs, grads, result):
    need = ctx.needs_input_grad
    layer_need = [False] * 12
    layer_need[1] = need[1]
    for k, position in enumerate(_LAYER_POSITIONS):
        layer_need[position] = need[_FIRST[d] + k]
    sub = types.SimpleNamespace(mode=ctx.mode, reverse=d == 1, needs_input_grad=layer_need)
    found = _autograd._differentiable_backward(sub, (input, batch_sizes, *inputs), grads)
    if found[1] is not None:
        result[1] = found[1] if result[1] is None else result[1] + found[1]
    for k, position in enumerate(_LAYER_POSITIONS):
        result[_FIRST[d] + k] = found[position]


def bidirectional_layer(mode_id, input, batch_sizes, forward, reverse, train):
    """Per direction (output, h_n, c_n) of one bidirectional layer; forward and
    reverse are (hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)."""
    if train:
        out = BidirectionalFunction.apply(mode_id, input, batch_sizes, *forward, *reverse, train)
        return out[:3], out[3:]
    results = _ops.layer_forward_bidirectional(mode_id, input, batch_sizes, list(forward),
                                               list(reverse), False)
    return results[0][:3], results[1][:3]
