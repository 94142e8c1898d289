"""The persistent kernels' performance model on paper: per shape, the tier and
grid the plan picks (csrc/cuda/persistent_plan.h, through the emulation's
persistent_plan op), the bytes each block keeps on chip, and a predicted
microseconds per step on A100 and H100, for the kernels as they are and for
their first version (every warp one row group of the whole K, no weights in
registers), so the predicted gain of the split products and the register
cache can be checked. Prints the Markdown table of
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
CACHE_CHUNKS, CACHE_STEPS = 24, 24  # cache_chunks<float>(), kCacheSteps
WARPS = 8  # kPersistentThreads / 32
DEVICES = {
    # shared-memory bytes per clock per SM, clock GHz, tensor-core m16n8k16
    # per clock per SM, assumed grid-barrier µs, assumed L2 latency µs and
    # per-SM L2 read GB/s for the h exchange
    "A100": dict(smem_bpc=128, ghz=1.41, mma_pc=0.5, barrier_us=1.5, l2_us=0.7, l2_gbps=90),
    "H100": dict(smem_bpc=128, ghz=1.75, mma_pc=1.0, barrier_us=1.0, l2_us=0.6, l2_gbps=110),
}
MMA_LATENCY = 32  # clocks from one mma.sync to the next on its accumulators (assumed)
SCHEDULERS = 4    # warp instructions issued per clock per SM
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1}
SIZES = {"fp32": (torch.float32, 4), "bf16": (torch.bfloat16, 2)}


def batch_blocks(B, tile, rows_per_block, classes):
    """Blocks of staged rows one item handles per step: ceil(B / tile) passes,
    each dealing its blocks to `classes` items."""
    passes = math.ceil(B / tile)
    return passes * math.ceil(math.ceil(min(B, tile) / rows_per_block) / classes)


def fma_product(rows, K, B, s, tile, splits, classes, cache):
    """Clocks of one step's FMA product (block_matvec) on one SM, and its
    shared-memory bytes: the larger of the issue bound (all warps over four
    schedulers, or the busiest warp alone) and the shared-memory bound."""
    groups = math.ceil(rows / ROW_BLOCK)
    items = groups * splits * classes
    slice_ = math.ceil(K / splits)
    iters = math.ceil(slice_ / 32)  # per lane, per group of BATCH_BLOCK rows of h
    per_warp = math.ceil(items / WARPS)
    # the registers hold a warp's items' weights in order, up to CACHE_CHUNKS per lane
    cached = min(1.0, CACHE_CHUNKS / (per_warp * iters)) if cache else 0.0
    blocks_of_b = math.ceil(B / BATCH_BLOCK)
    per = batch_blocks(B, tile, BATCH_BLOCK, classes)
    # 16 FMAs, 4 loads of h, 4 of weights unless cached; 4 rows x min(B, 4) warp sums of 5
    # shuffles and adds
    per_item = per * (iters * (20 + 4 * (1 - cached)) + 40 * min(B, BATCH_BLOCK))
    total, busiest = items * per_item, per_warp * per_item
    w_bytes = rows * K * s * blocks_of_b * (1 - cached)
    x_bytes = groups * B * K * 4
    return max(total / SCHEDULERS, busiest), w_bytes + x_bytes


def mma_product(rows, K, B, tile, splits, classes, cache, d):
    """The same for the tensor-core product (block_matvec_mma): each warp's
    chain of dependent mma.sync, the SM's tensor-core rate, shared memory."""
    groups = math.ceil(rows / 16)
    K = math.ceil(K / 16) * 16
    if splits == 0:  # the first version: a warp per 16 x 8 tile of the output, all of K
        items = groups * math.ceil(min(B, tile) / 8)
        per_item, cached = math.ceil(B / tile) * K // 16, 0.0
    else:
        steps = math.ceil(K / splits / 16)
        items = groups * splits * classes
        per_item = batch_blocks(B, tile, 8, classes) * steps
        cached = min(1.0, CACHE_STEPS / (math.ceil(items / WARPS) * steps)) if cache else 0.0
    chain = math.ceil(items / WARPS) * per_item * MMA_LATENCY
    mmas = items * per_item
    w_bytes = mmas * 512 * (1 - cached)
    x_bytes = mmas * 256
    return max(chain, mmas / d["mma_pc"]), w_bytes + x_bytes


def predict(mode, H, B, dtype, device, backward=False, first_version=False):
    torch_dtype, s = SIZES[dtype]
    used, blocks, units, threads, tile, smem, resident, splits, classes = SIMT.persistent_plan(
        backward, _ops.MODE_IDS[mode], H, B, False, torch_dtype, device)
    if not used:
        return None
    d = DEVICES[device]
    G = GATES[mode]
    rows, K = (G * units, H) if not backward else (units, G * H)
    if first_version:
        splits, classes = (0 if s == 2 else 1), 1
    if s == 2:
        clocks, smem_bytes = mma_product(rows, K, B, tile, splits, classes, not first_version, d)
    else:
        clocks, smem_bytes = fma_product(rows, K, B, s, tile, splits, classes, not first_version)
    product_us = max(clocks, smem_bytes / d["smem_bpc"]) / (d["ghz"] * 1e3)
    exchange_us = d["l2_us"] + B * K * s / (d["l2_gbps"] * 1e9) * 1e6
    barrier_us = d["barrier_us"] if blocks > 1 else 0.0
    return dict(blocks=blocks, on_chip_kib=round(rows * K * s / 1024, 1), product_us=product_us,
                exchange_us=exchange_us, barrier_us=barrier_us,
                total_us=product_us + exchange_us + barrier_us)


def predict_wavefront(mode, H, B, device, layers, steps=100, backward=False):
    """A float stack of `layers` layers in one launch (persistent_wavefront.h):
    each layer on its share of the SMs, with its W_ih rows (backward: columns)
    beside W_hh's; per wavefront step two products, the exchange of h (or of
    the gate gradients) and of the input (its gradient), one barrier; `steps`
    steps take steps + layers - 1 wavefront steps (backward: steps + 2 *
    (layers - 1)). Against the same layers one launch after another."""
    used, blocks, units, tile, splits, classes = SIMT.wavefront_plan(
        _ops.MODE_IDS[mode], H, B, layers, device, backward)
    single = predict(mode, H, B, "fp32", device, backward)
    if not used or single is None:
        return None
    d = DEVICES[device]
    G, s = GATES[mode], 4
    rows, K = (units, G * H) if backward else (G * units, H)
    clocks, smem_bytes = fma_product(rows, K, B, s, tile, splits, classes, True)
    product_us = 2 * max(clocks, smem_bytes / d["smem_bpc"]) / (d["ghz"] * 1e3)
    exchange_us = d["l2_us"] + (B * K + B * H) * s / (d["l2_gbps"] * 1e9) * 1e6
    step_us = product_us + exchange_us + d["barrier_us"]
    wave_steps = steps + (2 if backward else 1) * (layers - 1)
    return dict(blocks=blocks, step_us=step_us, wavefront_us=wave_steps * step_us,
                layers_us=layers * steps * single["total_us"])


def main():
    print("| mode | dtype | H | B | device | blocks | W_hh per block KiB | product µs fwd "
          "(first version) | exchange µs | barrier µs | predicted µs/step fwd | bwd "
          "(first version) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in ("LSTM", "GRU"):
        for dtype in SIZES:
            for H in (256, 768, 1024):
                for B in (1, 16, 64):
                    for device in DEVICES:
                        f = predict(mode, H, B, dtype, device)
                        if f is None:
                            print(f"| {mode} | {dtype} | {H} | {B} | {device} | per-step path "
                                  "| — | — | — | — | — | — |")
                            continue
                        f1 = predict(mode, H, B, dtype, device, first_version=True)
                        b = predict(mode, H, B, dtype, device, backward=True)
                        b1 = predict(mode, H, B, dtype, device, backward=True,
                                     first_version=True)
                        bwd = f"{b['total_us']:.1f} ({b1['total_us']:.1f})" if b else "—"
                        print(f"| {mode} | {dtype} | {H} | {B} | {device} | {f['blocks']} | "
                              f"{f['on_chip_kib']} | {f['product_us']:.2f} "
                              f"({f1['product_us']:.2f}) | {f['exchange_us']:.2f} | "
                              f"{f['barrier_us']:.1f} | {f['total_us']:.1f} | {bwd} |")


    print()
    print("| mode | H | B | layers | device | pass | blocks per layer | µs per wavefront step "
          "| T = 100, µs: one launch | layer by layer |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in ("LSTM", "GRU"):
        for H in (256, 768):
            for B in (1, 16):
                for layers in (2, 3):
                    for device in DEVICES:
                        for pass_ in ("fwd", "bwd"):
                            w = predict_wavefront(mode, H, B, device, layers,
                                                  backward=pass_ == "bwd")
                            head = f"| {mode} | {H} | {B} | {layers} | {device} | {pass_} |"
                            if w is None:
                                print(f"{head} not taken | — | — | — |")
                                continue
                            print(f"{head} {w['blocks']} | {w['step_us']:.1f} | "
                                  f"{w['wavefront_us']:.0f} | {w['layers_us']:.0f} |")


if __name__ == "__main__":
    main()
