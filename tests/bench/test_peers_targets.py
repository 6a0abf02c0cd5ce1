"""Issue 16's verdicts, judged from recorded ``bench.peers`` runs against the figures worked out by hand in
docs/PERFORMANCE.md for those runs."""

import copy
import json
from pathlib import Path

import pytest

from bench.peers.targets import Verdict, judge, render

RUNS = Path(__file__).parents[2] / "bench"


@pytest.fixture
def session10() -> dict:
    """mosec once more, 2026-11-29 (docs/PERFORMANCE.md, "On the AMD EPYC: mosec once more")."""
    return json.loads((RUNS / "peers-amd-session10-results.json").read_text())


def by_target(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.target.split(" (")[0]: v for v in verdicts}


def test_a_recorded_run_is_judged_as_the_doc_judged_it(session10: dict) -> None:
    verdicts = by_target(judge(session10))
    tail = verdicts["lenet5: p99 ≤ 2× p50 at c=16"]
    assert tail.figure == "cnn-serve 1.91, cnn-serve again 1.67, cnn-serve-raw 2.13"
    assert tail.met is False  # the raw-body round's 2.13
    assert verdicts["resnet_small: p99 ≤ 2× p50 at c=16"].met is True
    throughput = verdicts["lenet5: c=16 req/s ≥ the best peer's"]
    assert throughput.target.endswith("(mosec, 3,423)")
    assert throughput.figure == "cnn-serve 1.19×, cnn-serve again 1.08×, cnn-serve-raw 1.43×"
    assert throughput.met is True
    assert verdicts["resnet_small: c=16 req/s ≥ the best peer's"].met is False  # 0.92× and 0.93×
    share = verdicts["lenet5: c=16 ≥ 45% of the bare stack"]
    assert share.figure == "cnn-serve 59%, cnn-serve again 54%, cnn-serve-raw 71%" and share.met is True
    assert verdicts["lenet5: server process ≤ 0.15 ms of CPU a request at c=16"].met is False  # 0.184–0.191
    # the same, against this run's bare stack (0.142 ms a request): 0.184 / 0.142, 0.191 / 0.142, 0.154 / 0.142
    against_bare = verdicts["lenet5: server process ≤ 1.61× the bare stack's CPU a request at c=16"]
    assert against_bare.target.endswith("(0.142 ms)")
    assert against_bare.figure == "cnn-serve 1.30×, cnn-serve again 1.35×, cnn-serve-raw 1.08×" and against_bare.met
    cores = verdicts["lenet5: cores ≥ 90 % busy at c=16"]
    assert cores.figure == "cnn-serve 91.3 %, cnn-serve again 88.1 %, cnn-serve-raw 91.4 %" and cores.met is False
    assert verdicts["lenet5: c=1 p50 below every peer's"].met is True
    assert verdicts["lenet5: zero errors, every server"].met is True
    assert "resnet_small: c=16 ≥ 45% of the bare stack" not in verdicts  # the stack targets are lenet5's


def test_the_best_peer_is_the_fastest_at_c16() -> None:
    report = json.loads((RUNS / "peers-all-amd-results.json").read_text())
    verdicts = by_target(judge(report))
    assert verdicts["resnet_small: c=16 req/s ≥ the best peer's"].target.endswith("(mosec, 1,313)")
    assert verdicts["lenet5: c=1 p50 below every peer's"].target.endswith("(3.36 ms)")


def test_an_error_anywhere_fails_the_errors_target(session10: dict) -> None:
    report = copy.deepcopy(session10)
    report["models"]["lenet5"]["rounds"][1]["results"]["64"]["errors"] = 3  # mosec's, at c=64
    verdict = by_target(judge(report))["lenet5: zero errors, every server"]
    assert verdict.met is False and verdict.figure.startswith("3 in ")


def test_what_a_run_did_not_measure_is_not_judged(session10: dict) -> None:
    report = copy.deepcopy(session10)
    entry = report["models"]["lenet5"]
    del entry["ceilings"]["bare"]
    entry["rounds"] = [run for run in entry["rounds"] if run["server"] != "mosec"]
    verdicts = by_target(judge(report))
    assert verdicts["lenet5: c=16 ≥ 45% of the bare stack"].met is None
    assert verdicts["lenet5: server process ≤ 1.61× the bare stack's CPU a request at c=16"].met is None
    assert verdicts["lenet5: c=16 req/s ≥ the best peer's"].met is None
    assert verdicts["lenet5: c=1 p50 below every peer's"].met is None
    assert "| lenet5: c=1 p50 below every peer's | not measured | not measured |" in render(judge(report))


def test_the_fresh_clone_run_on_debians_python_is_judged_as_the_doc_judged_it() -> None:
    """docs/PERFORMANCE.md, "the interpreter's build": every peer from a fresh clone on Debian's Python."""
    verdicts = by_target(judge(json.loads((RUNS / "peers-all-amd-debian-results.json").read_text())))
    assert verdicts["lenet5: p99 ≤ 2× p50 at c=16"].figure == "cnn-serve 2.13, cnn-serve again 1.63, cnn-serve-raw 1.78"
    assert verdicts["lenet5: cores ≥ 90 % busy at c=16"].figure == (
        "cnn-serve 89.0 %, cnn-serve again 90.4 %, cnn-serve-raw 94.0 %")
    not_met = {target for target, verdict in verdicts.items() if verdict.met is False}
    assert not_met == {"lenet5: p99 ≤ 2× p50 at c=16", "lenet5: cores ≥ 90 % busy at c=16",
                       "resnet_small: c=16 req/s ≥ the best peer's"}


def test_the_summary_says_which_interpreter_ran(capsys: pytest.CaptureFixture[str], session10: dict) -> None:
    from bench.peers.__main__ import print_summary

    print_summary(json.loads((RUNS / "peers-all-amd-debian-results.json").read_text()))
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "Python 3.11.2 (/usr/bin/python3.11), ONNX Runtime 1.32.0, 10 s a point"
    print_summary(session10)  # recorded before the interpreter was
    assert capsys.readouterr().out.startswith("Python 3.11.7 (which build was not recorded), ONNX Runtime 1.32.0")
