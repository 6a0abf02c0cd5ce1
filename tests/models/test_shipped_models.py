"""Every shipped model version (float and int8) loads in ONNX Runtime and reaches its recorded
accuracy on its test split; every int8 version is within 0.5 pt of its float source."""

from __future__ import annotations

import hashlib

import pytest

from service.manifest import Manifest
from tests.helpers import MODELS, SHIPPED, VERSIONS, manifest
from training import evaluate
from training.data import load_dataset
from training.export import stored_parameter_count
from training.recipes import RECIPES

pytestmark = pytest.mark.slow

FLOORS = {"lenet5": 0.965, "mnist_cnn_a": 0.97, "mnist_cnn_b": 0.97}
RGB_FLOOR = 0.95


def test_every_recipe_is_shipped_and_the_repository_is_small():
    assert SHIPPED == sorted(RECIPES)
    assert all(manifest(name, "1")["precision"] == "float32" for name in SHIPPED)
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 40 * 1024 * 1024


@pytest.mark.parametrize("name, version", VERSIONS)
def test_shipped_model_reaches_its_recorded_accuracy(name, version):
    m = manifest(name, version)
    directory = MODELS / name / version
    for file, entry in m["files"].items():
        assert hashlib.sha256((directory / file).read_bytes()).hexdigest() == entry["sha256"]
    assert stored_parameter_count(directory / "model.onnx") == m["summary"]["total_params"]
    assert m["metrics"]["test_accuracy"] >= FLOORS.get(name, RGB_FLOOR)

    # Scored as the service scores it: its own preprocessing of every test image, then ONNX Runtime.
    typed = Manifest.model_validate(m)
    test = load_dataset(typed.metrics.dataset, "test", typed.training.seed)
    accuracy, confusion = evaluate.scores(evaluate.session(directory / "model.onnx"),
                                          evaluate.served_inputs(test.images, typed), test.labels)
    assert len(test) == m["metrics"]["test_size"] == 500
    assert accuracy == m["metrics"]["test_accuracy"] and confusion == m["metrics"]["confusion_matrix"]


@pytest.mark.parametrize("name, version", [v for v in VERSIONS if manifest(*v)["precision"] == "int8"])
def test_int8_versions_keep_the_accuracy(name, version):
    m = manifest(name, version)
    source = manifest(name, m["export"]["quantization"]["source_version"])
    assert source["precision"] == "float32"
    assert m["metrics"]["test_accuracy"] >= source["metrics"]["test_accuracy"] - 0.005
    assert m["summary"] == source["summary"]
