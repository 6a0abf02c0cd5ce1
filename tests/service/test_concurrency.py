"""200 mixed requests, good and bad, from 16 clients at once, against a real uvicorn server."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers import encode, png_declaring

pytestmark = pytest.mark.slow


def test_mixed_concurrent_requests_are_all_answered_correctly(server_url, mnist_test, placed_test):
    digits = [encode(mnist_test.images[i, 0]) for i in range(0, 500, 25)]
    canvases = [encode(placed_test.images[i]) for i in range(0, 500, 50)]
    with httpx.Client(base_url=server_url, timeout=60) as client:  # answers from a quiet server
        expected_digit = [client.post("/predict?model=lenet5", files={"file": ("d.png", d)}).json()["predictions"][0][
            "label"] for d in digits]
        expected_canvas = [client.post("/models/cam_net/cam", files={"file": ("c.png", c)}).json()["class_index"]
                           for c in canvases]

    kinds = ["digit", "canvas", "text", "empty", "bomb", "unknown_model", "bad_class"]
    rng = random.Random(0)
    jobs = [(rng.choice(kinds), rng.randrange(10)) for _ in range(200)]

    def run(job: tuple[str, int]) -> tuple[str, int, object]:
        kind, i = job
        with httpx.Client(base_url=server_url, timeout=60) as client:
            if kind == "digit":
                r = client.post("/predict?model=lenet5", files={"file": ("d.png", digits[i * 2])})
                return kind, r.status_code, r.json()["predictions"][0]["label"] == expected_digit[i * 2]
            if kind == "canvas":
                r = client.post("/models/cam_net/cam", files={"file": ("c.png", canvases[i])})
                body = r.json()
                right = body["class_index"] == expected_canvas[i] and len(body["heatmap"]) == body["feature_size"][0]
                return kind, r.status_code, right
            payload = {"text": b"hello, not an image", "empty": b"", "bomb": png_declaring(60_000, 60_000),
                       "unknown_model": digits[0], "bad_class": digits[0]}[kind]
            paths = {"unknown_model": "/predict?model=nope", "bad_class": "/models/lenet5/cam?class=99"}
            path = paths.get(kind, "/predict")
            r = client.post(path, files={"file": ("x", payload)})
            return kind, r.status_code, r.headers["content-type"] == "application/problem+json"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, jobs))
    want = {"digit": 200, "canvas": 200, "text": 415, "empty": 422, "bomb": 413, "unknown_model": 404, "bad_class": 422}
    wrong = [(kind, status, ok) for kind, status, ok in results if status != want[kind] or ok is not True]
    assert not wrong, wrong[:5]
    assert len(results) == 200 and {k for k, _, _ in results} == set(kinds)
    assert httpx.get(f"{server_url}/readyz").status_code == 200
