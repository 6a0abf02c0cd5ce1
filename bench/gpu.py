"""``python -m bench.gpu``: the CUDA path, measured in one go on a GPU host (under 8 minutes on 16 cores).

1. Raw ONNX Runtime per batch bucket: CUDA with the service's provider options (plain runs with numpy in
   and out, I/O binding, CUDA graphs; each cuDNN algorithm search; TF32 on), and every CPU core.
2. Parity, CUDA against CPU with default settings: logits, feature maps, head gradients and heatmaps of
   every shipped version.
3. The first request of each bucket size after /readyz, against steady state.
4. The service with providers=cuda (inference_workers 1, 2 and 4) and providers=cpu on the same host, at
   concurrency 1 / 16 / 64 for lenet5 and resnet_small, load from several client processes (bench/loadgen.py).
5. GPU memory per worker process (nvidia-smi).
6. providers=cuda with no visible GPU: how soon /readyz answers 503, and what it says.

Writes JSON (``--out``) and prints markdown tables for docs/PERFORMANCE.md. Without CUDA it runs what the
CPU can (a dry run, which is what CI-less development machines can check), and says so.
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
import numpy as np
import onnxruntime as ort

from bench.loadgen import Target, load, upload
from bench.machine import software
from service.manifest import Manifest
from service.settings import Settings
from service.worker.model import WorkerModel
from service.worker.protocol import Explain, Explained, HeatmapArrays, Upload, Version
from service.worker.runtime import CPU, CUDA, cuda_options, session_options

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
IMAGES = {"lenet5": ROOT / "examples" / "digit_7.png", "resnet_small": ROOT / "examples" / "placed_3.png"}
BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def manifest(name: str, version: str = "1") -> Manifest:
    return Manifest.model_validate_json((MODELS / name / version / "manifest.json").read_text())


def timed(run: Any, seconds: float) -> float:
    """Seconds per call of ``run()``, after three warm-up calls."""
    for _ in range(3):
        run()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        calls += 1
    return (time.perf_counter() - started) / calls


def raw(name: str, cuda: bool, seconds: float) -> dict[str, Any]:
    """Images per second at each bucket, in each way of running."""
    path = str(MODELS / name / "1" / "model.onnx")
    shape = manifest(name).input.shape[1:]
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {}
    inputs = {b: np.random.default_rng(b).random((b, *shape), np.float32) for b in BUCKETS}
    cpu_options = session_options(Settings(intra_op_threads=cores), heavy=True)
    ways: dict[str, Any] = {"cpu_all_cores": lambda: ort.InferenceSession(path, cpu_options, providers=[CPU])}
    if cuda:
        options = session_options(Settings(), heavy=True)

        def on_cuda(**overrides: str) -> Any:
            return lambda: ort.InferenceSession(path, options, providers=[CUDA],
                                                provider_options=[{**cuda_options(Settings()), **overrides}])
        ways.update({"cuda": on_cuda(), "cuda_heuristic": on_cuda(cudnn_conv_algo_search="HEURISTIC"),
                     "cuda_exhaustive": on_cuda(cudnn_conv_algo_search="EXHAUSTIVE"),
                     "cuda_tf32": on_cuda(use_tf32="1")})
    for label, open_session in ways.items():
        results[label] = attempt(lambda o=open_session: plain_runs(o(), inputs, seconds))
    if cuda:
        results["cuda_io_binding"] = attempt(lambda: bound_runs(ways["cuda"](), inputs, seconds))
        results["cuda_graph"] = attempt(lambda: {b: bound_runs(on_cuda(enable_cuda_graph="1")(), {b: x}, seconds)[b]
                                                 for b, x in inputs.items()})
    return results


def attempt(step: Any) -> Any:
    """A measurement, or why it could not be taken: one failing way must not end the whole run."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}


def plain_runs(session: ort.InferenceSession, inputs: dict[int, np.ndarray], seconds: float) -> dict[int, float]:
    """numpy in, numpy out: what the service does."""
    return {b: b / timed(lambda x=x: session.run(None, {"input": x}), seconds) for b, x in inputs.items()}


def bound_runs(session: ort.InferenceSession, inputs: dict[int, np.ndarray], seconds: float) -> dict[int, float]:
    """Input and outputs bound to GPU memory (what CUDA graphs need too): no host copies in the loop."""
    out = {}
    for b, x in inputs.items():
        probe = session.run(None, {"input": x})
        binding = session.io_binding()
        binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name, like in zip(("logits", "features"), probe, strict=True):
            on_device = ort.OrtValue.ortvalue_from_shape_and_type(like.shape, np.float32, "cuda", 0)
            binding.bind_ortvalue_output(name, on_device)
        out[b] = b / timed(lambda bd=binding: session.run_with_iobinding(bd), seconds)
    return out


def parity(cuda: bool) -> dict[str, Any]:
    """Largest |CUDA − CPU| per version, default settings, on random inputs and the example images."""
    if not cuda:
        return {"skipped": "no CUDA provider in this ONNX Runtime"}
    out: dict[str, Any] = {}
    for path in sorted(MODELS.glob("*/*/manifest.json")):
        m = Manifest.model_validate_json(path.read_text())
        version = Version(path.parent, m)
        on_gpu = WorkerModel.load(version, Settings(providers="cuda"), heavy=False)
        on_cpu = WorkerModel.load(version, Settings(providers="cpu"), heavy=False)
        x = np.random.default_rng(0).random((16, *m.input.shape[1:]), np.float32)
        (gl, gf), (cl, cf) = on_gpu.sessions.classify(x), on_cpu.sessions.classify(x)
        seed = np.eye(len(m.labels), dtype=np.float32)[np.arange(16) % len(m.labels)]
        grad = np.abs(on_gpu.sessions.head_gradient(cf, seed) - on_cpu.sessions.head_gradient(cf, seed)).max()
        heat = 0.0
        image = IMAGES["lenet5" if m.preprocessing.kind == "mnist" else "resnet_small"].read_bytes()
        body, content_type = upload(image)
        for method in on_cpu_methods(on_cpu):
            job = Explain(version_key(m), Upload(body, content_type), None, method, "json", 0.5, light_only=False)
            a, b = on_gpu.explain(job), on_cpu.explain(job)
            assert isinstance(a, Explained) and isinstance(b, Explained)
            assert isinstance(a.heatmap, HeatmapArrays) and isinstance(b.heatmap, HeatmapArrays)
            heat = max(heat, float(np.abs(a.heatmap.feature_map - b.heatmap.feature_map).max()),
                       float(np.abs(a.heatmap.input_map - b.heatmap.input_map).max()))
        out[f"{m.name}/{m.version}"] = {"providers": on_gpu.sessions.providers, "logits": float(np.abs(gl - cl).max()),
                                        "features": float(np.abs(gf - cf).max() / max(float(np.abs(cf).max()), 1e-12)),
                                        "gradient": float(grad), "heatmap": heat}
    return out


def on_cpu_methods(model: WorkerModel) -> list[str]:
    from service.worker.explain import methods_for

    return methods_for(model.manifest.heatmaps)


def version_key(m: Manifest) -> tuple[str, str]:
    return m.name, m.version


class Service:
    """The service in its own process (``python -m service``), with environment overrides."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "CNNSERVE_MODEL_DIR": str(MODELS), "CNNSERVE_LOG_LEVEL": "warning",
                       "CNNSERVE_PORT": str(port), **env}
        self.process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=environment)

    def readiness(self, timeout: float) -> tuple[int, dict[str, Any], float]:
        """The first answer of /readyz that is 200 or names errors, and when it came."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=5)
                if answer.status_code == 200 or answer.json().get("errors"):
                    return answer.status_code, answer.json(), time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        return 0, {}, time.monotonic() - started

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def gpu_memory(pids: list[int]) -> dict[int, int]:
    """MiB of GPU memory per process, as nvidia-smi reports it."""
    try:
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        listing = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    used = {int(p): int(m) for p, m in (line.split(",") for line in listing.strip().splitlines() if "," in line)}
    return {pid: used[pid] for pid in pids if pid in used}


def first_requests(url: str, name: str) -> dict[int, dict[str, float]]:
    """Per bucket: the first V2 request of that batch size after /readyz, and the median of ten after it."""
    m = manifest(name)
    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for rows in (1, 2, 4, 8, 16, 32):
            x = np.random.rand(rows, *m.input.shape[1:]).astype(np.float32)
            header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                             "parameters": {"binary_data_size": x.nbytes}}],
                                 "outputs": [{"name": "logits"}]}).encode()
            request = {"content": header + x.tobytes(),
                       "headers": {"Inference-Header-Content-Length": str(len(header))}}
            times = []
            for _ in range(11):
                started = time.perf_counter()
                assert client.post(f"/v2/models/{name}/infer", **request).status_code == 200
                times.append(time.perf_counter() - started)
            steady = statistics.median(times[1:])
            out[rows] = {"first_ms": round(times[0] * 1e3, 3), "steady_ms": round(steady * 1e3, 3),
                         "ratio": round(times[0] / steady, 2)}
    return out


def serve_and_load(label: str, env: dict[str, str], port: int, seconds: float, cuda: bool) -> dict[str, Any]:
    service = Service(env, port)
    try:
        status, body, took = service.readiness(300)
        result: dict[str, Any] = {"env": env, "ready_status": status, "ready_s": round(took, 2),
                                  "errors": body.get("errors")}
        if status != 200:
            return result
        result["gpu_memory_mib"] = gpu_memory(service.workers()) if cuda else {}
        if env.get("CNNSERVE_PROVIDERS") == "cuda" and env.get("CNNSERVE_INFERENCE_WORKERS") == "1":
            result["first_requests"] = {name: first_requests(service.url, name) for name in IMAGES}
        result["load"] = {}
        for name, image in IMAGES.items():
            target = Target.post(f"{service.url}/predict?model={name}", *upload(image.read_bytes()))
            result["load"][name] = {c: load(target, c, seconds, processes=min(c, 8)) for c in (1, 16, 64)}
            print(f"  {label} {name}: " + ", ".join(f"c={c} {r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} ms"
                                                    for c, r in result["load"][name].items()), flush=True)
        return result
    finally:
        service.stop()


def no_gpu(port: int) -> dict[str, Any]:
    service = Service({"CNNSERVE_PROVIDERS": "cuda", "CUDA_VISIBLE_DEVICES": ""}, port)
    try:
        status, body, took = service.readiness(120)
        return {"status": status, "seconds": round(took, 2), "errors": (body.get("errors") or [])[:2]}
    finally:
        service.stop()


def markdown(report: dict[str, Any]) -> str:
    lines = [f"GPU: {report['machine']['gpu']}; ONNX Runtime {report['machine']['onnxruntime']} "
             f"({', '.join(report['machine']['providers'])}); {report['machine']['cores']} cores; {report['date']}", ""]
    for name, ways in report["raw"].items():
        lines += [f"Raw ONNX Runtime, {name}, images/s per batch size:", "",
                  "| way | " + " | ".join(str(b) for b in BUCKETS) + " |", "| --- |" + " --- |" * len(BUCKETS)]
        for way, by in ways.items():
            cells = [by["error"]] if "error" in by else [f"{v:,.0f}" for v in by.values()]
            lines.append(f"| {way} | " + " | ".join(cells) + " |")
        lines.append("")
    if isinstance(report["parity"], dict) and "skipped" not in report["parity"]:
        worst = {k: max(v[k] for v in report["parity"].values()) for k in ("logits", "features", "gradient", "heatmap")}
        lines += [f"Parity, CUDA vs CPU, worst over {len(report['parity'])} versions: " +
                  ", ".join(f"{k} {v:.2e}" for k, v in worst.items()), ""]
    lines += ["| service | model | c=1 req/s (p50 ms) | c=16 req/s (p50 ms) | c=64 req/s (p50 ms) "
              "| GPU MiB per worker |", "| --- | --- | --- | --- | --- | --- |"]
    for label, run in report["service"].items():
        for name, by_c in run.get("load", {}).items():
            cells = " | ".join(f"{r['rps']:,.0f} ({r['p50_ms']:.2f})" for r in by_c.values())
            memory = ", ".join(map(str, run.get("gpu_memory_mib", {}).values())) or "-"
            lines.append(f"| {label} | {name} | {cells} | {memory} |")
    for label, run in report["service"].items():
        for name, per_bucket in run.get("first_requests", {}).items():
            buckets = ", ".join(f"{b}: {v['first_ms']} ms vs {v['steady_ms']} ({v['ratio']}×)"
                                for b, v in per_bucket.items())
            lines.append(f"\nFirst request per bucket after ready, {label} {name}: {buckets}")
    lines.append(f"\nproviders=cuda, no visible GPU: /readyz {report['no_gpu'].get('status')} after "
                 f"{report['no_gpu'].get('seconds')} s: {report['no_gpu'].get('errors')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6, help="each load point")
    parser.add_argument("--raw-seconds", type=float, default=0.3, help="each raw ONNX Runtime point")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="inference_workers on CUDA")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu-results.json")
    args = parser.parse_args()
    cuda = CUDA in ort.get_available_providers()
    started = time.monotonic()
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip() if cuda else "none (dry run: CPU only)"
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": {
        "gpu": gpu, "cores": os.cpu_count(), **software(), "providers": ort.get_available_providers()}}
    print(f"GPU: {gpu}; ONNX Runtime {ort.__version__}", flush=True)
    report["raw"] = {name: raw(name, cuda, args.raw_seconds) for name in IMAGES}
    print(f"raw done ({time.monotonic() - started:.0f} s)", flush=True)
    report["parity"] = attempt(lambda: parity(cuda))
    print(f"parity done ({time.monotonic() - started:.0f} s)", flush=True)
    cores = os.cpu_count() or 2
    configs = {f"cpu, 1 worker × {cores - 1} threads": {"CNNSERVE_PROVIDERS": "cpu"},
               f"cpu, 4 workers × {max(1, (cores - 1) // 4)} threads": {"CNNSERVE_PROVIDERS": "cpu",
                                                                      "CNNSERVE_INFERENCE_WORKERS": "4"}}
    if cuda:
        for w in args.workers:
            label = f"cuda, {w} worker{'s' * (w > 1)}"
            configs[label] = {"CNNSERVE_PROVIDERS": "cuda", "CNNSERVE_INFERENCE_WORKERS": str(w)}
    report["service"] = {}
    for index, (label, env) in enumerate(configs.items()):
        port = 8300 + index
        report["service"][label] = attempt(lambda e=env, p=port, lb=label: serve_and_load(lb, e, p, args.seconds, cuda))
        print(f"{label} done ({time.monotonic() - started:.0f} s)", flush=True)
    report["no_gpu"] = attempt(lambda: no_gpu(8399))
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(markdown(report))
    print(f"\n{report['seconds']} s in all; JSON in {args.out}")


if __name__ == "__main__":
    main()
