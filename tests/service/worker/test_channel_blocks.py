"""Channels filled to whole blocks: which convolutions change, that nothing else does, and that every shipped
version filled answers as exported (real ONNX Runtime runs); the graphs it must leave alone, built here."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.worker.channel_blocks import fill_channel_blocks
from tests.helpers import MODELS, VERSIONS


def _convolutions(model: bytes) -> dict[str, tuple[int, ...]]:
    proto = onnx.load_model_from_string(model)
    weights = {tensor.name: tuple(tensor.dims) for tensor in proto.graph.initializer}
    return {node.name: weights[node.input[1]] for node in proto.graph.node if node.op_type == "Conv"}


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_resnet_small_fills_its_24_channel_stage_and_nothing_else():
    """Its first stage (24 channels: the stem, the residual block, the next block's two readers) becomes 32;
    the 48- and 96-channel stages already fill whole blocks."""
    exported = (MODELS / "resnet_small" / "1" / "model.onnx").read_bytes()
    before, after = _convolutions(exported), _convolutions(fill_channel_blocks(exported, 16))
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    assert changed == {
        "node_conv2d": ((24, 3, 3, 3), (32, 3, 3, 3)),
        "node_conv2d_1": ((24, 24, 3, 3), (32, 32, 3, 3)),
        "node_conv2d_2": ((24, 24, 3, 3), (32, 32, 3, 3)),
        "node_conv2d_3": ((48, 24, 3, 3), (48, 32, 3, 3)),
        "node_conv2d_5": ((48, 24, 1, 1), (48, 32, 1, 1)),
    }
    assert fill_channel_blocks(exported, 8) is None  # 24 is three blocks of AVX2's 8


@pytest.mark.parametrize("name,version", VERSIONS)
def test_every_shipped_version_filled_answers_as_exported(name, version):
    """Every filled stage is a multiple of 16; the outputs (logits and the heatmaps' features, whose shapes are
    unchanged) equal the exported graph's. int8 versions (their weights behind DequantizeLinear) and graphs
    with every stage whole are left as they are."""
    exported = (MODELS / name / version / "model.onnx").read_bytes()
    filled = fill_channel_blocks(exported, 16)
    if filled is None:
        assert version == "2" or name in ("alexnet_small", "mnist_cnn_a", "mnist_cnn_b")
        return
    assert version == "1" and name in ("cam_net", "inception_small", "lenet5", "resnet_small", "vgg_small")
    before, after = _convolutions(exported), _convolutions(filled)
    grown = [name for name in before if before[name] != after[name]]
    assert grown and all(after[n][0] % 16 == 0 or after[n][0] == before[n][0] for n in grown)
    assert all(after[n][1] % 16 == 0 or after[n][1] == before[n][1] for n in grown)
    plain, blocked = _session(exported), _session(filled)
    spec = plain.get_inputs()[0]
    batch = np.random.default_rng(1).random((5, *spec.shape[1:]), np.float32)
    for a, b in zip(plain.run(None, {spec.name: batch}), blocked.run(None, {spec.name: batch}), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def _graph(nodes: list[onnx.NodeProto], outputs: list[str], weights: dict[str, np.ndarray],
           inputs: tuple[str, ...] = ("x",)) -> bytes:
    given = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 8, 8]) for name in inputs]
    made = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
    initial = [numpy_helper.from_array(array, name) for name, array in weights.items()]
    model = helper.make_model(helper.make_graph(nodes, "g", given, made, initial),
                              opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString()


RNG = np.random.default_rng(0)
W1, B1 = RNG.random((24, 3, 3, 3), np.float32), RNG.random(24, np.float32)
W2, B2 = RNG.random((16, 24, 3, 3), np.float32), RNG.random(16, np.float32)
PADS = {"pads": [1, 1, 1, 1]}


def _stage_then(*reader: onnx.NodeProto, outputs: tuple[str, ...] = ("y",),
                extra: dict[str, np.ndarray] | None = None) -> bytes:
    """x → Conv(24) → Relu → h, then ``reader``."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="stem", **PADS),
             helper.make_node("Relu", ["c"], ["h"]), *reader]
    return _graph(nodes, list(outputs), {"w1": W1, "b1": B1, **(extra or {})})


def test_a_stage_read_by_a_convolution_is_filled_and_answers_the_same():
    reader = helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="reader", **PADS)
    model = _stage_then(reader, extra={"w2": W2, "b2": B2})
    filled = fill_channel_blocks(model, 16)
    assert filled is not None
    assert _convolutions(filled) == {"stem": (32, 3, 3, 3), "reader": (16, 32, 3, 3)}
    x = RNG.random((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(_session(filled).run(None, {"x": x})[0], _session(model).run(None, {"x": x})[0],
                               rtol=1e-5)


@pytest.mark.parametrize("case", ["graph output", "concatenated", "grouped reader", "shared weights",
                                  "added to a constant", "weights fed as an input"])
def test_what_it_does_not_understand_is_left_alone(case):
    conv2 = helper.make_node("Conv", ["h", "w2", "b2"], ["y"], **PADS)
    if case == "graph output":  # the stage's tensor is an answer: its channels are the caller's
        model = _stage_then(conv2, outputs=("y", "h"), extra={"w2": W2, "b2": B2})
    elif case == "concatenated":  # channel positions after a concatenation would move
        model = _stage_then(helper.make_node("Concat", ["h", "x"], ["y"], axis=1))
    elif case == "grouped reader":
        grouped = helper.make_node("Conv", ["h", "w3"], ["y"], group=24, **PADS)
        model = _stage_then(grouped, extra={"w3": RNG.random((24, 1, 3, 3), np.float32)})
    elif case == "shared weights":  # one initializer, two convolutions
        model = _stage_then(conv2, helper.make_node("Conv", ["x", "w1", "b1"], ["z"], **PADS), outputs=("y", "z"),
                            extra={"w2": W2, "b2": B2})
    elif case == "added to a constant":  # only the sum of two of the stage's own tensors keeps channels apart
        added = helper.make_node("Add", ["h", "k"], ["s"])
        model = _stage_then(added, helper.make_node("Conv", ["s", "w2", "b2"], ["y"], **PADS),
                            extra={"k": RNG.random((1, 24, 1, 1), np.float32), "w2": W2, "b2": B2})
    else:  # an initializer listed as a graph input may be overridden at run time
        nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], **PADS), helper.make_node("Relu", ["c"], ["h"]),
                 conv2]
        model = _graph(nodes, ["y"], {"w1": W1, "b1": B1, "w2": W2, "b2": B2}, inputs=("x", "w1"))
    assert fill_channel_blocks(model, 16) is None
