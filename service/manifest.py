"""The model manifest written by ``training.export`` (``models/<name>/<version>/manifest.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class InputSpec(BaseModel):
    name: str
    dtype: str
    shape: list[int]
    channels: int
    height: int
    width: int


class Preprocessing(BaseModel):
    color: Literal["gray", "rgb"]
    content_size: list[int] = Field(description="height, width the image is fitted into before padding to the input size")
    scale: float
    mean: list[float]
    std: list[float]
    mnist_style: bool = Field(description="invert light backgrounds, crop to the ink, centre a 20-px digit by mass")


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
    methods: list[Literal["cam", "gradcam"]]
    gradcam_graph: GradcamGraph
    cam: CamWeights | None = None


class Metrics(BaseModel):
    dataset: str
    split: str
    test_size: int
    test_accuracy: float
    val_accuracy: float
    confusion_matrix: list[list[int]]


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


class ModelConfig(BaseModel):
    """``<models>/<name>/config.json``: settings for every version of one model."""

    default_version: str | None = Field(None, description="version for requests that name none (default: the latest)")


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
    training: dict[str, object]
    export: dict[str, object]
    files: dict[str, FileEntry]
    summary: Summary
