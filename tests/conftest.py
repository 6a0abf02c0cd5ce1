"""Shared fixtures: the real app on the shipped models, and real digit images."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots, figures: kept by CI, ignored by git
VERSIONS = sorted((p.parent.parent.name, p.parent.name) for p in MODELS.glob("*/*/manifest.json"))
SHIPPED = sorted({name for name, _ in VERSIONS})
# SEEDS.md's exact parameter counts: the oracle for the models the material gives layer by layer.
SEEDS_TOTALS = {"lenet5": 61_706, "mnist_cnn_a": 118_346, "mnist_cnn_b": 1_199_882}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, seconds: float) -> bool:
    """Poll GET /readyz until it answers 200 (podman's healthcheck timers do not fire here, so containers too)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def manifest(name: str, version: str = "1") -> dict:
    return json.loads((MODELS / name / version / "manifest.json").read_text())


def encode(pixels: np.ndarray, fmt: str = "PNG", **save: object) -> bytes:
    """uint8 H×W or C×H×W / H×W×C array → image file bytes."""
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3):
        pixels = pixels.transpose(1, 2, 0)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def upload(data: bytes, name: str = "image.png", mime: str = "image/png") -> dict:
    return {"file": (name, data, mime)}


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(model_dir=MODELS, default_model="mnist_cnn_b", log_level="warning")


@pytest.fixture(scope="session")
def client(settings: Settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def mnist_test():
    from training.data import mnist_digits

    return mnist_digits("test")


@pytest.fixture(scope="session")
def placed_test():
    from training.data import placed_digits

    return placed_digits("test")


@pytest.fixture(scope="session")
def server_url(settings):
    """The app on a real uvicorn server on loopback, for clients that speak HTTP themselves."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    if not wait_until_ready(url, 60):
        pytest.fail("server did not become ready")
    yield url
    server.should_exit = True
    thread.join(timeout=10)
