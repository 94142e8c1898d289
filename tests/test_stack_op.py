"""The whole-stack op (rnnkern::stack_forward / stack_backward): the modules'
path in eager mode. Checked against the per-layer ops (bitwise, the same
kernels in the same order, dropout drawn from the same generator) and against
torch.nn (float64, the same seed), for every mode and flag, packed input,
dropout, partial gradients, double backward, its fake kernels and its errors."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnkern
from rnnkern import _ops, _stack
from helpers import MODES, flat, make_pair
from test_cpu_dispatch import capability  # noqa: F401  (the fixture)
from test_cuda_emulation import SIMT


def _results(module, x, hx=None, seed=7):
    """Outputs, then gradients of a weighted sum of them w.r.t. whatever requires grad."""
    torch.manual_seed(seed)  # the dropout masks
    out, hidden = module(x) if hx is None else module(x, hx)
    packed = isinstance(out, torch.nn.utils.rnn.PackedSequence)
    data = out.data if packed else out
    torch.manual_seed(1234)
    loss = (data * torch.randn_like(data)).sum()
    for h in flat(hidden):
        loss = loss + (h * torch.randn_like(h)).sum()
    states = flat(hx) if hx is not None else []
    leaves = [t for t in [x.data if packed else x, *states] if t.requires_grad]
    leaves += [p for p in module.parameters() if p.requires_grad]
    return [data, *flat(hidden), *torch.autograd.grad(loss, leaves)]


def _both_paths(module, x, hx=None, seed=7, monkeypatch=None):
    got = _results(module, x, hx, seed)
    monkeypatch.setattr(_stack, "ENABLED", False)
    per_layer = _results(module, x, hx, seed)
    monkeypatch.setattr(_stack, "ENABLED", True)
    return got, per_layer


def _stack_calls(monkeypatch):
    calls = []
    real = _ops.stack_forward

    def spy(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(_ops, "stack_forward", spy)
    return calls


FLAGS = [dict(num_layers=1), dict(num_layers=2, bidirectional=True),
         dict(num_layers=3, dropout=0.4), dict(num_layers=2, bidirectional=True, dropout=0.5),
         dict(num_layers=2, bias=False, batch_first=True)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(f"{k}{v}" for k, v in f.items()))
@pytest.mark.parametrize("with_hx", [False, True])
def test_matches_layer_ops_bitwise_and_torch_nn(mode, flags, with_hx, monkeypatch):
    ref, ours = make_pair(mode, 5, 7, **flags)
    ref.train()
    ours.train()
    batch_first = flags.get("batch_first", False)
    x = torch.randn(*((3, 6) if batch_first else (6, 3)), 5, dtype=torch.float64,
                    requires_grad=True)
    hx = None
    if with_hx:
        layers = ref.num_layers * (2 if ref.bidirectional else 1)
        make = lambda: torch.randn(layers, 3, 7, dtype=torch.float64, requires_grad=True)  # noqa: E731
        hx = (make(), make()) if mode == "LSTM" else make()
    calls = _stack_calls(monkeypatch)
    got, per_layer = _both_paths(ours, x, hx, monkeypatch=monkeypatch)
    assert calls == [True]  # one op call for the whole stack, saving for backward
    want = _results(ref, x, hx)
    for a, b, c in zip(got, per_layer, want):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode,proj", [(m, 0) for m in MODES] + [("LSTM", 3)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_and_projection(mode, proj, bidirectional, monkeypatch):
    kwargs = {"proj_size": proj} if proj else {}
    ref, ours = make_pair(mode, 4, 6, num_layers=2, bidirectional=bidirectional, dropout=0.3,
                          **kwargs)
    torch.manual_seed(2)
    seqs = [torch.randn(n, 4, dtype=torch.float64, requires_grad=True) for n in (5, 3, 4, 1)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    got, per_layer = _both_paths(ours, packed, monkeypatch=monkeypatch)
    want = _results(ref, packed, None)
    for a, b, c in zip(got, per_layer, want):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_extremes_and_eval(mode, p, monkeypatch):
    ref, ours = make_pair(mode, 4, 5, num_layers=3, bidirectional=True, dropout=p)
    x = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    for training in (True, False):
        ref.train(training)
        ours.train(training)
        got, per_layer = _both_paths(ours, x, monkeypatch=monkeypatch)
        want = _results(ref, x, None)
        for a, b, c in zip(got, per_layer, want):
            assert torch.equal(a, b)
            torch.testing.assert_close(a, c, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_training_module_under_no_grad_drops_out_and_saves_nothing(mode, monkeypatch):
    ref, ours = make_pair(mode, 4, 5, num_layers=2, dropout=0.5)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    calls = _stack_calls(monkeypatch)
    with torch.no_grad():
        torch.manual_seed(3)
        got = ours(x)
        torch.manual_seed(3)
        want = ref(x)
        torch.manual_seed(4)
        other = ours(x)
    assert calls == [False, False]
    for a, b in zip([got[0], *flat(got[1])], [want[0], *flat(want[1])]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert not torch.equal(got[0], other[0])  # another seed, other masks


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("frozen", ["input", "weights", "state", "layer0"])
def test_partial_gradients(mode, frozen, monkeypatch):
    ref, ours = make_pair(mode, 3, 4, num_layers=2, bidirectional=True, dropout=0.2)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=frozen != "input")
    make = lambda: torch.randn(4, 2, 4, dtype=torch.float64,  # noqa: E731
                               requires_grad=frozen != "state")
    hx = (make(), make()) if mode == "LSTM" else make()
    for module in (ref, ours):
        for name, p in module.named_parameters():
            p.requires_grad_(not (frozen == "weights" or (frozen == "layer0" and "_l0" in name)))
    calls = _stack_calls(monkeypatch)
    got = _results(ours, x, hx)
    assert calls == [True]
    monkeypatch.setattr(_stack, "ENABLED", False)
    per_layer = _results(ours, x, hx)
    want = _results(ref, x, hx)
    assert len(got) == len(want) > 0
    for a, b, c in zip(got, per_layer, want):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_double_backward_matches_torch_nn(mode, bidirectional):
    ref, ours = make_pair(mode, 3, 4, num_layers=2, bidirectional=bidirectional, dropout=0.4)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    found = []
    for module in (ours, ref):
        torch.manual_seed(11)
        out, _ = module(x)
        params = list(module.parameters())
        grads = torch.autograd.grad((out ** 2).sum(), [x, *params], create_graph=True)
        penalty = sum((g ** 2).sum() for g in grads)
        found.append(torch.autograd.grad(penalty, [x, *params]))
    for a, b in zip(*found):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_gradgradcheck(mode):
    _, ours = make_pair(mode, 2, 3, num_layers=2, bidirectional=True)
    names = [n for n, _ in ours.named_parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)

    def run(x, *params):
        out, hidden = torch.func.functional_call(ours, dict(zip(names, params)), (x,))
        return (out, *flat(hidden))

    params = tuple(p.detach().requires_grad_() for p in ours.parameters())
    assert torch.autograd.gradcheck(run, (x, *params), fast_mode=True)
    assert torch.autograd.gradgradcheck(run, (x, *params), fast_mode=True)


def _stack_args(mode, bidirectional=True, dropout=0.0, train=True, packed=False, proj=0):
    torch.manual_seed(0)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    H, I, B, L = 4, 3, 3, 2
    R = proj or H
    D = 2 if bidirectional else 1
    rand = lambda *s: torch.randn(*s, dtype=torch.float64)  # noqa: E731
    batch_sizes = torch.tensor([3, 2, 2, 1]) if packed else None
    x = rand(8, I) if packed else rand(4, B, I)
    weights = []
    for layer in range(L):
        width = I if layer == 0 else D * R
        for _ in range(D):
            weights += [rand(G * H, width), rand(G * H, R), rand(G * H), rand(G * H),
                        rand(R, H) if proj else None]
    cx = rand(L * D, B, H) if mode == "LSTM" else None
    return (_ops.MODE_IDS[mode], x, batch_sizes, rand(L * D, B, R), cx, weights, L,
            bidirectional, dropout, train)


STACK_CASES = [(m, b, False, 0) for m in MODES for b in (False, True)] + \
    [("GRU", True, True, 0), ("LSTM", False, True, 2), ("LSTM", True, False, 2)]


@pytest.mark.parametrize("mode,bidirectional,packed,proj", STACK_CASES)
@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_opcheck_stack_ops(mode, bidirectional, packed, proj, dropout):
    args = _stack_args(mode, bidirectional, dropout, packed=packed, proj=proj)
    torch.library.opcheck(_ops.stack_forward, args)
    output, h_n, c_n, saved = _ops.stack_forward(*args)
    grads = [torch.randn_like(output), torch.randn_like(h_n),
             torch.randn_like(c_n) if mode == "LSTM" else None]
    backward_args = (args[0], args[1], args[2], args[5], output, saved, *grads, *args[6:9],
                     3, [True, True, True, True])
    torch.library.opcheck(_ops.stack_backward, backward_args)


def test_fake_kernel_shapes_with_random_dropout():
    args = _stack_args("LSTM", dropout=0.5)
    real = _ops.stack_forward(*args)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = _ops.stack_forward(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else
                                    ([mode.from_tensor(w) if w is not None else None for w in a]
                                     if isinstance(a, list) else a) for a in args])
    assert [t.shape for t in (*real[:3], *real[3])] == [t.shape for t in (*fake[:3], *fake[3])]
    assert [t.dtype for t in real[3]] == [t.dtype for t in fake[3]]


def test_direct_call_refuses_to_be_differentiated():
    args = list(_stack_args("GRU"))
    args[1] = args[1].requires_grad_()
    with pytest.raises(RuntimeError, match="rnnkern::stack_forward is not differentiable"):
        _ops.stack_forward(*args)
    # A weight in the list that requires grad counts as much as the input.
    args = list(_stack_args("GRU"))
    args[5] = [w.requires_grad_() if i == 1 else w for i, w in enumerate(args[5])]
    with pytest.raises(RuntimeError, match="rnnkern::stack_forward is not differentiable"):
        _ops.stack_forward(*args)
    with torch.no_grad():
        _ops.stack_forward(*args)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.__setitem__(5, a[5][:-1]), "5 weights per layer-direction"),
    (lambda a: a.__setitem__(8, 1.5), "dropout probability has to be between 0 and 1"),
    (lambda a: a.__setitem__(3, a[3][:1]), "hx must have shape"),
    (lambda a: a.__setitem__(4, None), "LSTM needs a cell state"),
    (lambda a: a.__setitem__(6, 0), "num_layers must be at least 1"),
    (lambda a: a[5].__setitem__(1, None), "w_hh is required"),
])
def test_errors(change, message):
    args = list(_stack_args("LSTM"))
    change(args)
    with pytest.raises(RuntimeError, match=message):
        _ops.stack_forward(*args)


def test_backward_refuses_state_of_an_inference_forward():
    args = _stack_args("GRU", train=False)
    output, h_n, _, saved = _ops.stack_forward(*args)
    assert saved == []
    with pytest.raises(RuntimeError, match="was the forward run with train=True"):
        _ops.stack_backward(args[0], args[1], args[2], args[5], output, saved,
                            torch.ones_like(output), None, None, *args[6:9], 3,
                            [True, True, True, True])


@pytest.mark.parametrize("mode,bidirectional,packed,proj", STACK_CASES)
def test_cuda_backend_emulated(mode, bidirectional, packed, proj):
    """The CUDA backend's instance of the op (its kernels through the SIMT emulation)."""
    args = _stack_args(mode, bidirectional, 1.0 if bidirectional else 0.0, packed=packed,
                       proj=proj)
    want = _ops.stack_forward(*args)
    got = SIMT.stack_forward(*args)
    for a, b in zip((*got[:3], *got[3]), (*want[:3], *want[3])):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)
    output, h_n, c_n, saved = want
    grads = [torch.randn_like(output), torch.randn_like(h_n),
             torch.randn_like(c_n) if mode == "LSTM" else None]
    backward_args = (args[0], args[1], args[2], args[5], output, saved, *grads, *args[6:9], 3,
                     [True, True, True, True])
    got_grads = SIMT.stack_backward(*backward_args)
    want_grads = _ops.stack_backward(*backward_args)
    for a, b in zip((*got_grads[:3], *got_grads[3]), (*want_grads[:3], *want_grads[3])):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


def test_float32_small_batch_on_every_capability(monkeypatch):
    from test_cpu_dispatch import SUPPORTED
    ref, ours = make_pair("LSTM", 16, 40, num_layers=2, bidirectional=True, dtype=torch.float32)
    x = torch.randn(9, 1, 16, requires_grad=True)
    want = _results(ref, x, None)
    previous = _ops.cpu_capability()
    try:
        for name in SUPPORTED:
            _ops.set_cpu_capability(name)
            for a, b in zip(_results(ours, x, None), want):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-4)
    finally:
        _ops.set_cpu_capability(previous)
    assert rnnkern.LSTM is type(ours)


@pytest.fixture
def wavefront():
    """Stacked one-direction layers as a wavefront wherever it can run."""
    previous = torch.ops.rnnkern._stack_wavefront(2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
    torch.ops.rnnkern._stack_wavefront(previous)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch,hidden", [(1, 40), (3, 17), (8, 64)])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_wavefront_matches_layers_one_after_another(mode, batch, hidden, dropout, packed,
                                                    with_state, wavefront,
                                                    capability):  # noqa: F811
    # Forward: the same products in the same order, so bitwise equal to the
    # layers one after another, with the same dropout masks. Backward (the
    # layers' loops at once too): the same sums but for the order of those
    # that give a layer its output's gradient.
    ref, ours = make_pair(mode, 12, hidden, num_layers=2, dropout=dropout, dtype=torch.float32)
    torch.manual_seed(4)
    if packed:
        lengths = [9, 7, 7, 5, 4, 4, 2, 1][:batch]
        x = pack_sequence([torch.randn(n, 12, requires_grad=True) for n in lengths])
    else:
        x = torch.randn(9, batch, 12, requires_grad=True)
    hx = None
    if with_state:
        hx = tuple(torch.randn(2, batch, hidden, requires_grad=True)
                   for _ in range(2 if mode == "LSTM" else 1))
        hx = hx if mode == "LSTM" else hx[0]
    forward_results = 1 + (2 if mode == "LSTM" else 1)
    runs = torch.ops.rnnkern._stack_wavefront_runs()
    got = _results(ours, x, hx)
    assert torch.ops.rnnkern._stack_wavefront_runs() == runs + 2  # forward, backward
    torch.ops.rnnkern._stack_wavefront(0)
    apart = _results(ours, x, hx)
    assert torch.ops.rnnkern._stack_wavefront_runs() == runs + 2
    want = _results(ref, x, hx)
    assert len(got) == len(want) > forward_results + (4 if with_state else 2)
    for i, (a, b, c) in enumerate(zip(got, apart, want)):
        if i < forward_results:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=2e-5, rtol=2e-4)


def test_wavefront_only_where_it_applies(wavefront):
    runs = torch.ops.rnnkern._stack_wavefront_runs()
    x = torch.randn(6, 2, 8)
    for module in (rnnkern.LSTM(8, 16, num_layers=3),  # more layers than threads
                   rnnkern.LSTM(8, 16, num_layers=2, bidirectional=True),
                   rnnkern.LSTM(8, 16, num_layers=2, proj_size=4),
                   rnnkern.GRU(8, 16, num_layers=2).double()):
        module(x.to(next(module.parameters()).dtype))
    rnnkern.GRU(8, 16, num_layers=2)(torch.randn(7, 2, 8))  # too few steps
    rnnkern.GRU(8, 16, num_layers=2)(torch.randn(8, 1, 8))  # too few rows
    rnnkern.GRU(8, 16, num_layers=2)(torch.randn(9, 9, 8))  # batch above 8
    rnnkern.RNN(8, 130, num_layers=2)(torch.randn(9, 1, 8))  # input above the GEMM's K block
    assert torch.ops.rnnkern._stack_wavefront_runs() == runs
    torch.ops.rnnkern._stack_wavefront(1)  # by size: small layers only
    x = torch.randn(9, 2, 8)
    rnnkern.GRU(8, 16, num_layers=2)(x)
    assert torch.ops.rnnkern._stack_wavefront_runs() == runs + 1
    rnnkern.LSTM(8, 120, num_layers=2)(x)
    assert torch.ops.rnnkern._stack_wavefront_runs() == runs + 1


@pytest.mark.parametrize("rows", [1, 3])
def test_a_lone_bias_is_not_overwritten(rows):
    # One bias given: the op's gate buffer starts as a copy of it, never as it.
    torch.manual_seed(0)
    b_hh = torch.randn(20)
    kept = b_hh.clone()
    x, h = torch.randn(1, rows, 3), torch.randn(rows, 5)
    w_ih, w_hh = torch.randn(20, 3), torch.randn(20, 5)
    _ops.layer_forward(_ops.LSTM, x, None, h, torch.randn(rows, 5), w_ih, w_hh, None, b_hh, None,
                       False, False)
    _ops.cell_forward_train(_ops.LSTM, x[0], h, torch.randn(rows, 5), w_ih, w_hh, None, b_hh)
    _ops.cell_forward(_ops.LSTM, x[0], h, torch.randn(rows, 5), w_ih, w_hh, b_hh, None)
    assert torch.equal(b_hh, kept)
