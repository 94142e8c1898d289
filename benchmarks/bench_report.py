"""The results: the terminal table, its Markdown twin, the JSON file and the speed-up chart."""
import json
import os
from typing import Dict, List

COLUMNS = ["case", "phase", "baseline", "rnnkern ms", "baseline ms", "speed-up", "GFLOP/s",
           "% GEMM", "% peak", "% bw bound", "step / bound"]
NUMERIC = {"rnnkern ms", "baseline ms", "speed-up", "GFLOP/s", "% GEMM", "% peak", "% bw bound",
           "step / bound"}


def summary_line(info: Dict) -> str:
    where = info["gpu"] if info["device"] == "cuda" else f"{info['cpu']}, {info['threads']} threads"
    line = (f"torch {info['torch']}, {where}, {info['dtype']}; GEMM rate (torch.mm "
            f"{info['gemm_size']}^3, {info['dtype']}) {info['gemm_gflops']:.0f} GFLOP/s")
    if info.get("cpu_capability"):
        line += (f"; rnnkern CPU kernels: {info['cpu_capability']}, FMA peak "
                 f"{info['fma_peak_gflops']:.0f} GFLOP/s")
    return line


def table_cells(rows: List[Dict]) -> List[List[str]]:
    """One list of strings per row; case and phase are written only where they change."""
    cells = []
    previous_case = previous_phase = None
    for r in rows:
        new_case = r["case"] != previous_case
        new_phase = new_case or r["phase"] != previous_phase
        cells.append([r["case"] if new_case else "", r["phase"] if new_phase else "", r["baseline"],
                      f"{r['rnnkern_ms']:.2f}", f"{r['baseline_ms']:.2f}", f"{r['speedup']:.2f}x",
                      f"{r['rnnkern_gflops']:.1f}", f"{r['gemm_percent']:.0f}%",
                      "-" if r.get("peak_percent") is None else f"{r['peak_percent']:.0f}%",
                      "-" if r.get("bandwidth_percent") is None
                      else f"{r['bandwidth_percent']:.0f}%",
                      "-" if r.get("step_over_bound") is None
                      else f"{r['step_over_bound']:.1f}x"])
        previous_case, previous_phase = r["case"], r["phase"]
    return cells


def format_text_table(rows: List[Dict], info: Dict) -> str:
    cells = table_cells(rows)
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]

    def line(values):
        return "  ".join(v.rjust(w) if c in NUMERIC else v.ljust(w)
                         for c, v, w in zip(COLUMNS, values, widths)).rstrip()

    rule = "-" * len(line(COLUMNS))
    out = [summary_line(info), line(COLUMNS), rule]
    for values in cells:
        if values[0] and len(out) > 3:  # a thin rule between cases
            out.append(rule)
        out.append(line(values))
    return "\n".join(out)


def format_markdown_table(rows: List[Dict], info: Dict) -> str:
    align = ["---:" if c in NUMERIC else "---" for c in COLUMNS]
    out = [f"{summary_line(info)}. Speed-up = baseline time / rnnkern time; GFLOP/s are rnnkern's.",
           "", "| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(align) + " |"]
    for values in table_cells(rows):
        out.append("| " + " | ".join(values) + " |")
    return "\n".join(out) + "\n"


def ensure_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def write_text(path: str, text: str) -> None:
    ensure_parent(path)
    with open(path, "w") as f:
        f.write(text)


def write_json(path: str, info: Dict, rows: List[Dict]) -> None:
    write_text(path, json.dumps(dict(info, rows=rows), indent=1) + "\n")


# ---------------------------------------------------------------------------- chart

BASELINE_COLOURS = ["#3b75af", "#ef8636"]


def grouped_speedups(rows: List[Dict], phase: str, baselines: List[str], cases: List[str]):
    """{baseline: [speed-up of each case in this phase, or None]}."""
    found = {(r["case"], r["baseline"]): r["speedup"] for r in rows if r["phase"] == phase}
    return {b: [found.get((c, b)) for c in cases] for b in baselines}


def speedup_axis_labels(axis, low: float, high: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    ticks = [t * 10 ** e for e in range(-2, 3) for t in (1, 2, 5) if low <= t * 10 ** e <= high]
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}\u00d7"))


def draw_phase_panel(axis, speedups: Dict[str, List], cases: List[str], phase: str,
                     x_range) -> None:
    bar_height = 0.8 / len(speedups)
    for index, (baseline, values) in enumerate(speedups.items()):
        colour = BASELINE_COLOURS[index % len(BASELINE_COLOURS)]
        label = f"vs {baseline}"
        for row, value in enumerate(values):
            if value is None:
                continue
            y = row - 0.4 + bar_height * (index + 0.5)
            # Bars start at 1x: to the right where rnnkern is faster, to the left where slower.
            axis.barh(y, value - 1, left=1, height=bar_height * 0.9, color=colour, label=label)
            label = None  # one legend entry per baseline
            axis.text(value * (1.03 if value >= 1 else 0.97), y, f"{value:.2f}\u00d7",
                      va="center", ha="left" if value >= 1 else "right", fontsize=8)
    axis.axvline(1, color="black", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlim(*x_range)
    speedup_axis_labels(axis, *x_range)
    axis.set_yticks(range(len(cases)))
    axis.set_yticklabels(cases)
    axis.set_ylim(len(cases) - 0.5, -0.5)
    axis.set_title(phase, fontsize=11)
    axis.set_xlabel("speed-up (baseline time / rnnkern time)")
    axis.grid(axis="x", color="#dddddd", linewidth=0.6)
    axis.set_axisbelow(True)


def chart_range(rows: List[Dict]):
    speedups = [r["speedup"] for r in rows]
    return min(0.5, min(speedups) / 2.2), max(2.0, max(speedups) * 2.2)


def draw_chart(path: str, rows: List[Dict], info: Dict) -> None:
    """Horizontal speed-up bars, one panel per phase, one group of bars per case."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    baselines = list(dict.fromkeys(r["baseline"] for r in rows))
    height = 1.9 + len(cases) * (0.22 + 0.2 * len(baselines))
    figure, axes = plt.subplots(1, len(phases), sharey=True, squeeze=False,
                                figsize=(4.2 + 3.4 * len(phases), height))
    x_range = chart_range(rows)
    for axis, phase in zip(axes[0], phases):
        draw_phase_panel(axis, grouped_speedups(rows, phase, baselines, cases), cases, phase,
                         x_range)
    for axis in axes[0][1:]:
        axis.tick_params(axis="y", length=0)
    # The header, in inches from the top: title, run summary, legend.
    figure.text(0.01, 1 - 0.12 / height, "rnnkern speed-up (right of the 1\u00d7 line: rnnkern is "
                "faster)", va="top", fontsize=12)
    figure.text(0.01, 1 - 0.42 / height, summary_line(info), va="top", fontsize=8,
                color="#555555")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.005, 1 - 0.6 / height),
                  ncol=len(labels), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.95 / height))
    ensure_parent(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
