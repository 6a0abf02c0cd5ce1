"""``python -m bench``: the service against the physical limit, measured in one run, close in time.

For each model: raw ONNX Runtime (in-process, with the service's session settings and with every core's
threads) at batch 1 and at the best batch; the HTTP ceiling (same stack, constant answer); a naive eager-PyTorch
server; and this service at several concurrencies, each from a load generator in its own process over loopback. Raw
ONNX Runtime and the service are measured for each version (float32 v1 and the int8 v2).
Then the service's resident memory after loading, and after a long run. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.load import load, require_wrk
from service.settings import Settings
from service.worker.runtime import session_options

ROOT = Path(__file__).resolve().parents[1]
SERVICE_ENV = {"CNNSERVE_MODEL_DIR": str(ROOT / "models"), "CNNSERVE_LOG_LEVEL": "warning"}
EXAMPLES = {"mnist": ROOT / "examples" / "digit_7.png", "placed": ROOT / "examples" / "placed_3.png"}


def wrk_version(wrk: str) -> str:
    return subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.split(" [")[0]


def example_for(model_dir: Path) -> Path:
    return EXAMPLES[json.loads((model_dir / "manifest.json").read_text())["metrics"]["dataset"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (the service's inference workers)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid] + [p for child in children for p in process_tree(child)]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def raw_onnxruntime(model_dir: Path, settings: Settings, seconds: float) -> dict:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), session_options(settings, heavy=True),
                                   providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    results = {}
    for batch in (1, 2, 4, 8, 16, 32, 64, 128):
        x = np.random.default_rng(0).random((batch, *shape[1:]), np.float32)
        session.run(["logits"], {"input": x})
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run(["logits"], {"input": x})
            runs += 1
        elapsed = time.perf_counter() - started
        results[batch] = {"images_per_s": round(runs * batch / elapsed, 1),
                          "ms_per_run": round(elapsed / runs * 1e3, 3)}
    best = max(results, key=lambda b: results[b]["images_per_s"])
    return {"batch1": results[1], "best_batch": best, "best": results[best], "by_batch": results}


class Server:
    """A uvicorn server in its own process."""

    def __init__(self, app: str, env: dict[str, str], factory: bool = False) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "warning"]
        if factory:
            command.append("--factory")
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, path: str) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server on {self.url} did not start")

    def cpu_seconds(self, workers: bool = True) -> float:
        """User + system CPU time of the server process, all its threads, and of its workers."""
        total = 0
        for pid in process_tree(self.process.pid) if workers else [self.process.pid]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def measure(self, path: str, image: Path, concurrency: int, seconds: float, repeat: int = 1) -> dict:
        """The run with the median requests/s of ``repeat`` load runs (this host's speed drifts by ±10 %
        from one run to the next), plus the CPU time per request of the server process and its workers:
        what a request costs, whatever the load generator and the other core were doing."""
        runs = []
        for _ in range(repeat):
            before, before_server = self.cpu_seconds(), self.cpu_seconds(workers=False)
            result = load(self.url + path, image, concurrency, seconds)
            requests = max(result["requests"], 1)
            result["cpu_ms_per_request"] = round((self.cpu_seconds() - before) / requests * 1e3, 3)
            server_seconds = self.cpu_seconds(workers=False) - before_server
            result["server_process_cpu_ms_per_request"] = round(server_seconds / requests * 1e3, 3)
            runs.append(result)
        return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "resnet_small"])
    parser.add_argument("--versions", nargs="+", default=["1", "2"], help="model versions (1: float32, 2: int8)")
    parser.add_argument("--seconds", type=float, default=5, help="duration of each load run")
    parser.add_argument("--repeat", type=int, default=3, help="load runs per point; the median is reported")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--soak", type=int, default=10_000, help="requests for the memory-growth run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    wrk = require_wrk()

    settings = Settings(model_dir=ROOT / "models")
    all_cores = settings.model_copy(update={"intra_op_threads": len(os.sched_getaffinity(0))})
    report: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                "python": platform.python_version(), "onnxruntime": ort.__version__,
                                "load_generator": wrk_version(wrk)},
                    "settings": {"inference_workers": settings.inference_workers,
                                 "intra_op_threads": settings.intra_op_threads},
                    "models": {}}
    for name in args.models:
        model_dir = ROOT / "models" / name / "1"
        image = example_for(model_dir)
        entry: dict = {"versions": {}}
        ceiling = Server("bench.apps:ceiling", {}, factory=True)
        ceiling.wait("/docs")
        entry["http_ceiling"] = {c: ceiling.measure("/predict", image, c, args.seconds, args.repeat) for c in (1, 16)}
        ceiling.stop()
        naive = Server("bench.apps:naive", {"BENCH_MODEL_DIR": str(model_dir)}, factory=True)
        naive.wait("/docs")
        entry["naive_torch"] = {c: naive.measure("/predict", image, c, args.seconds, args.repeat) for c in (1, 16)}
        naive.stop()
        service = Server("service.app:create_app", SERVICE_ENV, factory=True)
        service.wait("/readyz")
        for version in args.versions:
            version_dir = ROOT / "models" / name / version
            entry["versions"][version] = {
                "precision": json.loads((version_dir / "manifest.json").read_text()).get("precision", "float32"),
                "raw": raw_onnxruntime(version_dir, settings, args.seconds / 4),
                "raw_all_cores": raw_onnxruntime(version_dir, all_cores, args.seconds / 4),
                "service": {c: service.measure(f"/predict?model={name}&version={version}", image, c, args.seconds,
                                               args.repeat) for c in args.concurrency},
            }
        service.stop()
        report["models"][name] = entry

    service = Server("service.app:create_app", SERVICE_ENV, factory=True)
    service.wait("/readyz")
    before = rss_mb(service.process.pid)
    soak_image = example_for(ROOT / "models" / args.models[0] / "1")
    soak = {"requests": 0, "errors": 0}
    while soak["requests"] < args.soak:  # wrk runs for a time, not a count: repeat until the count is reached
        run = service.measure(f"/predict?model={args.models[0]}", soak_image, 16, 5)
        soak = {"requests": soak["requests"] + run["requests"], "errors": soak["errors"] + run["errors"]}
    after = rss_mb(service.process.pid)
    service.stop()
    report["memory"] = {"rss_after_load_mb": round(before, 1), "rss_after_requests_mb": round(after, 1),
                        "requests": soak["requests"], "errors": soak["errors"],
                        "growth_pct": round((after / before - 1) * 100, 2)}
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)


def print_table(report: dict) -> None:
    for name, entry in report["models"].items():
        ceiling = entry["http_ceiling"]
        naive = entry["naive_torch"][16]
        print(f"\n{name}: HTTP ceiling c=16 {ceiling[16]['rps']:.0f} req/s (c=1 p50 {ceiling[1]['p50_ms']:.2f} ms, "
              f"{ceiling[16]['cpu_ms_per_request']:.2f} CPU ms/request); naive torch c=16 {naive['rps']:.0f} req/s "
              f"({naive['cpu_ms_per_request']:.2f} CPU ms/request)")
        for version, v in entry["versions"].items():
            raw_best = max(v["raw"]["best"]["images_per_s"], v["raw_all_cores"]["best"]["images_per_s"])
            limit = min(ceiling[16]["rps"], raw_best)
            for label, raw in (("service threads", v["raw"]), ("all cores", v["raw_all_cores"])):
                print(f"  v{version} {v['precision']}: raw ORT ({label}) batch 1 "
                      f"{raw['batch1']['images_per_s']:.0f} img/s ({raw['batch1']['ms_per_run']:.3f} ms), "
                      f"best batch {raw['best_batch']} {raw['best']['images_per_s']:.0f} img/s")
            print(f"  {'concurrency':>11} {'req/s':>8} {'of limit':>9} {'x naive':>8} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'p99 ms':>8} {'errors':>7} {'CPU ms/req':>10} {'of which server':>15}")
            for c, r in v["service"].items():
                print(f"  {c:>11} {r['rps']:>8.0f} {r['rps'] / limit:>8.0%} {r['rps'] / naive['rps']:>8.1f} "
                      f"{r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7} "
                      f"{r['cpu_ms_per_request']:>10.2f} {r['server_process_cpu_ms_per_request']:>15.2f}")
    m = report["memory"]
    print(f"\nRSS (server process and inference workers) after loading all models {m['rss_after_load_mb']} MB; "
          f"after {m['requests']} requests {m['rss_after_requests_mb']} MB ({m['growth_pct']:+.1f} %), "
          f"errors {m['errors']}")


if __name__ == "__main__":
    main()
