"""The chart of a recorded ``bench.peers`` run draws that run's figures, and the CLI writes it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from PIL import Image

from bench.peers.plot import draw
from bench.peers.targets import label

ROOT = Path(__file__).parents[2]
RUN = ROOT / "bench" / "peers-all-amd-session12-results.json"


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(RUN.read_text())


def test_each_model_has_every_round_s_throughput_and_latency(report: dict) -> None:
    fig = draw(report)
    axes = fig.axes
    assert len(axes) == 2 * len(report["models"])
    for (model, entry), throughput, latency in zip(report["models"].items(), axes[::2], axes[1::2], strict=True):
        lines = {line.get_label(): line for line in throughput.get_lines()}
        for run in entry["rounds"]:
            name = label(run, entry["rounds"])
            concurrencies = sorted(int(c) for c in run["results"])
            assert list(lines[name].get_xdata()) == concurrencies
            assert list(lines[name].get_ydata()) == [run["results"][str(c)]["rps"] for c in concurrencies]
        # the bare stack drawn only where its targets are set
        assert any(label.startswith("bare stack") for label in lines) == (model == "lenet5")
        p99 = [run["results"]["16"]["p99_ms"] for run in entry["rounds"]]
        p50 = [run["results"]["16"]["p50_ms"] for run in entry["rounds"]]
        spans = latency.get_lines()
        assert [list(span.get_xdata()) for span in spans] == [[a, b] for a, b in zip(p50, p99, strict=True)]
        # the same colour for a round in both panels, the rounds in the tables' order
        assert [tick.get_text() for tick in latency.get_yticklabels()] == [label(run, entry["rounds"])
                                                                         for run in entry["rounds"]]
        assert [to_hex(span.get_color()) for span in spans] == \
            [to_hex(lines[tick.get_text()].get_color()) for tick in latency.get_yticklabels()]
        over = {text.get_text().strip() for text in latency.texts if text.get_color() == "tab:red"}
        assert over == {f"{b / a:.2f}×" for a, b in zip(p50, p99, strict=True) if b / a > 2}


def test_a_run_without_16_clients_still_draws_its_throughput(report: dict) -> None:
    partial = json.loads(json.dumps(report))
    for entry in partial["models"].values():
        for run in entry["rounds"]:
            del run["results"]["16"]
    fig = draw(partial)
    throughput, latency = fig.axes[0], fig.axes[1]
    assert [list(line.get_xdata()) for line in throughput.get_lines()][0] == [1, 64]
    assert not latency.get_lines() and latency.texts[0].get_text() == "lenet5: not measured at 16 clients"


def test_the_cli_writes_the_chart_of_a_recorded_run(tmp_path: Path) -> None:
    chart = tmp_path / "peers.png"
    done = subprocess.run([sys.executable, "-m", "bench.peers", "--summary", str(RUN), "--plot", str(chart)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"chart: {chart}" in done.stdout
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size == (960, 672)  # 12 × 8.4 inches at 80 dpi, two models


def test_a_chart_with_nowhere_to_go_is_refused_before_anything_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.peers", "--plot", str(tmp_path / "missing" / "peers.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no folder" in done.stderr
