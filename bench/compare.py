"""``python -m bench.compare``: this service against another checkout of it (before/after a change),
interleaved on the same machine: rounds of A, B, A, B … with the same wrk load, each point the median over
the rounds, CPU per request counted for each server and its workers.

    python -m bench.compare --baseline /path/to/old/checkout --rounds 3

The baseline runs from its own directory with its own models, on this checkout's virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.load import load

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"lenet5": ROOT / "examples" / "digit_7.png", "resnet_small": ROOT / "examples" / "placed_3.png"}


class Checkout:
    """A checkout's service in its own process (uvicorn's factory, as ``make serve`` would start it)."""

    def __init__(self, label: str, directory: Path, port: int) -> None:
        self.label, self.directory, self.port = label, directory, port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(directory), "CNNSERVE_MODEL_DIR": str(directory / "models"),
               "CNNSERVE_LOG_LEVEL": "warning", "CNNSERVE_PORT": str(port)}
        self.process = subprocess.Popen([sys.executable, "-m", "service"], cwd=directory, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{label} did not become ready")

    def cpu_seconds(self) -> float:
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def measure(self, name: str, version: str, concurrency: int, seconds: float) -> dict[str, Any]:
        before = self.cpu_seconds()
        result = load(f"{self.url}/predict?model={name}&version={version}", IMAGES[name], concurrency, seconds)
        result["cpu_ms_per_request"] = round((self.cpu_seconds() - before) / max(result["requests"], 1) * 1e3, 3)
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of this project")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--versions", nargs="+", default=["1", "2"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "compare-results.json")
    args = parser.parse_args()
    checkouts = {"before": args.baseline.resolve(), "after": ROOT}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {label: {} for label in checkouts}
    for round_ in range(args.rounds):
        for index, (label, directory) in enumerate(checkouts.items()):
            server = Checkout(label, directory, 8700 + index)
            try:
                for name in IMAGES:
                    for version in args.versions:
                        for c in args.concurrency:
                            point = f"{name} v{version} c={c}"
                            runs[label].setdefault(point, []).append(server.measure(name, version, c, args.seconds))
            finally:
                server.stop()
        print(f"round {round_ + 1} of {args.rounds} done", flush=True)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "seconds": args.seconds,
                              "points": {}}
    print(f"{'point':<26} {'before req/s':>13} {'after req/s':>12} {'before p50/p99 ms':>18} {'after p50/p99 ms':>17} "
          f"{'CPU ms/req before → after':>26}")
    for point in runs["after"]:
        medians = {}
        for label in checkouts:
            results = runs[label][point]
            medians[label] = {key: round(statistics.median(r[key] for r in results), 3)
                              for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "errors")}
        report["points"][point] = medians
        b, a = medians["before"], medians["after"]
        print(f"{point:<26} {b['rps']:>13,.0f} {a['rps']:>12,.0f} {b['p50_ms']:>8.2f}/{b['p99_ms']:<9.2f} "
              f"{a['p50_ms']:>8.2f}/{a['p99_ms']:<8.2f} {b['cpu_ms_per_request']:>12.2f} → "
              f"{a['cpu_ms_per_request']:.2f}")
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
