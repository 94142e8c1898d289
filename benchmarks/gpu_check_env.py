"""Where make gpu-check runs: a CUDA GPU, or (--dry) the CPU emulation of the
kernels standing in for one. Everything gpu_check.py and gpu_check_bench.py do
to a device goes through Env.

    python benchmarks/gpu_check_env.py --sanitizer-payload   (what compute-sanitizer runs)
"""
import hashlib
import sys
import time

import torch
from torch import nn

import rnnkern
from rnnkern import _ops

MODULES = {"LSTM": (nn.LSTM, rnnkern.LSTM), "GRU": (nn.GRU, rnnkern.GRU),
           "RNN_TANH": (nn.RNN, rnnkern.RNN)}
DTYPES = {"fp32": (torch.float32, False), "fp32+tf32": (torch.float32, True),
          "bf16": (torch.bfloat16, False), "fp16": (torch.float16, False)}


def layer_inputs(mode, T, B, H, dtype, device, packed=False, seed=0):
    """Arguments of the layer ops for a layer with input size H."""
    gen = torch.Generator().manual_seed(seed)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)

    def rand(*shape):
        return (torch.randn(*shape, generator=gen) * 0.3).to(device=device, dtype=dtype)

    if packed:
        lengths = [max(1, T - (b * T) // (2 * B)) for b in range(B)]
        batch_sizes = torch.tensor([sum(n > t for n in lengths) for t in range(T)])
        x = rand(int(batch_sizes.sum()), H)
    else:
        batch_sizes, x = None, rand(T, B, H)
    cx = rand(B, H) if mode == "LSTM" else None
    return [_ops.MODE_IDS[mode], x, batch_sizes, rand(B, H), cx, rand(G * H, H), rand(G * H, H),
            rand(G * H), rand(G * H), None]


def stack_inputs(mode, T, B, H, layers, dtype, device, train, seed=0):
    """Arguments of stack_forward for a one-direction stack of input size H."""
    gen = torch.Generator().manual_seed(seed)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)

    def rand(*shape):
        return (torch.randn(*shape, generator=gen) * 0.3).to(device=device, dtype=dtype)

    weights = []
    for _ in range(layers):
        weights += [rand(G * H, H), rand(G * H, H), rand(G * H), rand(G * H), None]
    cx = rand(layers, B, H) if mode == "LSTM" else None
    return (_ops.MODE_IDS[mode], rand(T, B, H), None, rand(layers, B, H), cx, weights, layers,
            False, 0.0, train)


def stack_forward_backward(ops, args):
    """The stack op forward, then its backward for fixed output gradients."""
    output, h_n, c_n, saved = ops.stack_forward(*args)
    grads = [torch.ones_like(t) * 0.1 if t.numel() else None for t in (output, h_n, c_n)]
    return ops.stack_backward(args[0], args[1], args[2], args[5], output, saved, *grads,
                              *args[6:9], args[1].shape[1], [True, True, True, True])


def forward_backward(ops, args, reverse=False):
    """All outputs of the forward op and of the backward op for fixed output gradients."""
    out = ops.layer_forward(*args, reverse, True)
    mode, x, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = args
    grads = [torch.ones_like(t) * 0.1 if t.numel() else None for t in out[:3]]
    bwd = ops.layer_backward(mode, x, batch_sizes, w_ih, w_hh, w_hr, out[0], *out[3:], *grads,
                             reverse, hx.shape[0], [True, True, True, True])
    return list(out[:3]) + [g for g in bwd if g.numel()]


def determinism_cases(env):
    if env.dry:
        return [dict(mode=m, dtype="fp32", packed=p, H=33, B=3, T=4)
                for m in _ops.MODE_IDS for p in (False, True)]
    return [dict(mode=m, dtype=d, packed=p, H=H, B=B, T=50)
            for m in _ops.MODE_IDS for d in ("fp32", "bf16", "fp16") for p in (False, True)
            for H in (64, 512) for B in (1, 8)]


class Env:
    def __init__(self, dry):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        if dry:
            import rnnkern._simt  # noqa: F401
            self.ops = torch.ops.rnnkern_simt
            self.source = ("STAND-IN: the CUDA kernels' source on the CPU emulation "
                           "(rnnkern._simt) and torch.nn on the CPU; not GPU figures")
            self.barrier_steps = (8, 32)
        else:
            self.ops = torch.ops.rnnkern
            self.source = "gpu"
            self.barrier_steps = (256, 4096)

    # ---- the persistent tier on/off, and what it plans ----
    def persistent(self, on, mode="LSTM", H=33, B=3, dtype=torch.float32, layers=1):
        if not self.dry:
            torch.ops.rnnkern._cuda_persistent(1 if on else 0)
            return
        # An emulated device small enough that H needs a grid of several blocks
        # (a stack: per layer, its layers in one grid).
        for smem in [1 << s for s in range(21, 9, -1)]:
            self.ops.set_persistent_config(on, 3 * layers, smem, 64)
            if layers > 1:
                plans = [self.wavefront_plan(b, mode, H, B, layers) for b in (False, True)]
            else:
                plans = [self.plan(b, mode, H, B, dtype) for b in (False, True)]
            if all(p[0] and p[1] > 1 for p in plans):
                return
        self.ops.set_persistent_config(on)

    def wavefront_plan(self, backward, mode, H, B, layers):
        """[used, blocks per layer] of a float stack as one launch."""
        if self.dry:
            return self.ops.wavefront_plan(_ops.MODE_IDS[mode], H, B, layers, "emulated",
                                           backward)[:2]
        return torch.ops.rnnkern._cuda_wavefront_plan(_ops.MODE_IDS[mode], H, B, layers,
                                                      backward)

    def plan(self, backward, mode, H, B, dtype):
        if self.dry:
            return self.ops.persistent_plan(backward, _ops.MODE_IDS[mode], H, B, False, dtype,
                                            "emulated")
        return torch.ops.rnnkern._cuda_persistent_plan(backward, _ops.MODE_IDS[mode], H, B,
                                                       False, dtype)

    # ---- timing and the barrier microbenchmark ----
    def time(self, fn):
        if self.dry:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3

    def barrier_blocks(self):
        if self.dry:
            return [1, 2, 4]
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        return sorted({1, 8, 32, 64, sms})

    def grid_barrier_run(self, blocks, steps):
        if self.dry:
            self.ops.grid_barrier_run(blocks, 64, steps)
        else:
            torch.ops.rnnkern._cuda_grid_barrier_run(blocks, 256, steps)

    # ---- tests and determinism ----
    def test_args(self):
        if self.dry:
            return ["tests/test_persistent_emulation.py", "-k", "float64 and dense and 40"]
        return ["tests/test_persistent_cuda.py", "tests/test_cuda.py"]

    def digest(self, case):
        dtype = DTYPES[case["dtype"]][0]
        self.persistent(True, case["mode"], case["H"], case["B"], dtype)
        args = layer_inputs(case["mode"], case["T"], case["B"], case["H"], dtype, self.device,
                            case["packed"], seed=case["H"] + case["B"])
        h = hashlib.sha256()
        for t in forward_backward(self.ops, args):
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        self.persistent(False)
        return h.hexdigest()


def sanitizer_payload():
    """Small shapes of every mode through both tiers, forward and backward."""
    torch.ops.rnnkern._cuda_persistent(1)
    for mode in _ops.MODE_IDS:
        for H in (40, 256):
            for packed in (False, True):
                forward_backward(torch.ops.rnnkern,
                                 layer_inputs(mode, 4, 3, H, torch.float32, "cuda", packed))
    torch.cuda.synchronize()


if __name__ == "__main__":
    if sys.argv[1:] == ["--sanitizer-payload"]:
        sanitizer_payload()
    else:
        sys.exit(__doc__)
