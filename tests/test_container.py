"""The real container: build the image, `compose up`, classify a real image, read a summary, `down`.

Runs where podman and podman-compose exist (``make test`` sets them up with
``../shared/containers/podman-setup`` on the development machines, which have no Docker engine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("podman-compose")),
                       reason="podman and podman-compose are not installed (run ../shared/containers/podman-setup)"),
]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE = "docker.io/library/python:3.11-slim"
# What our layers may add to python:3.11-slim (about 125 MB officially) to stay under 400 MB.
ADDED_LIMIT_MB = 250


@pytest.fixture(scope="module")
def compose_service():
    port = free_port()
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot", "CNNSERVE_HOST_PORT": str(port)}
    project = ["podman-compose", "-p", "cnnserve-test", "-f", str(ROOT / "docker-compose.yml")]
    build = ["podman", "build", "-t", "cnn-serve:latest", "--target", "runtime"]
    if HOST_CA.exists():  # this machine reaches the registries through a proxy its own CA bundle trusts
        build += ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
    built = subprocess.run([*build, "."], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    up = subprocess.run([*project, "up", "-d", "api"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # healthcheck timers do not fire under podman here: poll
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            logs = subprocess.run([*project, "logs", "api"], cwd=ROOT, env=env, capture_output=True, text=True)
            pytest.fail(f"container never became ready:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        yield url
    finally:
        subprocess.run([*project, "down"], cwd=ROOT, env=env, capture_output=True, timeout=300)


def test_compose_up_serves_the_shipped_models(compose_service):
    digit = (ROOT / "examples" / "digit_7.png").read_bytes()
    body = httpx.post(f"{compose_service}/predict?model=mnist_cnn_b", files={"file": ("7.png", digit)}, timeout=30).json()
    assert body["predictions"][0]["label"] == "7" and body["provider"] == "CPUExecutionProvider"
    summary = httpx.get(f"{compose_service}/models/mnist_cnn_b/summary", timeout=30).json()
    assert summary["totals"]["total_params"] == 1_199_882
    bad = httpx.post(f"{compose_service}/predict", files={"file": ("x.txt", b"hello")}, timeout=30)
    assert bad.status_code == 415


def image_info(name: str) -> dict:
    return json.loads(subprocess.run(["podman", "image", "inspect", name], capture_output=True, text=True, check=True).stdout)[0]


def test_image_is_small_and_has_no_torch(compose_service):
    info = image_info("cnn-serve:latest")
    size_mb, base_mb = info["Size"] / 1e6, image_info(BASE_IMAGE)["Size"] / 1e6
    print(f"cnn-serve:latest: {size_mb:.0f} MB, of which the base image is {base_mb:.0f} MB")
    assert size_mb - base_mb < ADDED_LIMIT_MB
    assert info["Config"]["User"] == "app"
    listing = subprocess.run(["podman", "run", "--rm", "cnn-serve:latest", "python3", "-c",
                              "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert listing == ["True", "True"]
