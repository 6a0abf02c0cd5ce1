"""Every shipped model loads in ONNX Runtime and reaches its recorded accuracy on its test split."""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import MODELS, SHIPPED, manifest
from training.architectures import create_model
from training.data import load_dataset
from training.export import float_initializer_count
from training.recipes import SHIPPED as RECIPES
from training.train import to_input

FLOORS = {"lenet5": 0.965, "mnist_cnn_a": 0.97, "mnist_cnn_b": 0.97}
RGB_FLOOR = 0.95


def test_every_recipe_is_shipped_and_the_repository_is_small():
    assert SHIPPED == sorted(RECIPES)
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 40 * 1024 * 1024


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reaches_its_recorded_accuracy(name):
    m = manifest(name)
    directory = MODELS / name / "1"
    for file, entry in m["files"].items():
        assert hashlib.sha256((directory / file).read_bytes()).hexdigest() == entry["sha256"]
    assert float_initializer_count(directory / "model.onnx") == m["summary"]["total_params"]
    assert m["metrics"]["test_accuracy"] >= FLOORS.get(name, RGB_FLOOR)

    test = load_dataset(m["metrics"]["dataset"], "test", m["training"]["seed"])
    x = to_input(test.images, create_model(m["architecture"]).input_spec).numpy()
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(["logits"], {"input": x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    accuracy = float((logits.argmax(1) == test.labels).mean())
    assert len(test) == m["metrics"]["test_size"] == 500
    assert abs(accuracy - m["metrics"]["test_accuracy"]) <= 0.002  # at most one image differs
