"""``python -m bench.peers`` (``make bench-peers``): cnn-serve against mosec, TorchServe, PyTriton, BentoML and
LitServe on this machine, and against the bare stack.

Each peer runs from its own virtual environment under ``.bench-peers/`` (made here from its own package on
first use), with the smallest idiomatic handler for the same work (bench/peers/work.py) and its own batching
on, taking the image in its own idiomatic encoding. The order is interleaved — cnn-serve, every peer,
cnn-serve again — so drift on a shared machine shows as the gap between the two cnn-serve rounds; last, cnn-serve
taking the image as the body (``cnn-serve-raw``, mosec's and TorchServe's encoding). Every server's answer is
checked equal to cnn-serve's before it is timed. For each model and server: wrk at each concurrency (req/s,
p50/p99, errors), the CPU time per request of the server's processes, how busy the cores were; then each front
end's constant-answer ceiling, and the bare stack (bench.apps:bare). Each peer's handler splits its runs over
as many ONNX Runtime threads as cnn-serve's worker chose for the version (timed here the same way, first).
It ends with the tables, issue 16's targets judged (bench/peers/targets.py) and a chart beside the results
(bench/peers/plot.py); ``--summary RESULTS [--plot PNG]`` does the same for an earlier run, measuring nothing.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import onnxruntime as ort

from bench.load import require_wrk
from bench.machine import INTERPRETER, software
from bench.peers.plot import save as save_chart
from bench.peers.targets import best_peer, judge, render
from bench.servers import ROOT, Server, free_port
from service.manifest import Manifest
from service.settings import Settings
from service.worker.runtime import Sessions

ENVS = ROOT / ".bench-peers"
MODELS = ROOT / "models"
EXAMPLES = {"mnist": ROOT / "examples" / "digit_7.png", "placed": ROOT / "examples" / "placed_3.png"}
# What every peer's environment has beside its own package: the handler's work (bench/peers/work.py).
COMMON = [f"onnxruntime=={ort.__version__}", "pillow", "pydantic>=2"]
SERVICE_ENV = {"CNNSERVE_LOG_LEVEL": "warning"}


@dataclass(frozen=True)
class Peer:
    packages: list[str]
    command: list[str]  # {python}, {bin}, {port}, {store} are filled in
    path: str
    encoding: str  # how the image travels: multipart, raw, json-base64, v2-binary
    ready_s: float = 120
    versions: list[str] = field(default_factory=list)  # distributions whose versions the report records


PEERS: dict[str, Peer] = {
    "mosec": Peer(["mosec==0.9.8"], ["{python}", "-m", "bench.peers.mosec_app", "--address", "127.0.0.1",
                                     "--port", "{port}", "--log-level", "error"], "/inference", "raw",
                  versions=["mosec"]),
    "torchserve": Peer(["torchserve==0.12.0", "torch-model-archiver==0.12.0", "torch==2.13.0", "PyYAML"],
                       ["{bin}/torchserve", "--start", "--foreground", "--ncs", "--disable-token-auth",
                        "--model-store", "{store}", "--ts-config", "{store}/config.properties", "--models",
                        "classify=classify"], "/predictions/classify", "raw", ready_s=180, versions=["torchserve"]),
    "pytriton": Peer(["nvidia-pytriton==0.7.0", "numpy<2"], ["{python}", "-m", "bench.peers.pytriton_app"],
                     "/v2/models/classify/infer", "v2-binary", versions=["nvidia-pytriton"]),
    "bentoml": Peer(["bentoml==1.4.40"], ["{bin}/bentoml", "serve", "bench.peers.bentoml_app:Classify", "--host",
                                          "127.0.0.1", "--port", "{port}"], "/predict", "multipart-images",
                    versions=["bentoml"]),
    "litserve": Peer(["litserve==0.2.19"], ["{python}", "-m", "bench.peers.litserve_app"], "/predict", "json-base64",
                     versions=["litserve"]),
}


def environment(name: str, peer: Peer) -> Path:
    """The peer's virtual environment, made from its own packages on first use or on another interpreter (every
    server in a run is measured on the same one)."""
    venv = ENVS / name
    marker = venv / ".installed"
    wanted = " ".join([INTERPRETER, *peer.packages, *COMMON])
    if not marker.exists() or marker.read_text() != wanted:
        print(f"setting up {name} in {venv} ({wanted}) …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *peer.packages, *COMMON], check=True)
        marker.write_text(wanted)
    return venv


def installed_version(venv: Path, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True).stdout.strip()


def torchserve_store(model_dir: Path, store: Path) -> None:
    """A TorchServe model store holding the handler, unarchived, and its config: one worker, batching on."""
    (store / "classify" / "MAR-INF").mkdir(parents=True)
    shutil.copy(ROOT / "bench" / "peers" / "torchserve_handler.py", store / "classify" / "handler.py")
    (store / "classify" / "MAR-INF" / "MANIFEST.json").write_text(json.dumps({
        "runtime": "python", "model": {"modelName": "classify", "handler": "handler.py:handle", "modelVersion": "1.0"},
        "archiverVersion": "0.12.0"}))


def torchserve_config(store: Path, port: int) -> None:
    models = {"classify": {"1.0": {"defaultVersion": True, "marName": "classify", "minWorkers": 1, "maxWorkers": 1,
                                   "batchSize": 16, "maxBatchDelay": 1, "responseTimeout": 120}}}
    (store / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{port}", f"management_address=http://127.0.0.1:{port + 1}",
        f"metrics_address=http://127.0.0.1:{port + 2}", "disable_token_authorization=true",
        "default_workers_per_model=1", "install_py_dep_per_model=false", "disable_system_metrics=true",
        f"models={json.dumps(models)}", ""]))


def encoded(encoding: str, image: bytes, directory: Path) -> dict[str, str] | None:
    """The wrk body (post_image.lua) for an image encoding; None: the multipart upload cnn-serve takes."""
    if encoding == "multipart":
        return None
    if encoding == "multipart-images":  # BentoML names the form field after the API's parameter
        boundary = "cnnservebenchboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"image.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
        content_type, header = f"multipart/form-data; boundary={boundary}", None
    elif encoding == "raw":
        body, content_type, header = image, "application/octet-stream", None
    elif encoding == "json-base64":
        body, content_type, header = json.dumps({"image": base64.b64encode(image).decode()}).encode(), \
            "application/json", None
    elif encoding == "v2-binary":  # Triton's binary-data extension: a JSON header, then the BYTES tensor
        request = json.dumps({"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                                          "parameters": {"binary_data_size": len(image) + 4}}],
                              "outputs": [{"name": "answer", "parameters": {"binary_data": False}}]}).encode()
        body = request + len(image).to_bytes(4, "little") + image
        content_type, header = "application/octet-stream", f"Inference-Header-Content-Length: {len(request)}"
    else:
        raise ValueError(encoding)
    path = directory / f"body-{encoding}"
    path.write_bytes(body)
    return {"BENCH_BODY": str(path), "BENCH_CONTENT_TYPE": content_type, **({"BENCH_HEADER": header} if header else {})}


def request(url: str, body: dict[str, str] | None, image: Path) -> httpx.Response:
    """One request as wrk will send it."""
    if body is None:
        return httpx.post(url, files={"file": ("image.png", image.read_bytes(), "image/png")}, timeout=30)
    headers = {"Content-Type": body["BENCH_CONTENT_TYPE"]}
    if "BENCH_HEADER" in body:
        name, value = body["BENCH_HEADER"].split(": ", 1)
        headers[name] = value
    return httpx.post(url, content=Path(body["BENCH_BODY"]).read_bytes(), headers=headers, timeout=30)


def top5(response: httpx.Response) -> list[tuple[str, float]]:
    """The answer's top 5 (label, probability), whatever envelope the server put it in."""
    answer = response.json()
    if "model" in answer and answer.get("model") == "constant":
        return []
    if "outputs" in answer:  # Triton: the BYTES output holds the handler's JSON
        answer = json.loads(answer["outputs"][0]["data"][0])
    if isinstance(answer, list):
        answer = answer[0]
    return [(p["label"], round(p["probability"], 5)) for p in answer["predictions"][:5]]


def wait_answering(server: Server, path: str, body: dict[str, str] | None, image: Path, seconds: float) -> list:
    deadline, last = time.monotonic() + seconds, "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.url} exited with {server.process.returncode}")
        try:
            response = request(server.url + path, body, image)
            if response.status_code == 200:
                return top5(response)
            last = f"{response.status_code} {response.text[:200]}"
        except (httpx.TransportError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise RuntimeError(f"{server.url}{path} did not answer in {seconds:.0f} s (last: {last})")


def measure(server: Server, path: str, image: Path, body: dict[str, str] | None, args: argparse.Namespace,
            concurrencies: list[int]) -> dict[str, dict]:
    results = {}
    for c in concurrencies:
        results[str(c)] = server.measure(path, image, c, args.seconds, body=body)
        r = results[str(c)]
        print(f"    c={c:<3} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"errors {r['errors']}  CPU {r['cpu_ms_per_request']:.3f} ms/req "
              f"(server process {r['server_process_cpu_ms_per_request']:.3f})  cores busy {r['cores_busy_pct']}%",
              flush=True)
    return results


def service_threads(model_dir: Path) -> int:
    """The ONNX Runtime threads cnn-serve's worker runs this version's batches on, timed as its worker times them."""
    manifest = Manifest.model_validate_json((model_dir / "manifest.json").read_text())
    model, gradient = ((model_dir / file).read_bytes() for file in manifest.graph_files)
    return Sessions.load(model, gradient, Settings(), tuple(manifest.input.shape[1:]),
                         f"{manifest.name}/{manifest.version}").plan.threads


def start(name: str, model_dir: Path, work: Path, constant: bool, threads: int) -> tuple[Server, str, str]:
    """A server for ``model_dir``: cnn-serve, the bare stack, or a peer (its runs on ``threads``); with its path
    and image encoding."""
    env = {"BENCH_MODEL_DIR": str(model_dir), "BENCH_THREADS": str(threads), "PYTHONPATH": str(ROOT),
           **({"BENCH_CONSTANT": "1"} if constant else {})}
    if name == "cnn-serve" and constant:  # its stack (FastAPI, uvicorn, the multipart form) answering a constant
        return Server.uvicorn("bench.apps:ceiling", {}, factory=True), "/predict", "multipart"
    if name in ("cnn-serve", "cnn-serve-raw"):  # the second takes the image as the body, like mosec
        repository = work / f"repository-{model_dir.parent.name}"
        if not repository.exists():  # the model's shipped versions alone, as a repository of their own
            repository.mkdir()
            shutil.copytree(model_dir.parent, repository / model_dir.parent.name)
        settings = {"CNNSERVE_MODEL_DIR": str(repository), "CNNSERVE_DEFAULT_MODEL": model_dir.parent.name}
        server = Server([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", "{port}"],
                        {**SERVICE_ENV, **settings})
        encoding = "raw" if name == "cnn-serve-raw" else "multipart"
        return server, f"/predict?model={model_dir.parent.name}&version={model_dir.name}", encoding
    if name == "bare":  # one FastAPI route on the same uvicorn, no middleware, reading the body
        return Server.uvicorn("bench.apps:bare", {}, factory=True), "/predict", "multipart"
    peer = PEERS[name]
    venv = environment(name, peer)
    port, store = None, work / f"store-{name}-{int(constant)}"
    if name == "torchserve":
        port = free_port(span=3)  # inference, management and metrics (torchserve_config)
        shutil.rmtree(store, ignore_errors=True)
        torchserve_store(model_dir, store)
        torchserve_config(store, port)
    command = [part.format(python=venv / "bin" / "python", bin=venv / "bin", store=store, port="{port}")
               for part in peer.command]
    env["PATH"] = f"{venv / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin"
    if name == "pytriton":  # Triton's server binary links the system's libpython
        env["LD_LIBRARY_PATH"] = str(Path(sys.base_prefix) / "lib")
    return Server(command, env, port=port, cwd=work), peer.path, peer.encoding


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "resnet_small"])
    parser.add_argument("--version", default="1")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--seconds", type=float, default=10, help="duration of each load run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "peers-results.json")
    parser.add_argument("--summary", type=Path, metavar="RESULTS",
                        help="measure nothing: print the summary and issue 16's verdicts of an earlier run's results")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="draw the run's chart here (a measuring run draws it beside --out unless told)")
    args = parser.parse_args()
    if args.plot and not args.plot.parent.is_dir():  # said now, not after a quarter of an hour's measuring
        parser.error(f"--plot {args.plot}: no folder {args.plot.parent}")
    if args.summary:
        try:
            report = json.loads(args.summary.read_text())
            print_summary(report)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"{args.summary} is not a bench.peers results file ({type(exc).__name__}: {exc})")
        if args.plot:
            save_chart(report, args.plot)
            print(f"chart: {args.plot}")
        return
    require_wrk()
    report: dict = {"machine": {"cpu": platform.processor() or platform.machine(), **software(),
                                "seconds_per_run": args.seconds},
                    "model_version": args.version, "versions": {}, "models": {}}
    for name in args.peers:
        venv = environment(name, PEERS[name])
        report["versions"][name] = {d: installed_version(venv, d) for d in PEERS[name].versions}
    order = ["cnn-serve", *args.peers, "cnn-serve", "cnn-serve-raw"]
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as scratch:
        work = Path(scratch)
        for model in args.models:
            model_dir = MODELS / model / args.version
            dataset = json.loads((model_dir / "manifest.json").read_text())["metrics"]["dataset"]
            image = EXAMPLES[dataset]
            threads = service_threads(model_dir)
            entry: dict = report["models"].setdefault(model, {"threads": threads, "rounds": [], "ceilings": {}})
            reference = None
            for round_index, name in enumerate(order):
                print(f"{model}: {name}", flush=True)
                server, path, encoding = start(name, model_dir, work, constant=False, threads=threads)
                try:
                    body = encoded(encoding, image.read_bytes(), work)
                    answer = wait_answering(server, path, body, image, PEERS[name].ready_s if name in PEERS else 120)
                    reference = reference or answer
                    if answer != reference:
                        raise RuntimeError(f"{name} answers {answer}, cnn-serve {reference}: not the same work")
                    entry["rounds"].append({"server": name, "round": round_index,
                                            "results": measure(server, path, image, body, args, args.concurrency)})
                finally:
                    server.stop()
                args.out.write_text(json.dumps(report, indent=2))  # a run cut short keeps what it measured
            for name in ["bare", "cnn-serve", *args.peers]:
                print(f"{model}: {name} constant-answer ceiling", flush=True)
                server, path, encoding = start(name, model_dir, work, constant=True, threads=threads)
                try:
                    body = encoded(encoding, image.read_bytes(), work)
                    wait_answering(server, path, body, image, PEERS[name].ready_s if name in PEERS else 120)
                    entry["ceilings"][name] = measure(server, path, image, body, args, [16])["16"]
                finally:
                    server.stop()
                args.out.write_text(json.dumps(report, indent=2))
    print_summary(report)
    chart = args.plot or args.out.with_suffix(".png")
    save_chart(report, chart)
    print(f"results: {args.out}\nchart: {chart}")


def print_summary(report: dict) -> None:
    """What it ran on; per model, one row per server round with the figures the issue compares; then its targets,
    judged."""
    machine = report["machine"]
    print(f"Python {machine['python']} ({machine.get('interpreter', 'which build was not recorded')}), "
          f"ONNX Runtime {machine['onnxruntime']}, {machine['seconds_per_run']:g} s a point")
    for model, entry in report["models"].items():
        bare = entry["ceilings"].get("bare", {}).get("rps")
        best = best_peer(entry)
        print(f"\n{model} (bare-stack ceiling {bare:,.0f} req/s)" if bare else f"\n{model}")
        print(f"  {'server':<13} {'c=1 p50':>8} {'c=16 req/s':>11} {'× peer':>7} {'of bare':>8} {'p50/p99 c=16':>14} "
              f"{'p99÷p50':>8} {'CPU ms/req (server)':>20} {'busy':>6} {'errors':>7} {'ceiling':>8}")
        for run in entry["rounds"]:
            results, name = run["results"], run["server"]
            one, sixteen = results.get("1"), results.get("16")
            if not sixteen:  # a run without concurrency 16 (--concurrency): nothing the issue compares
                continue
            first = f"{one['p50_ms']:.2f}ms" if one else "–"
            ceiling = entry["ceilings"].get(name, {}).get("rps")
            share = f"{sixteen['rps'] / bare:.0%}" if bare else "–"
            times = f"{sixteen['rps'] / best[1]:.2f}" if best else "–"
            server = sixteen["server_process_cpu_ms_per_request"]  # read only where one Python process is the front end
            cpu = f"{sixteen['cpu_ms_per_request']:.3f}" + (f" ({server:.3f})" if server > 0.01 else "")
            errors = sum(r["errors"] for r in results.values())
            print(f"  {name:<13} {first:>8} {sixteen['rps']:>11,.0f} {times:>7} {share:>8} "
                  f"{sixteen['p50_ms']:>6.1f}/{sixteen['p99_ms']:<6.1f} {sixteen['p99_ms'] / sixteen['p50_ms']:>9.2f} "
                  f"{cpu:>20} {sixteen['cores_busy_pct']:>5.1f}% {errors:>7} "
                  f"{f'{ceiling:,.0f}' if ceiling else '–':>8}")
    version = report.get("model_version")
    print(f"\nIssue 16's targets{f' (version {version})' if version else ''}:\n{render(judge(report))}")


if __name__ == "__main__":
    main()
