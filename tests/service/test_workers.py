"""The inference worker processes: a worker that dies is replaced, and only the requests it was
running fail, with a 503 that says to retry; the server process itself never loads ONNX Runtime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

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
    """What a job in flight gets when its worker is lost: 503 and a retry, never a hang."""
    impatient = settings.model_copy(update={"default_model": "lenet5", "worker_timeout_s": 0.0001})
    with TestClient(create_app(impatient)) as client:
        pool = client.app.state.engine.pool
        [pid] = pool.pids
        response = client.post("/predict", files=upload(digit))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "restarted, retry" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200
        assert pool.pids != [pid] and pool.running == 1


def test_the_server_process_does_not_load_onnxruntime():
    probe = "import sys, service.app; print('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"
