"""The inference worker processes: a worker that dies is replaced, and only the requests it was
running fail, with a 503 that says to retry; the server process itself never loads ONNX Runtime."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.conftest import MODELS, upload


@pytest.fixture
def digit() -> bytes:
    return (MODELS.parent / "examples" / "digit_7.png").read_bytes()


def test_a_worker_that_dies_is_replaced(settings, digit):
    with TestClient(create_app(settings.model_copy(update={"default_model": "lenet5"}))) as client:
        pool = client.app.state.engine.pool
        assert client.post("/predict", files=upload(digit)).status_code == 200
        [pid] = pool.pids
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (ready := client.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["workers"] == "0/1"  # not ready: load balancers look elsewhere
        assert client.get("/v2/health/ready").status_code == 400

        # It held no job, so nothing is lost: the next request starts its successor and runs there.
        answered = client.post("/predict", files=upload(digit))
        assert answered.status_code == 200 and answered.json()["predictions"][0]["label"] == "7"
        assert pool.pids != [pid] and client.get("/readyz").status_code == 200


def test_a_batch_over_the_time_limit_answers_503_and_its_worker_is_replaced(settings, digit):
    """What a job in flight gets when its worker is lost: 503 and a retry, never a hang. The job: a
    6,000 × 6,000 image (36 MP, under the pixel limit; a 35 KB PNG), which takes the worker well over a
    second to decode and preprocess, against a 0.1 s limit."""
    impatient = settings.model_copy(update={"default_model": "lenet5", "worker_timeout_s": 0.1})
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000), 255).save(buffer, "PNG")
    with TestClient(create_app(impatient)) as client:
        pool = client.app.state.engine.pool
        [pid] = pool.pids
        started = time.monotonic()
        response = client.post("/predict", files=upload(buffer.getvalue()))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "restarted, retry" in response.json()["detail"] and time.monotonic() - started < 30
        assert pool.pids != [pid] and pool.running == 1
        answered = client.post("/predict", files=upload(digit))  # the successor answers what fits the limit
        assert answered.status_code == 200 and answered.json()["predictions"][0]["label"] == "7"


def test_the_server_process_does_not_load_onnxruntime():
    probe = "import sys, service.app; print('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"
