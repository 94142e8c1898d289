"""Benchmark rnnkern against torch.nn on this machine.

For each case, torch.nn and rnnkern modules with the same weights run the same
input, interleaved repeat by repeat; the table reports median times, the
speed-up (torch.nn time / rnnkern time) and achieved GFLOP/s next to the
machine's GEMM rate measured in the same run.

    python benchmarks/bench.py            # the default grid
    python benchmarks/bench.py --quick    # a short run
    python benchmarks/bench.py --modes LSTM GRU --sizes 100,1,256,256 --threads 2
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import rnnkern

# (T, B, I, H)
DEFAULT_SIZES = [(100, 1, 128, 128), (100, 1, 256, 256), (100, 1, 512, 512), (100, 32, 256, 256),
                 (100, 64, 512, 512), (50, 16, 128, 1024)]
QUICK_SIZES = [(100, 1, 256, 256), (100, 32, 256, 256)]
MODES = {
    "RNN_TANH": (nn.RNN, rnnkern.RNN, {"nonlinearity": "tanh"}, 1),
    "LSTM": (nn.LSTM, rnnkern.LSTM, {}, 4),
    "GRU": (nn.GRU, rnnkern.GRU, {}, 3),
}


def parse_size(text):
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("a size is T,B,I,H")
    return parts


def forward_flops(gates, T, B, I, H, num_directions=1):
    # The two GEMMs per step; the pointwise math is negligible next to them.
    return 2.0 * T * B * (I + H) * gates * H * num_directions


def gemm_rate(threads, n=2048, repeats=5):
    """GFLOP/s of a float32 n x n x n matrix product (torch.mm) on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def make_runners(mode, size, num_layers, bidirectional):
    ref_cls, our_cls, extra, gates = MODES[mode]
    T, B, I, H = size
    torch.manual_seed(0)
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, **extra)
    ref = ref_cls(I, H, **kwargs)
    ours = our_cls(I, H, **kwargs)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)
    x_grad = x.clone().requires_grad_()

    def forward(module):
        def run():
            with torch.inference_mode():
                module(x)
        return run

    def train_step(module):
        params = list(module.parameters())

        def run():
            out, _ = module(x_grad)
            torch.autograd.grad(out.sum(), [x_grad] + params)
        return run

    def without_mkldnn(fn):
        def run():
            with torch.backends.mkldnn.flags(enabled=False):
                fn()
        return run

    impls = {"rnnkern": ours, "torch.nn": ref}
    phases = {}
    for phase, wrap in (("forward", forward), ("fwd+bwd", train_step)):
        runners = {name: wrap(m) for name, m in impls.items()}
        if mode == "LSTM":
            runners["torch.nn (no oneDNN)"] = without_mkldnn(wrap(ref))
        phases[phase] = runners
    flops = forward_flops(gates, T, B, I, H, 2 if bidirectional else 1) * num_layers
    return phases, flops


def time_interleaved(runners, repeats, min_time):
    """Median seconds per call of each runner, calls interleaved round by round."""
    for run in runners.values():  # warm-up
        run()
    samples = {name: [] for name in runners}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_time and rounds < 20 * repeats):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(s) for name, s in samples.items()}


def progress(done, total, label):
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    sys.stderr.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run: two sizes, few repeats")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--sizes", nargs="+", type=parse_size, help="T,B,I,H ...")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=os.path.join("benchmarks", "results", "latest.json"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = 0.2 if args.quick else 1.0
    cases = [(mode, size, 1, False) for mode in args.modes for size in sizes]
    if "LSTM" in args.modes and not args.sizes:
        cases.append(("LSTM", (100, 32, 256, 256), 2, True))

    gemm = gemm_rate(args.threads)
    rows = []
    for index, (mode, size, layers, bidir) in enumerate(cases):
        label = f"{mode} {size}" + (f" {layers}-layer bidir" if bidir else "")
        progress(index, len(cases), label)
        phases, flops = make_runners(mode, size, layers, bidir)
        for phase, runners in phases.items():
            medians = time_interleaved(runners, repeats, min_time)
            phase_flops = flops * (3 if phase == "fwd+bwd" else 1)
            for name, seconds in medians.items():
                if name == "rnnkern":
                    continue
                rows.append(dict(mode=mode, size=list(size), num_layers=layers, bidirectional=bidir,
                                 phase=phase, baseline=name,
                                 rnnkern_ms=medians["rnnkern"] * 1e3, baseline_ms=seconds * 1e3,
                                 speedup=seconds / medians["rnnkern"],
                                 rnnkern_gflops=phase_flops / medians["rnnkern"] / 1e9))
    progress(len(cases), len(cases), "done")
    sys.stderr.write("\n")

    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"float32 GEMM rate (torch.mm 2048^3) {gemm:.0f} GFLOP/s")
    header = f"{'case':<34} {'phase':<8} {'baseline':<21} {'rnnkern ms':>10} {'base ms':>9} " \
             f"{'speedup':>8} {'GFLOP/s':>8} {'% GEMM':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        T, B, I, H = r["size"]
        case = f"{r['mode']} T{T} B{B} I{I} H{H}" + (" x2 bi" if r["bidirectional"] else "")
        print(f"{case:<34} {r['phase']:<8} {r['baseline']:<21} {r['rnnkern_ms']:>10.2f} "
              f"{r['baseline_ms']:>9.2f} {r['speedup']:>7.2f}x {r['rnnkern_gflops']:>8.1f} "
              f"{100 * r['rnnkern_gflops'] / gemm:>6.0f}%")

    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                  torch=torch.__version__, threads=args.threads, machine=platform.machine(),
                  processor=platform.processor(), gemm_gflops=gemm, rows=rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
