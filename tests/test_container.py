"""The real container: build the image, `compose up`, classify a real image, read a summary, `down`.

Runs where podman and podman-compose exist (``make test`` sets them up through ``make container-runtime``
on the development machines, which have no Docker engine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port, wait_until_ready

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("podman-compose")),
                       reason="podman and podman-compose are not installed (install them: make container-runtime)"),
]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE = "docker.io/library/python:3.11-slim"
# What our layers may add to python:3.11-slim (about 125 MB officially) to stay under 400 MB.
ADDED_LIMIT_MB = 250


def run_ok(command: list[str], env: dict[str, str], timeout: int) -> None:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def podman_build(tag: str, context: Path, env: dict[str, str], *options: str) -> None:
    build = ["podman", "build", "-t", tag, *options]
    if HOST_CA.exists():  # this machine reaches the registries through a proxy its own CA bundle trusts
        build += ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
    run_ok([*build, str(context)], env, timeout=1200)


def replica_ready(container: str) -> bool:
    """GET /readyz from inside a container that publishes no port."""
    probe = ("import sys, urllib.request; "
             "sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)")
    return subprocess.run(["podman", "exec", container, "python3", "-c", probe], capture_output=True).returncode == 0


def served_by(response: httpx.Response) -> str:
    """The replica that answered, from the balancer's X-Served-By (the last address nginx tried)."""
    return response.headers["x-served-by"].split(",")[-1].strip()


def compose_env(port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "BUILDAH_ISOLATION": "chroot", "CNNSERVE_HOST_PORT": str(port), **extra}


@pytest.fixture(scope="module")
def compose_service():
    port = free_port()
    env = compose_env(port)
    project = ["podman-compose", "-p", "cnnserve-test", "-f", str(ROOT / "docker-compose.yml")]
    podman_build("cnn-serve:latest", ROOT, env, "--target", "runtime")
    run_ok([*project, "up", "-d", "api"], env, timeout=300)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_ready(url, 120):
            logs = subprocess.run([*project, "logs", "api"], cwd=ROOT, env=env, capture_output=True, text=True)
            pytest.fail(f"container never became ready:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        yield url
    finally:
        subprocess.run([*project, "down"], cwd=ROOT, env=env, capture_output=True, timeout=300)


def test_compose_up_serves_the_shipped_models(compose_service):
    digit = (ROOT / "examples" / "digit_7.png").read_bytes()
    body = httpx.post(f"{compose_service}/predict?model=mnist_cnn_b", files={"file": ("7.png", digit)},
                      timeout=30).json()
    assert body["predictions"][0]["label"] == "7" and body["provider"] == "CPUExecutionProvider"
    summary = httpx.get(f"{compose_service}/models/mnist_cnn_b/summary", timeout=30).json()
    assert summary["totals"]["total_params"] == 1_199_882
    bad = httpx.post(f"{compose_service}/predict", files={"file": ("x.txt", b"hello")}, timeout=30)
    assert bad.status_code == 415


def image_info(name: str) -> dict:
    inspected = subprocess.run(["podman", "image", "inspect", name], capture_output=True, text=True, check=True)
    return json.loads(inspected.stdout)[0]


def test_image_is_small_and_has_no_torch(compose_service):
    info = image_info("cnn-serve:latest")
    size_mb, base_mb = info["Size"] / 1e6, image_info(BASE_IMAGE)["Size"] / 1e6
    print(f"cnn-serve:latest: {size_mb:.0f} MB, of which the base image is {base_mb:.0f} MB")
    assert size_mb - base_mb < ADDED_LIMIT_MB
    assert info["Config"]["User"] == "app"
    listing = subprocess.run(["podman", "run", "--rm", "cnn-serve:latest", "python3", "-c",
                              "import importlib.util as u; "
                              "print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"],
                             capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["True", "True"]
    assert listing.stderr == "", f"the image's interpreter complains at every start:\n{listing.stderr}"


def test_replicas_behind_the_load_balancer_share_the_requests(compose_service):
    """deploy/compose/scale.yml: two stateless replicas behind nginx, which round-robins between them."""
    port = free_port()
    env = compose_env(port, CNNSERVE_REPLICAS="2")
    compose = ROOT / "deploy" / "compose"
    podman_build("cnn-serve-lb:latest", compose, env, "-f", str(compose / "lb.Dockerfile"))
    project = ["podman-compose", "-p", "cnnscale-test", "-f", str(compose / "scale.yml")]
    run_ok([*project, "up", "-d"], env, timeout=300)
    url = f"http://127.0.0.1:{port}"
    replicas = ("cnnscale-test_api_1", "cnnscale-test_api_2")
    try:
        assert wait_until_ready(url, 120), "the replicas never answered /readyz through the load balancer"
        # Until a replica has loaded its models it refuses connections and nginx skips it for its
        # fail_timeout (2 s): wait for each replica's own /readyz, then until nginx routes to both.
        deadline = time.monotonic() + 120
        while not all(replica_ready(name) for name in replicas):
            assert time.monotonic() < deadline, "a replica never became ready"
            time.sleep(1)
        seen: set[str] = set()
        while len(seen) < 2:
            assert time.monotonic() < deadline, f"nginx only ever routed to {seen}"
            seen.add(served_by(httpx.get(f"{url}/readyz", timeout=10)))
            time.sleep(0.2)
        digit = (ROOT / "examples" / "digit_7.png").read_bytes()
        answers = [httpx.post(f"{url}/predict?model=lenet5", files={"file": ("7.png", digit)}, timeout=30)
                   for _ in range(10)]
        assert [a.json()["predictions"][0]["label"] for a in answers] == ["7"] * 10
        served = Counter(served_by(a) for a in answers)
        assert len(served) == 2 and min(served.values()) >= 3, served  # round-robin: both replicas answered
    finally:
        subprocess.run([*project, "down"], cwd=ROOT, env=env, capture_output=True, timeout=300)
