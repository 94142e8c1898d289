"""The files make gpu-check writes: one JSON per step, the benchmark as JSON,
Markdown and a PNG chart, and summary.json."""
import json
import os


def write_json(out, name, data):
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)


def _markdown(bench, versions):
    lines = [f"# rnnkern vs torch.nn (cuDNN) on {versions.get('device')}", "",
             f"Source: {bench['source']}", "",
             "| mode | dtype | phase | B | H | T | layers | persistent taken | cuDNN ms "
             "| persistent ms | per-step ms | persistent µs/step | persistent vs cuDNN |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for row in bench["rows"]:
        key = (row["mode"], row["dtype"], row["phase"], row["B"], row["H"], row["T"],
               row.get("layers", 1))
        groups.setdefault(key, {})[row["tier"]] = row

    def ms(tiers, tier):
        row = tiers.get(tier, {})
        return f"{row['median_ms']:.3f}" if "median_ms" in row else row.get("error", "—")[:40]

    for key, tiers in groups.items():
        p = tiers.get("persistent", {})
        ratio = p.get("vs_cudnn")
        lines.append("| " + " | ".join(str(k) for k in key) +
                     f" | {p.get('persistent_taken', '—')} | {ms(tiers, 'cudnn')} | "
                     f"{ms(tiers, 'persistent')} | {ms(tiers, 'per-step')} | "
                     f"{p.get('us_per_step', '—')} | "
                     f"{f'{ratio:.2f}x' if ratio else '—'} |")
    if bench["not_reached"]:
        lines += ["", f"{len(bench['not_reached'])} cases not reached within the time budget."]
    return "\n".join(lines) + "\n"


def _chart(path, bench):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(10, 4))
    for tier, marker in (("persistent", "o"), ("per-step", "x")):
        ys = [r["vs_cudnn"] for r in bench["rows"] if r["tier"] == tier and r.get("vs_cudnn")]
        ax.plot(range(len(ys)), ys, marker, label=f"rnnkern {tier}")
    ax.axhline(1.0, color="grey", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("case (bench.json order)")
    ax.set_ylabel("speed vs torch.nn / cuDNN")
    title = "rnnkern vs cuDNN"
    if bench["source"] != "gpu":
        title += " — STAND-IN DATA (CPU emulation), not GPU figures"
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_bench(out, bench, versions):
    write_json(out, "bench", bench)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write(_markdown(bench, versions))
    bench["chart"] = _chart(os.path.join(out, "bench.png"), bench)


def write_summary(out, sections, seconds):
    bench = sections["bench"]
    timed = [r for r in bench["rows"] if "median_ms" in r]
    persistent = [r for r in timed if r["tier"] == "persistent" and r["persistent_taken"]]
    headline = [r for r in timed if (r["mode"], r["H"], r["B"], r["T"], r.get("layers", 1)) ==
                ("LSTM", 768, 16, 1024, 1)]
    tests = sections["tests"]["runs"]
    summary = {
        "dry_run": sections["versions"]["dry_run"],
        "source": bench["source"],
        "device": sections["versions"].get("device"),
        "seconds": round(seconds, 1),
        "ns_per_grid_barrier": {r["blocks"]: r["ns_per_barrier"] for r in sections["barrier"]},
        "deterministic": not sections["determinism"]["differing"],
        "determinism_cases": sections["determinism"]["cases"],
        "tests_passed_twice": all(run["returncode"] == 0 for run in tests),
        "sanitizer": sections["sanitizer"].get("status"),
        "bench_cases_timed": len({(r["mode"], r["dtype"], r["B"], r["H"], r["T"],
                                   r.get("layers", 1)) for r in timed}),
        "bench_cases_not_reached": len(bench["not_reached"]),
        "chart": bench.get("chart", False),
        "persistent_faster_than_cudnn": f"{sum(r['vs_cudnn'] > 1 for r in persistent)} of "
                                        f"{len(persistent)} rows where the persistent tier ran",
        "flashrnn_shape_us_per_step": {f"{r['dtype']} {r['phase']} {r['tier']}": r["us_per_step"]
                                       for r in headline},
    }
    write_json(out, "summary", summary)
    return summary
