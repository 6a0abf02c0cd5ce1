"""Every kind of bad input gets a clear problem response with the right status, never a 500."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.helpers import encode, upload


def assert_problem(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    return body


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width × height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def digit() -> bytes:
    return encode(np.full((28, 28), 0, np.uint8))


def test_not_an_image(client):
    assert_problem(client.post("/predict", files=upload(b"%PDF-1.7 not an image", "a.pdf", "application/pdf")), 415, "not an image", "PNG")


def test_unaccepted_image_format(client):
    tiff = encode(np.zeros((8, 8), np.uint8), "TIFF")
    assert_problem(client.post("/predict", files=upload(tiff, "a.tiff", "image/tiff")), 415, "TIFF")


def test_zero_bytes(client):
    assert_problem(client.post("/predict", files=upload(b"")), 422, "empty")


def test_truncated(client, mnist_test):
    data = encode(mnist_test.images[0, 0])
    assert_problem(client.post("/predict", files=upload(data[: len(data) // 2])), 422, "truncated")
    jpeg = encode(mnist_test.images[0, 0], "JPEG")
    assert client.post("/predict", files=upload(jpeg[:200], "a.jpg", "image/jpeg")).status_code == 422


def test_decompression_bomb_is_rejected_without_decoding(client):
    body = assert_problem(client.post("/predict", files=upload(png_declaring(100_000, 100_000))), 413, "pixels")
    assert "100000×100000" in body["detail"]


def test_upload_over_the_size_limit(settings):
    small = settings.model_copy(update={"max_upload_bytes": 20_000})
    with TestClient(create_app(small)) as client:
        noise = np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)
        assert_problem(client.post("/predict", files=upload(encode(noise))), 413, "limit")

        # Without a Content-Length (chunked), the body is cut off as it streams in.
        boundary = "testboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"n.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + encode(noise) + f"\r\n--{boundary}--\r\n".encode()
        chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
        response = client.post("/predict", content=chunks, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_problem(response, 413, "limit")
        # A small upload still works on the same app.
        assert client.post("/predict", files=upload(encode(np.zeros((28, 28), np.uint8)))).status_code == 200


def test_unknown_model_lists_the_available_ones(client, digit):
    body = assert_problem(client.post("/predict?model=resnet1000", files=upload(digit)), 404, "resnet1000", "lenet5")
    assert "mnist_cnn_b" in body["available"]
    assert_problem(client.post("/models/resnet1000/cam", files=upload(digit)), 404, "available")
    assert_problem(client.get("/models/resnet1000/summary"), 404)


def test_bad_class(client, digit):
    assert_problem(client.post("/models/lenet5/cam?class=10", files=upload(digit)), 422, "class")
    assert_problem(client.post("/models/lenet5/cam?class=seven", files=upload(digit)), 422, "class")
    assert_problem(client.post("/models/lenet5/cam?class=-1", files=upload(digit)), 422, "class")


def test_cam_on_a_net_without_gap(client, digit):
    assert_problem(client.post("/models/lenet5/cam?method=cam", files=upload(digit)), 422, "gradcam")


def test_bad_parameters(client, digit):
    assert_problem(client.post("/predict?top_k=0", files=upload(digit)), 422, "top_k")
    assert_problem(client.post("/predict?top_k=500", files=upload(digit)), 422, "top_k")
    assert_problem(client.post("/predict?top_k=many", files=upload(digit)), 422, "top_k")
    assert_problem(client.post("/models/lenet5/cam?format=gif", files=upload(digit)), 422, "format")
    assert_problem(client.post("/models/lenet5/cam?method=lime", files=upload(digit)), 422, "method")


def test_wrong_form_field(client, digit):
    assert_problem(client.post("/predict", files={"image": ("d.png", digit, "image/png")}), 422, "file")
    assert_problem(client.post("/predict", data={"file": "not a file"}), 422, "file")
    assert_problem(client.post("/predict"), 422, "file")


def test_unknown_route_and_method(client):
    assert_problem(client.get("/nothing-here"), 404)
    assert client.get("/predict").status_code == 405
