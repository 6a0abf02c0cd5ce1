"""Every kind of bad input gets a clear problem response with the right status, never a 500."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.helpers import EXAMPLES, assert_problem, encode, png_chunk, png_declaring, upload

SEVEN = (EXAMPLES / "digit_7.png").read_bytes()


@pytest.fixture
def digit() -> bytes:
    return encode(np.full((28, 28), 0, np.uint8))


def test_not_an_image(client):
    pdf = upload(b"%PDF-1.7 not an image", "a.pdf", "application/pdf")
    assert_problem(client.post("/predict", files=pdf), 415, "not an image", "PNG")


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
        form = {"content-type": f"multipart/form-data; boundary={boundary}"}
        response = client.post("/predict", content=chunks, headers=form)
        assert_problem(response, 413, "limit")
        assert response.headers["connection"] == "close"  # the rest of the body is not read
        # A small upload still works on the same app.
        assert client.post("/predict", files=upload(encode(np.zeros((28, 28), np.uint8)))).status_code == 200


def test_unknown_model_lists_the_available_ones(client, digit):
    body = assert_problem(client.post("/predict?model=resnet1000", files=upload(digit)), 404, "resnet1000", "lenet5")
    assert "mnist_cnn_b" in body["available"]
    assert_problem(client.post("/models/resnet1000/cam", files=upload(digit)), 404, "available")
    assert_problem(client.get("/models/resnet1000/summary"), 404)


@pytest.mark.parametrize("value", ["10", "seven", "-1", "--1", "²", "٣", "3.0", "9" * 5000])
def test_bad_class(client, digit, value):
    assert_problem(client.post("/models/lenet5/cam", params={"class": value}, files=upload(digit)), 422, "class")


def test_a_bad_class_is_refused_before_the_upload_is_read_or_a_model_runs(client):
    before = client.get("/metrics").text.count('model_inference_seconds_count{graph="explain"')
    response = client.post("/models/lenet5/cam?class=11", files=upload(b""))  # an empty upload would be its own 422
    assert_problem(response, 422, "class must be an index")
    assert client.get("/metrics").text.count('model_inference_seconds_count{graph="explain"') == before


def test_cam_on_a_net_without_gap(client, digit):
    assert_problem(client.post("/models/lenet5/cam?method=cam", files=upload(digit)), 422, "gradcam")


def test_bad_parameters(client, digit):
    assert_problem(client.post("/predict?top_k=0", files=upload(digit)), 422, "top_k")
    assert_problem(client.post("/predict?top_k=500", files=upload(digit)), 422, "top_k")
    assert_problem(client.post("/predict?top_k=many", files=upload(digit)), 422, "top_k")
    assert_problem(client.post("/models/lenet5/cam?format=gif", files=upload(digit)), 422, "format")
    assert_problem(client.post("/models/lenet5/cam?method=lime", files=upload(digit)), 422, "method")


@pytest.mark.parametrize("chunk", [
    png_chunk(b"pHYs", b"\x01"),  # shorter than the 9 bytes it must hold
    png_chunk(b"gAMA", b"\x01"),
    png_chunk(b"sRGB", b""),
    png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 2_000_000)),  # text inflating past Pillow's 1 MB cap
    png_chunk(b"iCCP", b"p\x00\x00" + zlib.compress(b"a" * 2_000_000)),
])
def test_poisoned_png_chunks_are_the_uploads_own_422(client, chunk):
    assert_problem(client.post("/predict", files=upload(png_declaring(8, 8, chunk))), 422)


def test_a_multipart_boundary_over_rfc_2046s_70_characters_is_a_422(client):
    def post(boundary: str):
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n\r\n").encode() \
            + SEVEN + f"\r\n--{boundary}--\r\n".encode()
        form = {"content-type": f"multipart/form-data; boundary={boundary}"}
        return client.post("/predict", content=body, headers=form)

    assert post("b" * 70).json()["predictions"][0]["label"] == "7"
    assert_problem(post("b" * 71), 422, "boundary is 71 characters", "RFC 2046")
    assert_problem(post("b" * 300), 422, "boundary is 300 characters")


def test_a_body_that_is_neither_a_form_nor_an_image_says_what_to_send(client, digit):
    body = assert_problem(client.post("/predict", content=digit, headers={"content-type": "text/plain"}), 422,
                          "multipart/form-data", "image/png")
    assert "text/plain" in body["detail"]
    pdf = {"content-type": "image/png"}  # an image type on bytes that are no image: the file's own 415
    assert_problem(client.post("/predict", content=b"%PDF-1.7 not an image", headers=pdf), 415, "not an image")
    assert_problem(client.post("/predict", content=b"", headers=pdf), 422, "empty")


@pytest.mark.parametrize("query", ["model=", "version=", "model=lenet5&version="])
def test_an_empty_model_or_version_is_a_422_not_the_default(client, digit, query):
    assert_problem(client.post(f"/predict?{query}", files=upload(digit)), 422, "at least 1 character")


def test_wrong_form_field(client, digit):
    assert_problem(client.post("/predict", files={"image": ("d.png", digit, "image/png")}), 422, "no field 'file'",
                   "it has 'image'")
    assert_problem(client.post("/predict", data={"file": "not a file"}), 422, "multipart/form-data")  # urlencoded
    text_field = client.post("/predict", data={"file": "not a file"}, files={"other": ("d.png", digit)})
    assert_problem(text_field, 422, "must be a file upload")
    assert_problem(client.post("/predict"), 422, "file")


def test_the_file_part_is_found_wherever_it_is_and_a_cut_form_is_a_422(client):
    both = client.post("/predict", data={"note": "a text field first"}, files={"file": ("d.png", SEVEN)})
    assert both.json()["predictions"][0]["label"] == "7"
    boundary = "b0undary"
    head = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''%C3%A9.png\r\n\r\n"
    body = head.encode() + SEVEN + f"\r\n--{boundary}--\r\n".encode()
    form = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert client.post("/predict", content=body, headers=form).json()["predictions"][0]["label"] == "7"  # RFC 5987 name
    assert_problem(client.post("/predict", content=body[:-12], headers=form), 422, "could not be parsed")


def test_unknown_route_and_method(client):
    assert_problem(client.get("/nothing-here"), 404)
    assert client.get("/predict").status_code == 405


@pytest.mark.parametrize("body, headers, message", [
    (b"{}", {"Inference-Header-Content-Length": "²".encode("latin-1")}, "Inference-Header-Content-Length"),
    (json.dumps({"inputs": [{"name": "input", "shape": [2**32, 2**32], "datatype": "FP32", "data": []}]}).encode(), {},
     "values"),
    (json.dumps({"inputs": [{"name": "input", "shape": [1] * 65, "datatype": "FP32", "data": [0]}]}).encode(), {},
     "dimensions"),
    (b"[" * 50_000 + b"]" * 50_000, {}, "nested too deeply"),
])
def test_hostile_open_inference_protocol_requests_are_400(client, body, headers, message):
    response = client.post("/v2/models/lenet5/infer", content=body, headers=headers)
    assert response.status_code == 400 and message in response.json()["error"]
