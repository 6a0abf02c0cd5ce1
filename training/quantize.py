"""Static int8 quantization of an exported model (ONNX Runtime's QDQ format), calibrated on training
images and shipped as its own version beside the float one, only if it keeps the accuracy.

Weights are int8 per output channel, activations uint8 per tensor with min-max ranges measured on
evenly spread training images (every class). The Grad-CAM graph and the CAM weights stay float: the
int8 model's feature maps are dequantized floats, so the same head gradient applies — the int8 manifest
points at the source version's ``gradcam.onnx`` (``../1/gradcam.onnx``) instead of carrying a copy, which
for the FC-headed nets is most of the repository's size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.metrics import accuracy_score, confusion_matrix

from .architectures import InputSpec
from .data import LABELS, load_dataset
from .export import ExportError, sha256, stored_parameter_count, write_model_config
from .train import to_input

MAX_ACCURACY_DROP = 0.005  # the bar: more than 0.5 pt lost and the int8 version is not shipped
CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32


class QuantizationRejected(ExportError):
    """The int8 model lost too much accuracy; nothing was written."""


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(np.array_split(images, max(1, len(images) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch}


def _predict(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(["logits"], {"input": images[i:i + 256]})[0] for i in range(0, len(images), 256)]).argmax(1)


def quantize_version(models_dir: Path, name: str, source: str = "1", version: str = "2",
                     calibration_images: int = CALIBRATION_IMAGES) -> dict[str, Any]:
    """Write ``models_dir/name/version`` as the int8 twin of ``source``; raises QuantizationRejected
    (writing nothing) when test accuracy drops by more than MAX_ACCURACY_DROP."""
    source_dir = models_dir / name / source
    manifest = json.loads((source_dir / "manifest.json").read_text())
    spec = InputSpec(*manifest["input"]["shape"][1:])
    dataset, seed = manifest["metrics"]["dataset"], int(manifest["training"]["seed"])
    train = load_dataset(dataset, "train", seed)
    spread = np.linspace(0, len(train) - 1, calibration_images).astype(int)  # the split is sorted by class
    calibration = to_input(train.images[spread], spec).numpy()

    directory = models_dir / name / version
    staging = directory.with_name(f".{version}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        quant_pre_process(str(source_dir / "model.onnx"), str(staging / "prepared.onnx"), skip_symbolic_shape=True)
        quantize_static(str(staging / "prepared.onnx"), str(staging / "model.onnx"), _Calibration(calibration),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax)
        (staging / "prepared.onnx").unlink()
        result = _check_and_describe(manifest, staging, spec, dataset, seed, version, len(calibration))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    if not (directory.parent / "config.json").exists():
        write_model_config(directory.parent, source)  # int8 is served when asked for; the float version stays the default
    return result


def _check_and_describe(manifest: dict[str, Any], staging: Path, spec: InputSpec, dataset: str, seed: int,
                        version: str, calibrated_on: int) -> dict[str, Any]:
    test, val = load_dataset(dataset, "test", seed), load_dataset(dataset, "val", seed)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(staging / "model.onnx"), options, providers=["CPUExecutionProvider"])
    predicted = _predict(session, to_input(test.images, spec).numpy())
    accuracy = float(accuracy_score(test.labels, predicted))
    float_accuracy = manifest["metrics"]["test_accuracy"]
    drop = float_accuracy - accuracy
    if drop > MAX_ACCURACY_DROP:
        raise QuantizationRejected(f"{manifest['name']}: int8 test accuracy {accuracy:.2%} is {drop * 100:.1f} pt below "
                                   f"float32's {float_accuracy:.2%} (limit {MAX_ACCURACY_DROP * 100:.1f} pt); not shipped")
    stored = stored_parameter_count(staging / "model.onnx")
    if stored != manifest["summary"]["total_params"]:
        raise ExportError(f"int8 model.onnx stores {stored} parameters, the float model {manifest['summary']['total_params']}")
    val_accuracy = float(accuracy_score(val.labels, _predict(session, to_input(val.images, spec).numpy())))
    source_version = manifest["version"]
    shared_gradcam = f"../{source_version}/gradcam.onnx"
    manifest.update(
        version=version,
        precision="int8",
        description=f"{manifest['description']} — int8 (static QDQ) version of v{source_version}",
        metrics={**manifest["metrics"], "test_accuracy": accuracy, "val_accuracy": val_accuracy,
                 "confusion_matrix": confusion_matrix(test.labels, predicted, labels=range(len(LABELS))).tolist()},
        export={**manifest["export"], "quantization": {
            "format": "QDQ", "weights": "int8, per output channel", "activations": "uint8, per tensor",
            "calibration": f"min-max over {calibrated_on} {dataset} training images, every class",
            "source_version": source_version, "source_test_accuracy": float_accuracy, "accuracy_drop": drop,
            "onnxruntime": ort.__version__}},
        heatmaps={**manifest["heatmaps"], "gradcam_graph": {**manifest["heatmaps"]["gradcam_graph"], "file": shared_gradcam}},
        files={"model.onnx": {"sha256": sha256(staging / "model.onnx"), "bytes": (staging / "model.onnx").stat().st_size},
               shared_gradcam: manifest["files"]["gradcam.onnx"]},
    )
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
