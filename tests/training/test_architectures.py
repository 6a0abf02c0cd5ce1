"""Architectures against the course material and the papers: parameter counts to the unit, and output sizes by
the formula (W − F + 2P) / S + 1."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import MATERIAL_TOTALS
from training.architectures import create_model, list_architectures
from training.summary import summarize

# Per parameterised layer, as the material counts them: conv F·F·C_in·C_out + C_out, dense in·out + out.
MATERIAL_ROWS = {  # parameterised layers, in order
    "lenet5": [156, 2_416, 48_120, 10_164, 850],
    "mnist_cnn_a": [832, 51_264, 65_600, 650],
    "mnist_cnn_b": [320, 18_496, 1_179_776, 1_290],
}
MATERIAL_CNN_B_SHAPES = [(32, 26, 26), (64, 24, 24), (64, 12, 12), (9_216,), (128,), (10,)]


def output_size(w: int, f: int, p: int, s: int, d: int = 1) -> int:
    """(W − F + 2P) / S + 1, which must be whole; a dilated kernel spans F = d·(F − 1) + 1."""
    f = d * (f - 1) + 1
    assert (w - f + 2 * p) % s == 0, f"stride {s} does not fit W={w}, F={f}, P={p}"
    return (w - f + 2 * p) // s + 1


def test_formula_examples_from_the_material():
    assert output_size(7, 3, 0, 1) == 5
    assert output_size(7, 3, 0, 2) == 3
    assert output_size(7, 3, 1, 1) == 7
    assert output_size(7, 3, 2, 1, d=2) == 7  # a dilated 3×3 spans 5×5
    with pytest.raises(AssertionError):
        output_size(7, 3, 0, 3)


@pytest.mark.parametrize("arch", MATERIAL_TOTALS)
def test_parameter_counts_match_seeds(arch):
    model = create_model(arch)
    summary = summarize(model)
    assert sum(p.numel() for p in model.parameters()) == MATERIAL_TOTALS[arch]
    assert summary["total_params"] == MATERIAL_TOTALS[arch]
    assert [row["params"] for row in summary["layers"] if row["params"]] == MATERIAL_ROWS[arch]


def test_mnist_cnn_b_output_shapes_match_seeds():
    rows = summarize(create_model("mnist_cnn_b"))["layers"]
    shapes = [tuple(r["output_shape"]) for r in rows if r["type"] in ("Conv2d", "MaxPool2d", "Flatten", "Linear")]
    assert shapes == MATERIAL_CNN_B_SHAPES


def test_lenet5_follows_the_material():
    rows = summarize(create_model("lenet5"))["layers"]
    assert rows[0]["input_shape"] == [1, 32, 32]
    maps = [tuple(r["output_shape"]) for r in rows if r["type"] in ("Conv2d", "AvgPool2d")]
    assert maps == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1)]
    assert {r["type"] for r in rows} >= {"Tanh", "AvgPool2d"} and "ReLU" not in {r["type"] for r in rows}


@pytest.mark.parametrize("arch", list_architectures())
def test_every_layer_obeys_the_output_size_formula(arch):
    summary = summarize(create_model(arch))
    windowed = [r for r in summary["layers"] if r["kernel"]]
    assert windowed, "every CNN has convolutions"
    for row in windowed:
        for axis in (1, 2):
            expected = output_size(row["input_shape"][axis], row["kernel"][axis - 1], row["padding"][axis - 1],
                                   row["stride"][axis - 1], row["dilation"][axis - 1])
            assert row["output_shape"][axis] == expected, row["name"]
        if row["type"] == "Conv2d":
            kh, kw = row["kernel"]
            assert row["params"] == kh * kw * row["input_shape"][0] * row["output_shape"][0] + row["output_shape"][0]
        else:
            assert row["params"] == 0 and row["output_shape"][0] == row["input_shape"][0]
    assert summary["total_params"] == sum(r["params"] for r in summary["layers"])


@pytest.mark.parametrize("arch", list_architectures())
def test_forward_shapes_and_heatmap_layer(arch):
    model = create_model(arch).eval()
    x = torch.rand(3, *model.input_spec.shape)
    logits, maps = model.forward_with_features(x)
    assert logits.shape == (3, 10)
    assert maps.ndim == 4 and maps.shape[0] == 3 and maps.shape[2] > 1
    assert torch.allclose(model(x), logits)
    assert model.cam_layer.startswith("features.")


def test_design_ideas_are_kept():
    rows = {arch: summarize(create_model(arch))["layers"] for arch in list_architectures()}
    first_conv = next(r for r in rows["alexnet_small"] if r["type"] == "Conv2d")
    assert first_conv["kernel"][0] >= 7 and first_conv["stride"][0] >= 2
    overlapping = [r for r in rows["alexnet_small"] if r["type"] == "MaxPool2d" and r["kernel"][0] > r["stride"][0]]
    assert overlapping
    assert all(r["kernel"] == [3, 3] for r in rows["vgg_small"] if r["type"] == "Conv2d")
    assert any(r["kernel"] == [1, 1] and "shortcut" in r["name"] for r in rows["resnet_small"])
    assert any("branch5" in r["name"] and r["kernel"] == [5, 5] for r in rows["inception_small"])
    for gap_net in ("resnet_small", "inception_small", "cam_net"):
        assert create_model(gap_net).supports_cam
        assert [r["type"] for r in rows[gap_net][-3:]] == ["AdaptiveAvgPool2d", "Flatten", "Linear"]


def test_alexnet_starts_at_the_uniform_prediction():
    """Its FC head starts with a zero output layer (see AlexNetSmall): every class equally likely, so the
    first updates do not kill its ReLU units the way huge initial logits did."""
    torch.manual_seed(0)
    model = create_model("alexnet_small").eval()
    with torch.no_grad():
        logits = model(torch.rand(4, *model.input_spec.shape))
    assert torch.equal(logits, torch.zeros_like(logits))
    hidden = [layer for layer in model.head if isinstance(layer, torch.nn.Linear)][:-1]
    assert all(float(layer.weight.detach().std()) > 0 for layer in hidden)
