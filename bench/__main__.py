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
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.load import require_wrk
from bench.machine import software
from bench.servers import ROOT, Server, rss_mb
from service.settings import Settings
from service.worker.runtime import session_options

SERVICE_ENV = {"CNNSERVE_MODEL_DIR": str(ROOT / "models"), "CNNSERVE_LOG_LEVEL": "warning"}
EXAMPLES = {"mnist": ROOT / "examples" / "digit_7.png", "placed": ROOT / "examples" / "placed_3.png"}


def wrk_version(wrk: str) -> str:
    return subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.split(" [")[0]


def example_for(model_dir: Path) -> Path:
    return EXAMPLES[json.loads((model_dir / "manifest.json").read_text())["metrics"]["dataset"]]


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
    # Raw ONNX Runtime both ways a worker may run a version (runtime.Sessions.load picks one per version).
    one_thread = settings.model_copy(update={"intra_op_threads": 1})
    all_cores = settings.model_copy(update={"intra_op_threads": len(os.sched_getaffinity(0))})
    report: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                **software(), "load_generator": wrk_version(wrk)},
                    "settings": {"inference_workers": settings.inference_workers,
                                 "intra_op_threads": settings.intra_op_threads},
                    "models": {}}
    for name in args.models:
        model_dir = ROOT / "models" / name / "1"
        image = example_for(model_dir)
        entry: dict = {"versions": {}}
        ceiling = Server.uvicorn("bench.apps:ceiling", {}, factory=True)
        ceiling.wait("/docs")
        entry["http_ceiling"] = {c: ceiling.measure("/predict", image, c, args.seconds, args.repeat) for c in (1, 16)}
        ceiling.stop()
        naive = Server.uvicorn("bench.apps:naive", {"BENCH_MODEL_DIR": str(model_dir)}, factory=True)
        naive.wait("/docs")
        entry["naive_torch"] = {c: naive.measure("/predict", image, c, args.seconds, args.repeat) for c in (1, 16)}
        naive.stop()
        service = Server.uvicorn("service.app:create_app", SERVICE_ENV, factory=True)
        service.wait("/readyz")
        for version in args.versions:
            version_dir = ROOT / "models" / name / version
            entry["versions"][version] = {
                "precision": json.loads((version_dir / "manifest.json").read_text()).get("precision", "float32"),
                "raw": raw_onnxruntime(version_dir, one_thread, args.seconds / 4),
                "raw_all_cores": raw_onnxruntime(version_dir, all_cores, args.seconds / 4),
                "service": {c: service.measure(f"/predict?model={name}&version={version}", image, c, args.seconds,
                                               args.repeat) for c in args.concurrency},
            }
        service.stop()
        report["models"][name] = entry

    service = Server.uvicorn("service.app:create_app", SERVICE_ENV, factory=True)
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
            for label, raw in (("one thread", v["raw"]), ("all cores", v["raw_all_cores"])):
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
