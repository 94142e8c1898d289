"""The persistent kernels' performance model on paper: per shape, the tier and
grid the plan picks (csrc/cuda/persistent_plan.h, through the emulation's
persistent_plan op), the bytes each block keeps on chip, and a predicted
microseconds per step on A100 and H100. Prints the Markdown table of
docs/gpu-performance-model.md. Every constant below is an assumption to be
replaced by `make gpu-check`'s measurements.

    python tools/gpu_model.py
"""
import math

import torch

import rnnkern._simt  # noqa: F401
from rnnkern import _ops

SIMT = torch.ops.rnnkern_simt
ROW_BLOCK, BATCH_BLOCK = 4, 4  # kRowBlock, kBatchBlock in persistent_common.h
DEVICES = {
    # shared-memory bytes per clock per SM, clock GHz, assumed grid-barrier µs,
    # assumed L2 latency µs and per-SM L2 read GB/s for the h exchange
    "A100": dict(smem_bpc=128, ghz=1.41, barrier_us=1.5, l2_us=0.7, l2_gbps=90),
    "H100": dict(smem_bpc=128, ghz=1.75, barrier_us=1.0, l2_us=0.6, l2_gbps=110),
}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1}
SIZES = {"fp32": (torch.float32, 4), "bf16": (torch.bfloat16, 2)}


def predict(mode, H, B, dtype, device, backward=False):
    torch_dtype, s = SIZES[dtype]
    used, blocks, units, threads, tile, smem, resident = SIMT.persistent_plan(
        backward, _ops.MODE_IDS[mode], H, B, False, torch_dtype, device)
    if not used:
        return None
    d = DEVICES[device]
    G = GATES[mode]
    rows, K = (G * units, H) if not backward else (units, G * H)
    if s == 2:
        # Tensor cores (tensor_core.h): a warp per 16 x 8 output tile reads its
        # 16 weight rows and 8 staged rows of h once per step.
        w_bytes = math.ceil(rows / 16) * math.ceil(B / 8) * 16 * K * s
        x_bytes = math.ceil(rows / 16) * math.ceil(B / 8) * 8 * K * s
    else:
        # FMA (block_matvec): every weight row once per group of BATCH_BLOCK
        # batch rows, every staged row of h (fp32) once per group of ROW_BLOCK
        # weight rows.
        w_bytes = rows * K * s * math.ceil(B / BATCH_BLOCK)
        x_bytes = math.ceil(rows / ROW_BLOCK) * B * K * 4
    smem_us = (w_bytes + x_bytes) / (d["smem_bpc"] * d["ghz"] * 1e9) * 1e6
    exchange_us = d["l2_us"] + B * K * s / (d["l2_gbps"] * 1e9) * 1e6
    barrier_us = d["barrier_us"] if blocks > 1 else 0.0
    return dict(blocks=blocks, on_chip_kib=round(rows * K * s / 1024, 1), smem_us=smem_us,
                exchange_us=exchange_us, barrier_us=barrier_us,
                total_us=smem_us + exchange_us + barrier_us)


def main():
    print("| mode | dtype | H | B | device | blocks | W_hh per block KiB | smem µs | exchange µs "
          "| barrier µs | predicted µs/step fwd | bwd |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in ("LSTM", "GRU"):
        for dtype in SIZES:
            for H in (256, 768, 1024):
                for B in (1, 16, 64):
                    for device in DEVICES:
                        f = predict(mode, H, B, dtype, device)
                        b = predict(mode, H, B, dtype, device, backward=True)
                        if f is None:
                            print(f"| {mode} | {dtype} | {H} | {B} | {device} | per-step path "
                                  "| — | — | — | — | — | — |")
                            continue
                        print(f"| {mode} | {dtype} | {H} | {B} | {device} | {f['blocks']} | "
                              f"{f['on_chip_kib']} | {f['smem_us']:.2f} | {f['exchange_us']:.2f} | "
                              f"{f['barrier_us']:.1f} | {f['total_us']:.1f} | "
                              f"{b['total_us']:.1f} |" if b else "— |")


if __name__ == "__main__":
    main()
