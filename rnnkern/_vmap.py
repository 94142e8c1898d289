"""Batching rules of the ops for torch.func.vmap.

A vmapped input, state or gradient folds into the batch dimension: one kernel
call over V*B rows instead of V calls. Each vmapped sample keeps its own rows,
so the results are those of V calls. Per-sample weight gradients come from
the folded call's gate gradients, summed per sample. Stacked weights
(ensembles) and packed input run one call per sample.

Folded saved state is handed on as [T, V, B, ...] with the vmap dimension 1
(logical [T, B, ...]); the backward rule reads either that or the stacked
[V, T*B, ...] of the per-sample path.
"""
import torch

from . import _ops


def _per_sample(op, batch_size, in_dims, args):
    results = []
    for v in range(batch_size):
        results.append(op(*[a.select(d, v) if d is not None else a
                            for a, d in zip(args, in_dims)]))
    outputs = tuple(torch.stack(parts) for parts in zip(*results))
    return outputs, (0,) * len(outputs)


def _vmap_first(t, bdim, batch_size):
    """t with its vmap dimension first (expanded if it has none)."""
    if bdim is None:
        return t.unsqueeze(0).expand(batch_size, *t.shape)
    return t.movedim(bdim, 0)


def _fold_rows(t, bdim, batch_size, steps, batch, lead=()):
    """[V, *lead, T*B or (T, B), ...] -> [*lead, T*V*B, rest]: each step's rows
    for every sample together, as a sequence of batch V*B has them."""
    t = _vmap_first(t, bdim, batch_size)
    t = t.reshape(batch_size, *lead, steps, batch, -1)
    k = len(lead)
    t = t.movedim(0, k + 1)  # [*lead, T, V, B, rest]
    return t.reshape(*lead, steps * batch_size * batch, t.shape[-1])


def _fold_state(t, bdim, batch_size):
    # [V, B, C] -> [V*B, C]
    t = _vmap_first(t, bdim, batch_size)
    return t.reshape(batch_size * t.shape[1], *t.shape[2:])


def _unfold_rows(t, steps, batch_size):
    """[*lead, T*V*B, C] -> [*lead, T, V, B, C], with its vmap dimension."""
    lead = t.shape[:-2]
    return t.view(*lead, steps, batch_size, -1, t.shape[-1]), len(lead) + 1


def _forward_rule(info, in_dims, mode, input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr,
                  reverse, train):
    args = (mode, input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train)
    V = info.batch_size
    if batch_sizes is not None or any(d is not None for d in in_dims[5:10]):
        return _per_sample(_ops.layer_forward, V, in_dims, args)
    d_input, _, d_hx, d_cx = in_dims[1:5]
    x = _vmap_first(input, d_input, V)  # [V, T, B, I]
    T, B = x.shape[1], x.shape[2]
    x = x.movedim(0, 1).reshape(T, V * B, x.shape[-1])
    h = _fold_state(hx, d_hx, V)
    c = _fold_state(cx, d_cx, V) if cx is not None else None
    output, hy, cy, *saved = _ops.layer_forward(
        mode, x, None, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train)
    results = [_unfold_rows(output.view(T * V * B, -1), T, V),
               (hy.view(V, B, -1), 0),
               (cy.view(V, B, -1), 0) if cy.numel() else (cy, None)]
    results += [_unfold_rows(t, T, V) if t.numel() else (t, None) for t in saved]
    return tuple(r[0] for r in results), tuple(r[1] for r in results)


def _backward_rule(info, in_dims, mode, input, batch_sizes, w_ih, w_hh, w_hr, output, h_prev,
                   gates, extra, grad_output, grad_hy, grad_cy, reverse, batch, output_mask):
    args = (mode, input, batch_sizes, w_ih, w_hh, w_hr, output, h_prev, gates, extra,
            grad_output, grad_hy, grad_cy, reverse, batch, output_mask)
    V = info.batch_size
    proj = w_hr is not None
    if batch_sizes is not None or any(d is not None for d in in_dims[3:6]):
        def one(*a):
            n = input.shape[0] if batch_sizes is not None else a[1].shape[0] * a[1].shape[1]
            a = list(a)
            a[7], a[8] = a[7].reshape(n, -1), a[8].reshape(n, -1)
            if a[9].numel():
                a[9] = a[9].reshape(2, n, -1) if proj else a[9].reshape(n, -1)
            return _ops.layer_backward(*a)
        return _per_sample(one, V, in_dims, args)
    d_input, _, _, _, _, d_out, d_hp, d_gates, d_extra, d_go, d_ghy, d_gcy = in_dims[1:13]
    x = _vmap_first(input, d_input, V)
    T, B = x.shape[1], x.shape[2]
    x = x.movedim(0, 1).reshape(T, V * B, x.shape[-1])

    def rows(t, d, lead=()):
        return _fold_rows(t, d, V, T, B, lead)

    if extra.numel():
        extra = rows(extra, d_extra, (2,) if proj else ())
    h_prev = rows(h_prev, d_hp)
    g_out = rows(grad_output, d_go) if grad_output is not None else None
    g_hy = _fold_state(grad_hy, d_ghy, V) if grad_hy is not None else None
    g_cy = _fold_state(grad_cy, d_gcy, V) if grad_cy is not None else None
    common = (mode, x, None, w_ih, w_hh, w_hr, rows(output, d_out), h_prev, rows(gates, d_gates),
              extra, g_out, g_hy, g_cy, reverse, V * B)
    empty = x.new_empty(0)
    if output_mask[2] or output_mask[3]:
        # Per-sample weight gradients: the loop's gate gradients of every row,
        # summed per sample (one batched product per weight).
        g_x, g_hx, g_cx, dg, dg_h, dh_out = _ops.layer_backward_data(*common, output_mask[0])

        def per_sample(t):  # [T*V*B, C] -> [V, T*B, C]
            return t.reshape(T, V, B, -1).transpose(0, 1).reshape(V, T * B, -1)

        dg, dg_h = per_sample(dg), (per_sample(dg_h) if dg_h.numel() else None)
        w = [empty] * 5
        if output_mask[2]:
            w[0] = dg.transpose(1, 2) @ per_sample(x)
            w[1] = (dg_h if dg_h is not None else dg).transpose(1, 2) @ per_sample(h_prev)
            if proj:
                w[4] = per_sample(dh_out).transpose(1, 2) @ per_sample(extra[1])
        if output_mask[3]:
            w[2] = dg.sum(1)
            w[3] = dg_h.sum(1) if dg_h is not None else w[2].clone()
        if not output_mask[1]:
            g_hx = g_cx = empty
        grads = (g_x, g_hx, g_cx, *w)
    else:
        grads = _ops.layer_backward(*common, output_mask)
    results, dims = [], []
    for k, t in enumerate(grads):
        if t.numel() == 0:
            results.append(t)
            dims.append(None)
        elif k == 0:
            results.append(t.view(T, V, B, -1))
            dims.append(1)
        elif k in (1, 2):
            results.append(t.view(V, B, -1))
            dims.append(0)
        else:  # per-sample weight gradients, vmap dimension first
            results.append(t)
            dims.append(0)
    return tuple(results), tuple(dims)


torch.library.register_vmap("rnnkern::layer_forward", _forward_rule)
torch.library.register_vmap("rnnkern::layer_backward", _backward_rule)
