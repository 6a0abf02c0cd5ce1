"""Export round trip: ONNX Runtime reproduces PyTorch, the file holds exactly the parameters, the
manifest says what the service needs, and a bad export fails loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.manifest import Manifest
from tests.helpers import MODELS, encode, leaves, to_rounding, upload
from training import evaluate, export
from training.__main__ import main
from training.architectures import create_model
from training.external import DESCRIPTIONS
from training.summary import summarize
from training.train import TrainConfig, train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", ["lenet5", "resnet_small"])  # conv + avg-pool head; GAP head
def test_export_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    model = create_model(arch).eval()
    images = torch.rand(8, *model.input_spec.shape)
    diffs = export.export_model(model, tmp_path, images)
    assert max(diffs.values()) <= export.TOLERANCE
    assert export.stored_parameter_count(tmp_path / "model.onnx") == summarize(model)["total_params"]
    # Nothing in the graphs names the checkout they were exported from.
    root = str(Path(export.__file__).resolve().parent.parent).encode()
    assert all(root not in (tmp_path / graph).read_bytes() for graph in ("model.onnx", "gradcam.onnx"))

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch
    for batch in (1, 5):  # sizes never traced
        x = torch.rand(batch, *model.input_spec.shape)
        logits, maps = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            ref_logits, ref_maps = model.forward_with_features(x)
        np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
        assert maps.shape == tuple(ref_maps.shape)

    grad_session = ort.InferenceSession(str(tmp_path / "gradcam.onnx"), providers=["CPUExecutionProvider"])
    maps = ref_maps.clone().requires_grad_(True)
    seed = torch.eye(10)[[3] * len(maps)]
    (reference,) = torch.autograd.grad(model.head(maps), maps, grad_outputs=seed)
    (got,) = grad_session.run(None, {"features": ref_maps.numpy(), "seed": seed.numpy()})
    np.testing.assert_allclose(got, reference.numpy(), atol=1e-4 * float(reference.abs().max()))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> tuple[Path, Manifest]:
    """A one-epoch cam_net on 64 images, exported as tiny_cam/3 into a repository of its own."""
    root = tmp_path_factory.mktemp("tiny")
    train(TrainConfig("cam_net", "placed", epochs=1, limit=64, batch_size=32, threads=2), root / "run", progress=False)
    return root / "models", export.export_run(root / "run", root / "models", name="tiny_cam", version="3")


def test_export_run_writes_a_complete_manifest(tiny_export):
    models, manifest = tiny_export
    directory = models / "tiny_cam" / "3"
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert Manifest.model_validate(on_disk) == manifest  # the service's own schema reads what training wrote
    assert on_disk["files"]["model.onnx"]["sha256"] == export.sha256(directory / "model.onnx")
    assert on_disk["input"]["shape"] == [-1, 3, 64, 64] and on_disk["labels"] == [str(d) for d in range(10)]
    assert on_disk["preprocessing"]["kind"] == "letterbox"
    assert np.array(on_disk["heatmaps"]["cam"]["weights"]).shape == (10, 64)
    assert on_disk["outputs"]["features"]["shape"] == [-1, 64, 16, 16]
    assert on_disk["metrics"]["test_size"] == 500 and 0 <= on_disk["metrics"]["test_accuracy"] <= 1
    assert set(on_disk["metrics"]["external"]) == set(DESCRIPTIONS)
    assert on_disk["metrics"]["external"]["sklearn_digits"]["size"] == 1797
    assert on_disk["calibration"]["temperature"] > 0 and 0 <= on_disk["calibration"]["unsure_below"] <= 1
    assert on_disk["summary"]["total_params"] == export.stored_parameter_count(directory / "model.onnx")
    for plot in ("training.png", "confusion.png"):
        assert (directory / plot).read_bytes()[:4] == b"\x89PNG"
    reloaded = export.load_exported(directory)
    original = create_model("cam_net")
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in original.parameters())


def test_a_fresh_export_is_served_through_the_repository(tiny_export, settings, placed_test):
    """Training's contract is the service's: the new model loads, verifies and answers exactly what its
    graph gives for the service's own preprocessing of the image."""
    models, manifest = tiny_export
    image = placed_test.images[7]
    expected = evaluate.logits(evaluate.session(models / "tiny_cam" / "3" / "model.onnx"),
                               evaluate.served_inputs(image[None], manifest))[0]
    app = create_app(settings.model_copy(update={"model_dir": models, "default_model": "tiny_cam"}))
    with TestClient(app) as client:
        assert client.get("/readyz").json()["ready"] is True
        info = client.get("/models/tiny_cam").json()
        assert info["status"] == "ready" and info["version"] == "3" and info["heatmap_methods"] == ["cam", "gradcam"]
        body = client.post("/predict?top_k=10", files=upload(encode(image))).json()
        assert manifest.calibration is not None  # fitted on validation at export; the service applies it
        scaled = expected / manifest.calibration.temperature
        probabilities = np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()
        assert [p["index"] for p in body["predictions"]] == list(np.argsort(-probabilities, kind="stable"))
        got = [p["probability"] for p in body["predictions"]]
        np.testing.assert_allclose(got, np.sort(probabilities)[::-1], atol=1e-6)
        confidence = body["confidence"]
        assert confidence["unsure_below"] == manifest.calibration.unsure_below
        assert confidence["unsure"] == (probabilities.max() < manifest.calibration.unsure_below)
        assert confidence["message"].startswith("not sure: looks like " if confidence["unsure"] else "looks like ")
        assert client.post("/models/tiny_cam/cam", files=upload(encode(image))).json()["method"] == "cam"


def test_parity_failure_fails_loudly():
    with pytest.raises(export.ExportError, match="logits"):
        export._verify("logits", np.zeros(3), np.array([0, 0, 1e-3]))


def test_rescore_rewrites_a_stale_manifest_and_leaves_the_graphs(tmp_path):
    """`training rescore` after the evaluation changed: the manifest is written again from the graph, which
    is not touched; an unknown model name is refused."""
    shutil.copytree(MODELS / "lenet5" / "1", tmp_path / "lenet5" / "1")
    path, graph = tmp_path / "lenet5" / "1" / "manifest.json", tmp_path / "lenet5" / "1" / "model.onnx"
    shipped, graph_bytes = Manifest.model_validate_json(path.read_text()), graph.read_bytes()
    stale = shipped.model_copy(deep=True)
    assert stale.calibration is not None
    stale.calibration.temperature, stale.calibration.unsure_below = 5.0, 0.5
    stale.metrics.external["sklearn_digits"].ece = 0.5
    path.write_text(stale.model_dump_json())

    assert main(["rescore", "lenet5", "--models-dir", str(tmp_path)]) == 0
    assert leaves(Manifest.model_validate_json(path.read_text()).model_dump()) == to_rounding(shipped.model_dump())
    assert graph.read_bytes() == graph_bytes
    with pytest.raises(SystemExit, match="no model nosuch"):
        main(["rescore", "nosuch", "--models-dir", str(tmp_path)])
