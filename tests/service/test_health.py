"""Liveness, readiness, metrics, request ids and the structured access log."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.logs import ACCESS_LOGGER
from tests.helpers import SHIPPED, encode, upload


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and sorted(body["models"]) == SHIPPED and body["errors"] == []
    assert body["workers"] == {"ordinary": "1/1", "heavy": "1/1"}


def test_not_ready_without_models(settings, tmp_path):
    with TestClient(create_app(settings.model_copy(update={"model_dir": tmp_path / "missing"}))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and "does not exist" in response.json()["errors"][0]
        assert str(tmp_path) not in response.text  # no server paths in answers
        assert client.get("/healthz").status_code == 200


def test_request_id_header(client):
    assert len(client.get("/healthz").headers["x-request-id"]) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"


def test_metrics_count_requests_by_route_model_and_status(client, mnist_test):
    client.post("/predict?model=lenet5", files=upload(encode(mnist_test.images[0, 0])))
    client.post("/predict?model=lenet5", files=upload(b""))
    client.post("/models/cam_net/cam", files=upload(encode(np.zeros((64, 64, 3), np.uint8))))
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",model="lenet5",route="/predict",status="200"}' in text
    assert 'http_requests_total{method="POST",model="lenet5",route="/predict",status="422"}' in text
    assert ('http_request_duration_seconds_bucket{le="0.5",method="POST",model="lenet5",route="/predict",'
            'status="200"}') in text
    assert 'model_inference_seconds_count{graph="model",model="lenet5"}' in text
    assert 'model_inference_seconds_count{graph="explain",model="cam_net"}' in text
    assert 'model_batch_size_count{model="lenet5"}' in text
    assert ('model_execution_provider{fallback="false",model="lenet5",provider="CPUExecutionProvider",'
            'requested="auto",version="1"} 1.0') in text


def test_one_structured_log_line_per_request(client, capsys):
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO)  # the test app logs at warning
    try:
        capsys.readouterr()
        response = client.get("/models/lenet5")
        lines: list[str] = []
        deadline = time.monotonic() + 5  # written at the end of the server loop's pass, in its own thread
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
            lines = capsys.readouterr().err.splitlines()
    finally:
        access.setLevel(logging.NOTSET)
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["request_id"] == response.headers["x-request-id"] and entry["path"] == "/models/lenet5"
    assert entry["status"] == 200 and entry["route"] == "/models/{name}" and entry["duration_ms"] >= 0
    assert entry["model"] == "lenet5" and entry["logger"] == ACCESS_LOGGER and entry["level"] == "info"


def test_readiness_turns_503_while_draining(client):
    client.app.state.draining = True
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["errors"][0].startswith("shutting down")
        assert client.get("/v2/health/ready").status_code == 400
    finally:
        client.app.state.draining = False


def test_startup_objects_are_out_of_the_collectors_reach(client):
    """What startup built (routes, schemas, validators, manifests) is frozen, so a full collection walks
    only what requests allocate: no multi-millisecond pauses in the latency tail (service/heap.py)."""
    import gc

    assert gc.get_freeze_count() > 50_000
    before = gc.get_count()[2]
    gc.collect()
    assert gc.get_freeze_count() > 50_000 and gc.get_count()[2] <= before + 1
