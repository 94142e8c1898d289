"""The modules under torch.autograd.forward_ad and torch.func, against torch.nn
(double backward, grad, vjp, jacrev, hessian; CPU, float64) and, where torch.nn
has no such support, against finite differences or a Python loop."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import (functional_call, grad, hessian, jacfwd, jacrev, jvp, stack_module_state,
                        vjp, vmap)
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkern
from helpers import flat, make_pair

CONFIGS = [
    ("RNN_TANH", {}), ("RNN_RELU", {}), ("GRU", {}), ("LSTM", {}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"proj_size": 2}),
    ("LSTM", {"num_layers": 2, "proj_size": 2, "bidirectional": True}),
]
IDS = [f"{m}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for m, kw in CONFIGS]
T, B, I, H = 4, 3, 3, 4


def _data(seed=1):
    torch.manual_seed(seed)
    return torch.randn(T, B, I, dtype=torch.float64), torch.randn(T, B, I, dtype=torch.float64)


def _outputs(module, x, hx=None):
    out, hidden = module(x) if hx is None else module(x, hx)
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = out.data
    return [out, *flat(hidden)]


def _state(mode, module, requires_grad=False):
    """A random initial state; h has proj_size features when there is a projection."""
    layers = module.num_layers * (2 if module.bidirectional else 1)
    r = module.proj_size or module.hidden_size
    torch.manual_seed(4)
    h = torch.randn(layers, B, r, dtype=torch.float64, requires_grad=requires_grad)
    if mode != "LSTM":
        return h
    return h, torch.randn(layers, B, module.hidden_size, dtype=torch.float64,
                          requires_grad=requires_grad)


def _finite_difference(f, x, v, eps=1e-6):
    plus, minus = f(x + eps * v), f(x - eps * v)
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


@pytest.mark.parametrize("mode,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("frozen", [True, False])
def test_forward_ad_of_the_input(mode, kw, frozen):
    # Frozen weights were once a silent zero tangent: nothing required grad,
    # so the op ran without any derivative formula.
    _, ours = make_pair(mode, I, H, **kw)
    ours.requires_grad_(not frozen)
    x, v = _data()
    with torch.no_grad():
        expected = _finite_difference(lambda t: _outputs(ours, t), x, v)
    with fwAD.dual_level():
        tangents = [fwAD.unpack_dual(o).tangent for o in _outputs(ours, fwAD.make_dual(x, v))]
    for t, e in zip(tangents, expected):
        assert t is not None
        torch.testing.assert_close(t, e, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("mode,kw", CONFIGS, ids=IDS)
def test_jvp_of_weights_state_and_input(mode, kw):
    _, ours = make_pair(mode, I, H, **kw)
    params = {k: p.detach() for k, p in ours.named_parameters()}
    x, v = _data()
    hx = flat(_state(mode, ours))
    torch.manual_seed(3)
    tangents = ({k: torch.randn_like(p) for k, p in params.items()}, v,
                [torch.randn_like(h) for h in hx])

    def f(p, x, hx):
        state = tuple(hx) if mode == "LSTM" else hx[0]
        return tuple(_outputs(lambda *a: functional_call(ours, p, a), x, state))

    _, got = jvp(f, (params, x, hx), tangents)
    eps = 1e-6

    def shifted(sign):
        return f({k: params[k] + sign * eps * tangents[0][k] for k in params},
                 x + sign * eps * v, [h + sign * eps * t for h, t in zip(hx, tangents[2])])

    for g, p, m in zip(got, shifted(1), shifted(-1)):
        torch.testing.assert_close(g, (p - m) / (2 * eps), atol=1e-7, rtol=1e-6)


def _penalty_grads(module, x, hx, packed_lengths=None):
    """A gradient penalty (WGAN-GP style): differentiate a function of dL/dx."""
    x = x.clone().requires_grad_()
    inp = pack_padded_sequence(x, packed_lengths) if packed_lengths else x
    outs = _outputs(module, inp, hx)
    torch.manual_seed(5)
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    params = list(module.parameters())
    g_x, *g_p = torch.autograd.grad(loss, [x, *params], create_graph=True)
    penalty = g_x.pow(2).sum() + sum(g.pow(2).sum() for g in g_p)
    return torch.autograd.grad(penalty, [x, *flat(hx), *params])


@pytest.mark.parametrize("mode,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("packed", [False, True])
def test_double_backward_matches_torch_nn(mode, kw, packed):
    ref, ours = make_pair(mode, I, H, **kw)
    x, _ = _data()
    lengths = [4, 3, 1] if packed else None
    hx = _state(mode, ref, requires_grad=True)
    for a, b in zip(_penalty_grads(ours, x, hx, lengths), _penalty_grads(ref, x, hx, lengths)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_double_backward_and_forward_ad(cell):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cell)(I, H).double()
    ours = getattr(rnnkern, cell)(I, H).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, I, dtype=torch.float64, requires_grad=True)

    def penalty(m):
        out = m(x)
        out = out[0] + 2 * out[1] if isinstance(out, tuple) else out
        g, = torch.autograd.grad(out.tanh().sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), [x, *m.parameters()])

    for a, b in zip(penalty(ours), penalty(ref)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    v = torch.randn_like(x)
    f = (lambda t: ours(t)[1]) if cell == "LSTMCell" else ours
    _, tangent = jvp(f, (x.detach(),), (v,))
    with torch.no_grad():
        torch.testing.assert_close(tangent, _finite_difference(lambda t: [f(t)], x, v)[0],
                                   atol=1e-7, rtol=1e-6)


def _loss(module):
    def f(params, x):
        return sum(o.pow(2).sum() for o in _outputs(lambda a: functional_call(module, params, a),
                                                    x))
    return f


@pytest.mark.parametrize("mode,kw", CONFIGS, ids=IDS)
def test_torch_func_reverse_mode_matches_torch_nn(mode, kw):
    ref, ours = make_pair(mode, I, H, **kw)
    x, v = _data()
    x = x[:, :2]  # jacobians and hessians over a small input
    p_ours = {k: p.detach() for k, p in ours.named_parameters()}
    p_ref = {k: p.detach() for k, p in ref.named_parameters()}
    g_ours, g_ref = grad(_loss(ours))(p_ours, x), grad(_loss(ref))(p_ref, x)
    for k in p_ours:
        torch.testing.assert_close(g_ours[k], g_ref[k], atol=1e-10, rtol=1e-8)
    out_o, pull_o = vjp(lambda t: ours(t)[0], x)
    out_r, pull_r = vjp(lambda t: ref(t)[0], x)
    cot = torch.randn_like(out_r)
    torch.testing.assert_close(pull_o(cot)[0], pull_r(cot)[0], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(jacrev(lambda t: ours(t)[0])(x), jacrev(lambda t: ref(t)[0])(x),
                               atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(jacfwd(lambda t: ours(t)[0])(x), jacrev(lambda t: ref(t)[0])(x),
                               atol=1e-10, rtol=1e-8)
    h_ours = hessian(lambda t: _loss(ours)(p_ours, t))(x)
    h_ref = jacrev(jacrev(lambda t: _loss(ref)(p_ref, t)))(x)
    torch.testing.assert_close(h_ours, h_ref, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("mode,kw", CONFIGS, ids=IDS)
def test_vmap_forward_and_per_sample_gradients_equal_a_loop(mode, kw):
    _, ours = make_pair(mode, I, H, batch_first=True, **kw)
    torch.manual_seed(2)
    n = 5
    xs = torch.randn(n, T, I, dtype=torch.float64)  # one unbatched sequence per sample
    params = {k: p.detach() for k, p in ours.named_parameters()}

    def loss(p, x, y):
        out = functional_call(ours, p, (x,))[0]
        return (out - y).pow(2).sum()

    ys = torch.randn(n, T, ours(xs[0])[0].shape[-1], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(vmap(lambda x: ours(x)[0])(xs),
                                   torch.stack([ours(x)[0] for x in xs]), atol=1e-12, rtol=0)
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
    for i in range(n):
        one = grad(loss)(params, xs[i], ys[i])
        for k in params:
            torch.testing.assert_close(per_sample[k][i], one[k], atol=1e-12, rtol=1e-10)
    # Batched sequences under vmap too: [V, B, T, I].
    xb = torch.randn(2, B, T, I, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(vmap(lambda x: ours(x)[0])(xb),
                                   torch.stack([ours(x)[0] for x in xb]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_vmap_over_an_ensemble_of_stacked_weights(mode):
    models = [make_pair(mode, I, H, seed=s)[1] for s in range(3)]
    params, buffers = stack_module_state(models)
    x, _ = _data()

    def run(p, b, x):
        return functional_call(models[0], (p, b), (x,))[0]

    got = vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    with torch.no_grad():
        torch.testing.assert_close(got, torch.stack([m(x)[0] for m in models]), atol=1e-12,
                                   rtol=0)
    g = vmap(grad(lambda p, b, x: run(p, b, x).pow(2).sum()), in_dims=(0, 0, None))(
        params, buffers, x)
    for i, m in enumerate(models):
        m.zero_grad()
        m(x)[0].pow(2).sum().backward()
        for k, p in m.named_parameters():
            torch.testing.assert_close(g[k][i], p.grad, atol=1e-12, rtol=1e-10)


def test_vmap_folds_the_vmapped_dimension_into_one_kernel_call(monkeypatch):
    from rnnkern import _ops
    _, ours = make_pair("LSTM", I, H, batch_first=True)
    calls = []
    real = torch.ops.rnnkern.layer_forward

    class Spy:
        def __call__(self, *args):
            calls.append(args[1].shape)
            return real(*args)

    monkeypatch.setattr(_ops, "layer_forward", Spy())
    with torch.no_grad():
        vmap(lambda x: ours(x)[0])(torch.randn(6, B, T, I, dtype=torch.float64))
    # The module's call (seen per sample) and the batching rule's one call over all rows.
    assert calls == [(T, B, I), (T, 6 * B, I)]


def test_per_sample_gradients_are_one_folded_backward(monkeypatch):
    from rnnkern import _ops
    _, ours = make_pair("GRU", I, H, batch_first=True)
    params = {k: p.detach() for k, p in ours.named_parameters()}
    calls = []
    real = torch.ops.rnnkern.layer_backward_data

    def spy(*args):
        calls.append(args[1].shape)
        return real(*args)

    monkeypatch.setattr(_ops, "layer_backward_data", spy)
    xs = torch.randn(7, T, I, dtype=torch.float64)
    vmap(grad(lambda p, x: functional_call(ours, p, (x,))[0].sum()), in_dims=(None, 0))(params, xs)
    assert calls == [(T, 7, I)]


@pytest.mark.parametrize("api,mode,reverse", [("op", "LSTM", False), ("function", "GRU", True)])
def test_op_and_function_under_torch_func(api, mode, reverse):
    # The op itself (as the modules call it) and the public autograd.Function:
    # grad, jacfwd, and vmap of grad.
    from rnnkern import _ops, _reference
    from rnnkern.functional import RNNLayerFunction
    from test_gradcheck import _inputs
    mode_id = _ops.MODE_IDS[mode]
    x, bs, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = [
        a.detach() if a is not None else None for a in _inputs(mode, 4, 3, 2, 3, True)]
    layer = (RNNLayerFunction.apply if api == "function"
             else lambda *a: torch.ops.rnnkern.layer_forward(*a)[:3])

    def f(x, w_hh):
        return layer(mode_id, x, None, hx, cx, w_ih, w_hh, b_ih, b_hh, None, reverse,
                     True)[0].pow(2).sum()

    def ref(x, w_hh):
        return _reference.layer(mode_id, x, None, hx, cx, w_ih, w_hh, b_ih, b_hh, None,
                                reverse)[0].pow(2).sum()

    for transform in (grad, jacfwd):
        for a, b in zip(transform(f, argnums=(0, 1))(x, w_hh),
                        transform(ref, argnums=(0, 1))(x, w_hh)):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    xs = torch.randn(4, *x.shape, dtype=torch.float64)
    for argnums in (0, 1):
        torch.testing.assert_close(
            vmap(grad(f, argnums=argnums), in_dims=(0, None))(xs, w_hh),
            torch.stack([grad(f, argnums=argnums)(xi, w_hh) for xi in xs]), atol=1e-12, rtol=0)
