"""Every shipped model version (float and int8) loads in ONNX Runtime and, scored again through the
service's own preprocessing, gives the accuracy, calibration and external scores its manifest records (to
ONNX Runtime's rounding); those meet the held-out floors and the robustness targets; every int8 version is
within 0.5 pt of its float source."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from service.manifest import Manifest
from tests.helpers import MODELS, SHIPPED, VERSIONS, float_convolutions, leaves, manifest, to_rounding
from training import evaluate
from training.export import served_metrics, stored_parameter_count
from training.external import external_sets
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
        graph = (directory / file).read_bytes()
        assert hashlib.sha256(graph).hexdigest() == entry["sha256"]
        assert b"pkg.torch.onnx.stack_trace" not in graph  # no exporter's paths: `make models` rebuilds these bytes
    assert stored_parameter_count(directory / "model.onnx") == m["summary"]["total_params"]
    assert m["metrics"]["test_accuracy"] >= FLOORS.get(name, RGB_FLOOR)

    # Scored again as the service scores it: its own preprocessing of every image, then ONNX Runtime.
    typed = Manifest.model_validate(m)
    metrics, calibration = served_metrics(typed, directory / "model.onnx")
    assert metrics.test_size == 500
    assert leaves(metrics.model_dump()) == to_rounding(typed.metrics.model_dump())
    assert leaves(calibration.model_dump()) == to_rounding(typed.calibration.model_dump())


# Issue 15's targets on the external sets.
SKLEARN_TARGET = {1: 0.93, 3: 0.90}  # by input channels: the MNIST nets, the RGB nets
PRINTED_TARGET, FULL_FRAME_TARGET, ECE_TARGET, AUROC_TARGET = 0.97, 0.95, 0.03, 0.9


@pytest.mark.parametrize("name, version", VERSIONS)
def test_shipped_model_holds_up_on_digits_from_outside_its_training_data(name, version):
    m = Manifest.model_validate(manifest(name, version))
    gray = m.input.channels == 1
    targets = {"sklearn_digits": SKLEARN_TARGET[m.input.channels], "printed_heldout": PRINTED_TARGET,
               "mnist_full_frame": FLOORS.get(name, RGB_FLOOR) if gray else FULL_FRAME_TARGET}
    for set_name, score in m.metrics.external.items():
        floors = {"accuracy": targets[set_name], "auroc": AUROC_TARGET, "ece": ECE_TARGET}
        assert score.accuracy >= floors["accuracy"], (set_name, score.accuracy)
        assert score.ece <= floors["ece"], (set_name, score.ece)  # calibrated on validation only
        assert score.auroc is None or score.auroc >= floors["auroc"], (set_name, score.auroc)


@pytest.mark.parametrize("name, version", [v for v in VERSIONS if manifest(*v)["precision"] == "int8"])
def test_int8_versions_keep_the_accuracy(name, version):
    m = manifest(name, version)
    source = manifest(name, m["export"]["quantization"]["source_version"])
    assert source["precision"] == "float32"
    assert m["metrics"]["test_accuracy"] >= source["metrics"]["test_accuracy"] - 0.005
    assert m["summary"] == source["summary"]
    # What runs in float32 is what the manifest says: lenet5's first convolution (training.quantize), nothing else.
    float_nodes = m["export"]["quantization"].get("float_nodes", [])
    assert float_convolutions(MODELS / name / version / "model.onnx") == float_nodes
    assert float_nodes == (["node_conv2d"] if name == "lenet5" else [])


@pytest.mark.parametrize("name", SHIPPED)
def test_the_digits_the_previous_release_misread(name):
    """Per class, where the release before issue 15 failed: a printed 1 with a foot serif (read as 2 by every
    model: 97.8–98.6 % right now), other writers' 1s (read as 8 by the gray nets: 89–93 % right now, every
    model 84–93 %, with the NIST-normalised form scans) and 9s (read as 3 by mnist_cnn_b: 63–91 % right now,
    inception_small and cam_net the weakest at 63 and 66 %, mnist_cnn_b 71 %). The floors below hold them
    there. cam_net's 60-epoch recipe moved both: 3 more of the 182 ones wrong (83.5 → 81.9 %, read as 7), 13
    more of the 180 nines right (57.8 → 65.0 %), so the 1s' floor is its figure and the 9s' floor rose to the
    weakest model's."""
    typed = Manifest.model_validate(manifest(name, "1"))
    model = evaluate.session(MODELS / name / "1" / "model.onnx")
    sets = {s.name: s for s in external_sets()}
    for set_name, digit, floor in (("printed_heldout", 1, 0.95), ("sklearn_digits", 1, 0.81),
                                   ("sklearn_digits", 9, 0.62)):
        chosen = sets[set_name]
        pick = np.flatnonzero(chosen.labels == digit)
        predicted = evaluate.logits(model, evaluate.served_inputs([chosen.images[i] for i in pick], typed)).argmax(1)
        assert np.mean(predicted == digit) >= floor, (set_name, digit, np.bincount(predicted, minlength=10))
