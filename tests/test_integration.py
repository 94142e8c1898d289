"""Working inside the rest of PyTorch: custom-op checks, torch.compile, torch.export,
DistributedDataParallel, and the habits users rely on."""
import copy
import os
import socket
import subprocess
import sys
import threading

import pytest
import torch
from torch import nn

import rnnkern
from rnnkern import _ops
from helpers import MODES, flat, make_pair

HERE = os.path.dirname(os.path.abspath(__file__))


def _layer_args(mode, packed=False, proj=0, train=True, requires_grad=False):
    torch.manual_seed(0)
    mode_id = _ops.MODE_IDS[mode]
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    H, I = 4, 3
    R = proj or H

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64).requires_grad_(requires_grad)

    batch_sizes = torch.tensor([3, 2, 2, 1]) if packed else None
    x = rand(8, I) if packed else rand(4, 3, I)
    cx = rand(3, H) if mode == "LSTM" else None
    return (mode_id, x, batch_sizes, rand(3, R), cx, rand(G * H, I), rand(G * H, R), rand(G * H),
            rand(G * H), rand(R, H) if proj else None, False, train)


OP_CASES = [(m, False, 0) for m in MODES] + [(m, True, 0) for m in MODES] + \
    [("LSTM", False, 2), ("LSTM", True, 2)]


@pytest.mark.parametrize("mode,packed,proj", OP_CASES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_layer_forward(mode, packed, proj, requires_grad):
    args = _layer_args(mode, packed, proj, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.rnnkern.layer_forward.default, args)


@pytest.mark.parametrize("mode,packed,proj", OP_CASES)
def test_opcheck_layer_backward(mode, packed, proj):
    args = _layer_args(mode, packed, proj)
    output, hy, cy, h_prev, gates, extra = torch.ops.rnnkern.layer_forward(*args)
    mode_id, x, batch_sizes, hx, _, w_ih, w_hh, _, _, w_hr = args[:10]
    grad_cy = torch.randn_like(cy) if mode == "LSTM" else None
    backward_args = (mode_id, x, batch_sizes, w_ih, w_hh, w_hr, output, h_prev, gates, extra,
                     torch.randn_like(output), torch.randn_like(hy), grad_cy, False, hx.shape[0],
                     [True, True, True, True])
    torch.library.opcheck(torch.ops.rnnkern.layer_backward.default, backward_args)
    data_args = backward_args[:-1] + (True,)
    torch.library.opcheck(torch.ops.rnnkern.layer_backward_data.default, data_args)
    # Its gate gradients are what layer_backward sums into the weight gradients.
    g_in, g_hx, g_cx, g_wih, g_whh, g_bih, g_bhh, g_whr = \
        torch.ops.rnnkern.layer_backward(*backward_args)
    d_in, d_hx, d_cx, dg, dg_h, dh_out = torch.ops.rnnkern.layer_backward_data(*data_args)
    rows = x.reshape(-1, x.shape[-1])
    dg_h = dg_h if mode == "GRU" else dg
    for got, want in ((d_in, g_in), (d_hx, g_hx), (dg.T @ rows, g_wih), (dg.sum(0), g_bih),
                      (dg_h.T @ h_prev.reshape(dg.shape[0], -1), g_whh), (dg_h.sum(0), g_bhh)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    if mode == "LSTM":
        torch.testing.assert_close(d_cx, g_cx, atol=0, rtol=0)
    if proj:
        torch.testing.assert_close(dh_out.T @ extra[1], g_whr, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("mode,packed,proj", OP_CASES)
def test_opcheck_bidirectional_ops(mode, packed, proj):
    args = _layer_args(mode, packed, proj)
    mode_id, x, batch_sizes = args[:3]
    torch.manual_seed(1)
    other = [t + 0.1 * torch.randn_like(t) if t is not None else None for t in args[3:10]]
    directions = (list(args[3:10]), other)
    forward_args = (mode_id, x, batch_sizes, *directions, True)
    torch.library.opcheck(torch.ops.rnnkern.layer_forward_bidirectional.default, forward_args)
    both = torch.ops.rnnkern.layer_forward_bidirectional(*forward_args)
    backward_lists = []
    for d, results in zip(directions, both):
        single = torch.ops.rnnkern.layer_forward(mode_id, x, batch_sizes, *d, len(backward_lists)
                                                 == 1, True)
        for a, b in zip(results, single):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        hx, cx, w_ih, w_hh, _, _, w_hr = d
        backward_lists.append([w_ih, w_hh, w_hr, results[0], *results[3:],
                               torch.randn_like(results[0]), torch.randn_like(results[1]),
                               torch.randn_like(results[2]) if mode == "LSTM" else None])
    backward_args = (mode_id, x, batch_sizes, *backward_lists, 3, [True, True, True, True])
    torch.library.opcheck(torch.ops.rnnkern.layer_backward_bidirectional.default, backward_args)


def test_op_is_differentiable_on_its_own():
    # The registered autograd formula equals the autograd.Function's.
    args = _layer_args("GRU", requires_grad=True)
    out = torch.ops.rnnkern.layer_forward(*args)
    via_op = torch.autograd.grad(out[0].sum() + out[1].sum(), [args[1], args[3], args[5]])
    out = rnnkern.functional.RNNLayerFunction.apply(*args)
    via_function = torch.autograd.grad(out[0].sum() + out[1].sum(), [args[1], args[3], args[5]])
    for a, b in zip(via_op, via_function):
        assert torch.equal(a, b)


class _EveryKind(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = rnnkern.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.proj = rnnkern.LSTM(12, 6, proj_size=3)
        self.gru = rnnkern.GRU(3, 5)
        self.rnn = rnnkern.RNN(5, 5, nonlinearity="relu")
        self.cell = rnnkern.GRUCell(5, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.proj(y.transpose(0, 1))
        y, _ = self.gru(y)
        y, h = self.rnn(y)
        return self.head(self.cell(y[-1], h[0][:, :4]))


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = _EveryKind()
    x = torch.randn(3, 6, 4)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.sum(), list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)  # raises on any graph break
    out = compiled(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_torch_export_runs():
    torch.manual_seed(0)
    model = _EveryKind().eval()
    x = torch.randn(3, 6, 4)
    with torch.no_grad():
        exported = torch.export.export(model, (x,))
        assert any("rnnkern.layer_forward" in str(n.target) for n in exported.graph.nodes)
        torch.testing.assert_close(exported.module()(x), model(x), atol=0, rtol=0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel_gloo(tmp_path):
    out_path = tmp_path / "ddp_grads.pt"
    run = subprocess.run([sys.executable, os.path.join(HERE, "ddp_worker.py"), str(_free_port()),
                          str(out_path)], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, HERE)
    import ddp_worker
    expected = ddp_worker.single_process_grads()
    got = torch.load(out_path)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-12, rtol=0, msg=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("whole_stack", [True, False], ids=["stack_op", "layer_ops"])
def test_no_state_saved_under_no_grad_or_inference_mode(mode, whole_stack, monkeypatch):
    from rnnkern import _stack
    monkeypatch.setattr(_stack, "ENABLED", whole_stack)
    _, ours = make_pair(mode, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    seen = []
    for name in ("layer_forward", "stack_forward"):
        def spy(*args, real=getattr(_ops, name)):
            seen.append(args[-1])  # the train flag
            return real(*args)

        monkeypatch.setattr(_ops, name, spy)
    with torch.no_grad():
        ours(x)
    with torch.inference_mode():
        ours(x)
    calls = 2 if whole_stack else 4  # one per module call, or one per layer
    assert seen == [False] * calls
    ours(x)[0].sum().backward()
    assert len(seen) > calls and all(seen[calls:])  # the module's call and its autograd.Function's


@pytest.mark.parametrize("mode", MODES)
def test_bitwise_deterministic(mode):
    _, ours = make_pair(mode, 16, 64, num_layers=2, bidirectional=True, dtype=torch.float32)
    x = torch.randn(30, 8, 16, requires_grad=True)
    runs = []
    for _ in range(2):
        out, h = ours(x)
        grads = torch.autograd.grad(out.sum(), [x] + list(ours.parameters()))
        runs.append([out, *flat(h), *grads])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_thread_safety_two_threads():
    modules = [make_pair(mode, 8, 32, num_layers=2, dtype=torch.float32)[1]
               for mode in ("LSTM", "GRU")]
    inputs = [torch.randn(40, 4, 8) for _ in modules]
    expected = [m(x)[0] for m, x in zip(modules, inputs)]
    results = [[] for _ in modules]

    def work(i):
        for _ in range(20):
            results[i].append(modules[i](inputs[i])[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(modules))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, outs in enumerate(results):
        assert len(outs) == 20 and all(torch.equal(o, expected[i]) for o in outs)


def test_module_to_dtype_and_frozen_parameters():
    _, ours = make_pair("LSTM", 3, 4, num_layers=2)
    ours.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    ours.weight_hh_l1.requires_grad_(False)
    clone = copy.deepcopy(ours)
    x = torch.randn(5, 2, 3)
    clone(x)[0].sum().backward()
    assert clone.weight_hh_l1.grad is None and clone.weight_hh_l0.grad is not None
