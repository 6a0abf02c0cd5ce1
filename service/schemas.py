"""Pydantic models of every response (requests are multipart uploads plus query parameters)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .manifest import Calibration, LayerRow, SetScore


class ClassScore(BaseModel):
    index: int = Field(examples=[7])
    label: str = Field(examples=["7"])
    probability: float = Field(ge=0, le=1, examples=[0.998])


class Timings(BaseModel):
    decode_ms: float = Field(description="decoding the upload")
    preprocess_ms: float = Field(description="fitting and normalising it for the model")
    inference_ms: float = Field(description="the ONNX Runtime run this request shared with its batch")
    total_ms: float = Field(description="from the upload read to the answer, queueing included")


class Confidence(BaseModel):
    unsure: bool = Field(description="the calibrated top probability is below the model's unsure threshold")
    probability: float = Field(ge=0, le=1, description="the calibrated top probability")
    unsure_below: float | None = Field(description="the threshold, chosen on validation; None: the model carries "
                                                   "no calibration and nothing is flagged")
    message: str = Field(examples=["not sure: looks like 1 or 7"])


class PredictResponse(BaseModel):
    model: str = Field(examples=["mnist_cnn_b"])
    version: str = Field(examples=["1"])
    predictions: list[ClassScore] = Field(
        description="top-k classes, most probable first; all classes' probabilities sum to 1")
    provider: str = Field(examples=["CPUExecutionProvider"],
                          description="ONNX Runtime execution provider that ran the model")
    inverted: bool = Field(description="the image was inverted (light background, MNIST-style model)")
    confidence: Confidence
    timings: Timings


class InputInfo(BaseModel):
    channels: int
    height: int
    width: int
    color: Literal["gray", "rgb"]


class RunInfo(BaseModel):
    threads: int = Field(description="ONNX Runtime threads a run is split over", examples=[2])
    channels_filled: bool = Field(description="the graph runs with its channels filled to whole blocks of ONNX "
                                              "Runtime's CPU layout: the same answers, timed faster here")


class ModelInfo(BaseModel):
    name: str = Field(examples=["cam_net"])
    version: str = Field(examples=["1"])
    versions: list[str]
    default_version: str = Field(description="the version requests get when they name none")
    precision: Literal["float32", "int8"] = Field(description="int8: a static-quantized (QDQ) version")
    architecture: str
    description: str
    input: InputInfo
    labels: list[str]
    test_accuracy: float = Field(examples=[0.97])
    test_dataset: str = Field(examples=["mnist"])
    external: dict[str, SetScore] = Field(description="accuracy, calibration and the unsure flag on test-only sets "
                                                      "from outside the training data (digits it was not trained on)")
    calibration: Calibration | None = Field(description="the temperature and unsure threshold the probabilities use")
    parameters: int
    heatmap_methods: list[str] = Field(description="heatmap methods this version supports, the default first")
    heatmap_titles: dict[str, str] = Field(description="each method's name as people write it",
                                           examples=[{"cam": "CAM"}])
    heatmap_layer: str
    providers: list[str] = Field(description="execution providers ONNX Runtime actually assigned, in priority order")
    runs: RunInfo | None = Field(None, description="how the workers that batch its requests run it, as they timed "
                                                   "it on this machine when they loaded it (null until loaded)")
    provider_fallback: str | None = Field(None, description="providers=auto: why this version runs on the CPU "
                                                            "although CUDA was tried")
    status: Literal["ready", "loading", "failed"]
    error: str | None = Field(None, description="why the version cannot be served")


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]


class SummaryTotals(BaseModel):
    total_params: int
    trainable_params: int
    non_trainable_params: int
    macs: int = Field(description="multiply-adds for one image")
    size_bytes: int = Field(description="parameter bytes (float32)")
    onnx_bytes: int = Field(description="size of model.onnx")


class SummaryResponse(BaseModel):
    model: str
    version: str
    input_shape: list[int] = Field(description="channels, height, width")
    layers: list[LayerRow]
    totals: SummaryTotals


class CamResponse(BaseModel):
    model: str
    version: str
    method: str = Field(examples=["cam"])
    class_index: int
    label: str
    score: float = Field(description="softmax probability of the class")
    predicted: ClassScore = Field(description="the top-1 class for this image")
    feature_size: list[int] = Field(description="height, width of the feature maps")
    heatmap: list[list[float]] = Field(description="normalised [0, 1] map at feature-map resolution")
    input_size: list[int] = Field(description="height, width of the model input")
    heatmap_input: list[list[float]] = Field(description="the map upsampled to the model's input size")


class Health(BaseModel):
    status: Literal["ok", "failing"]
    detail: str | None = None


class Readiness(BaseModel):
    ready: bool
    models: dict[str, list[str]] = Field(description="model → versions in the repository")
    workers: dict[str, str] = Field(examples=[{"ordinary": "1/1", "heavy": "1/1"}],
                                    description="inference worker processes running / configured, per lane")
    errors: list[str] = Field(description="what keeps a version (or the replica) from serving")
