"""``python -m bench.hardening``: the service under attack and accident, each target measured as the
production-hardening issue states it (a few minutes on 2 cores; wrk and Python clients as load).

0. Heavy heatmaps: four 6000×6000 overlays at once while ``/healthz`` is polled (its latency, and how much
   the server process grows), and how many bytes a JSON heatmap of a 12 MP upload sends back.
1. Worker kills: 10 ``kill -9`` of the ordinary worker during 60 s of load at concurrency 8 (the success
   rate, hangs, and how soon ``/readyz`` is back after each); a kill while idle (repaired without a request).
2. The worst request: normal clients' throughput while one client loops each candidate for the most costly
   request, against their throughput alone.
3. A soak of 20,000 requests with varied images up to 36 MP: peak resident memory of all the processes.
4. 1,007 stalled connections under ``ulimit -n 1024``: how soon a normal client is answered.
5. SIGTERM with a half-sent upload open: time to exit, and whether any worker outlives the server.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.load import load as wrk_load
from bench.loadgen import upload

ROOT = Path(__file__).resolve().parents[1]
DIGIT = ROOT / "examples" / "digit_7.png"


def png(width: int, height: int, mode: str = "L", noise: bool = False) -> bytes:
    buffer = io.BytesIO()
    if noise:
        channels = 3 if mode == "RGB" else 1
        pixels = np.random.default_rng(width).integers(0, 255, (height, width, channels), dtype=np.uint8).squeeze()
        Image.fromarray(pixels).save(buffer, "PNG")
    else:
        Image.new(mode, (width, height), 255).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(width: int, height: int, quality: int = 95, grain: float = 255) -> bytes:
    """A JPEG of a gradient with noise of up to ``grain`` levels (255: pure noise, the largest file)."""
    buffer = io.BytesIO()
    ramp = np.linspace(0, 255 - grain, width, dtype=np.float32)[None, :, None]
    noise = np.random.default_rng(height).random((height, width, 3), np.float32) * grain
    Image.fromarray((ramp + noise).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


class Service:
    def __init__(self, port: int, env: dict[str, str] | None = None, ulimit: int | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "service"]
        if ulimit:
            command = ["bash", "-c", f"ulimit -n {ulimit} && exec {sys.executable} -m service"]
        environment = {**os.environ, "CNNSERVE_PORT": str(port), "CNNSERVE_LOG_LEVEL": "error",
                       "CNNSERVE_MODEL_DIR": str(ROOT / "models"), **(env or {})}
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.DEVNULL)
        self.wait_ready(120)

    def wait_ready(self, seconds: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise RuntimeError("not ready")

    def workers(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()]

    def ordinary_worker(self) -> int:
        """The ordinary worker (the heavy one runs at a lower priority: niceness above 0)."""
        def niceness(pid: int) -> int:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

        return next(pid for pid in self.workers() if niceness(pid) == 0)

    def rss_mb(self) -> float:
        total = 0
        for pid in [self.process.pid, *self.workers()]:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def overlays(port: int) -> dict[str, Any]:
    from service.worker.protocol import Explain, Upload

    service = Service(port)
    try:
        big = png(6000, 6000, "RGB")
        server_before = rss_of(service.process.pid)
        latencies, peak, answers = [], server_before, Counter[int]()

        def heavy() -> None:
            answer = httpx.post(f"{service.url}/models/cam_net/cam?format=overlay", files={"file": ("big.png", big)},
                                timeout=300)
            answers[answer.status_code] += 1

        threads = [threading.Thread(target=heavy) for _ in range(4)]
        for thread in threads:
            thread.start()
        with httpx.Client(base_url=service.url, timeout=60) as http:
            while any(thread.is_alive() for thread in threads):
                started = time.perf_counter()
                http.get("/healthz")
                latencies.append((time.perf_counter() - started) * 1e3)
                peak = max(peak, rss_of(service.process.pid))
                time.sleep(0.005)
        latencies.sort()
        # What crosses between the processes for a JSON heatmap of a 12 MP photo: the job (the upload itself)
        # and the reply, pickled as the worker protocol sends them.
        photo = jpeg(4000, 3000, 85, 40)
        body, content_type = upload(photo)
        job = Explain(("cam_net", "1"), Upload(body, content_type), None, "cam", "json", 0.5, light_only=False)
        answer = httpx.post(f"{service.url}/models/cam_net/cam?format=json", files={"file": ("p.jpg", photo)},
                            timeout=120)
        reply_estimate = len(answer.content)
        return {"overlays": dict(answers), "healthz_polls": len(latencies),
                "healthz_p50_ms": round(latencies[len(latencies) // 2], 2),
                "healthz_p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
                "server_rss_growth_mb": round(peak - server_before, 1),
                "json_heatmap_of_12mp": {"upload_bytes": len(photo), "job_bytes": len(pickle.dumps(job)),
                                         "reply_bytes": reply_bytes(), "http_answer_bytes": reply_estimate}}
    finally:
        service.stop()


def reply_bytes() -> int:
    """The pickled worker reply of a JSON heatmap of a 12 MP photo, computed the way a worker does."""
    from service.manifest import Manifest
    from service.settings import Settings
    from service.worker.model import WorkerModel
    from service.worker.protocol import Explain, Upload, Version

    directory = ROOT / "models" / "cam_net" / "1"
    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    model = WorkerModel.load(Version(directory, manifest), Settings(), heavy=True)
    body, content_type = upload(jpeg(4000, 3000, 85, 40))
    reply = model.explain(Explain(("cam_net", "1"), Upload(body, content_type), None, "cam", "json", 0.5, False))
    return len(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


def rss_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_kills(port: int, kills: int, seconds: float) -> dict[str, Any]:
    service = Service(port)
    try:
        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=service.url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        answer = http.post("/predict?model=lenet5", files={"file": ("7.png", DIGIT.read_bytes())})
                        statuses[answer.status_code] += 1
                    except httpx.TimeoutException:
                        statuses[-1] += 1  # a hang: no answer in 10 s
                    except httpx.TransportError:
                        statuses[-2] += 1

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        recoveries = []
        for _ in range(kills):
            time.sleep(seconds / (kills + 1))
            ordinary = service.ordinary_worker()
            os.kill(ordinary, signal.SIGKILL)
            killed = time.monotonic()
            while ordinary in service.workers() or httpx.get(f"{service.url}/readyz", timeout=2).status_code != 200:
                time.sleep(0.01)
            recoveries.append(round(time.monotonic() - killed, 3))
        time.sleep(seconds / (kills + 1))
        stop.set()
        for thread in threads:
            thread.join()
        idle = service.ordinary_worker()
        time.sleep(1)
        os.kill(idle, signal.SIGKILL)
        killed = time.monotonic()
        while idle in service.workers() or httpx.get(f"{service.url}/readyz", timeout=2).status_code != 200:
            time.sleep(0.01)
        idle_repair = time.monotonic() - killed  # no request in between: only the probe
        total = statuses.total()
        return {"requests": total, "ok": statuses[200], "success_rate": round(statuses[200] / total, 5),
                "statuses": dict(statuses), "hangs": statuses[-1], "ready_again_s": recoveries,
                "idle_kill_repaired_s": round(idle_repair, 3)}
    finally:
        service.stop()


def worst_request(port: int, seconds: float) -> dict[str, Any]:
    """Normal clients (wrk, concurrency 8, lenet5 on a real digit) alone, then beside one client looping a
    candidate for the costliest request."""
    big, photo = png(6000, 6000), jpeg(3000, 2500)
    noisy = png(2000, 1500, "RGB", noise=True)
    tensor = np.random.default_rng(0).random((32, 3, 64, 64), np.float32)
    v2_json = json.dumps({"inputs": [{"name": "input", "shape": list(tensor.shape), "datatype": "FP32",
                                      "data": tensor.reshape(-1).tolist()}]}).encode()
    candidates: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "36 MP PNG overlay heatmap (34 KB)": ("/models/cam_net/cam?format=overlay", *form(big)),
        "36 MP PNG classify": ("/predict?model=resnet_small", *form(big)),
        "7.5 MP noisy JPEG (max-quality, ~9 MB) classify": ("/predict?model=resnet_small", *form(photo)),
        "3 MP noise PNG Grad-CAM png (vgg_small)": ("/models/vgg_small/cam?format=png&method=gradcam", *form(noisy)),
        "V2 JSON batch of 32 × 3×64×64 (~2.5 MB JSON)": ("/v2/models/resnet_small/infer", v2_json,
                                                        {"content-type": "application/json"}),
    }
    service = Service(port)
    try:
        baseline = wrk_load(f"{service.url}/predict?model=lenet5", DIGIT, 8, seconds)
        results: dict[str, Any] = {"baseline_rps": baseline["rps"]}
        for label, request in candidates.items():
            stop, attacks = threading.Event(), Counter[int]()
            thread = threading.Thread(target=attack, args=(service.url, request, stop, attacks))
            thread.start()
            time.sleep(0.5)
            under = wrk_load(f"{service.url}/predict?model=lenet5", DIGIT, 8, seconds)
            stop.set()
            thread.join()
            results[label] = {"rps": under["rps"], "share_of_baseline": round(under["rps"] / baseline["rps"], 3),
                              "normal_errors": under["errors"], "attack_statuses": dict(attacks)}
            print(f"  {label}: normal clients {under['rps']:.0f} req/s = {under['rps'] / baseline['rps']:.0%} of "
                  f"{baseline['rps']:.0f}; attacker answered {dict(attacks)}", flush=True)
        return results
    finally:
        service.stop()


def attack(url: str, request: tuple[str, bytes, dict[str, str]], stop: threading.Event, statuses: Counter[int]) -> None:
    """One client sending the same request, each as soon as the last is answered, until told to stop."""
    path, body, headers = request
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            statuses[http.post(path, content=body, headers=headers).status_code] += 1


def form(image: bytes) -> tuple[bytes, dict[str, str]]:
    body, content_type = upload(image)
    return body, {"content-type": content_type}


def soak(port: int, requests: int) -> dict[str, Any]:
    """Varied images (small digits to 36 MP), three client threads, the service's RSS sampled throughout."""
    images = [DIGIT.read_bytes(), (ROOT / "examples" / "placed_3.png").read_bytes(), jpeg(1600, 1200, 85, 40),
              png(4000, 3000), png(6000, 6000), jpeg(6000, 6000, 85, 40), png(1024, 768, "RGB", noise=True)]
    paths = ["/predict?model=lenet5", "/predict?model=resnet_small", "/models/cam_net/cam?format=overlay",
             "/predict?model=vgg_small&version=2", "/models/lenet5/cam?format=json"]
    service = Service(port)
    try:
        peak, sent, statuses = service.rss_mb(), Counter[int](), Counter()
        lock = threading.Lock()
        done = threading.Event()

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with httpx.Client(base_url=service.url, timeout=120) as http:
                while not done.is_set():
                    with lock:
                        if sent["n"] >= requests:
                            return
                        sent["n"] += 1
                    small = rng.random() < 0.975  # mostly ordinary uploads, one in forty a large one
                    image = images[rng.integers(0, 2)] if small else images[rng.integers(2, len(images))]
                    path = paths[rng.integers(0, len(paths))]
                    statuses[http.post(path, files={"file": ("i", image)}).status_code] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, service.rss_mb())
            time.sleep(0.05)
        return {"requests": statuses.total(), "statuses": dict(statuses), "peak_rss_mb": round(peak, 1),
                "seconds": round(time.monotonic() - started, 1)}
    finally:
        service.stop()


def stalled_connections(port: int, stalled: int = 1007, ulimit: int = 1024) -> dict[str, Any]:
    service = Service(port, ulimit=ulimit)
    sockets = []
    try:
        for _ in range(stalled):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never another byte
                sockets.append(sock)
            except OSError:
                break
        started = time.monotonic()
        answer = None
        while time.monotonic() - started < 30:
            try:
                digit = {"file": ("7.png", DIGIT.read_bytes())}
                answer = httpx.post(f"{service.url}/predict?model=lenet5", files=digit, timeout=10)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
        return {"stalled_opened": len(sockets), "answered_s": round(time.monotonic() - started, 3),
                "status": answer.status_code if answer is not None else None}
    finally:
        for sock in sockets:
            sock.close()
        service.stop()


def sigterm(port: int, grace: int = 10) -> dict[str, Any]:
    service = Service(port, env={"CNNSERVE_SHUTDOWN_GRACE_S": str(grace)})
    workers = service.workers()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n--b\r\n")
    time.sleep(0.5)
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    service.process.wait(60)
    took = time.monotonic() - started
    time.sleep(0.2)
    return {"grace_s": grace, "exit_s": round(took, 3),
            "orphaned_workers": [pid for pid in workers if Path(f"/proc/{pid}").exists()]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.hardening", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=["overlays", "kills", "worst", "soak", "stalled", "sigterm"])
    parser.add_argument("--kill-seconds", type=float, default=60)
    parser.add_argument("--worst-seconds", type=float, default=8)
    parser.add_argument("--soak", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "hardening-results.json")
    args = parser.parse_args()
    steps = {"overlays": lambda: overlays(8500),
             "kills": lambda: worker_kills(8501, 10, args.kill_seconds),
             "worst": lambda: worst_request(8502, args.worst_seconds),
             "soak": lambda: soak(8503, args.soak),
             "stalled": lambda: stalled_connections(8504),
             "sigterm": lambda: sigterm(8505)}
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}
    for name in args.only or steps:
        print(f"{name} …", flush=True)
        report[name] = steps[name]()
        print(json.dumps(report[name], indent=1, default=str), flush=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
