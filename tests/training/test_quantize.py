"""Static int8 quantization: a new version with the same parameters and the accuracy kept, or nothing."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from service.manifest import Manifest
from tests.helpers import MODELS
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


def test_lenet5_keeps_its_first_convolution_float_because_int8_runs_it_slower(repository):
    """25 values into 6 maps: int8 ran it 2.8× slower than float32 (far past FLOAT_FIRST_GAIN), the rest is int8."""
    manifest = quantize.quantize_version(repository, "lenet5", source="1", version="2")
    assert manifest.export.quantization is not None and manifest.export.quantization.float_nodes == ["node_conv2d"]
    graph = onnx.load(repository / "lenet5" / "2" / "model.onnx").graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    weights = {init.name: init.data_type for init in graph.initializer}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    assert [node.name for node in convolutions if node.input[1] not in dequantized] == ["node_conv2d"]
    assert weights[convolutions[0].input[1]] == onnx.TensorProto.FLOAT
    assert len(convolutions) == 3 and all(node.input[0] in dequantized for node in convolutions[1:])


def test_too_large_an_accuracy_drop_ships_nothing(repository, monkeypatch):
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP", -1.0)  # a bar no model can pass
    with pytest.raises(quantize.QuantizationRejected, match="not shipped"):
        quantize.quantize_version(repository, "lenet5", source="1", version="2")
    assert sorted(p.name for p in (repository / "lenet5").iterdir()) == ["1"]
