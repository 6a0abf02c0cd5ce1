"""The model manifest (``models/<name>/<version>/manifest.json``): the one contract between training and
serving. Training's export builds a :class:`Manifest` and writes it; the service reads the same class."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, JsonValue, field_validator


class InputSpec(BaseModel):
    name: str
    dtype: str
    shape: list[int]
    channels: int
    height: int
    width: int


class Preprocessing(BaseModel):
    """How an upload becomes the model's input: ``kind`` names a recipe in ``service.preprocessing``
    (which fits the image into ``content_size``), then pixels × scale − mean) / std, zero-padded to the input."""

    kind: str = Field(description="the preprocessing recipe (service.preprocessing.KINDS)")
    color: Literal["gray", "rgb"]
    content_size: list[int] = Field(
        description="height, width the image is fitted into before padding to the input size")
    scale: float
    mean: list[float]
    std: list[float]

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from .preprocessing import KINDS  # the recipes live beside the code that runs them

        if kind not in KINDS:
            raise ValueError(f"unknown preprocessing kind {kind!r}; this service knows {', '.join(KINDS)}")
        return kind


class TensorSpec(BaseModel):
    name: str
    shape: list[int]
    layer: str | None = None


class Outputs(BaseModel):
    logits: TensorSpec
    features: TensorSpec


class GradcamGraph(BaseModel):
    file: str
    inputs: list[str]
    output: str


class CamWeights(BaseModel):
    weights: list[list[float]]
    bias: list[float]


class Heatmaps(BaseModel):
    layer: str
    gradcam_graph: GradcamGraph = Field(description="features, seed → d(seed · logits)/d(features)")
    cam: CamWeights | None = Field(None, description="a GAP head's class weights; None: no CAM for this net")


class SetScore(BaseModel):
    """One evaluation set scored through the service's own pipeline (training/evaluate.py)."""

    description: str
    size: int
    accuracy: float
    ece_uncalibrated: float = Field(description="expected calibration error of the raw softmax (T = 1)")
    ece: float = Field(description="expected calibration error after temperature scaling")
    auroc: float | None = Field(description="how well the calibrated top probability separates right answers from "
                                            "wrong ones (None: no wrong answers)")
    unsure: float = Field(description="share of answers flagged unsure")
    unsure_errors: float | None = Field(description="share of the wrong answers that were flagged unsure")


class Metrics(BaseModel):
    dataset: str
    split: str
    test_size: int
    test_accuracy: float
    val_accuracy: float
    confusion_matrix: list[list[int]]
    in_distribution: dict[str, SetScore] = Field(
        default_factory=dict, description="the test split, and the validation scenes calibration was fitted on")
    external: dict[str, SetScore] = Field(
        default_factory=dict, description="test-only sets from outside the training data (training/external.py)")


class Calibration(BaseModel):
    """Temperature scaling and the unsure threshold, both fitted on validation (training/calibration.py)."""

    temperature: float = Field(gt=0, description="logits are divided by this before the softmax")
    unsure_below: float = Field(ge=0, le=1, description="an answer whose calibrated top probability is below this "
                                                        "is flagged unsure")
    fitted_on: str


class LayerRow(BaseModel):
    name: str
    type: str
    input_shape: list[int]
    output_shape: list[int]
    kernel: list[int] | None = None
    stride: list[int] | None = None
    padding: list[int] | None = None
    dilation: list[int] | None = None
    params: int
    trainable_params: int
    macs: int


class Summary(BaseModel):
    input_shape: list[int]
    layers: list[LayerRow]
    total_params: int
    trainable_params: int
    macs: int
    size_bytes: int


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class TrainingInfo(BaseModel):
    config: dict[str, JsonValue] = Field(description="the training recipe as run (training.train.TrainConfig)")
    seed: int
    best_epoch: int
    epochs_run: int
    duration_s: float
    torch: str


class Quantization(BaseModel):
    format: str
    weights: str
    activations: str
    calibration: str
    float_nodes: list[str] = Field(default_factory=list, description="nodes left float32, since int8 ran them "
                                   "slower (training.quantize: FLOAT_FIRST_GAIN)")
    source_version: str
    source_test_accuracy: float
    accuracy_drop: float
    onnxruntime: str


class ExportInfo(BaseModel):
    opset: int
    onnx: str
    onnxruntime: str
    parity_images: int
    max_abs_diff: dict[str, float]
    quantization: Quantization | None = None


class ModelConfig(BaseModel):
    """``<models>/<name>/config.json``: settings for every version of one model."""

    default_version: str | None = Field(None, description="version for requests that name none (default: the latest)")


MODEL_FILE = "model.onnx"


def version_manifests(root: Path) -> list[Path]:
    """Every ``<name>/<version>/manifest.json`` under a model repository, sorted; a hidden version directory
    is an export still being written (``.2.partial``), never a version."""
    return [path for path in sorted(root.glob("*/*/manifest.json")) if not path.parent.name.startswith(".")]


class Manifest(BaseModel):
    name: str
    version: str
    precision: Literal["float32", "int8"] = "float32"
    architecture: str
    description: str
    labels: list[str]
    input: InputSpec
    preprocessing: Preprocessing
    outputs: Outputs
    heatmaps: Heatmaps
    metrics: Metrics
    calibration: Calibration | None = Field(None, description="None: raw softmax, nothing flagged unsure")
    training: TrainingInfo
    export: ExportInfo
    files: dict[str, FileEntry] = Field(description="every file the service loads, by path relative to the version's "
                                                    "directory, with its sha256: nothing unlisted is ever loaded")
    summary: Summary

    @property
    def graph_files(self) -> tuple[str, str]:
        """The classifier graph and the Grad-CAM head-gradient graph, as listed in ``files``."""
        return MODEL_FILE, self.heatmaps.gradcam_graph.file
