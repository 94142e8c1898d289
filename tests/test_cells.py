"""RNNCell / LSTMCell / GRUCell: parity, gradcheck, errors and the module contract."""
import pytest
import torch
from torch import nn

import rnnkern
from helpers import MODES

CELLS = {
    "RNNCell-tanh": (nn.RNNCell, rnnkern.RNNCell, {"nonlinearity": "tanh"}),
    "RNNCell-relu": (nn.RNNCell, rnnkern.RNNCell, {"nonlinearity": "relu"}),
    "LSTMCell": (nn.LSTMCell, rnnkern.LSTMCell, {}),
    "GRUCell": (nn.GRUCell, rnnkern.GRUCell, {}),
}


def make_cells(name, I=3, H=5, bias=True, dtype=torch.float64):
    ref_cls, our_cls, extra = CELLS[name]
    torch.manual_seed(0)
    ref = ref_cls(I, H, bias=bias, **extra).to(dtype)
    torch.manual_seed(0)
    ours = our_cls(I, H, bias=bias, **extra).to(dtype)
    return ref, ours


def states(name, batch, H=5, requires_grad=True):
    shape = (batch, H) if batch is not None else (H,)
    rand = lambda: torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)  # noqa
    return (rand(), rand()) if name == "LSTMCell" else rand()


def as_list(x):
    return list(x) if isinstance(x, tuple) else [x]


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [4, 1, None])  # None: unbatched 1-D input
@pytest.mark.parametrize("hx_given", [True, False])
# Input and hidden sizes alike (the backward's input and hidden sides run at
# once) and far apart (one after the other).
@pytest.mark.parametrize("I,H", [(3, 5), (2, 9), (11, 4)])
def test_cell_parity(name, bias, batch, hx_given, I, H):
    ref, ours = make_cells(name, I=I, H=H, bias=bias)
    for (n, p), (m, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert n == m and torch.equal(p, q)  # same names, same init
    torch.manual_seed(1)
    x = torch.randn(*((batch, I) if batch else (I,)), dtype=torch.float64, requires_grad=True)
    hx = states(name, batch, H) if hx_given else None
    results = []
    for cell in (ref, ours):
        out = as_list(cell(x, hx))
        torch.manual_seed(2)
        loss = sum((o * torch.randn_like(o)).sum() for o in out)
        inputs = [x] + (as_list(hx) if hx_given else []) + list(cell.parameters())
        results.append(out + list(torch.autograd.grad(loss, inputs)))
    for a, b in zip(*results):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", CELLS)
def test_cell_gradcheck(name):
    _, ours = make_cells(name, I=2, H=3)
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    hx = states(name, 2, H=3)
    params = list(ours.parameters())

    def f(x, *args):
        n = len(as_list(hx))
        state = tuple(args[:n]) if n == 2 else args[0]
        weights = dict(zip([k for k, _ in ours.named_parameters()], args[n:]))
        return torch.func.functional_call(ours, weights, (x, state))

    assert torch.autograd.gradcheck(f, (x, *as_list(hx), *params))
    # Second order through the cell's C++ autograd node (its recomputed step),
    # every output, the LSTM's c included.
    assert torch.autograd.gradgradcheck(f, (x, *as_list(hx), *params))


@pytest.mark.parametrize("mode,cell_name", [("RNN_TANH", "RNNCell-tanh"),
                                            ("RNN_RELU", "RNNCell-relu"),
                                            ("LSTM", "LSTMCell"), ("GRU", "GRUCell")])
def test_cell_loop_equals_module(mode, cell_name):
    _, module_cls, extra = MODES[mode]
    module = module_cls(3, 5, **extra).double()
    cell = CELLS[cell_name][1](3, 5, **CELLS[cell_name][2]).double()
    cell.load_state_dict({k[:-3]: v for k, v in module.state_dict().items()})
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    outputs, state = [], None
    for step in x:
        state = cell(step, state)
        outputs.append(as_list(state)[0])
    out, hidden = module(x)
    torch.testing.assert_close(torch.stack(outputs), out, atol=1e-12, rtol=0)
    for a, b in zip(as_list(state), as_list(hidden)):
        torch.testing.assert_close(a, b[0], atol=1e-12, rtol=0)


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None


@pytest.mark.parametrize("name", CELLS)
def test_cell_errors_match_torch_nn(name):
    ref, ours = make_cells(name, dtype=torch.float32)
    lstm = name == "LSTMCell"

    def pair(t):
        return (t, t) if lstm else t

    cases = [
        (torch.zeros(2, 4), None),                     # wrong input size
        (torch.zeros(2, 2, 3), None),                  # 3-D input
        (torch.zeros(2, 3), pair(torch.zeros(3, 5))),  # hidden batch mismatch
        (torch.zeros(2, 3), pair(torch.zeros(2, 6))),  # wrong hidden size
        (torch.zeros(2, 3), pair(torch.zeros(1, 2, 5))),  # 3-D hidden
        (torch.zeros(3), pair(torch.zeros(2, 5))),     # 1-D input, 2-D hidden
        (torch.zeros(2, 3, dtype=torch.float64), None),  # dtype mismatch
    ]
    for x, hx in cases:
        expected = _raised(lambda: ref(x, hx))
        assert expected is not None
        assert _raised(lambda: ours(x, hx)) == expected
    expected = _raised(lambda: nn.RNNCell(3, 4, nonlinearity="gelu")(torch.zeros(1, 3)))
    assert _raised(lambda: rnnkern.RNNCell(3, 4, nonlinearity="gelu")(torch.zeros(1, 3))) == expected


@pytest.mark.parametrize("name", CELLS)
def test_cell_module_contract(name):
    ref, ours = make_cells(name)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    back = CELLS[name][0](3, 5, **CELLS[name][2]).double()
    back.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(0, 3, dtype=torch.float64)  # batch size 0
    assert [t.shape for t in as_list(ours(x))] == [t.shape for t in as_list(ref(x))]


def test_convert_replaces_cells():
    model = nn.ModuleDict({"a": nn.LSTMCell(3, 4), "b": nn.RNNCell(3, 4, nonlinearity="relu"),
                           "c": nn.GRUCell(3, 4, bias=False)}).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    expected = {k: as_list(m(x)) for k, m in model.items()}
    rnnkern.convert(model)
    assert type(model["a"]) is rnnkern.LSTMCell
    assert type(model["b"]) is rnnkern.RNNCell and model["b"].nonlinearity == "relu"
    assert type(model["c"]) is rnnkern.GRUCell and model["c"].bias is False
    for k, m in model.items():
        for a, b in zip(as_list(m(x)), expected[k]):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [3, 1, None])
@pytest.mark.parametrize("how", ["no_grad", "inference_mode", "frozen"])
def test_cell_inference_takes_the_cell_op(name, bias, batch, how, monkeypatch):
    # A step nothing differentiates is one cell_forward call, equal to torch.nn.
    ref, ours = make_cells(name, bias=bias)
    calls = []
    op = rnnkern.cells._ops.cell_forward
    monkeypatch.setattr(rnnkern.cells._ops, "cell_forward",
                        lambda *a: calls.append(1) or op(*a))
    torch.manual_seed(1)
    x = torch.randn(*((batch, 3) if batch else (3,)), dtype=torch.float64)
    hx = states(name, batch, requires_grad=False)
    if how == "frozen":
        ours.requires_grad_(False)
        ref.requires_grad_(False)
        context = torch.enable_grad()
    else:
        context = torch.no_grad() if how == "no_grad" else torch.inference_mode()
    with context:
        expected, got = as_list(ref(x, hx)), as_list(ours(x, hx))
    assert calls == [1]
    for a, b in zip(expected, got):
        assert a.shape == b.shape and not b.requires_grad
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_cell_inference_dtypes(dtype):
    for name in CELLS:
        ref, ours = make_cells(name, I=6, H=9, dtype=dtype)
        x = torch.randn(4, 6).to(dtype)
        hx = states(name, 4, H=9, requires_grad=False)
        hx = tuple(h.to(dtype) for h in hx) if isinstance(hx, tuple) else hx.to(dtype)
        with torch.no_grad():
            for a, b in zip(as_list(ref(x, hx)), as_list(ours(x, hx))):
                tol = 1e-5 if dtype == torch.float32 else 3e-2
                torch.testing.assert_close(b, a, atol=tol, rtol=tol)


def test_cell_forward_op_contract():
    op = torch.ops.rnnkern.cell_forward.default
    w_ih, w_hh, b = torch.randn(20, 3), torch.randn(20, 5), torch.randn(20)
    x, h, c = torch.randn(2, 3), torch.randn(2, 5), torch.randn(2, 5)
    torch.library.opcheck(op, (2, x, h, c, w_ih, w_hh, b, b),
                          test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(RuntimeError, match="saves nothing for backward"):
        op(2, x.requires_grad_(), h, c, w_ih, w_hh, b, b)
    with torch.no_grad():
        op(2, x, h, c, w_ih, w_hh, b, b)  # fine without grad mode
    with pytest.raises(RuntimeError, match="weight_hh must have shape"):
        op(2, x.detach(), h, c, w_ih, w_hh[:19], b, b)
    with pytest.raises(RuntimeError, match="hx must have shape"):
        op(2, x.detach(), h[:1], c, w_ih, w_hh, b, b)
    with pytest.raises(RuntimeError, match="needs a cell state"):
        op(2, x.detach(), h, None, w_ih, w_hh, b, b)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("frozen", ["nothing", "input", "state", "weights"])
def test_cell_training_step_takes_the_cell_ops(name, bias, frozen):
    # A training step is one cell_forward_train call and one cell_backward
    # call (from the C++ autograd node of cell_train_step, seen here by a
    # dispatch mode), asked only for the gradients wanted; equal to torch.nn's.
    from torch.utils._python_dispatch import TorchDispatchMode

    class RnnkernCalls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.name.startswith("rnnkern::"):
                self.calls.append((func._schema.name, args[-1]))
            return func(*args, **(kwargs or {}))

    ref, ours = make_cells(name, bias=bias)
    torch.manual_seed(1)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=frozen != "input")
    hx = states(name, 4, requires_grad=frozen != "state")
    for cell in (ref, ours):
        cell.requires_grad_(frozen != "weights")
    results = []
    for cell in (ref, ours):
        with RnnkernCalls() as seen:
            out = as_list(cell(x, hx))
            torch.manual_seed(2)
            loss = sum((o * torch.randn_like(o)).sum() for o in out)
            wanted = [t for t in [x, *as_list(hx), *cell.parameters()] if t.requires_grad]
            results.append(out + list(torch.autograd.grad(loss, wanted)))
    want_mask = [frozen != "input", frozen != "state", frozen != "weights",
                 bias and frozen != "weights"]
    assert [n for n, _ in seen.calls] == ["rnnkern::cell_forward_train", "rnnkern::cell_backward"]
    assert seen.calls[1][1] == want_mask
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", CELLS)
def test_cell_double_backward_matches_torch_nn(name):
    ref, ours = make_cells(name)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    hx = states(name, 2)
    found = []
    for cell in (ref, ours):
        h = as_list(cell(x, hx))[0]
        params = list(cell.parameters())
        grads = torch.autograd.grad((h ** 3).sum(), [x, *as_list(hx), *params],
                                    create_graph=True)
        penalty = sum((g ** 2).sum() for g in grads)
        found.append(torch.autograd.grad(penalty, [x, *as_list(hx), *params]))
    for a, b in zip(*found):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


def _cell_train_args(mode):
    torch.manual_seed(0)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    x, h = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    c = torch.randn(3, 5, dtype=torch.float64) if mode == "LSTM" else None
    w = [torch.randn(G * 5, 4, dtype=torch.float64), torch.randn(G * 5, 5, dtype=torch.float64),
         torch.randn(G * 5, dtype=torch.float64), torch.randn(G * 5, dtype=torch.float64)]
    return (rnnkern._ops.MODE_IDS[mode], x, h, c, *w)


@pytest.mark.parametrize("mode", MODES)
def test_cell_train_ops_contract(mode):
    args = _cell_train_args(mode)
    torch.library.opcheck(torch.ops.rnnkern.cell_forward_train.default, args)
    hy, cy, gates, extra = torch.ops.rnnkern.cell_forward_train(*args)
    inference = torch.ops.rnnkern.cell_forward(*args)
    assert torch.equal(hy, inference[0]) and torch.equal(cy, inference[1])
    mode_id, x, h, c, w_ih, w_hh = args[:6]
    grad_c = torch.randn_like(cy) if mode == "LSTM" else None
    backward_args = (mode_id, x, h, w_ih, w_hh, gates, extra, hy, torch.randn_like(hy), grad_c,
                     [True, True, True, True])
    torch.library.opcheck(torch.ops.rnnkern.cell_backward.default, backward_args)
    with pytest.raises(RuntimeError, match="the cell modules"):
        torch.ops.rnnkern.cell_forward_train(mode_id, x.detach().requires_grad_(), *args[2:])
    # Nor are they differentiated: a graph of the backward, or a forward-AD tangent.
    with pytest.raises(RuntimeError, match="rnnkern::cell_backward is not differentiable"):
        torch.ops.rnnkern.cell_backward(*backward_args[:8], torch.randn_like(hy).requires_grad_(),
                                        *backward_args[9:])
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="rnnkern::cell_forward_train is not differ"):
            torch.ops.rnnkern.cell_forward_train(mode_id, dual, *args[2:])
    with pytest.raises(RuntimeError, match="was the forward run by cell_forward_train"):
        torch.ops.rnnkern.cell_backward(*backward_args[:5], gates[:1], *backward_args[6:])


@pytest.mark.parametrize("mode", MODES)
def test_cell_train_ops_on_the_cuda_kernels_emulated(mode):
    from test_cuda_emulation import SIMT
    args = _cell_train_args(mode)
    want = torch.ops.rnnkern.cell_forward_train(*args)
    got = SIMT.cell_forward_train(*args)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    hy, _, gates, extra = want
    grad_c = torch.randn_like(hy) if mode == "LSTM" else None
    backward_args = (args[0], args[1], args[2], args[4], args[5], gates, extra, hy,
                     torch.randn_like(hy), grad_c, [True, True, True, True])
    for a, b in zip(SIMT.cell_backward(*backward_args),
                    torch.ops.rnnkern.cell_backward(*backward_args)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_cell_training_float32_on_every_capability():
    from test_cpu_dispatch import SUPPORTED
    previous = rnnkern._ops.cpu_capability()
    try:
        for capability in SUPPORTED:
            rnnkern._ops.set_cpu_capability(capability)
            for name in CELLS:
                ref, ours = make_cells(name, I=20, H=40, dtype=torch.float32)
                for batch in (1, 5, 12):
                    x = torch.randn(batch, 20, requires_grad=True)
                    results = []
                    for cell in (ref, ours):
                        h = as_list(cell(x))[0]
                        grads = torch.autograd.grad(h.sum(), [x, *cell.parameters()])
                        results.append([h, *grads])
                    for a, b in zip(*results):
                        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    finally:
        rnnkern._ops.set_cpu_capability(previous)


@pytest.mark.parametrize("how", ["parametrize", "weight_norm", "functional_call"])
def test_cell_sees_replaced_weights(how):
    # Weights looked up per step: parametrizations, weight_norm and
    # functional_call replace them each in their own way.
    ref, ours = make_cells("GRUCell")
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    if how == "functional_call":
        new = {n: p * 1.5 for n, p in ref.named_parameters()}
        want = torch.func.functional_call(ref, new, (x, h))
        got = torch.func.functional_call(ours, new, (x, h))
    else:
        for cell in (ref, ours):
            if how == "parametrize":
                torch.nn.utils.parametrize.register_parametrization(cell, "weight_hh",
                                                                    _Doubled())
            else:  # at first the same weight: then a changed magnitude
                torch.nn.utils.weight_norm(cell, "weight_ih")
                with torch.no_grad():
                    cell.weight_ih_g.mul_(1.5)
        want, got = ref(x, h), ours(x, h)
        assert not torch.allclose(got, make_cells("GRUCell")[1](x, h))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


class _Doubled(torch.nn.Module):
    def forward(self, w):
        return 2 * w
