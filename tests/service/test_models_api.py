"""GET /models, /models/{name} and the architecture summaries, against the course material's parameter counts
and the ONNX files."""

from __future__ import annotations

import pytest

from tests.helpers import MATERIAL_TOTALS, MODELS, SHIPPED, VERSIONS, manifest
from training.export import stored_parameter_count


def test_list_models(client, settings):
    body = client.get("/models").json()
    assert body["default_model"] == settings.default_model
    assert [m["name"] for m in body["models"]] == SHIPPED
    for info in body["models"]:
        m = manifest(info["name"])  # version 1, float32: the default version of every shipped model
        assert info["version"] == info["default_version"] == "1" and info["precision"] == "float32"
        assert info["status"] == "ready" and info["providers"] == ["CPUExecutionProvider"]
        assert info["test_accuracy"] == m["metrics"]["test_accuracy"]
        # Beside it, how the model does on digits from outside its training data, and its calibration.
        assert info["external"] == m["metrics"]["external"] and info["calibration"] == m["calibration"]
        assert set(info["external"]) == {"sklearn_digits", "printed_heldout", "mnist_full_frame"}
        assert [info["input"]["channels"], info["input"]["height"], info["input"]["width"]] == m["input"]["shape"][1:]
        assert info["labels"] == [str(d) for d in range(10)]


def test_one_model_and_unknown(client):
    info = client.get("/models/cam_net").json()
    assert info["heatmap_methods"] == ["cam", "gradcam"] and info["versions"] == ["1", "2"]
    int8 = client.get("/models/cam_net?version=2").json()
    assert int8["precision"] == "int8" and int8["version"] == "2" and int8["default_version"] == "1"
    assert client.get("/models/lenet5").json()["heatmap_methods"] == ["gradcam"]
    missing = client.get("/models/nope")
    assert missing.status_code == 404 and "cam_net" in missing.json()["detail"]
    assert client.get("/models/lenet5?version=9").status_code == 404


def test_each_version_says_how_its_batches_run(client):
    """The ordinary worker's run plan, as the first worker timed it: the threads, and the filled graph only where
    there is something to fill (a float version with a stage of a channel count off ONNX Runtime's blocks:
    alexnet_small's and the MNIST CNNs' are whole, and no int8 version is touched). Which of the others are filled
    depends on this machine's CPU (tests/service/worker/test_runtime.py checks the choice itself)."""
    fillable = {"cam_net", "inception_small", "lenet5", "resnet_small", "vgg_small"}
    for name, version in VERSIONS:
        runs = client.get(f"/models/{name}?version={version}").json()["runs"]
        assert runs["threads"] in (1, 2), (name, version, runs)
        if runs["channels_filled"]:
            assert version == "1" and name in fillable, (name, version)


def test_mnist_cnn_b_summary_matches_seeds(client):
    body = client.get("/models/mnist_cnn_b/summary").json()
    with_params = [(r["type"], r["params"]) for r in body["layers"] if r["params"]]
    assert with_params == [("Conv2d", 320), ("Conv2d", 18_496), ("Linear", 1_179_776), ("Linear", 1_290)]
    shapes = [r["output_shape"] for r in body["layers"] if r["type"] in ("Conv2d", "MaxPool2d", "Flatten", "Linear")]
    assert shapes == [[32, 26, 26], [64, 24, 24], [64, 12, 12], [9216], [128], [10]]
    assert body["totals"]["total_params"] == 1_199_882 == body["totals"]["trainable_params"]
    conv2 = next(r for r in body["layers"] if r["params"] == 18_496)
    assert conv2["kernel"] == [3, 3] and conv2["stride"] == [1, 1] and conv2["padding"] == [0, 0]
    assert conv2["macs"] == 3 * 3 * 32 * 64 * 24 * 24
    assert body["totals"]["size_bytes"] == 4 * 1_199_882


@pytest.mark.parametrize("name, version", VERSIONS)
def test_summary_agrees_with_the_onnx_initializers(client, name, version):
    body = client.get(f"/models/{name}/summary?version={version}").json()
    onnx_params = stored_parameter_count(MODELS / name / version / "model.onnx")
    assert body["totals"]["total_params"] == onnx_params == sum(r["params"] for r in body["layers"])
    if name in MATERIAL_TOTALS:
        assert onnx_params == MATERIAL_TOTALS[name]


def test_summary_as_text(client):
    response = client.get("/models/mnist_cnn_b/summary?format=text")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "Total params: 1,199,882" in text and "18,496" in text and "1,179,776" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("Layer (type)"))
    assert all(len(line) <= len(lines[1]) for line in lines[1:] if line)  # fixed width under the rule
    assert header.index("Param #") > header.index("Output shape")
    assert client.get("/models/mnist_cnn_b/summary?format=xml").status_code == 422


def test_default_version_comes_from_the_model_config(settings, tmp_path, mnist_test):
    import json
    import shutil

    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.helpers import encode, upload

    shutil.copytree(MODELS / "mnist_cnn_b", tmp_path / "mnist_cnn_b")
    digit = upload(encode(mnist_test.images[0, 0]))
    app_settings = settings.model_copy(update={"model_dir": tmp_path})
    for config, expected in (({"default_version": "2"}, "2"), ({}, "2"), ({"default_version": "1"}, "1")):
        (tmp_path / "mnist_cnn_b" / "config.json").write_text(json.dumps(config))
        with TestClient(create_app(app_settings)) as client:
            body = client.post("/predict", files=digit).json()
            assert body["version"] == expected
            assert body["predictions"][0]["label"] == str(mnist_test.labels[0])
    (tmp_path / "mnist_cnn_b" / "config.json").write_text(json.dumps({"default_version": "9"}))
    with TestClient(create_app(app_settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "default_version '9'" in ready.json()["errors"][0]
