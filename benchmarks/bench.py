"""Benchmark rnnkern against torch.nn on this machine.

For each case, the torch.nn baselines and rnnkern hold the same weights and run the
same input, interleaved round by round (each round calls every implementation
once), after a warm-up. Two phases are timed: the forward pass under
torch.inference_mode(), and a training step (forward, then torch.autograd.grad of
the sum of the outputs with respect to the input and all parameters).

Baselines: torch.nn as it comes, and, for LSTM-based cases, torch.nn with oneDNN
disabled. With --device cuda: torch.nn with cuDNN and with cuDNN disabled (for the
cells, which never use cuDNN, torch.nn alone), timed with CUDA events. The speed-up
is baseline time / rnnkern time (medians).

GFLOP/s count the GEMMs only: per step the input and the recurrent GEMM (plus the
projection GEMM with proj_size; packed sequences count their real rows only),
x3 for a training step. They are set against the rate of one large torch.mm
measured in the same run ("% GEMM"; the higher of a measurement before and one
after the grid) and, on the CPU, against the FMA peak of the instruction set in
use ("% peak"): independent FMA chains on every thread, measured in the same run
(before and after, the higher counts), by the same kernels' probe. Rows of
batch <= 8 also give "% bw bound": the time to read the recurrent weights once
per step (twice with backward) at the rate the threads read a buffer of that
size from their caches (measured in the same run), over rnnkern's time; and,
forward, "step / bound": the time of one more step (rnnkern over 3T steps less
over T, per step: no per-call costs) over that bound's step.
--cpu-capability default|avx2|avx512 runs rnnkern's kernels for a lower
instruction set than the CPU's best (as RNNKERN_CPU_CAPABILITY does).

Modes:
{modes}

Default grid, sizes as (T,B,I,H):
  RNN_TANH ... PACKED  {grid}
  LSTM_BIDIR2 GRU_BIDIR2  {bidir}
  STACK2               {stack}
  CELLS                {cells}
--sizes replaces the sizes of every mode.

--quick: modes {quick_modes}, 3 repeats, a short minimum time per measurement:
  RNN_TANH LSTM GRU    {quick}
  CELLS                {quick_cells}

Writes the table to stdout, and the JSON, Markdown and PNG (speed-up chart)
files named below. Examples:

    python benchmarks/bench.py                      # the full grid
    python benchmarks/bench.py --quick              # about a minute
    python benchmarks/bench.py --modes LSTM PACKED --sizes 100,32,256,256 --phases forward
    python benchmarks/bench.py --device cuda --dtype bfloat16
"""
import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import sys

import torch

import bench_cases as cases
import bench_report as report
import bench_steps as steps
import bench_timing as timing
import rnnkern

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_OUTPUTS = {"json": "latest.json", "markdown": "latest.md", "chart": "latest.png"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}


def describe_sizes(sizes):
    return " ".join("({})".format(",".join(map(str, s))) for s in sizes)


def parse_size(text):
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a size is T,B,I,H (four positive integers)")
    return parts


def build_parser():
    doc = __doc__.format(
        modes="\n".join(f"  {name:<12} {text}" for name, text in cases.MODE_HELP.items()),
        grid=describe_sizes(cases.GRID_SIZES), bidir=describe_sizes(cases.BIDIR_SIZES),
        stack=describe_sizes(cases.STACK_SIZES),
        cells=describe_sizes(cases.CELL_SIZES), quick_modes=" ".join(cases.QUICK_MODES),
        quick=describe_sizes(cases.QUICK_SIZES),
        quick_cells=describe_sizes(cases.QUICK_CELL_SIZES))
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short run (about a minute on 2 cores): see above")
    parser.add_argument("--modes", nargs="+", choices=cases.MODES, metavar="MODE",
                        help="modes to run, from: " + " ".join(cases.MODES) + " (default: all)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, metavar="T,B,I,H",
                        help="sizes to run every mode at (default: each mode's own, see above)")
    parser.add_argument("--phases", nargs="+", choices=cases.PHASES, default=list(cases.PHASES),
                        help="phases to time (default: both)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="minimum rounds per measurement (default: 7, 3 with --quick)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where modules and inputs live (default: %(default)s)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="parameter and input dtype, also of the GEMM-rate torch.mm "
                             "(default: %(default)s)")
    parser.add_argument("--cpu-capability", choices=["default", "avx2", "avx512"], default=None,
                        help="rnnkern's CPU kernels for this instruction set (default: the "
                             "CPU's best)")
    parser.add_argument("--json", metavar="PATH",
                        help="JSON output: machine info and all rows "
                             "(default: benchmarks/results/latest.json)")
    parser.add_argument("--markdown", metavar="PATH",
                        help="Markdown table output (default: benchmarks/results/latest.md)")
    parser.add_argument("--chart", metavar="PATH",
                        help="PNG chart of the speed-ups, needs matplotlib "
                             "(default: benchmarks/results/latest.png)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    return parser


def check_cuda_ready(dtype):
    """Exit with a clear message unless torch sees a GPU and rnnkern runs on it."""
    if not torch.cuda.is_available():
        raise SystemExit(
            f"bench.py: --device cuda needs a GPU, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}).")
    try:
        probe = rnnkern.LSTM(8, 8).to(device="cuda", dtype=dtype)
        probe(torch.randn(3, 2, 8, device="cuda", dtype=dtype))
        torch.cuda.synchronize()
    except Exception as error:  # e.g. no CUDA kernel registered for the rnnkern ops
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SystemExit(f"bench.py: rnnkern does not run on CUDA in this build: {first_line}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_gemm_rate(args):
    return timing.gemm_rate(args.device, DTYPES[args.dtype], GEMM_SIZE[args.device])


def measure_fma_peak(args):
    """GFLOP/s of the FMA probe of rnnkern's CPU kernels in use, on every thread."""
    if args.device != "cpu":
        return None
    return torch.ops.rnnkern._fma_peak_gflops(torch.get_num_threads())


def describe_run(args, gemm_rates, peaks, repeats, min_time):
    cuda = args.device == "cuda"
    return dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                torch=torch.__version__, rnnkern=rnnkern.__version__,
                python=platform.python_version(),
                device=args.device, dtype=args.dtype, threads=torch.get_num_threads(),
                cpu=cpu_model(), machine=platform.machine(),
                gpu=torch.cuda.get_device_name() if cuda else None,
                cuda=torch.version.cuda if cuda else None,
                gemm_size=GEMM_SIZE[args.device], gemm_gflops=max(gemm_rates),
                gemm_gflops_before_after=gemm_rates,
                cpu_capability=None if cuda else rnnkern.cpu_capability(),
                fma_peak_gflops=None if cuda else max(peaks),
                fma_peak_gflops_before_after=None if cuda else peaks,
                repeats=repeats, min_time_s=min_time)


def keep_working(runners, case, phase):
    """Call each runner once (the first warm-up call). A baseline that raises is left
    out with a note on stderr; an error of rnnkern's propagates."""
    kept = {}
    for name, run in runners.items():
        try:
            run()
        except Exception as error:
            if name == "rnnkern":
                raise
            sys.stderr.write(f"\nnote: {case.label} {phase}: {name} left out: {error}\n")
            continue
        kept[name] = run
    return kept


def result_rows(case, phase, samples):
    """One row per baseline, each against rnnkern, from the medians of the samples
    (the fastest sample and the number of rounds go along, to judge the noise)."""
    flops = cases.phase_flops(case, phase)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    ours = medians["rnnkern"]
    gflops = flops / ours / 1e9
    return [dict(case=case.label, mode=case.mode, module=case.module, size=list(case.size),
                 num_layers=case.num_layers, bidirectional=case.bidirectional,
                 proj_size=case.proj_size, packed=case.packed, rows=cases.real_rows(case),
                 phase=phase, baseline=name, rnnkern_ms=ours * 1e3, baseline_ms=seconds * 1e3,
                 speedup=seconds / ours, gflop=flops / 1e9, rnnkern_gflops=gflops,
                 rnnkern_min_ms=min(samples["rnnkern"]) * 1e3,
                 baseline_min_ms=min(samples[name]) * 1e3,
                 rounds=len(samples[name]))
            for name, seconds in medians.items() if name != "rnnkern"]


def run_grid(grid, args, repeats, min_time):
    clock = timing.clock_for(args.device)
    dtype = DTYPES[args.dtype]
    extra_warmup_calls = 2 if args.device == "cuda" else 0
    rows = []
    for index, case in enumerate(grid):
        timing.progress(index, len(grid), case.label)
        for phase, runners in cases.build_runners(case, args.phases, args.device, dtype).items():
            runners = keep_working(runners, case, phase)
            samples = timing.time_interleaved(runners, clock, repeats, min_time, extra_warmup_calls)
            rows += result_rows(case, phase, samples)
    timing.progress(len(grid), len(grid), "done")
    sys.stderr.write("\n")
    return rows


def add_percentages(rows, gemm_gflops, peak_gflops):
    for row in rows:
        row["gemm_percent"] = 100.0 * row["rnnkern_gflops"] / gemm_gflops
        row["peak_percent"] = (100.0 * row["rnnkern_gflops"] / peak_gflops
                               if peak_gflops else None)


# Batches up to this size are bound by reading the recurrent weights each step.
SMALL_BATCH = 8


def add_bandwidth_bounds(rows, grid, args):
    """% of the cache-bandwidth bound for the small-batch rows: the read rate of
    the threads over a buffer of one layer-direction's recurrent weights,
    measured now, sets the fastest a step can be."""
    if args.device != "cpu":
        return {}
    element_bytes = torch.finfo(DTYPES[args.dtype]).bits // 8
    by_label = {case.label: case for case in grid}
    rates = {}
    for row in rows:
        case = by_label[row["case"]]
        row["bandwidth_percent"] = None
        if case.size[1] > SMALL_BATCH:
            continue
        size = cases.recurrent_bytes(case, element_bytes)
        if size not in rates:
            rates[size] = torch.ops.rnnkern._read_bandwidth_gbps(size, torch.get_num_threads())
        bound = cases.bandwidth_bound_seconds(case, row["phase"], rates[size], element_bytes)
        row["bandwidth_gbps"] = rates[size]
        row["bandwidth_percent"] = 100.0 * bound / (row["rnnkern_ms"] * 1e-3)
    return {str(size): gbps for size, gbps in rates.items()}


def shown(path):
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def write_outputs(args, info, rows):
    report.write_json(args.json, info, rows)
    report.write_text(args.markdown, report.format_markdown_table(rows, info))
    written = [args.json, args.markdown]
    if not args.no_chart and rows:
        report.draw_chart(args.chart, rows, info)
        written.append(args.chart)
    print("written: " + ", ".join(shown(p) for p in written))


def main(argv=None):
    args = build_parser().parse_args(argv)
    for option, file_name in DEFAULT_OUTPUTS.items():
        if getattr(args, option) is None:
            setattr(args, option, os.path.join(RESULTS_DIR, file_name))
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        raise SystemExit("bench.py: --threads and --repeats must be at least 1")
    if not args.no_chart and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("bench.py: the chart needs matplotlib: pip install matplotlib, "
                         "or pass --no-chart")
    if args.device == "cuda":
        check_cuda_ready(DTYPES[args.dtype])
    torch.set_num_threads(args.threads)
    if args.cpu_capability is not None:
        try:
            rnnkern._ops.set_cpu_capability(args.cpu_capability)
        except RuntimeError as error:
            raise SystemExit(f"bench.py: {error}")

    modes = args.modes or (cases.QUICK_MODES if args.quick else cases.MODES)
    grid = cases.build_grid(modes, args.sizes, args.quick)
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = 0.2 if args.quick else 1.0

    # The GEMM rate before and after the grid; the higher one counts (machine noise only slows).
    gemm_rates, peaks = [measure_gemm_rate(args)], [measure_fma_peak(args)]
    if args.device == "cpu":
        print(f"rnnkern CPU kernels: {rnnkern.cpu_capability()}; FMA peak "
              f"{peaks[0]:.0f} GFLOP/s on {torch.get_num_threads()} threads; torch.mm "
              f"{gemm_rates[0]:.0f} GFLOP/s", flush=True)
    rows = run_grid(grid, args, repeats, min_time)
    gemm_rates.append(measure_gemm_rate(args))
    peaks.append(measure_fma_peak(args))
    peak = max(peaks) if args.device == "cpu" else None
    add_percentages(rows, max(gemm_rates), peak)
    bandwidths = add_bandwidth_bounds(rows, grid, args)
    if args.device == "cpu" and "forward" in args.phases:
        steps.add_step_times(rows, grid, DTYPES[args.dtype], repeats, SMALL_BATCH)
    info = describe_run(args, gemm_rates, peaks, repeats, min_time)
    info["read_gbps_by_bytes"] = bandwidths
    print(report.format_text_table(rows, info))
    write_outputs(args, info, rows)


if __name__ == "__main__":
    main()
