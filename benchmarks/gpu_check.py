"""make gpu-check: everything worth knowing from a few minutes on one GPU, in one folder.

    python benchmarks/gpu_check.py [--out DIR] [--budget-s S] [--dry]

Writes to DIR (default $GPU_CHECK_OUT or gpu-check-results/): versions.json
(device, driver, torch, CUDA, cuDNN, rnnkern), barrier.json (ns per grid
barrier), determinism.json (the persistent kernels run twice, compared bit
for bit: a race shows as a difference), tests.json (the GPU test suite, run
twice), sanitizer.json (compute-sanitizer memcheck/synccheck on
small shapes, if the tool is there), bench.json / bench.md / bench.png
(rnnkern's persistent and per-step tiers against torch.nn with cuDNN) and
summary.json. The benchmark runs its cases most informative first (cuDNN's
published FlashRNN shape, LSTM H=768 B=16, leads) until --budget-s is spent and
lists the cases it did not reach.

--dry runs without a GPU: the same steps on the CPU emulation of the kernels
(rnnkern._simt) and torch.nn on the CPU, at toy sizes. Every figure it writes is
marked as a stand-in; none is a GPU measurement.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gpu_check_bench as bench  # noqa: E402
import gpu_check_report as report  # noqa: E402
from gpu_check_env import Env, determinism_cases  # noqa: E402


def versions(env):
    info = {"dry_run": env.dry, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0]}
    try:
        info["rnnkern_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10).stdout.strip() or "unknown"
    except OSError:
        info["rnnkern_commit"] = "unknown"
    if env.dry:
        info["device"] = "none: CPU emulation stand-in"
        return info
    props = torch.cuda.get_device_properties(0)
    info.update(device=props.name, capability=f"{props.major}.{props.minor}",
                sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                cudnn=torch.backends.cudnn.version())
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        info["driver"] = out
    return info


def barrier_cost(env):
    """ns per grid barrier: the difference of a long and a short run of
    barriers only, per grid size."""
    rows = []
    short, long_ = env.barrier_steps
    for blocks in env.barrier_blocks():
        times = {}
        for steps in (short, long_):
            samples = []
            for _ in range(5):
                samples.append(env.time(lambda: env.grid_barrier_run(blocks, steps)))
            times[steps] = sorted(samples)[2]
        ns = (times[long_] - times[short]) / (long_ - short) * 1e9
        rows.append({"blocks": blocks, "ns_per_barrier": round(ns, 1), "source": env.source})
    return rows


def determinism(env):
    """Every case twice, all outputs compared bit for bit."""
    runs = []
    for _ in range(2):
        runs.append([env.digest(case) for case in determinism_cases(env)])
    differing = [case for case, a, b in zip(determinism_cases(env), *runs) if a != b]
    return {"cases": len(runs[0]), "differing": differing, "source": env.source}


def test_suite_twice(env):
    runs = []
    for _ in range(2):
        start = time.time()
        # From tests/: the checkout's rnnkern/ (no built extension) must not
        # shadow the installed package on sys.path.
        args = [a[len("tests/"):] if a.startswith("tests/") else a for a in env.test_args()]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *args], cwd=os.path.join(ROOT, "tests"), capture_output=True,
                              text=True)
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        runs.append({"returncode": proc.returncode, "summary": tail[0],
                     "seconds": round(time.time() - start, 1)})
    return {"tests": env.test_args(), "runs": runs, "source": env.source}


def sanitizer(env):
    tool = shutil.which("compute-sanitizer") or os.path.join(
        os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "compute-sanitizer")
    if not os.path.exists(tool):
        return {"status": "skipped: compute-sanitizer not found"}
    if env.dry:
        return {"status": "skipped: no GPU (dry run)", "tool": tool}
    results = {}
    for check in ("memcheck", "synccheck"):
        try:
            proc = subprocess.run([tool, "--tool", check, "--error-exitcode", "1", sys.executable,
                                   os.path.join(HERE, "gpu_check_env.py"), "--sanitizer-payload"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=150)
            results[check] = {"returncode": proc.returncode,
                              "tail": (proc.stdout + proc.stderr).strip().splitlines()[-3:]}
        except subprocess.TimeoutExpired:
            results[check] = {"returncode": None, "tail": ["timed out after 150 s"]}
    return {"status": "ran", "tool": tool, "results": results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT", "gpu-check-results"))
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="seconds the benchmark may take (cases beyond are listed)")
    parser.add_argument("--dry", action="store_true", help="no GPU: CPU emulation stand-in")
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible; use --dry (make gpu-check DRY=1) to check the script")
    os.makedirs(args.out, exist_ok=True)
    env = Env(args.dry)
    start = time.time()
    sections = {}
    for name, step in [("versions", versions), ("barrier", barrier_cost),
                       ("determinism", determinism), ("tests", test_suite_twice),
                       ("sanitizer", sanitizer)]:
        t0 = time.time()
        sections[name] = step(env)
        report.write_json(args.out, name, sections[name])
        print(f"gpu-check: {name} done in {time.time() - t0:.1f} s", flush=True)
    rows, not_reached = bench.run(env, args.budget_s)
    sections["bench"] = {"rows": rows, "not_reached": not_reached, "source": env.source}
    report.write_bench(args.out, sections["bench"], sections["versions"])
    summary = report.write_summary(args.out, sections, time.time() - start)
    print(json.dumps(summary, indent=1))
    # Everything is written either way; a failed test run or a difference
    # between two runs fails the check (and, in the dry run, CI).
    ok = summary["tests_passed_twice"] and summary["deterministic"]
    if not ok:
        print("gpu-check: FAILED (see tests.json / determinism.json)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
