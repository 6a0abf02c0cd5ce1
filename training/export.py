"""Export a training run to the model repository: ``models/<name>/<version>/``.

Writes ``model.onnx`` (input → logits and the heatmap layer's feature maps), ``gradcam.onnx``
(feature maps and a class seed → d(seed·logits)/d(feature maps), the head's exact gradient, so the
service computes Grad-CAM with ONNX Runtime alone), ``manifest.json`` and the training plots.

The manifest is a JSON file beside the graphs rather than ONNX ``metadata_props``: it records the
sha256 of the ONNX files (which a file cannot hold about itself), it is read without parsing protobuf,
and it diffs and reviews as text in git.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix
from torch import nn
from torch.func import functional_call
from torch.fx.experimental.proxy_tensor import make_fx

from service.manifest import (
    MODEL_FILE,
    Calibration,
    CamWeights,
    ExportInfo,
    FileEntry,
    GradcamGraph,
    Heatmaps,
    InputSpec,
    Manifest,
    Metrics,
    ModelConfig,
    Outputs,
    SetScore,
    Summary,
    TensorSpec,
    TrainingInfo,
)

from . import evaluate
from .architectures import CNN, get_architecture
from .calibration import expected_calibration_error, fit_temperature, probabilities, separation, unsure_threshold
from .data import LABELS, PREPROCESSING, VALIDATION_DESCRIPTION, load_dataset, validation_set
from .external import DESCRIPTIONS, external_sets
from .summary import summarize
from .train import TrainConfig, load_run, to_input

OPSET = 18
GRADCAM_FILE = "gradcam.onnx"
TOLERANCE = 1e-4
PARITY_IMAGES = 64


class ExportError(RuntimeError):
    """The exported graphs do not reproduce PyTorch; nothing is written to the repository."""


class _WithFeatures(nn.Module):
    def __init__(self, model: CNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_features(input)


def _conv_input_gradient(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    """aten.convolution_backward (no ONNX form) as the transposed convolution it is, input part only."""
    if transposed or output_mask[1] or output_mask[2]:
        return NotImplemented
    extra = [
        size - ((out - 1) * s - 2 * p + d * (k - 1) + 1)
        for size, out, s, p, d, k in zip(input.shape[2:], grad_output.shape[2:], stride, padding, dilation,
                                         weight.shape[2:], strict=True)
    ]
    grad_input = torch.nn.functional.conv_transpose2d(grad_output, weight, None, stride, padding, extra, groups,
                                                      dilation)
    return grad_input, None, None


def _avg_pool_input_gradient(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                             divisor_override):
    """aten.avg_pool2d_backward as a grouped transposed convolution with a constant 1/(kh·kw) kernel."""
    if ceil_mode or not count_include_pad or divisor_override:
        return NotImplemented
    kh, kw = kernel_size
    channels = input.shape[1]
    weight = torch.ones(channels, 1, kh, kw, dtype=grad_output.dtype) / (kh * kw)
    dilation = [1, 1]
    return _conv_input_gradient(grad_output, input, weight, None, stride or kernel_size, padding, dilation, False,
                                [0, 0], channels, [True, False, False])[0]


class _HeadGradient(nn.Module):
    """``(features, seed) → ∂(seed · head(features)) / ∂features`` as a plain forward graph.

    ``make_fx`` records autograd's backward ops for the head (with its weights passed as inputs, so the
    trace stays symbolic in the batch size); the traced graph then exports like any other module.
    """

    def __init__(self, head: nn.Module, features: torch.Tensor, seed: torch.Tensor) -> None:
        super().__init__()
        names = [name for name, _ in head.named_parameters()]
        self.weights = nn.ParameterList([nn.Parameter(p.detach().clone(), requires_grad=False)
                                         for p in head.parameters()])

        def gradient(maps: torch.Tensor, class_seed: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                maps = maps.detach().requires_grad_(True)
                logits = functional_call(head, dict(zip(names, weights, strict=True)), (maps,))
                (grad,) = torch.autograd.grad(logits, maps, grad_outputs=class_seed)
            return grad

        decompositions = {
            torch.ops.aten.convolution_backward.default: _conv_input_gradient,
            torch.ops.aten.avg_pool2d_backward.default: _avg_pool_input_gradient,
        }
        self.graph = make_fx(gradient, decompositions, tracing_mode="symbolic")(features, seed, *self.weights)

    def forward(self, features: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        return self.graph(features, seed, *self.weights)


def _quiet_exporter() -> None:
    """The exporter logs a warning per torchvision op it cannot find; we never use torchvision."""
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
            outputs: list[str]) -> None:
    _quiet_exporter()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=inputs, output_names=outputs,
            dynamic_shapes=tuple({0: batch} for _ in args), verbose=False,
            # No exporter-side graph rewriting: it merges equal initializers (e.g. all-zero biases), which
            # breaks "one initializer per parameter". ONNX Runtime optimises the graph when it loads it.
            optimize=False,
        )
    # The exporter notes each node's Python stack trace, with this checkout's absolute paths: dropped, so
    # that the same weights give the same bytes wherever the repository was cloned.
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)
    program.save(str(path), external_data=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_parameter_count(path: Path) -> int:
    """Parameters stored in an ONNX file: the elements of its weight initializers. In a float model,
    the floating-point ones; in a QDQ int8 model, also the integer ones DequantizeLinear turns back into
    weights and biases (their scales and zero points are not parameters). 0-d initializers are
    literal constants such as an epsilon, never weights."""
    graph = onnx.load(str(path), load_external_data=False).graph
    qdq = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    quantization_params = {name for node in qdq for name in node.input[1:]}
    dequantized = {node.input[0] for node in qdq if node.op_type == "DequantizeLinear"}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    integers = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32}
    return sum(int(np.prod(init.dims)) for init in graph.initializer
               if init.dims and init.name not in quantization_params
               and (init.data_type in floats or (init.data_type in integers and init.name in dequantized)))


def write_model_config(model_dir: Path, default_version: str) -> None:
    """``<models>/<name>/config.json``: which version serves requests that name none (Triton keeps
    such per-model settings beside the versions too)."""
    config = ModelConfig(default_version=default_version)
    (model_dir / "config.json").write_text(config.model_dump_json(indent=1) + "\n")


def _verify(name: str, expected: np.ndarray, got: np.ndarray, scale: float = 1.0) -> float:
    diff = float(np.abs(expected - got).max()) / scale
    if not diff <= TOLERANCE:
        raise ExportError(f"{name}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {TOLERANCE})")
    return diff


def export_model(model: CNN, directory: Path, images: torch.Tensor) -> dict[str, float]:
    """Write both graphs and check them with ONNX Runtime on ``images``; returns the max differences."""
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        logits, features = model.forward_with_features(images)
    seed = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).float()
    # Trace on fresh contiguous tensors: CPU convs may hand back channels-last maps, and their
    # strides would be traced into as_strided ops that have no ONNX form.
    dense = dict(memory_format=torch.contiguous_format)
    sample_maps, sample_seed = features[:2].clone(**dense), seed[:2].clone(**dense)
    _export(_WithFeatures(model), (images[:2].clone(**dense),), directory / MODEL_FILE, ["input"],
            ["logits", "features"])
    _export(_HeadGradient(model.head, sample_maps, sample_seed), (sample_maps, sample_seed), directory / GRADCAM_FILE,
            ["features", "seed"], ["grad"])

    maps = features.clone().requires_grad_(True)
    (reference_grad,) = torch.autograd.grad(model.head(maps), maps, grad_outputs=seed)
    got_logits, got_features = evaluate.session(directory / MODEL_FILE).run(None, {"input": images.numpy()})
    gradient_session = evaluate.session(directory / GRADCAM_FILE)
    (got_grad,) = gradient_session.run(None, {"features": features.numpy(), "seed": seed.numpy()})
    scale = lambda t: max(float(t.abs().max()), 1e-12)  # noqa: E731
    return {
        "logits": _verify("logits", logits.numpy(), got_logits),
        # Feature maps are unbounded activations and GAP-head gradients are tiny (w / HW): both are
        # compared relative to their largest magnitude (heatmaps are min-max normalised anyway).
        "features_relative": _verify("features", features.numpy(), got_features, scale(features)),
        "gradient_relative": _verify("gradient", reference_grad.numpy(), got_grad, scale(reference_grad)),
    }


def export_run(run_dir: Path, models_dir: Path, name: str | None = None, version: str = "1") -> Manifest:
    config, model, report = load_run(run_dir)
    name = name or config.arch
    test = load_dataset(config.dataset, "test", config.seed)
    images = to_input(test.images[:PARITY_IMAGES], PREPROCESSING[config.dataset], model.input_spec)
    directory = models_dir / name / version
    staging = directory.with_name(f".{version}.partial")  # hidden: never read as a model version
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = _write_version(config, model, report, images, staging, name, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for plot in ("training.png", "confusion.png"):
        shutil.copy(run_dir / plot, staging / plot)
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    write_model_config(directory.parent, version)  # a newly exported float version becomes the default
    return manifest


def served_metrics(manifest: Manifest, graph: Path) -> tuple[Metrics, Calibration]:
    """``graph`` scored through the service's own preprocessing (training/evaluate.py): the test split; the
    validation scenes, which fit the temperature and the unsure threshold; and the external sets, which
    only ever report (training/external.py)."""
    dataset, seed = manifest.metrics.dataset, manifest.training.seed
    model = evaluate.session(graph)

    def run(images: np.ndarray | list[Image.Image]) -> np.ndarray:
        return evaluate.logits(model, evaluate.served_inputs(images, manifest))

    val = validation_set(dataset, seed, augmented=manifest.training.config.get("augment") is not False)
    val_logits = run(val.images)
    temperature = fit_temperature(val_logits, val.labels)
    confidence = probabilities(val_logits, temperature).max(1)
    calibration = Calibration(temperature=temperature,
                              unsure_below=unsure_threshold(confidence, val_logits.argmax(1) == val.labels),
                              fitted_on=f"validation ({len(val)} images: {VALIDATION_DESCRIPTION[dataset]})")

    def score(description: str, logits: np.ndarray, labels: np.ndarray) -> SetScore:
        calibrated = probabilities(logits, temperature)
        correct = logits.argmax(1) == labels
        flagged = calibrated.max(1) < calibration.unsure_below
        return SetScore(description=description, size=len(labels), accuracy=float(correct.mean()),
                        ece_uncalibrated=expected_calibration_error(probabilities(logits), labels),
                        ece=expected_calibration_error(calibrated, labels),
                        auroc=separation(calibrated.max(1), correct), unsure=float(flagged.mean()),
                        unsure_errors=float(flagged[~correct].mean()) if (~correct).any() else None)

    test = load_dataset(dataset, "test", seed)
    test_logits = run(test.images)
    predicted = test_logits.argmax(1)
    metrics = Metrics(
        dataset=dataset, split="test", test_size=len(test), test_accuracy=float(np.mean(predicted == test.labels)),
        val_accuracy=float(np.mean(val_logits.argmax(1) == val.labels)),
        confusion_matrix=confusion_matrix(test.labels, predicted, labels=range(len(LABELS))).tolist(),
        in_distribution={"test": score(f"{dataset} test split", test_logits, test.labels),
                         "val": score(calibration.fitted_on, val_logits, val.labels)},
        external={e.name: score(DESCRIPTIONS[e.name], run(e.images), e.labels) for e in external_sets()})
    return metrics, calibration


def rescore_version(directory: Path) -> Manifest:
    """An exported version's metrics and calibration written again by today's evaluation, its graphs
    untouched: for when the scoring or calibration code changes, not the network."""
    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    manifest.metrics, manifest.calibration = served_metrics(manifest, directory / MODEL_FILE)
    (directory / "manifest.json").write_text(manifest.model_dump_json(indent=1))
    return manifest


def _write_version(config: TrainConfig, model: CNN, report: dict[str, Any], images: torch.Tensor,
                   staging: Path, name: str, version: str) -> Manifest:
    """Graphs, checks and manifest into ``staging``; raises before anything is renamed into place."""
    parity = export_model(model, staging, images)

    summary = summarize(model)
    stored = stored_parameter_count(staging / MODEL_FILE)
    if stored != summary["total_params"]:
        raise ExportError(f"model.onnx stores {stored} parameters, the module has {summary['total_params']}")

    spec = model.input_spec
    with torch.no_grad():
        _, features = model.forward_with_features(images[:1])
    cam = None
    if model.supports_cam:
        weights, bias = model.cam_weights()
        cam = CamWeights(weights=weights.tolist(), bias=bias.tolist())
    manifest = Manifest(
        name=name, version=version, precision="float32", architecture=config.arch,
        description=get_architecture(config.arch).description, labels=LABELS,
        input=InputSpec(name="input", dtype="float32", shape=[-1, *spec.shape], channels=spec.channels,
                        height=spec.height, width=spec.width),
        preprocessing=PREPROCESSING[config.dataset],
        outputs=Outputs(logits=TensorSpec(name="logits", shape=[-1, len(LABELS)]),
                        features=TensorSpec(name="features", shape=[-1, *features.shape[1:]], layer=model.cam_layer)),
        heatmaps=Heatmaps(layer=model.cam_layer, cam=cam,
                          gradcam_graph=GradcamGraph(file=GRADCAM_FILE, inputs=["features", "seed"], output="grad")),
        # Placeholder metrics until the graph is scored below, through the service's own preprocessing.
        metrics=Metrics(dataset=config.dataset, split="test", test_size=0, test_accuracy=0, val_accuracy=0,
                        confusion_matrix=[]),
        training=TrainingInfo(config=asdict(config), seed=config.seed, best_epoch=report["best_epoch"],
                              epochs_run=report["epochs_run"], duration_s=report["duration_s"], torch=report["torch"]),
        export=ExportInfo(opset=OPSET, onnx=onnx.__version__, onnxruntime=ort.__version__, parity_images=len(images),
                          max_abs_diff=parity),
        files={file: FileEntry(sha256=sha256(staging / file), bytes=(staging / file).stat().st_size)
               for file in (MODEL_FILE, GRADCAM_FILE)},
        summary=Summary.model_validate(summary),
    )
    manifest.metrics, manifest.calibration = served_metrics(manifest, staging / MODEL_FILE)
    (staging / "manifest.json").write_text(manifest.model_dump_json(indent=1))
    return manifest


def load_exported(directory: Path) -> CNN:
    """The PyTorch module of an exported model, weights read back from its ``model.onnx``: the
    independent reference the service's heatmaps are checked against."""
    from onnx import numpy_helper

    from .architectures import create_model

    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    model = create_model(manifest.architecture, num_classes=len(manifest.labels))
    graph = onnx.load(str(directory / MODEL_FILE)).graph
    weights = {init.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(init).copy())
               for init in graph.initializer if init.name.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    return model.eval()
