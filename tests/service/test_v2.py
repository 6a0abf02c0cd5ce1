"""The Open Inference Protocol (KServe V2), checked with a client nobody here wrote: tritonclient[http],
against the real server; results must equal /predict's. Then the protocol's error shape for bad requests."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.manifest import Manifest
from service.postprocessing import softmax
from service.preprocessing import prepare
from tests.helpers import MODELS, VERSIONS, decoded, encode, manifest, upload


def sample_images(name: str, mnist_test, placed_test) -> list[bytes]:
    data = mnist_test if manifest(name)["metrics"]["dataset"] == "mnist" else placed_test
    return [encode(data.images[i]) for i in (3, 151, 402)]


def model_input(name: str, images: list[bytes], version: str = "1") -> np.ndarray:
    """The tensor /predict feeds the model, built with the service's own preprocessing."""
    m = Manifest.model_validate_json((MODELS / name / version / "manifest.json").read_text())
    return prepare([decoded(data) for data in images], m)


@pytest.fixture(scope="module")
def triton_client(server_url):
    client = triton.InferenceServerClient(server_url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def test_server_health_metadata_and_repository_index(triton_client):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    metadata = triton_client.get_server_metadata()
    assert metadata["name"] == "cnn-serve" and "binary_tensor_data" in metadata["extensions"]
    index = triton_client.get_model_repository_index()
    assert sorted((entry["name"], entry["version"]) for entry in index) == VERSIONS
    assert {entry["state"] for entry in index} == {"READY"}


@pytest.mark.parametrize("name, version", VERSIONS)
def test_every_model_answers_json_and_binary_like_predict(triton_client, server_url, mnist_test, placed_test, name,
                                                          version):
    assert triton_client.is_model_ready(name) and triton_client.is_model_ready(name, version)
    meta = triton_client.get_model_metadata(name, version)
    expected_input = manifest(name)["input"]["shape"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": expected_input}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "features"]

    temperature = manifest(name, version)["calibration"]["temperature"]  # V2 answers the graph's own logits
    images = sample_images(name, mnist_test, placed_test)
    batch = model_input(name, images, version)
    with httpx.Client(base_url=server_url, timeout=60) as http:
        predicted = [http.post(f"/predict?model={name}&version={version}&top_k=10", files=upload(d)).json()[
            "predictions"]
                     for d in images]
    expected = np.array([[p["probability"] for p in sorted(rows, key=lambda p: p["index"])] for rows in predicted])

    for binary in (False, True):
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        outputs = [triton.InferRequestedOutput("logits", binary_data=binary),
                   triton.InferRequestedOutput("features", binary_data=binary)]
        result = triton_client.infer(name, [tensor], model_version=version, outputs=outputs)
        logits = result.as_numpy("logits")
        features_shape = (3, *manifest(name)["outputs"]["features"]["shape"][1:])
        assert logits.shape == (3, 10) and result.as_numpy("features").shape == features_shape
        np.testing.assert_allclose(softmax(logits, temperature), expected, atol=1e-5)  # /predict calibrates

    top = triton.InferRequestedOutput("logits", binary_data=True, class_count=2)
    result = triton_client.infer(name, [tensor], model_version=version, outputs=[top])
    ranked = result.as_numpy("logits")  # the classification extension: b"<score>:<index>:<label>"
    assert ranked.shape == (3, 2)
    assert [row[0].decode().split(":")[2] for row in ranked] == [rows[0]["label"] for rows in predicted]


def test_all_outputs_in_binary_when_none_are_named(triton_client, mnist_test):
    batch = model_input("lenet5", [encode(mnist_test.images[7])])
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = triton_client.infer("lenet5", [tensor])
    assert result.as_numpy("logits").shape == (1, 10) and result.as_numpy("features").shape == (1, 16, 10, 10)


def test_infer_errors_come_back_in_the_protocol_shape(triton_client):
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        triton_client.get_model_metadata("nope")
    wrong = triton.InferInput("input", [1, 1, 28, 28], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException, match=r"must have shape \[N, 1, 32, 32\]"):
        triton_client.infer("lenet5", [wrong])


def infer_json(client, name: str, body: dict | bytes, headers: dict | None = None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/v2/models/{name}/infer", content=content, headers=headers or {})


ONE = {"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0] * 1024}


@pytest.mark.parametrize("body, status, message", [
    ({"inputs": [{**ONE, "datatype": "INT8"}]}, 400, "datatype must be FP32"),
    ({"inputs": [{**ONE, "data": [0.0] * 10}]}, 400, "needs 1024 values; got 10"),
    ({"inputs": [{**ONE, "data": ["x"] * 1024}]}, 400, "data must be numbers"),
    ({"inputs": [{**ONE, "name": "image"}]}, 400, "one input named 'input'"),
    ({"inputs": [{**ONE, "data": [float("nan")] * 1024}]}, 400, "NaN or infinite"),
    ({"inputs": [{**ONE, "shape": [40, 1, 32, 32], "data": [0.0] * 40 * 1024}]}, 400, "1 <= N <= 32"),
    ({"inputs": [ONE], "outputs": [{"name": "probabilities"}]}, 400, "no output 'probabilities'"),
    ({"inputs": [ONE], "outputs": [{"name": "features", "parameters": {"classification": 3}}]}, 400,
     "classification needs"),
    ({"inputs": []}, 400, "protocol's shape"),
    (b"{not json", 400, "not valid JSON"),
])
def test_bad_infer_requests(client, body, status, message):
    response = infer_json(client, "lenet5", body)
    assert response.status_code == status
    assert message in response.json()["error"] and set(response.json()) == {"error"}


def test_bad_binary_header_and_unknown_model(client):
    response = infer_json(client, "lenet5", b'{"inputs": []}', {"Inference-Header-Content-Length": "999"})
    assert response.status_code == 400 and "Inference-Header-Content-Length" in response.json()["error"]
    described = {k: v for k, v in ONE.items() if k != "data"}
    header = json.dumps({"inputs": [{**described, "parameters": {"binary_data_size": 4096}}]}).encode()
    short = infer_json(client, "lenet5", header + b"\0" * 100, {"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "binary_data_size 4096" in short.json()["error"]
    missing = infer_json(client, "nope", {"inputs": [ONE]})
    assert missing.status_code == 404 and "available: " in missing.json()["error"]
    assert client.get("/v2/models/lenet5/versions/9/ready").status_code == 404


def test_json_infer_batches_rows_like_single_requests(client, mnist_test):
    batch = model_input("lenet5", [encode(mnist_test.images[i]) for i in (0, 60, 120, 180)])
    body = {"id": "req-1", "inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                       "data": batch.reshape(-1).tolist()}], "outputs": [{"name": "logits"}]}
    response = infer_json(client, "lenet5", body)
    assert response.status_code == 200 and response.json()["id"] == "req-1"
    out = response.json()["outputs"][0]
    assert out["name"] == "logits" and out["shape"] == [4, 10] and out["datatype"] == "FP32"
    together = np.array(out["data"], np.float32).reshape(4, 10)
    for row, single in zip(together, batch, strict=True):
        alone = infer_json(client, "lenet5", {"inputs": [{**body["inputs"][0], "shape": [1, 1, 32, 32],
                                                          "data": single.reshape(-1).tolist()}]}).json()
        logits = next(o for o in alone["outputs"] if o["name"] == "logits")
        np.testing.assert_allclose(row, logits["data"], atol=1e-5)
    assert together.argmax(1).tolist() == [int(mnist_test.labels[i]) for i in (0, 60, 120, 180)]
