"""Timing: clocks for the CPU and for CUDA, interleaved repeats with medians, the GEMM rate."""
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch


class WallClock:
    """Seconds of one call on the CPU, by time.perf_counter."""

    def seconds(self, run: Callable[[], None]) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start


class CudaEventClock:
    """Seconds of one call on the GPU: CUDA events recorded on the current stream
    around the call, read after a synchronize."""

    def seconds(self, run: Callable[[], None]) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        stream = torch.cuda.current_stream()
        start.record(stream)
        run()
        end.record(stream)
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3


def clock_for(device: str):
    return CudaEventClock() if device == "cuda" else WallClock()


def warm_up(runners: Dict[str, Callable[[], None]], clock, calls: int) -> None:
    for _ in range(calls):
        for run in runners.values():
            clock.seconds(run)


def time_interleaved(runners: Dict[str, Callable[[], None]], clock, repeats: int,
                     min_time: float, warmup_calls: int = 1) -> Dict[str, List[float]]:
    """Seconds per call of each runner, one sample per round.

    Each round calls every runner once (the order rotates from round to round),
    so slow drifts of the machine hit all of them alike. Rounds go on until there
    are `repeats` of them and `min_time` seconds have passed, at most 20 x repeats.
    """
    warm_up(runners, clock, warmup_calls)
    names = list(runners)
    samples = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_time and rounds < 20 * repeats):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(clock.seconds(runners[name]))
        rounds += 1
    return samples


def gemm_rate(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matrix product (torch.mm) on device in dtype."""
    clock = clock_for(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    matmul = lambda: torch.mm(a, b)  # noqa: E731
    warm_up({"mm": matmul}, clock, 2)
    seconds = statistics.median(clock.seconds(matmul) for _ in range(repeats))
    return 2.0 * n ** 3 / seconds / 1e9


def progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on stderr."""
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<44}")
    sys.stderr.flush()
