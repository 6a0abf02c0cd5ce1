"""Static int8 quantization: a new version with the same parameters and the accuracy kept, or nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from service.manifest import Manifest
from tests.helpers import MODELS, float_convolutions
from training import quantize
from training.export import stored_parameter_count

pytestmark = pytest.mark.slow


@pytest.fixture
def repository(tmp_path):
    shutil.copytree(MODELS / "lenet5" / "1", tmp_path / "lenet5" / "1")
    return tmp_path


def test_quantize_writes_an_int8_version_beside_the_float_one(repository):
    manifest = quantize.quantize_version(repository, "lenet5", source="1", version="2")
    directory = repository / "lenet5" / "2"
    assert Manifest.model_validate_json((directory / "manifest.json").read_text()) == manifest
    assert manifest.precision == "int8" and manifest.version == "2"
    assert stored_parameter_count(directory / "model.onnx") == 61_706  # int8 weights + int32 biases
    source = Manifest.model_validate_json((MODELS / "lenet5" / "1" / "manifest.json").read_text())
    assert manifest.metrics.test_accuracy >= source.metrics.test_accuracy - quantize.MAX_ACCURACY_DROP
    assert manifest.export.quantization is not None and manifest.export.quantization.source_version == "1"
    assert (directory / "model.onnx").stat().st_size < (MODELS / "lenet5" / "1" / "model.onnx").stat().st_size / 2
    assert json.loads((repository / "lenet5" / "config.json").read_text()) == {"default_version": "1"}
    # The float head's gradient graph is shared with version 1, not copied.
    assert manifest.heatmaps.gradcam_graph.file == "../1/gradcam.onnx" and not (directory / "gradcam.onnx").exists()
    # All int8, lenet5 runs 1.8× slower than with its first convolution (25 values into 6 maps) in float32, far
    # past FLOAT_FIRST_GAIN: that convolution alone stays float32, the other two are int8.
    assert manifest.export.quantization.float_nodes == float_convolutions(directory / "model.onnx") == ["node_conv2d"]


def test_the_first_convolution_stays_int8_unless_float32_clears_the_bar(repository, monkeypatch):
    monkeypatch.setattr(quantize, "FLOAT_FIRST_GAIN", 1000.0)  # a gain no model reaches
    manifest = quantize.quantize_version(repository, "lenet5", source="1", version="2")
    assert manifest.export.quantization is not None and manifest.export.quantization.float_nodes == []
    assert float_convolutions(repository / "lenet5" / "2" / "model.onnx") == []
    assert sorted(p.name for p in (repository / "lenet5" / "2").iterdir()) == ["manifest.json", "model.onnx"]


def test_too_large_an_accuracy_drop_ships_nothing(repository, monkeypatch):
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP", -1.0)  # a bar no model can pass
    with pytest.raises(quantize.QuantizationRejected, match="not shipped"):
        quantize.quantize_version(repository, "lenet5", source="1", version="2")
    assert sorted(p.name for p in (repository / "lenet5").iterdir()) == ["1"]
