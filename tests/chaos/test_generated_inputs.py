"""Hypothesis-generated uploads and Open Inference Protocol bodies, against the real server: real images
broken every way (bit flips, truncation, junk chunks, foreign formats, hostile forms), and JSON of every
shape. Each must get a clear 4xx or an answer; none a 5xx, a hang, or a dropped connection."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections import Counter

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import EXAMPLES

pytestmark = pytest.mark.slow
SEEDS = [(EXAMPLES / name).read_bytes() for name in ("digit_7.png", "digit_2_dark_on_light.jpg", "placed_3.png")]


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


FORMATS = [encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "ICO")]


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def images(draw: st.DrawFn) -> bytes:
    """A real image, then broken: bits flipped, cut short, a chunk spliced in, bytes appended."""
    data = bytearray(draw(st.sampled_from(SEEDS + FORMATS)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()) and data[:4] == b"\x89PNG":
        kind = draw(st.sampled_from([b"pHYs", b"gAMA", b"sRGB", b"iCCP", b"zTXt", b"tEXt", b"IHDR", b"acTL"]))
        data = data[:33] + chunk(kind, draw(st.binary(max_size=40))) + data[33:]
    return bytes(data) + draw(st.binary(max_size=16))


@st.composite
def forms(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart body around a generated image, sometimes malformed (boundaries, headers, fields)."""
    well_formed = draw(st.integers(0, 3)) > 0  # three forms in four are right, so the images inside get decoded
    boundary = "b0undary" if well_formed else draw(st.text("abc-_0123456789'()+,./:=?", min_size=1, max_size=300))
    name = "file" if well_formed else draw(st.sampled_from(["image", "", "file"]))
    filename = '; filename="x.png"' if well_formed else draw(st.sampled_from(["", "; filename*=UTF-8''%C3%A9.png"]))
    ending = f"\r\n--{boundary}--\r\n".encode() if well_formed else draw(st.sampled_from([b"", b"\r\n--"]))
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n".encode()
    body += draw(images()) + ending
    content_type = f"multipart/form-data; boundary={boundary}" if well_formed else draw(
        st.sampled_from(["multipart/form-data", "image/png", "application/json", ""]))
    return body, content_type


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                       max_size=4), max_leaves=20)


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """Open Inference Protocol requests: plausible ones with wrong parts, and arbitrary JSON."""
    shape = draw(st.lists(st.integers(-2, 2**33), max_size=draw(st.sampled_from([4, 70]))))
    tensor = {"name": draw(st.sampled_from(["input", "x"])), "shape": shape,
              "datatype": draw(st.sampled_from(["FP32", "INT8", "BYTES"])),
              "data": draw(st.one_of(st.lists(st.floats(allow_nan=True, width=32), max_size=8), JSON))}
    valid = {"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.5] * 1024}
    request = draw(st.one_of(st.just({"inputs": [tensor]}), JSON, st.just({"inputs": [tensor], "outputs": draw(JSON)}),
                             st.just({"inputs": [valid]})))
    header = json.dumps(request).encode()
    binary = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.none(), st.none(), st.just(str(len(header))), st.text("0123456789²-", max_size=6)))
    if length is None:
        binary = b""
    headers = {} if length is None else {"Inference-Header-Content-Length": length}
    return header + binary, headers


def test_generated_uploads_get_clear_answers(fuzzed_url):
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=fuzzed_url, timeout=30) as client:
        @given(form=forms(), path=st.sampled_from(["/predict?model=lenet5", "/predict?model=cam_net&version=2",
                                                   "/models/cam_net/cam?format=overlay", "/models/vgg_small/cam"]))
        @settings(max_examples=900, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def exchange(form: tuple[bytes, str], path: str) -> None:
            body, content_type = form
            response = client.post(path, content=body, headers={"content-type": content_type} if content_type else {})
            statuses[response.status_code] += 1
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json" and response.json()["detail"]

        exchange()
    assert statuses.total() >= 900 and statuses[200] > 50 and {415, 422} <= set(statuses), statuses
    print(f"uploads: {statuses.total()} requests, statuses {dict(sorted(statuses.items()))}")


def test_generated_inference_requests_get_clear_answers(fuzzed_url):
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=fuzzed_url, timeout=30) as client:
        @given(request=infer_bodies())
        @settings(max_examples=700, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def exchange(request: tuple[bytes, dict[str, str]]) -> None:
            body, headers = request
            encoded_headers = {k: v.encode("utf-8") for k, v in headers.items()}
            response = client.post("/v2/models/lenet5/infer", content=body, headers=encoded_headers)
            statuses[response.status_code] += 1
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                assert set(response.json()) == {"error"} and response.json()["error"]

        exchange()
    assert statuses.total() >= 700 and statuses[400] > 0 and statuses[200] > 0, statuses
    print(f"inference requests: {statuses.total()} requests, statuses {dict(sorted(statuses.items()))}")
