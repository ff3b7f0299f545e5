"""Plots the distributions a benchmark run measured (target/bench/samples.json, written by
perch-bench) as empirical CDFs: init CPU over the spawns and warm CPU over the invocations,
per binary, on log axes so the hello-world, Perch's functions and the Node.js peer fit on one
figure. CPU, not wall time: it is what the targets are about and what stays put on a noisy
machine (BENCHMARKS.md). Usage: plot.py SAMPLES_JSON OUT_PNG
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display here, and no GUI toolkit needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


def ecdf(values):
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def main(samples_path, out_path):
    with open(samples_path) as f:
        samples = json.load(f)
    if not samples:
        sys.exit(f"{samples_path} has no samples: run scripts/bench.sh first")

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    # Each panel with its PERFORMANCE.md §9 target, drawn as a vertical line.
    panels = [
        ("init_cpu_ms", "init CPU (exec → first /next), ms", "Init", 4.0, "G1: 4 ms p50"),
        ("warm_cpu_us", "warm CPU per invocation, µs", "Warm", 150.0, "G2: 150 µs (one DynamoDB read)"),
    ]
    colors = plt.get_cmap("tab10")
    for ax, (key, xlabel, title, target, target_label) in zip(axes, panels):
        for i, (name, s) in enumerate(sorted(samples.items(), key=lambda kv: kv[0])):
            if not s[key]:
                continue
            xs, ys = ecdf(s[key])
            style = "--" if name.startswith(("perch-bench-hello", "peer-")) else "-"
            ax.step(xs, ys, where="post", linestyle=style, color=colors(i % 10),
                    label=f"{name} (n={len(xs):,})")
        ax.axvline(target, color="black", linewidth=0.8, linestyle=":", label=target_label)
        ax.set_xscale("log")
        # Plain numbers (1, 2, 5, 10, …) instead of powers of ten.
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.legend(fontsize=7.5, loc="lower right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of samples ≤ x")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Perch's functions, the hello-world baseline and the Node.js peer (dashed)")
    fig.savefig(out_path, dpi=110)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py SAMPLES_JSON OUT_PNG")
    main(sys.argv[1], sys.argv[2])
