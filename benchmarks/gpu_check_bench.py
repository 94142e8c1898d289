"""The benchmark of make gpu-check: rnnkern's persistent tier and per-step tier
against torch.nn with cuDNN, per case (mode, dtype setting, B, H, T, layers)
and phase (forward; forward + backward), medians of interleaved repeats. Cases
run most informative first until the time budget is spent. Stacks of 2 and 3
layers (fp32) measure the persistent tier's wavefront (a stack's layers in one
launch) against cuDNN's multi-layer RNN.

On --dry the tiers are the emulated kernels' ops and torch.nn on the CPU at toy
sizes, so the script's logic runs; the rows say so in `source`.
"""
import itertools
import statistics
import time

import torch

from bench_timing import time_interleaved
from gpu_check_env import (DTYPES, MODULES, forward_backward, layer_inputs, stack_forward_backward,
                           stack_inputs)

MODES = ["LSTM", "GRU", "RNN_TANH"]
PHASES = ["forward", "forward+backward"]
TIERS = ["cudnn", "persistent", "per-step"]


def cases(dry):
    if dry:
        return [dict(mode=m, dtype="fp32", B=B, H=24, T=6, layers=1)
                for m in MODES for B in (1, 8)] + \
            [dict(mode=m, dtype="fp32", B=2, H=24, T=6, layers=2) for m in ("LSTM", "GRU")]
    flashrnn = [dict(mode="LSTM", dtype=d, B=16, H=768, T=1024, layers=1)
                for d in ("bf16", "fp16", "fp32")]
    stacks = [dict(mode=m, dtype="fp32", B=B, H=256, T=100, layers=L)
              for m, B, L in itertools.product(("LSTM", "GRU"), (1, 16), (2, 3))]
    rest = [dict(mode=m, dtype=d, B=B, H=H, T=T, layers=1)
            for T, d, m, H, B in itertools.product(
                [100, 1024], DTYPES, MODES, [256, 768, 1024], [1, 8, 16, 64, 256])]
    return flashrnn + stacks + [c for c in rest if c not in flashrnn]


class _Flags:
    """TF32 for cuBLAS and cuDNN, and the persistent tier, as a case wants."""

    def __init__(self, env, tf32, persistent):
        self.env, self.tf32, self.persistent = env, tf32, persistent

    def apply(self):
        if not self.env.dry:
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
        if self.persistent is not None:
            self.env.persistent(self.persistent)


def _module_runner(env, module, x, phase, flags):
    def run():
        flags.apply()
        if phase == "forward":
            with torch.no_grad():
                module(x)
        else:
            out, _ = module(x.requires_grad_())
            out.float().sum().backward()
    return run


def _emulated_runner(env, case, phase, persistent):
    dtype = DTYPES[case["dtype"]][0]
    mode, T, B, H, layers = case["mode"], case["T"], case["B"], case["H"], case["layers"]
    if layers > 1:
        args = stack_inputs(mode, T, B, H, layers, dtype, "cpu", phase != "forward")
    else:
        args = layer_inputs(mode, T, B, H, dtype, "cpu")

    def run():
        env.persistent(persistent, mode, H, B, dtype, layers)
        if layers > 1 and phase == "forward":
            env.ops.stack_forward(*args)
        elif layers > 1:
            stack_forward_backward(env.ops, args)
        elif phase == "forward":
            env.ops.layer_forward(*args, False, False)
        else:
            forward_backward(env.ops, args)
        env.persistent(False)
    return run


def _taken(env, case, dtype):
    """Whether the persistent tier takes the case, forward and backward."""
    mode, H, B, layers = case["mode"], case["H"], case["B"], case["layers"]
    if layers > 1:
        env.persistent(True, mode, H, B, dtype, layers)  # the emulated device of the case
        taken = {p: bool(env.wavefront_plan(p == "backward", mode, H, B, layers)[0])
                 for p in ("forward", "backward")}
        env.persistent(not env.dry)
        return taken
    return {p: bool(env.plan(p == "backward", mode, H, B, dtype)[0])
            for p in ("forward", "backward")}


def runners(env, case, phase):
    dtype, tf32 = DTYPES[case["dtype"]]
    H, B, T = case["H"], case["B"], case["T"]
    nn_cls, ours_cls = MODULES[case["mode"]]
    torch.manual_seed(0)
    ref = nn_cls(H, H, num_layers=case["layers"]).to(env.device, dtype)
    x = torch.randn(T, B, H, device=env.device, dtype=dtype)
    found = {"cudnn": _module_runner(env, ref, x, phase, _Flags(env, tf32, None))}
    if env.dry:
        found["persistent"] = _emulated_runner(env, case, phase, True)
        found["per-step"] = _emulated_runner(env, case, phase, False)
        return found
    ours = ours_cls(H, H, num_layers=case["layers"]).to(env.device, dtype)
    ours.load_state_dict(ref.state_dict())
    for tier, on in (("persistent", True), ("per-step", False)):
        found[tier] = _module_runner(env, ours, x, phase, _Flags(env, tf32, on))
    return found


def run(env, budget_s):
    rows, not_reached = [], []
    start = time.time()
    for case in cases(env.dry):
        if time.time() - start > budget_s:
            not_reached.append(case)
            continue
        taken = _taken(env, case, DTYPES[case["dtype"]][0])
        for phase in PHASES:
            found = runners(env, case, phase)
            usable = {}
            for tier, fn in found.items():
                try:  # cuDNN takes bf16 RNNs only from 9.13, for one
                    fn()
                    usable[tier] = fn
                except RuntimeError as e:
                    rows.append(dict(case, phase=phase, tier=tier, error=str(e).splitlines()[0]))
            samples = time_interleaved(usable, env_clock(env), repeats=3, min_time=0.0)
            base = statistics.median(samples["cudnn"]) if "cudnn" in samples else None
            for tier, secs in samples.items():
                ms = statistics.median(secs) * 1e3
                rows.append(dict(case, phase=phase, tier=tier, median_ms=round(ms, 4),
                                 us_per_step=round(ms * 1e3 / case["T"], 3),
                                 persistent_taken=taken["forward"] and (
                                     phase == "forward" or taken["backward"]),
                                 vs_cudnn=round(base * 1e3 / ms, 3) if base else None,
                                 source=env.source))
        env.persistent(env.dry is False)  # back to the default: on (GPU), off (emulation)
    return rows, not_reached


def env_clock(env):
    class Clock:
        def seconds(self, fn):
            return env.time(fn)
    return Clock()
