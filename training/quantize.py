"""Static int8 quantization of an exported model (ONNX Runtime's QDQ format), calibrated on training
images and shipped as its own version beside the float one, only if it keeps the accuracy.

Weights are int8 per output channel, activations uint8 per tensor with ranges measured on evenly spread
training images (every class): their min-max, or, when that loses more than the allowed accuracy, their
99.99th percentiles (a few outlying activations no longer stretch a range; inception_small needs it).
The first convolution stays float32 where that makes a run clearly faster (FLOAT_FIRST_GAIN): int8 kernels
pay on wide reductions, and lenet5's first convolution, 25 values into 6 maps, ran 2.8× slower in int8 than
in float32 (28 against 10 µs an image), which made the whole int8 model slower than the float one. In the
other shipped models it gains at most 1.17× or costs up to 2.1×: the pooling after a float32 convolution then
runs on uint8 in NCHW, ONNX Runtime's slow path (docs/PERFORMANCE.md).
The Grad-CAM graph and the CAM weights stay float: the int8 model's feature maps are dequantized floats,
so the same head gradient applies — the int8 manifest points at the source version's ``gradcam.onnx``
(``../1/gradcam.onnx``) instead of carrying a copy, which for the FC-headed nets is most of the
repository's size.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.manifest import MODEL_FILE, FileEntry, Manifest, Quantization
from service.worker.runtime import TIMED_ROWS, timed_ms

from . import evaluate
from .data import training_set
from .export import ExportError, served_metrics, sha256, stored_parameter_count, write_model_config

MAX_ACCURACY_DROP = 0.005  # the bar: more than 0.5 pt lost and the int8 version is not shipped
CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32
# How activation ranges are calibrated, tried in this order until one keeps the accuracy.
RANGES: dict[str, tuple[CalibrationMethod, dict[str, float]]] = {
    "min-max": (CalibrationMethod.MinMax, {}),
    "99.99th percentile": (CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
}
# The first convolution is left float32 only when the model then runs this much faster: a bar far above the
# timing's noise, so that the same model comes out of every run (lenet5 1.8–2.1×; the next, mnist_cnn_b, 1.10–1.17×).
FLOAT_FIRST_GAIN = 1.3


class QuantizationRejected(ExportError):
    """The int8 model lost too much accuracy; nothing was written."""


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(np.array_split(images, max(1, len(images) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch}


def quantize_version(models_dir: Path, name: str, source: str = "1", version: str = "2",
                     calibration_images: int = CALIBRATION_IMAGES) -> Manifest:
    """Write ``models_dir/name/version`` as the int8 twin of ``source``, with the first of RANGES that keeps
    the accuracy; raises QuantizationRejected (writing nothing) when every one drops test accuracy by more
    than MAX_ACCURACY_DROP."""
    source_dir = models_dir / name / source
    manifest = Manifest.model_validate_json((source_dir / "manifest.json").read_text())
    train = training_set(manifest.metrics.dataset, manifest.training.seed,
                         augmented=manifest.training.config.get("augment") is not False)
    spread = np.linspace(0, len(train) - 1, calibration_images).astype(int)  # every class, both kinds of digit
    calibration = evaluate.served_inputs(train.images[spread], manifest)  # what the service will feed it

    directory = models_dir / name / version
    staging = directory.with_name(f".{version}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    prepared = staging / "prepared.onnx"
    try:
        quant_pre_process(str(source_dir / MODEL_FILE), str(prepared), skip_symbolic_shape=True)
        result = _first_that_keeps_the_accuracy(manifest, prepared, staging, version, calibration)
        prepared.unlink()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    if not (directory.parent / "config.json").exists():
        write_model_config(directory.parent, source)  # int8 when asked for; the float version stays the default
    return result


def _first_that_keeps_the_accuracy(manifest: Manifest, prepared: Path, staging: Path, version: str,
                                   calibration: np.ndarray) -> Manifest:
    """The int8 model quantized with each of RANGES in turn into ``staging``, until one keeps the accuracy."""
    tries = list(RANGES.items())
    for number, (ranges, (method, options)) in enumerate(tries, 1):
        _quantize(prepared, staging / MODEL_FILE, calibration, method, options)
        float_nodes = _first_convolution_float_if_faster(prepared, staging, calibration, method, options)
        try:
            return _check_and_describe(manifest, staging, version, len(calibration), ranges, float_nodes)
        except QuantizationRejected as exc:  # the next ranges overwrite this model
            if number == len(tries):
                raise
            print(f"{exc} with {ranges} ranges; trying {tries[number][0]} ranges", flush=True)
    raise AssertionError("RANGES is empty")


def _quantize(prepared: Path, target: Path, calibration: np.ndarray, method: CalibrationMethod,
              options: dict[str, float], float_nodes: tuple[str, ...] = ()) -> None:
    quantize_static(str(prepared), str(target), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=method, extra_options=options, nodes_to_exclude=list(float_nodes))


def _first_convolution_float_if_faster(prepared: Path, staging: Path, calibration: np.ndarray,
                                       method: CalibrationMethod, options: dict[str, float]) -> tuple[str, ...]:
    """Quantize again with the first convolution left float32; keep that model in ``staging`` (and return the
    node left float) if it runs FLOAT_FIRST_GAIN times faster than the all-int8 one there, else drop it."""
    first = next((node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"), None)
    if first is None:
        return ()
    trial = staging / f"first-float-{MODEL_FILE}"
    _quantize(prepared, trial, calibration, method, options, (first,))
    int8_ms, trial_ms = timed_ms(evaluate.session(staging / MODEL_FILE), evaluate.session(trial),
                                 calibration[:TIMED_ROWS])
    faster = int8_ms >= FLOAT_FIRST_GAIN * trial_ms
    int8_us, trial_us = (ms * 1e3 / TIMED_ROWS for ms in (int8_ms, trial_ms))
    print(f"first convolution ({first}) float32: {trial_us:.1f} µs an image against {int8_us:.1f} all int8: "
          f"{'kept' if faster else 'not kept'} (the bar: {FLOAT_FIRST_GAIN}× faster)", flush=True)
    if not faster:
        trial.unlink()
        return ()
    trial.replace(staging / MODEL_FILE)
    return (first,)


def _check_and_describe(manifest: Manifest, staging: Path, version: str, calibrated_on: int,
                        ranges: str, float_nodes: tuple[str, ...]) -> Manifest:
    metrics, calibration = served_metrics(manifest, staging / MODEL_FILE)
    float_accuracy = manifest.metrics.test_accuracy
    drop = float_accuracy - metrics.test_accuracy
    if drop > MAX_ACCURACY_DROP:
        raise QuantizationRejected(f"{manifest.name}: int8 test accuracy {metrics.test_accuracy:.2%} is "
                                   f"{drop * 100:.1f} pt below float32's {float_accuracy:.2%} (limit "
                                   f"{MAX_ACCURACY_DROP * 100:.1f} pt); not shipped")
    stored = stored_parameter_count(staging / MODEL_FILE)
    if stored != manifest.summary.total_params:
        raise ExportError(f"int8 model.onnx stores {stored} parameters, the float model "
                          f"{manifest.summary.total_params}")
    source_version = manifest.version
    gradient = manifest.heatmaps.gradcam_graph
    shared_gradcam = f"../{source_version}/{gradient.file}"
    quantization = Quantization(
        format="QDQ", weights="int8, per output channel", activations="uint8, per tensor",
        calibration=f"{ranges} over {calibrated_on} {manifest.metrics.dataset} training images (scenes: "
                    f"handwritten and printed), every class",
        float_nodes=list(float_nodes), source_version=source_version, source_test_accuracy=float_accuracy,
        accuracy_drop=drop, onnxruntime=ort.__version__)
    model_file = staging / MODEL_FILE
    quantized = manifest.model_copy(deep=True, update={
        "version": version, "precision": "int8",
        "description": f"{manifest.description} — int8 (static QDQ) version of v{source_version}",
        "metrics": metrics, "calibration": calibration,
        "export": manifest.export.model_copy(update={"quantization": quantization}),
        "heatmaps": manifest.heatmaps.model_copy(
            update={"gradcam_graph": gradient.model_copy(update={"file": shared_gradcam})}),
        "files": {MODEL_FILE: FileEntry(sha256=sha256(model_file), bytes=model_file.stat().st_size),
                  shared_gradcam: manifest.files[gradient.file]},
    })
    (staging / "manifest.json").write_text(quantized.model_dump_json(indent=1))
    return quantized
