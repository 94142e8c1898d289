"""A module's whole stack in one op call: ``rnnkern::stack_forward`` and
``stack_backward`` run every layer and direction, and the dropout between
layers, in C++ (the backend runs a bidirectional layer's two directions at
once). ``functional.rnn_stack`` takes this path in plain eager mode, for
inference and for first-order autograd; under forward-mode AD, functorch
transforms and torch.compile it keeps the per-layer ops, which those know how
to handle. A graph of the backward (double backward) is made by differentiating
the stack recomputed with ``_reference``'s torch ops and the saved dropout masks.
"""
import torch

from . import _autograd, _ops, _reference

# False runs the layers one op call each (for measurements and tests).
ENABLED = True

# Positions in StackFunction's arguments: (mode, input, batch_sizes, hx, cx,
# num_layers, bidirectional, dropout, then five weights per layer-direction).
_INPUT, _HX, _CX, _WEIGHTS = 1, 3, 4, 8
_PER = 5  # w_ih, w_hh, b_ih, b_hh, w_hr


def applies(input) -> bool:
    return ENABLED and input.device.type in ("cpu", "cuda") and not (
        torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
        or _autograd._forward_ad_active())


def stack(mode_id, input, batch_sizes, hx, cx, weights, num_layers, bidirectional, p):
    """(output, h_n, c_n) of the whole stack; weights: five per layer-direction.
    p: the dropout between layers (0 when the module is not training)."""
    if _autograd._needs_autograd((input, hx, cx, *weights)):
        return StackFunction.apply(mode_id, input, batch_sizes, hx, cx, num_layers,
                                   bidirectional, p, *weights)
    return _ops.stack_forward(mode_id, input, batch_sizes, hx, cx, list(weights), num_layers,
                              bidirectional, p, False)[:3]


class StackFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, mode, input, batch_sizes, hx, cx, num_layers, bidirectional, p, *weights):
        output, h_n, c_n, saved = _ops.stack_forward(mode, input, batch_sizes, hx, cx,
                                                     list(weights), num_layers, bidirectional,
                                                     p, True)
        ctx.set_materialize_grads(False)
        ctx.mode, ctx.layers, ctx.bidirectional, ctx.p = mode, num_layers, bidirectional, p
        ctx.batch, ctx.weights = hx.shape[1], len(weights)
        if mode != _ops.LSTM:
            ctx.mark_non_differentiable(c_n)
        ctx.save_for_backward(input, batch_sizes, hx, cx, output, *weights, *saved)
        return output, h_n, c_n

    @staticmethod
    def backward(ctx, grad_output, grad_hy, grad_cy):
        saved = ctx.saved_tensors
        input, batch_sizes, hx, cx, output = saved[:5]
        weights = list(saved[5:5 + ctx.weights])
        state = list(saved[5 + ctx.weights:])
        grads = (grad_output, grad_hy, grad_cy if ctx.mode == _ops.LSTM else None)
        if _autograd._graph_of_backward_wanted((input, hx, cx, *weights, *grads)):
            return _differentiable_backward(ctx, input, batch_sizes, hx, cx, weights, state,
                                            grads)
        need = ctx.needs_input_grad
        wanted = need[_WEIGHTS:]
        mask = [need[_INPUT], need[_HX] or need[_CX],
                any(w for k, w in enumerate(wanted) if k % _PER in (0, 1, 4)),
                any(w for k, w in enumerate(wanted) if k % _PER in (2, 3))]
        result = [None] * len(need)
        if not any(mask):
            return tuple(result)
        g_in, g_hx, g_cx, g_w = _ops.stack_backward(
            ctx.mode, input, batch_sizes, weights, output, state, *grads, ctx.layers,
            ctx.bidirectional, ctx.p, ctx.batch, mask)
        for position, g in ((_INPUT, g_in), (_HX, g_hx), (_CX, g_cx)):
            if need[position]:
                result[position] = g
        for k, g in enumerate(g_w):
            if wanted[k]:
                result[_WEIGHTS + k] = g
        return tuple(result)


def _masks(state, count, layers, p, dtype):
    """The dropout multipliers the forward drew, per layer above the first (None: no dropout)."""
    masks = []
    for layer in range(layers - 1):
        noise = state[4 * count + 2 * layer + 1]
        if noise.dim() == 1 and noise.numel() == 0:
            masks.append(None)
        elif noise.dtype == torch.bool:  # CUDA's native_dropout
            masks.append(noise.to(dtype) * (1 / (1 - p)))
        else:
            masks.append(noise)
    return masks


def reference_stack(mode, input, batch_sizes, hx, cx, weights, num_layers, bidirectional, masks):
    """The stack by _reference's differentiable ops, with the given dropout multipliers."""
    directions = 2 if bidirectional else 1
    h_n, c_n = [], []
    layer_input = input
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            i = layer * directions + d
            output, h, c = _reference.layer(mode, layer_input, batch_sizes, hx[i],
                                            cx[i] if cx is not None else None,
                                            *weights[_PER * i:_PER * i + _PER], d == 1)
            outputs.append(output)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        if layer < num_layers - 1 and masks[layer] is not None:
            layer_input = layer_input * masks[layer]
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if mode == _ops.LSTM else None)


def _differentiable_backward(ctx, input, batch_sizes, hx, cx, weights, state, grads):
    count = ctx.layers * (2 if ctx.bidirectional else 1)
    masks = _masks(state, count, ctx.layers, ctx.p, input.dtype)
    args = {_INPUT: input, _HX: hx, _CX: cx}
    args.update({_WEIGHTS + k: w for k, w in enumerate(weights)})

    def forward(a):
        return reference_stack(ctx.mode, a[_INPUT], batch_sizes, a[_HX], a[_CX],
                               [a[_WEIGHTS + k] for k in range(len(weights))], ctx.layers,
                               ctx.bidirectional, masks)

    return _autograd.recomputed_gradients(forward, args, ctx.needs_input_grad, grads)
