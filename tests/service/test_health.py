"""Liveness, readiness, metrics, request ids and the structured access log."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import SHIPPED, encode, upload


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and sorted(ready.json()["models"]) == SHIPPED


def test_not_ready_without_models(settings, tmp_path):
    with TestClient(create_app(settings.model_copy(update={"model_dir": tmp_path / "missing"}))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and "does not exist" in response.json()["errors"][0]
        assert client.get("/healthz").status_code == 200


def test_a_corrupted_model_is_reported_and_the_rest_still_serve(settings, tmp_path):
    import shutil

    from tests.conftest import MODELS

    for name in ("lenet5", "cam_net"):
        shutil.copytree(MODELS / name, tmp_path / name)
    (tmp_path / "cam_net" / "1" / "model.onnx").write_bytes(b"garbage")
    with TestClient(create_app(settings.model_copy(update={"model_dir": tmp_path, "default_model": "lenet5"}))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "sha256" in ready.json()["errors"][0]
        assert client.post("/predict", files=upload(encode(__import__("numpy").zeros((28, 28), "uint8")))).status_code == 200
        assert client.post("/predict?model=cam_net", files=upload(b"x")).status_code == 404


def test_request_id_header(client):
    assert len(client.get("/healthz").headers["x-request-id"]) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"


def test_metrics_count_requests_by_route_model_and_status(client, mnist_test):
    client.post("/predict?model=lenet5", files=upload(encode(mnist_test.images[0, 0])))
    client.post("/predict?model=lenet5", files=upload(b""))
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",model="lenet5",route="/predict",status="200"}' in text
    assert 'http_requests_total{method="POST",model="lenet5",route="/predict",status="422"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.5",method="POST",model="lenet5",route="/predict",status="200"}' in text
    assert 'model_inference_seconds_count{graph="model",model="lenet5"}' in text
    assert 'model_batch_size_count{model="lenet5"}' in text


def test_one_structured_log_line_per_request(client):
    import io

    from service.middleware import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)  # the test app logs at warning
    try:
        response = client.get("/models/lenet5")
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["request_id"] == response.headers["x-request-id"] and entry["path"] == "/models/lenet5"
    assert entry["status"] == 200 and entry["route"] == "/models/{name}" and entry["duration_ms"] >= 0
    assert entry["model"] == "lenet5"


def test_a_manifest_pointing_outside_its_model_directory_is_refused(settings, tmp_path):
    import json
    import shutil

    from tests.conftest import MODELS

    shutil.copytree(MODELS / "lenet5", tmp_path / "lenet5")
    shutil.copy(MODELS / "lenet5" / "1" / "gradcam.onnx", tmp_path / "stray.onnx")
    path = tmp_path / "lenet5" / "2" / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["files"].pop("../1/gradcam.onnx")
    manifest["files"]["../../stray.onnx"] = entry
    manifest["heatmaps"]["gradcam_graph"]["file"] = "../../stray.onnx"
    path.write_text(json.dumps(manifest))
    with TestClient(create_app(settings.model_copy(update={"model_dir": tmp_path, "default_model": "lenet5"}))) as client:
        ready = client.get("/readyz").json()
        assert ready["ready"] is False and "outside the model's directory" in ready["errors"][0]
        assert client.get("/models/lenet5?version=1").status_code == 200  # the good version still serves
