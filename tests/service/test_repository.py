"""Model integrity: what the repository refuses to load, and how one failed version stays its own problem."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.repository import ModelRepository
from service.worker.protocol import Loaded, RunPlan, Started
from tests.helpers import MODELS, encode, upload

DIGIT = upload(encode(np.zeros((28, 28), np.uint8)))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    for name in ("lenet5", "cam_net"):
        shutil.copytree(MODELS / name, tmp_path / name)
    return tmp_path


def edit_manifest(path: Path, change) -> None:
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def app_on(settings, repository: Path, **update):
    return create_app(settings.model_copy(update={"model_dir": repository, "default_model": "lenet5", **update}))


def test_a_corrupted_version_is_unavailable_and_the_rest_still_serve(settings, repository):
    (repository / "cam_net" / "1" / "model.onnx").write_bytes(b"garbage")
    with TestClient(app_on(settings, repository)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200  # the others serve: this replica still takes traffic
        assert ready.json()["errors"] == ["cam_net/1: model.onnx does not match the sha256 in its manifest"]
        assert client.post("/predict", files=DIGIT).status_code == 200
        assert client.post("/predict?model=cam_net&version=2", files=DIGIT).status_code == 200  # its int8 twin works
        missing = client.post("/predict?model=cam_net&version=1", files=DIGIT)
        assert missing.status_code == 404 and "unavailable" in missing.json()["detail"]
        info = client.get("/models/cam_net").json()
        assert info["status"] == "failed" and "sha256" in info["error"]
        assert str(repository) not in ready.text + missing.text + json.dumps(info)
    with TestClient(app_on(settings, repository, require_all_models=True)) as client:
        assert client.get("/readyz").status_code == 503  # the operator asked for every version or nothing


@pytest.mark.parametrize("path", ["/etc/hostname", "../../stray.onnx"])
def test_a_graph_outside_the_model_directory_is_refused(settings, repository, path):
    shutil.copy(MODELS / "lenet5" / "1" / "gradcam.onnx", repository / "stray.onnx")

    def point_outside(manifest):
        entry = manifest["files"].pop("../1/gradcam.onnx")
        manifest["files"][path] = entry
        manifest["heatmaps"]["gradcam_graph"]["file"] = path

    edit_manifest(repository / "lenet5" / "2" / "manifest.json", point_outside)
    with TestClient(app_on(settings, repository)) as client:
        errors = client.get("/readyz").json()["errors"]
        assert errors == [f"lenet5/2: {path} is outside the model's directory"]
        assert client.get("/models/lenet5?version=1").status_code == 200  # the good version still serves


def test_a_graph_the_manifest_does_not_list_is_never_loaded(settings, repository):
    edit_manifest(repository / "lenet5" / "1" / "manifest.json", lambda m: m["files"].pop("model.onnx"))
    edit_manifest(repository / "cam_net" / "1" / "manifest.json",
                  lambda m: m["heatmaps"]["gradcam_graph"].update(file="unlisted.onnx"))
    with TestClient(app_on(settings, repository)) as client:
        errors = client.get("/readyz").json()["errors"]
        assert "lenet5/1: model.onnx is loaded but not listed (with its sha256) in the manifest's files" in errors
        assert "cam_net/1: unlisted.onnx is loaded but not listed (with its sha256) in the manifest's files" in errors


def test_a_folder_cannot_take_over_another_models_name_or_version(settings, repository):
    shutil.copytree(repository / "lenet5" / "1", repository / "lenet5" / "7")  # manifest still says lenet5/1
    shutil.copytree(repository / "cam_net" / "1", repository / "impostor" / "1")  # manifest says cam_net/1
    with TestClient(app_on(settings, repository)) as client:
        body = client.get("/readyz").json()
        assert ("lenet5/7: its manifest says lenet5/1; a version is served only from the folders its manifest "
                "names") in body["errors"]
        assert any(e.startswith("impostor/1: its manifest says cam_net/1") for e in body["errors"])
        assert body["models"] == {"cam_net": ["1", "2"], "lenet5": ["1", "2"]}
        assert client.get("/models/lenet5?version=7").status_code == 404


def test_a_replacement_worker_that_cannot_reload_a_version_makes_it_unavailable_not_a_500(settings, repository):
    with TestClient(app_on(settings, repository)) as client:
        lane = client.app.state.engine.ordinary
        assert client.post("/predict?model=cam_net", files=DIGIT).status_code == 200
        (repository / "cam_net" / "1" / "model.onnx").write_bytes(b"tampered after start")
        [pid] = lane.pids
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (lane.pids in ([], [pid]) or lane.running < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        response = client.post("/predict?model=cam_net", files=DIGIT)
        assert response.status_code == 404 and "sha256" in response.json()["detail"]
        errors = client.get("/readyz").json()["errors"]
        assert "cam_net/1: model.onnx does not match the sha256 in its manifest" in errors
        assert client.post("/predict", files=DIGIT).status_code == 200


def test_the_run_plan_shown_is_the_ordinary_workers(settings, repository):
    """Heavy workers always run the graph as exported on one thread: their word, which comes after the ordinary
    lane's, and from each of their successors, never replaces how the batched requests run."""
    repo = ModelRepository(settings.model_copy(update={"model_dir": repository, "default_model": "lenet5"}))
    repo.load_all()
    key, cpu = ("cam_net", "1"), ["CPUExecutionProvider"]
    repo.record(Started({key: Loaded(cpu, RunPlan(2, blocked=True))}, heavy=False))
    repo.record(Started({key: Loaded(cpu, RunPlan(1))}, heavy=True))
    assert repo.get(*key).plan == RunPlan(2, blocked=True)
    repo.record(Started({key: "ONNX Runtime could not load it"}, heavy=False))
    failed = repo.models["cam_net"]["1"]
    assert failed.plan is None and failed.status == "failed"
