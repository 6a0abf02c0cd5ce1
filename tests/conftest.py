"""Shared fixtures: the real app on the shipped models, and real digit images."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SHIPPED = sorted(p.parent.parent.name for p in MODELS.glob("*/*/manifest.json"))
# SEEDS.md's exact parameter counts: the oracle for the models the material gives layer by layer.
SEEDS_TOTALS = {"lenet5": 61_706, "mnist_cnn_a": 118_346, "mnist_cnn_b": 1_199_882}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
