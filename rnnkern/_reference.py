"""One layer-direction recomputed with differentiable torch ops, for what the
fused kernels do not compute themselves.

* Double backward: when a graph of the backward is requested
  (``create_graph=True``, ``torch.func.hessian``), the backward recomputes the
  layer with these ops and differentiates them, so the gradient is itself
  differentiable. The first-order path never comes here.
* Forward-mode AD: the same code run on ``Dual`` numbers (primal, tangent)
  is the tangent loop of the recurrence: one pass, exact.

Only matmul and elementwise ops are used (never ``aten::lstm``, ``_VF`` or the
cell ops), with torch.nn's gate orders: LSTM i, f, g, o; GRU r, z, n.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

_LSTM, _GRU = 2, 3


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


class Dual:
    """A primal with its tangent (None: zero); the few ops the cells use."""

    __slots__ = ("p", "t")

    def __init__(self, p, t=None):
        self.p, self.t = p, t

    def __add__(self, other):
        other = _dual(other)
        return Dual(self.p + other.p, _add(self.t, other.t))

    __radd__ = __add__

    def __neg__(self):
        return Dual(-self.p, None if self.t is None else -self.t)

    def __sub__(self, other):
        return self + (-_dual(other))

    def __rsub__(self, other):
        return _dual(other) + (-self)

    def __mul__(self, other):
        other = _dual(other)
        return Dual(self.p * other.p, _add(None if self.t is None else self.t * other.p,
                                          None if other.t is None else other.t * self.p))

    __rmul__ = __mul__

    def sigmoid(self):
        s = self.p.sigmoid()
        return Dual(s, None if self.t is None else self.t * (s * (1 - s)))

    def tanh(self):
        y = self.p.tanh()
        return Dual(y, None if self.t is None else self.t * (1 - y * y))

    def relu(self):
        return Dual(self.p.relu(), None if self.t is None else self.t * (self.p > 0))

    def chunk(self, n: int, dim: int):
        ts = self.t.chunk(n, dim) if self.t is not None else [None] * n
        return [Dual(p, t) for p, t in zip(self.p.chunk(n, dim), ts)]

    def __getitem__(self, index):
        return Dual(self.p[index], None if self.t is None else self.t[index])

    @property
    def shape(self):
        return self.p.shape


def _dual(x):
    return x if isinstance(x, Dual) else Dual(x)


def linear(a, w, b=None):
    """a @ w.T (+ b), for tensors or Duals."""
    if not isinstance(a, Dual) and not isinstance(w, Dual) and not isinstance(b, Dual):
        return torch.nn.functional.linear(a, w, b)
    a, w = _dual(a), _dual(w)
    b = _dual(b) if b is not None else Dual(None)
    p = torch.nn.functional.linear(a.p, w.p, b.p)
    t = _add(None if a.t is None else a.t @ w.p.T, None if w.t is None else a.p @ w.t.T)
    return Dual(p, _add(t, b.t))


def cat(parts: Sequence, dim: int = 0):
    if not any(isinstance(x, Dual) for x in parts):
        return torch.cat(list(parts), dim)
    parts = [_dual(x) for x in parts]
    p = torch.cat([x.p for x in parts], dim)
    if all(x.t is None for x in parts):
        return Dual(p)
    return Dual(p, torch.cat([x.t if x.t is not None else torch.zeros_like(x.p) for x in parts],
                             dim))


def cell(mode: int, gi, h, c, w_hh, b_hh, w_hr):
    """One step: gi = x W_ihᵀ + b_ih for the active rows; returns (h', c')."""
    gh = linear(h, w_hh, b_hh)
    if mode == _LSTM:
        i, f, g, o = (gi + gh).chunk(4, 1)
        c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h_new = o.sigmoid() * c_new.tanh()
        if w_hr is not None:
            h_new = linear(h_new, w_hr)
        return h_new, c_new
    if mode == _GRU:
        ir, iz, i_n = gi.chunk(3, 1)
        hr, hz, hn = gh.chunk(3, 1)
        r = (ir + hr).sigmoid()
        z = (iz + hz).sigmoid()
        n = (i_n + r * hn).tanh()
        return n + z * (h - n), None
    pre = gi + gh
    return (pre.tanh() if mode == 0 else pre.relu()), None


def layer(mode: int, input, batch_sizes: Optional[Tensor], hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr,
          reverse: bool):
    """(output, h_n, c_n) of one layer-direction, as layer_forward computes them;
    c_n is None except for the LSTM. Arguments may be tensors or Duals."""
    if batch_sizes is None:
        steps, batch = input.shape[0], input.shape[1]
        sizes: List[int] = [batch] * steps
        rows = (steps * batch, input.shape[2])
        flat = (Dual(input.p.reshape(rows), None if input.t is None else input.t.reshape(rows))
                if isinstance(input, Dual) else input.reshape(rows))
    else:
        sizes = [int(s) for s in batch_sizes.tolist()]
        flat = input
    gi_all = linear(flat, w_ih, b_ih)  # the input projection of every step at once
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    h, c = hx, (cx if mode == _LSTM else None)
    outputs = [None] * len(sizes)
    for t in (reversed(range(len(sizes))) if reverse else range(len(sizes))):
        n = sizes[t]
        rows = h.shape[0]
        h_new, c_new = cell(mode, gi_all[offsets[t]:offsets[t + 1]], h[:n] if n < rows else h,
                            (c[:n] if n < rows else c) if c is not None else None,
                            w_hh, b_hh, w_hr)
        outputs[t] = h_new
        # Rows past n have finished (or, in reverse, not started): they keep their state.
        h = cat([h_new, h[n:]]) if n < rows else h_new
        if c is not None:
            c = cat([c_new, c[n:]]) if n < rows else c_new
    output = cat(outputs, 0)
    if batch_sizes is None:
        shape = (len(sizes), sizes[0], -1)
        output = (Dual(output.p.view(shape), None if output.t is None else output.t.view(shape))
                  if isinstance(output, Dual) else output.view(shape))
    return output, h, c
