"""Draws docs/bench.png from `cargo xtask bench`'s results.json: p50 and p99
latency against concurrency, one line per target, a panel per call."""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display: a file only
import matplotlib.pyplot as plt  # noqa: E402


def main(results_path: str, png_path: str) -> None:
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    calls = ["Recommend", "GET /"]
    fig, axes = plt.subplots(1, len(calls), figsize=(13, 5.5))
    for ax, call in zip(axes, calls):
        targets = [t for t in results["targets"] if t["call"] == call]
        for index, target in enumerate(targets):
            points = sorted(target["points"], key=lambda p: p["concurrency"])
            xs = [p["concurrency"] for p in points]
            colour = f"C{index}"
            width = 2.5 if target["baseline"] else 1.5
            label = target["label"] + (" (baseline)" if target["baseline"] else "")
            ax.plot(xs, [p["p99_ms"] for p in points], "-o", color=colour,
                    linewidth=width, label=f"{label}: p99")
            ax.plot(xs, [p["p50_ms"] for p in points], "--", color=colour,
                    linewidth=1, label=f"{label}: p50")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 16, 64], labels=["1", "16", "64"])
        ax.set_xlabel("concurrency (callers)")
        ax.set_ylabel("latency (ms), log scale")
        ax.set_title(call)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(f"cargo xtask bench · {results['title']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py results.json out.png")
    main(sys.argv[1], sys.argv[2])
