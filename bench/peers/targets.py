"""Issue 16's targets judged from one ``bench.peers`` report, so that a run says by itself where cnn-serve stands.

The targets: at concurrency 16, cnn-serve's p99 within 2× its p50 and its throughput at least the best peer's;
lenet5 at 45 % of the bare stack or more, its server process at 0.15 ms of CPU a request or less (also judged
against the bare stack's CPU a request in the same run, as the issue's 0.15 against its 0.093) and the cores
90 % busy or more; at concurrency 1 a p50 below every peer's; no errors anywhere. Every cnn-serve round counts
(the form, the form again, the image as the body): the host drifts, so a target met in its best round only is
not met.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OURS = ("cnn-serve", "cnn-serve-raw")
TAIL_RATIO = 2.0  # p99 ÷ p50 at concurrency 16, at most
BARE_SHARE = 0.45  # of the bare stack's req/s at concurrency 16, at least
SERVER_MS = 0.15  # the server process's CPU ms a request at concurrency 16, at most
ISSUE_BARE_MS = 0.093  # the bare stack's CPU ms a request on the quiet host the issue measured SERVER_MS against
CORES_BUSY = 90.0  # % at concurrency 16, at least
STACK_MODEL = "lenet5"  # the model the bare-stack, server-CPU and busy-core targets are set on


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    met: bool | None  # None: the report lacks what the target needs (a concurrency, a peer, the bare stack)


def judge(report: dict[str, Any]) -> list[Verdict]:
    """One verdict per target and model, in the issue's order."""
    verdicts: list[Verdict] = []
    for model, entry in report["models"].items():
        ours = [(label(run, entry["rounds"]), run["results"]) for run in entry["rounds"] if run["server"] in OURS]
        peers = [run["results"] for run in entry["rounds"] if run["server"] not in OURS]
        at16 = [(name, results["16"]) for name, results in ours if "16" in results]
        verdicts.append(each(f"{model}: p99 ≤ {TAIL_RATIO:g}× p50 at c=16", "{:.2f}",
                             [(name, r["p99_ms"] / r["p50_ms"]) for name, r in at16], operator.le, TAIL_RATIO))
        best = best_peer(entry)
        against = [(name, r["rps"] / best[1]) for name, r in at16] if best else []
        peer = f" ({best[0]}, {best[1]:,.0f})" if best else ""
        verdicts.append(each(f"{model}: c=16 req/s ≥ the best peer's{peer}", "{:.2f}×", against, operator.ge, 1))
        if model == STACK_MODEL:
            bare = entry["ceilings"].get("bare", {})
            rps, cpu = bare.get("rps"), bare.get("server_process_cpu_ms_per_request")
            verdicts += [
                each(f"{model}: c=16 ≥ {BARE_SHARE:.0%} of the bare stack" + (f" ({rps:,.0f})" if rps else ""),
                     "{:.0%}", [(name, r["rps"] / rps) for name, r in at16] if rps else [], operator.ge, BARE_SHARE),
                each(f"{model}: server process ≤ {SERVER_MS} ms of CPU a request at c=16", "{:.3f}",
                     [(name, r["server_process_cpu_ms_per_request"]) for name, r in at16], operator.le, SERVER_MS),
                # The same target against the host's speed in this run: the issue set 0.15 ms where the bare stack
                # cost 0.093, and this host's speed drifts by half from hour to hour.
                each(f"{model}: server process ≤ {SERVER_MS / ISSUE_BARE_MS:.2f}× the bare stack's CPU a request "
                     f"at c=16" + (f" ({cpu:.3f} ms)" if cpu else ""), "{:.2f}×",
                     [(name, r["server_process_cpu_ms_per_request"] / cpu) for name, r in at16] if cpu else [],
                     operator.le, SERVER_MS / ISSUE_BARE_MS),
                each(f"{model}: cores ≥ {CORES_BUSY:.0f} % busy at c=16", "{:.1f} %",
                     [(name, r["cores_busy_pct"]) for name, r in at16], operator.ge, CORES_BUSY),
            ]
        fastest = min((results["1"]["p50_ms"] for results in peers if "1" in results), default=None)
        verdicts.append(each(f"{model}: c=1 p50 below every peer's" + (f" ({fastest:.2f} ms)" if fastest else ""),
                             "{:.2f} ms", [(name, results["1"]["p50_ms"]) for name, results in ours if "1" in results]
                             if fastest else [], operator.lt, fastest or 0))
        runs = [r for run in entry["rounds"] for r in run["results"].values()]
        errors = sum(r["errors"] for r in runs)
        verdicts.append(Verdict(f"{model}: zero errors, every server",
                                f"{errors} in {sum(r['requests'] for r in runs):,} requests", errors == 0))
    return verdicts


def best_peer(entry: dict[str, Any]) -> tuple[str, float] | None:
    """The peer with the most req/s at concurrency 16, and that figure: the one to beat."""
    return max(((run["server"], run["results"]["16"]["rps"]) for run in entry["rounds"]
                if run["server"] not in OURS and "16" in run["results"]), key=lambda peer: peer[1], default=None)


def label(run: dict[str, Any], rounds: list[dict[str, Any]]) -> str:
    """``cnn-serve``, ``cnn-serve again``, ``cnn-serve-raw``: which of our rounds a figure is from."""
    earlier = sum(1 for other in rounds[: rounds.index(run)] if other["server"] == run["server"])
    return str(run["server"]) + " again" * earlier


def each(target: str, form: str, figures: list[tuple[str, float]], compare: Callable[[float, float], bool],
         bound: float) -> Verdict:
    """Met when every round's figure compares well with the bound; not judged when there are none."""
    if not figures:
        return Verdict(target, "not measured", None)
    text = ", ".join(f"{name} {form.format(value)}" for name, value in figures)
    return Verdict(target, text, all(compare(value, bound) for _, value in figures))


def render(verdicts: list[Verdict]) -> str:
    """The verdicts as a Markdown table, ready for a note or the performance doc."""
    word = {True: "met", False: "**not met**", None: "not measured"}
    rows = [f"| {v.target} | {v.figure} | {word[v.met]} |" for v in verdicts]
    return "\n".join(["| target | figure | verdict |", "| --- | --- | --- |", *rows])
