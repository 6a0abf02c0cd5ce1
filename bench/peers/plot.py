"""One picture of a ``bench.peers`` run: per model, every server's throughput by concurrency, and its p50 and p99
at concurrency 16, where the issue's targets are set. Easier to take in than the tables, which stay the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from bench.peers.targets import OURS, STACK_MODEL, TAIL_RATIO, label  # noqa: E402

OUR_COLOURS = ["tab:blue", "navy", "deepskyblue"]  # cnn-serve's rounds, in order
PEER_COLOURS = ["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive"]


def draw(report: dict[str, Any]) -> Figure:
    """Two panels a model: req/s against concurrency (cnn-serve's rounds bold, in blues), and p50 to p99 at c=16;
    the bare stack's line where its targets are set (lenet5: on resnet_small it would flatten every curve)."""
    models = list(report["models"].items())
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for (model, entry), (throughput, latency) in zip(models, axes, strict=True):
        rounds = [(label(run, entry["rounds"]), run) for run in entry["rounds"]]
        ours, theirs = iter(OUR_COLOURS), iter(PEER_COLOURS)
        colour = {name: next(ours) if run["server"] in OURS else next(theirs) for name, run in rounds}
        for name, run in rounds:
            points = sorted((int(c), r["rps"]) for c, r in run["results"].items())
            mine = run["server"] in OURS
            throughput.plot([c for c, _ in points], [rps for _, rps in points], "o-" if mine else "s--",
                            color=colour[name], linewidth=2.4 if mine else 1.2, label=name)
        bare = entry["ceilings"].get("bare", {}).get("rps")
        if bare and model == STACK_MODEL:
            throughput.axhline(bare, color="grey", linestyle=":", label=f"bare stack ({bare:,.0f})")
        throughput.set_xscale("log", base=2)
        concurrencies = sorted({int(c) for _, run in rounds for c in run["results"]})
        throughput.set_xticks(concurrencies, [str(c) for c in concurrencies])
        throughput.set_xlabel("concurrent clients")
        throughput.set_ylabel("requests / s")
        throughput.set_title(f"{model}: throughput")
        throughput.grid(alpha=0.3)
        throughput.legend(fontsize=8)

        at16 = [(name, run["results"]["16"]) for name, run in rounds if "16" in run["results"]]
        if not at16:  # a run measured at other concurrencies only (--concurrency)
            latency.set_axis_off()
            latency.text(0.5, 0.5, f"{model}: not measured at 16 clients", ha="center", transform=latency.transAxes)
            continue
        for row, (name, r) in enumerate(at16):  # a dumbbell: bars from 0 would mislead on a log scale
            latency.plot([r["p50_ms"], r["p99_ms"]], [row, row], "-o", color=colour[name], linewidth=3, markersize=7)
            ratio = r["p99_ms"] / r["p50_ms"]
            latency.text(r["p99_ms"], row, f"  {ratio:.2f}×", va="center", fontsize=8,
                         color="tab:red" if ratio > TAIL_RATIO else "black")
        latency.set_yticks(range(len(at16)), [name for name, _ in at16])
        latency.set_ylim(len(at16) - 0.5, -0.5)  # the first round on top, as in the tables
        latency.set_xscale("log")
        latency.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        latency.xaxis.set_major_formatter(ScalarFormatter())
        latency.xaxis.set_minor_formatter(NullFormatter())
        latency.set_xlim(right=max(r["p99_ms"] for _, r in at16) * 1.6)  # room for the ratios
        latency.set_xlabel(f"ms (log scale); p99 ÷ p50 beside, red over {TAIL_RATIO:g}×")
        latency.set_title(f"{model}: p50 (left dot) to p99 (right dot) at 16 clients")
        latency.grid(alpha=0.3, axis="x")
    version = report.get("model_version")
    fig.suptitle(f"bench.peers: cnn-serve against its peers{f' (model version {version})' if version else ''}")
    fig.tight_layout()
    return fig


def save(report: dict[str, Any], path: Path) -> None:
    fig = draw(report)
    fig.savefig(path, dpi=80)
    plt.close(fig)
