"""What many tests use: paths, the shipped models, image encoding, upload forms, problem assertions."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
EXAMPLES = ROOT / "examples"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots, figures: kept by CI, ignored by git
VERSIONS = sorted((p.parent.parent.name, p.parent.name) for p in MODELS.glob("*/*/manifest.json"))
SHIPPED = sorted({name for name, _ in VERSIONS})
# Exact parameter counts of the networks the course material gives layer by layer (LeNet-5 as in LeCun
# et al. 1998; the two MNIST CNNs in Keras notation): the oracle for their summaries.
MATERIAL_TOTALS = {"lenet5": 61_706, "mnist_cnn_a": 118_346, "mnist_cnn_b": 1_199_882}


def leaves(tree: object, path: str = "") -> dict[str, object]:
    """A nested dump (dicts, lists) as path → leaf."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {path: tree}
    return {k: v for key, value in items for k, v in leaves(value, f"{path}/{key}").items()}


def to_rounding(recorded: dict[str, Any]) -> Any:
    """A manifest's (or part's) dump as scores computed again must match it: to ONNX Runtime's rounding, which
    differs across CPUs (another CPU's kernels sum in another order: on an AMD EPYC ECEs differ by up to 1.3e-6
    from those of the Intel Xeon that exported the models). One image more or less right moves a rate by at
    least 1/1,797, far more than the tolerance."""
    return pytest.approx(leaves(recorded), abs=1e-4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


@contextmanager
def running_server(app: Any, loop: str = "auto") -> Iterator[str]:
    """``app`` on the service's own server (uvicorn with its connection limits) on loopback, in a thread, for
    clients that speak HTTP themselves."""
    from service.server import build_server

    port = free_port()
    server = build_server(app, app.state.settings.model_copy(update={"host": "127.0.0.1", "port": port}), loop)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_ready(url, 60):
            raise RuntimeError("the server did not become ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def manifest(name: str, version: str = "1") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / name / version / "manifest.json").read_text())
    return data


def float_convolutions(model: Path) -> list[str]:
    """The convolutions of a QDQ model that run in float32: those whose weights no DequantizeLinear makes."""
    import onnx  # training's dependency, not the service's

    graph = onnx.load(model).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    return [node.name for node in graph.node if node.op_type == "Conv" and node.input[1] not in dequantized]


def encode(pixels: np.ndarray, fmt: str = "PNG", **save: Any) -> bytes:
    """uint8 H×W or C×H×W / H×W×C array → image file bytes."""
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3):
        pixels = pixels.transpose(1, 2, 0)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def upload(data: bytes, name: str = "image.png", mime: str = "image/png") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, mime)}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *extra_chunks: bytes) -> bytes:
    """A tiny valid-looking PNG whose header claims width × height pixels (a decompression bomb), with
    any extra chunks before its data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + b"".join(extra_chunks)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def large_png(width: int, height: int, mode: str = "L") -> bytes:
    """A real, decodable image of width × height that compresses to a few tens of KB."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 255).save(buffer, "PNG")
    return buffer.getvalue()


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    return body


def decoded(data: bytes) -> Image.Image:
    """An image file decoded as the service decodes it (no size limit worth the name)."""
    from service.preprocessing import decode, open_image

    return decode(open_image(data, 10**9), 1 << 16)
