"""Autograd of ``rnnkern::layer_forward``: one ``torch.autograd.Function`` for
the op and for the public functional API.

* backward: the fused ``layer_backward`` op; when a graph of the backward is
  asked for (``create_graph=True``, ``torch.func.hessian``), a differentiable
  recomputation instead (``_reference``), so double backward is exact.
* jvp (forward-mode AD, ``torch.func.jvp``/``jacfwd``): the tangent loop of
  ``_reference`` run on dual numbers.
* vmap: ``generate_vmap_rule`` runs the above under vmap; the ops themselves
  have batching rules (``_vmap``).

The op's Autograd kernel is registered here by hand (not with
``torch.library.register_autograd``) because that one skips autograd when no
input requires grad, which drops forward-mode tangents silently.
"""
import torch
import torch.autograd.forward_ad as fwAD
from torch import _C
from torch._C import _functorch
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
from torch._functorch.autograd_function import enable_single_level_autograd_function

from . import _ops, _reference

# Positions in layer_forward's arguments.
_INPUT, _HX, _CX, _W_IH, _W_HH, _B_IH, _B_HH, _W_HR = 1, 3, 4, 5, 6, 7, 8, 9
_DIFFERENTIABLE = (_INPUT, _HX, _CX, _W_IH, _W_HH, _B_IH, _B_HH, _W_HR)


def _forward_ad_active() -> bool:
    """A forward-mode AD level is open (torch.autograd.forward_ad or torch.func.jvp)."""
    return fwAD._current_level >= 0 or torch._functorch.eager_transforms.JVP_NESTING > 0


class LayerFunction(torch.autograd.Function):
    """layer_forward with its backward, double backward, jvp and vmap (12
    arguments in, the op's 6 outputs out; the last three are the saved state)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        if _C._are_functorch_transforms_active():
            # The op goes on to the transforms below this level, which must
            # still differentiate it: autograd.Function's forward runs with grad
            # off, so turn it back on for them (as functorch's own Function rule does).
            with torch.enable_grad(), fwAD._set_fwd_grad_enabled(True), \
                    _C._AutoDispatchBelowAutograd():
                return _ops.layer_forward(*args)
        with _C._AutoDispatchBelowAutograd():
            return _ops.layer_forward(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        mode, input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train = inputs
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*output[3:], *(output[2:3] if mode != _ops.LSTM else ()))
        ctx.mode, ctx.reverse, ctx.batch, ctx.trained = mode, reverse, hx.shape[0], train
        ctx.has_bias = b_ih is not None
        saved = (input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, *output[:1],
                 *output[3:])
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def backward(ctx, grad_output, grad_hy, grad_cy, *_saved_grads):
        saved = ctx.saved_tensors
        grads = (grad_output, grad_hy, grad_cy)
        if _graph_of_backward_wanted((*saved[:9], *grads)):
            return _differentiable_backward(ctx, saved[:9], grads)
        return _fused_backward(ctx, saved, grads)

    @staticmethod
    def jvp(ctx, *tangents):
        input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = ctx.saved_tensors[:9]
        primals = (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)
        duals = [None if p is None else _reference.Dual(p, tangents[i])
                 for i, p in zip(_DIFFERENTIABLE, primals)]
        input_d, hx_d, cx_d, w_ih_d, w_hh_d, b_ih_d, b_hh_d, w_hr_d = duals
        output, hy, cy = _reference.layer(ctx.mode, input_d, batch_sizes, hx_d, cx_d, w_ih_d,
                                          w_hh_d, b_ih_d, b_hh_d, w_hr_d, ctx.reverse)

        def tangent(d, like):
            return d.t if d.t is not None else torch.zeros_like(like)

        t_cy = tangent(cy, cy.p) if cy is not None else None
        return tangent(output, output.p), tangent(hy, hy.p), t_cy, None, None, None


def _fused_backward(ctx, saved, grads):
    need = ctx.needs_input_grad
    input, batch_sizes, _, _, w_ih, w_hh, _, _, w_hr, output, h_prev, gates, extra = saved
    if not ctx.trained:
        raise RuntimeError(
            "rnnkern: the forward pass ran with train=False and saved no state for backward")
    mask = [need[_INPUT], need[_HX] or need[_CX], need[_W_IH] or need[_W_HH] or need[_W_HR],
            ctx.has_bias and (need[_B_IH] or need[_B_HH])]
    result = [None] * 12
    if not any(mask):
        return tuple(result)
    grads = _ops.layer_backward(ctx.mode, input, batch_sizes, w_ih, w_hh, w_hr, output, h_prev,
                                gates, extra, *grads, ctx.reverse, ctx.batch, mask)
    for index, grad in zip((_INPUT, _HX, _CX, _W_IH, _W_HH, _B_IH, _B_HH, _W_HR), grads):
        if need[index]:
            result[index] = grad
    return tuple(result)


def _differentiable_backward(ctx, inputs, grads):
    """Gradients that carry a graph: the vjp of the layer recomputed with torch ops."""
    input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = inputs
    args = dict(zip(_DIFFERENTIABLE, (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)))
    if ctx.mode != _ops.LSTM:
        grads = (*grads[:2], None)

    def forward(a):
        return _reference.layer(ctx.mode, a[_INPUT], batch_sizes, a[_HX], a[_CX], a[_W_IH],
                                a[_W_HH], a[_B_IH], a[_B_HH], a[_W_HR], ctx.reverse)

    return recomputed_gradients(forward, args, ctx.needs_input_grad, grads)


def recomputed_gradients(forward, args, needs_input_grad, grads):
    """The gradients of a Function's inputs, with a graph: the vjp of
    ``forward(a)`` (a: argument position -> tensor; its outputs in the order of
    ``grads``), a recomputation with differentiable torch ops. torch.func.vjp
    (not autograd.grad) so that it composes with whatever is around it:
    create_graph, functorch's grad levels, forward AD."""
    wanted = [i for i in args if needs_input_grad[i] and args[i] is not None]
    picked = [k for k, g in enumerate(grads) if g is not None]
    result = [None] * len(needs_input_grad)
    if not wanted or not picked:
        return tuple(result)

    def recompute(*values):
        outs = forward({**args, **dict(zip(wanted, values))})
        return tuple(outs[k] for k in picked)

    with torch.enable_grad():
        _, pullback = torch.func.vjp(recompute, *[args[i] for i in wanted])
        found = pullback(tuple(grads[k] for k in picked))
    for i, g in zip(wanted, found):
        result[i] = g
    return tuple(result)


def _needs_autograd(args) -> bool:
    if _C.is_grad_enabled() and _C._any_requires_grad(*args):
        return True
    # Under forward AD take the differentiable path whether or not a tangent is
    # seen here: functorch's jvp levels are not all visible to unpack_dual, and a
    # dropped tangent would be a silent zero.
    return _forward_ad_active()


# torch.autograd.Function.apply hands the call to functorch when a transform is
# active; in an Autograd kernel functorch has already done its part (the
# tensors are this level's), so a single-level Function with the same methods
# is the one to run, as functorch itself runs one for a Function's grad rule.
_SingleLevelLayer = type(
    "LayerFunctionSingleLevel", (torch.autograd.function._SingleLevelFunction,),
    {name: LayerFunction.__dict__[name]
     for name in ("forward", "setup_context", "backward", "jvp")})
_single_level_apply = _SingleLevelLayer.apply


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def _base_tensor(t):
    while _functorch.is_functorch_wrapped_tensor(t):
        t = _functorch.get_unwrapped(t)
    return t


def _graph_of_backward_wanted(tensors) -> bool:
    """Whether anything will differentiate this backward's result.

    Without functorch: grad mode is on (create_graph) and something requires
    grad, or forward AD is active. functorch's grad and vjp always run the
    backward with create_graph; there a graph is wanted only when a
    differentiating transform (grad, jvp) sits below the level the tensors
    belong to, or plain autograd tracks them outside every transform. When in
    doubt, the differentiable path (always right, only slower)."""
    tensors = [t for t in _flat(tensors) if isinstance(t, torch.Tensor)]
    if not _C._are_functorch_transforms_active():
        return _needs_autograd(tensors)
    own = max((_functorch.maybe_get_level(t) for t in tensors), default=-1)
    for interpreter in retrieve_all_functorch_interpreters():
        if interpreter.key() in (TransformType.Grad, TransformType.Jvp) and (
                own < 0 or interpreter.level() < own):
            return True
    if fwAD._current_level >= 0 and torch._functorch.eager_transforms.JVP_NESTING == 0:
        return True  # forward AD outside the transforms
    return any(_base_tensor(t).requires_grad for t in tensors)


def _layer_forward_autograd(keyset, *args):
    if _needs_autograd(args):
        with enable_single_level_autograd_function():
            return _single_level_apply(*args)
    with _C._AutoDispatchBelowAutograd():
        return _LAYER_FORWARD.redispatch(keyset & _C._after_autograd_keyset, *args)


def _not_differentiable(op, instead="rnnkern::layer_forward"):
    # The backward ops are the first-order formula only; a graph of the
    # gradient comes from differentiating layer_forward (LayerFunction.backward)
    # or the stack's autograd.Function.
    def kernel(keyset, *args):
        if _graph_of_backward_wanted(args):
            raise RuntimeError(
                f"rnnkern::{op._opname} is not differentiable: differentiate {instead} "
                "instead (its backward gives a differentiable gradient when a graph is "
                "requested)")
        with _C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & _C._after_autograd_keyset, *args)
    return kernel


_LAYER_FORWARD = torch.ops.rnnkern.layer_forward.default
_lib = torch.library.Library("rnnkern", "IMPL")
_lib.impl("layer_forward", _layer_forward_autograd, "Autograd", with_keyset=True)
for _name in ("layer_backward", "layer_backward_data", "layer_forward_bidirectional",
              "layer_backward_bidirectional"):
    _lib.impl(_name, _not_differentiable(getattr(torch.ops.rnnkern, _name).default), "Autograd",
              with_keyset=True)
# stack_forward, stack_backward, cell_forward_train and cell_backward: the
# same check in C++ (csrc/ops.cpp); they run only where no transform is active.
