"""The request pipelines (decode → preprocess → ONNX Runtime → postprocess / heatmap), run on a
bounded thread pool so inference never blocks the event loop and never oversubscribes the cores."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from . import cam
from .errors import InvalidParameter
from .metrics import Metrics
from .postprocessing import softmax, top_k
from .preprocessing import Prepared, decode_image, prepare
from .repository import LoadedModel
from .schemas import CamMethod
from .settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Classification:
    probabilities: np.ndarray
    top: list[tuple[int, float]]
    prepared: Prepared
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class Explanation:
    method: CamMethod
    class_index: int
    probabilities: np.ndarray
    heatmap: np.ndarray          # h×w, [0, 1], feature-map resolution
    heatmap_input: np.ndarray    # H×W, [0, 1], model input resolution
    prepared: Prepared


def resolve_class(model: LoadedModel, requested: str | None, predicted: int) -> int:
    """``class`` may be an index or a label; absent means the top-1 class."""
    labels = model.manifest.labels
    if requested is None or requested == "":
        return predicted
    if requested in labels:
        return labels.index(requested)
    if requested.lstrip("-").isdigit() and 0 <= int(requested) < len(labels):
        return int(requested)
    raise InvalidParameter(f"class must be an index from 0 to {len(labels) - 1} or one of the labels {labels}; got {requested!r}")


def resolve_method(model: LoadedModel, requested: CamMethod | None) -> CamMethod:
    methods = model.manifest.heatmaps.methods
    if requested is None:
        return "cam" if "cam" in methods else "gradcam"
    if requested not in methods:
        raise InvalidParameter(f"model {model.name} supports {', '.join(methods)} (CAM needs a global-average-pooling head); got {requested!r}")
    return requested


class InferenceEngine:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="inference")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _timed_classify(self, model: LoadedModel, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        started = time.perf_counter()
        logits, features = model.sessions.classify(batch)  # type: ignore[union-attr]
        seconds = time.perf_counter() - started
        self.metrics.observe_run(model.name, "model", len(batch), seconds)
        return logits, features, seconds

    def classify(self, model: LoadedModel, data: bytes, k: int) -> Classification:
        t0 = time.perf_counter()
        image = decode_image(data, self.settings.max_image_pixels)
        t1 = time.perf_counter()
        prepared = prepare(image, model.manifest)
        t2 = time.perf_counter()
        logits, _, run_s = self._timed_classify(model, prepared.batch)
        probabilities = softmax(logits[0])
        top = top_k(probabilities, k)
        t3 = time.perf_counter()
        timings = {"decode_ms": (t1 - t0) * 1e3, "preprocess_ms": (t2 - t1) * 1e3,
                   "inference_ms": run_s * 1e3, "total_ms": (t3 - t0) * 1e3}
        return Classification(probabilities, top, prepared, {k: round(v, 3) for k, v in timings.items()})

    def explain(self, model: LoadedModel, data: bytes, class_ref: str | None, method: CamMethod | None) -> Explanation:
        chosen = resolve_method(model, method)
        prepared = prepare(decode_image(data, self.settings.max_image_pixels), model.manifest)
        logits, features, _ = self._timed_classify(model, prepared.batch)
        probabilities = softmax(logits[0])
        index = resolve_class(model, class_ref, int(probabilities.argmax()))
        if chosen == "cam":
            weights = np.asarray(model.manifest.heatmaps.cam.weights, np.float32)  # type: ignore[union-attr]
            raw = cam.class_activation_map(features[0], weights[index])
        else:
            seed = np.zeros((1, len(model.manifest.labels)), np.float32)
            seed[0, index] = 1
            started = time.perf_counter()
            gradients = model.sessions.head_gradient(features, seed)  # type: ignore[union-attr]
            self.metrics.observe_run(model.name, "gradcam", 1, time.perf_counter() - started)
            raw = cam.grad_cam(features[0], gradients[0])
        heatmap = cam.normalise(raw)
        spec = model.manifest.input
        return Explanation(chosen, index, probabilities, heatmap, cam.upsample(heatmap, spec.width, spec.height), prepared)
