"""On a GPU: the persistent kernels against the per-step path and the CPU ops,
for every mode and dtype, dense and packed, both tiers, forward and backward;
the plan's co-residency against the driver's; the fallbacks. Without a GPU
these are skipped; test_persistent_emulation.py runs the same kernel source on
the CPU, and test_persistent_plan.py the heuristic."""
import pytest
import torch

from rnnkern import _ops
from test_cuda_emulation import TOLERANCE, compare, layer_args

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not hasattr(torch.ops.rnnkern, "_cuda_persistent"),
    reason="needs a CUDA GPU and the CUDA build (emulated in test_persistent_emulation.py)")

OPS = torch.ops.rnnkern


@pytest.fixture(autouse=True)
def no_tf32_persistent_on():
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    previous = OPS._cuda_persistent(1)
    yield
    OPS._cuda_persistent(previous)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def plan(mode, H, B, dtype, backward=False):
    return OPS._cuda_persistent_plan(backward, _ops.MODE_IDS[mode], H, B, False, dtype)


def on(device, args):
    return [a.to(device) if isinstance(a, torch.Tensor) and a is not args[2] else a
            for a in args]


def forward_backward(args, reverse):
    out = OPS.layer_forward(*args, reverse, True)
    mode, x, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = args
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(t.shape, generator=gen).to(t) if t.numel() else None
             for t in out[:3]]
    bwd = OPS.layer_backward(mode, x, batch_sizes, w_ih, w_hh, w_hr, out[0], *out[3:], *grads,
                             reverse, hx.shape[0], [True, True, True, True])
    return [t.cpu() for t in list(out[:3]) + list(bwd)]


@pytest.mark.parametrize("mode", list(_ops.MODE_IDS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("H", [40, 300], ids=["single-block", "grid"])
def test_persistent_matches_per_step_and_cpu(mode, dtype, packed, H):
    T, B = 7, 5
    for backward in (False, True):
        p = plan(mode, H, B, dtype, backward)
        assert p[0] and (p[1] == 1) == (H == 40), p
        assert p[1] <= p[6], "the driver's occupancy must hold the planned grid"
    args = layer_args(mode, T, B, 6, H, packed, 0, dtype, seed=H)
    for reverse in (False, True):
        expected = forward_backward(on("cpu", args), reverse)
        persistent = forward_backward(on("cuda", args), reverse)
        OPS._cuda_persistent(0)
        per_step = forward_backward(on("cuda", args), reverse)
        OPS._cuda_persistent(1)
        compare(expected, persistent, dtype)
        compare(per_step, persistent, dtype)


def test_large_batch_and_projection_take_the_per_step_path():
    assert not plan("LSTM", 256, 65, torch.float32)[0]
    assert not OPS._cuda_persistent_plan(False, 2, 256, 4, True, torch.float32)[0]
    args = layer_args("GRU", 3, 80, 4, 64, False, 0, torch.float32)
    compare(forward_backward(on("cpu", args), False), forward_backward(on("cuda", args), False),
            torch.float32)


def test_grid_barrier_runs():
    OPS._cuda_grid_barrier_run(8, 256, 1000)
    torch.cuda.synchronize()


def test_modules_use_it_and_agree_with_cudnn():
    import rnnkern
    torch.manual_seed(0)
    ref = torch.nn.LSTM(96, 256, num_layers=2, bidirectional=True).cuda()
    ours = rnnkern.LSTM(96, 256, num_layers=2, bidirectional=True).cuda()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(20, 4, 96, device="cuda", requires_grad=True)
    out_ref, _ = ref(x)
    out, _ = ours(x)
    torch.testing.assert_close(out, out_ref, atol=TOLERANCE[torch.float32] * 10, rtol=1e-4)
    g_ref, = torch.autograd.grad(out_ref.sum(), x)
    g, = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", list(_ops.MODE_IDS))
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_stack_wavefront_matches_cpu(mode, packed):
    # A 3-layer one-direction float stack without dropout (the GPU draws its
    # masks differently): one launch for all layers where their grids fit side
    # by side (the wavefront), its backward layer by layer.
    from test_persistent_emulation import _one_direction_stack
    args = _one_direction_stack(mode, 9, 4, 6, 256, 3, packed, 0.0)
    cuda = [a.cuda() if isinstance(a, torch.Tensor) and i != 2 else a
            for i, a in enumerate(args)]
    cuda[5] = [w.cuda() if w is not None else None for w in args[5]]
    want, got = OPS.stack_forward(*args), OPS.stack_forward(*cuda)
    for a, b in zip(want[:3], got[:3]):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(t.shape, generator=gen) if t.numel() else None for t in want[:3]]
    results = []
    for a, out in ((args, want), (cuda, got)):
        g = [t.to(out[0].device) if t is not None else None for t in grads]
        results.append(OPS.stack_backward(a[0], a[1], a[2], a[5], out[0], out[3], *g, *a[6:9],
                                          4, [True, True, True, True]))
    for a, b in zip((*results[0][:3], *results[0][3]), (*results[1][:3], *results[1][3])):
        if a is not None and a.numel():
            torch.testing.assert_close(b.cpu(), a, atol=1e-3, rtol=1e-3)
