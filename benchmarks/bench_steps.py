"""The time of one more step at small batches: rnnkern's forward over 3T steps
less its forward over T, per step, set against the cache-bandwidth bound of a
step (reading every layer-direction's recurrent weights once). Unlike the
whole call's "% bw bound", it leaves out what a call pays once (packing the
weights, allocations, Python) and keeps what every step pays (its share of
the input projection, the pointwise step, the threads' hand-off)."""
import dataclasses
import statistics
from typing import Dict, List

import torch

import bench_cases as cases
import bench_timing as timing


def step_seconds(case, dtype: torch.dtype, repeats: int) -> float:
    """Seconds per step of rnnkern's forward (inference) on the CPU."""
    T, B, I, H = case.size
    _, ours = cases.make_modules(case, "cpu", dtype)
    longer = dataclasses.replace(case, size=(3 * T, B, I, H))
    runners = {}
    for name, c in (("T", case), ("3T", longer)):
        input, _ = cases.make_input(c, "cpu", dtype, requires_grad=False)
        runners[name] = cases.inference_runner(cases.sequence_outputs, ours, input)
    samples = timing.time_interleaved(runners, timing.WallClock(), repeats, min_time=0.5)
    return (statistics.median(samples["3T"]) - statistics.median(samples["T"])) / (2 * T)


def add_step_times(rows: List[Dict], grid, dtype: torch.dtype, repeats: int,
                   small_batch: int) -> None:
    """row["step_us"] and row["step_over_bound"] for the CPU forward rows of
    batch <= small_batch (sequence modules; the cells' steps are whole calls),
    from the read rates add_bandwidth_bounds measured (row["bandwidth_gbps"])."""
    by_label = {case.label: case for case in grid}
    measured = {}
    element_bytes = torch.finfo(dtype).bits // 8
    for row in rows:
        case = by_label[row["case"]]
        if (row["phase"] != "forward" or case.is_cell or case.size[1] > small_batch
                or row.get("bandwidth_gbps") is None):
            continue
        if case.label not in measured:
            measured[case.label] = step_seconds(case, dtype, repeats)
        step = measured[case.label]
        bound = cases.bandwidth_bound_seconds(case, "forward", row["bandwidth_gbps"],
                                              element_bytes) / case.size[0]
        row["step_us"] = step * 1e6
        row["step_over_bound"] = step / bound
