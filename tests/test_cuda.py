"""On a GPU: rnnkern's CUDA kernels against its CPU kernels and against torch.nn
(cuDNN, TF32 off), for every mode, flag and dtype, gradients included.
Without a GPU these are skipped; the kernels' source still runs on the CPU in
test_cuda_emulation.py."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import rnnkern
from helpers import MODES, flat, make_pair

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (emulated in test_cuda_emulation.py)")

TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 3e-2,
             torch.float16: 3e-3}


@pytest.fixture(autouse=True)
def no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def outputs_and_grads(module, x, hx, packed_lengths=None):
    params = list(module.parameters())
    if packed_lengths is not None:
        seqs = [x[:n, b] for b, n in enumerate(packed_lengths)]
        out, hidden = module(pack_sequence(seqs, enforce_sorted=False), hx)
        out = out.data
    else:
        out, hidden = module(x, hx)
    gen = torch.Generator(device="cpu").manual_seed(0)
    loss = (out.float() * torch.randn(out.shape, generator=gen).to(out.device)).sum()
    for h in flat(hidden):
        loss = loss + (h.float() * torch.randn(h.shape, generator=gen).to(h.device)).sum()
    inputs = [x] + ([t for t in flat(hx)] if hx is not None else []) + params
    grads = torch.autograd.grad(loss, inputs)
    return [out, *flat(hidden), *grads]


def assert_close_lists(got, expected, dtype):
    tol = TOLERANCE[dtype]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu().float(), b.cpu().float(), atol=tol, rtol=tol)


GRID = list(itertools.product(MODES, [1, 2], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("mode,num_layers,bidirectional,batch_first,packed", GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=str)
def test_cuda_matches_cpu(mode, num_layers, bidirectional, batch_first, packed, dtype):
    _, ours = make_pair(mode, 5, 12, num_layers=num_layers, bidirectional=bidirectional,
                        dtype=dtype)
    T, B = 7, 4
    x = torch.randn(T, B, 5, dtype=torch.float64).to(dtype).requires_grad_()
    lengths = [7, 3, 5, 1] if packed else None
    if batch_first and not packed:
        ours.batch_first = True
        x = x.detach().transpose(0, 1).contiguous().requires_grad_()
    cpu = outputs_and_grads(ours, x, None, lengths)
    gpu_module = ours.cuda()
    x_gpu = x.detach().cuda().requires_grad_()
    assert_close_lists(outputs_and_grads(gpu_module, x_gpu, None, lengths), cpu, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_projection_matches_cpu(dtype, packed):
    _, ours = make_pair("LSTM", 5, 12, proj_size=4, num_layers=2, bidirectional=True, dtype=dtype)
    x = torch.randn(6, 3, 5, dtype=dtype, requires_grad=True)
    lengths = [6, 2, 4] if packed else None
    cpu = outputs_and_grads(ours, x, None, lengths)
    gpu = outputs_and_grads(ours.cuda(), x.detach().cuda().requires_grad_(), None, lengths)
    assert_close_lists(gpu, cpu, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_matches_cudnn(mode, dtype):
    ref, ours = make_pair(mode, 5, 12, num_layers=2, bidirectional=True, dtype=dtype)
    ref, ours = ref.cuda(), ours.cuda()
    x = torch.randn(9, 4, 5, dtype=dtype, device="cuda", requires_grad=True)
    assert_close_lists(outputs_and_grads(ours, x, None), outputs_and_grads(ref, x, None), dtype)


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cuda_cells_match_torch_nn(cell):
    torch.manual_seed(0)
    ref = getattr(nn, cell)(5, 7).double().cuda()
    ours = getattr(rnnkern, cell)(5, 7).double().cuda()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    got, expected = flat(ours(x)), flat(ref(x))
    assert_close_lists(got, expected, torch.float64)
    g1 = torch.autograd.grad(sum(t.sum() for t in got), [x, *ours.parameters()])
    g2 = torch.autograd.grad(sum(t.sum() for t in expected), [x, *ref.parameters()])
    assert_close_lists(g1, g2, torch.float64)


def test_cuda_autocast():
    ref, ours = make_pair("LSTM", 5, 12, dtype=torch.float32)
    ref, ours = ref.cuda(), ours.cuda()
    x = torch.randn(6, 3, 5, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = ours(x)
        ref_out, _ = ref(x)
    assert out.dtype == ref_out.dtype
    torch.testing.assert_close(out.float(), ref_out.float(), atol=3e-2, rtol=3e-2)
