"""The request pipelines: decode → preprocess → ONNX Runtime (dynamically batched) → postprocess or
heatmap. CPU work runs on a bounded thread pool, so it never blocks the event loop nor oversubscribes
the cores; decoding and preprocessing happen in the batch's own job on that pool (see batching.py)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from . import cam
from .batching import BatchResult, MicroBatcher
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
    """Runs the pipelines: CPU work on a bounded thread pool, model runs through per-model batchers."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="inference")
        self._batchers: dict[tuple[str, str], MicroBatcher] = {}

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run_model(self, model: LoadedModel, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N×C×H×W model input → (logits, features), batched with whatever else is queued for the model."""
        result = await self._batcher(model).submit(lambda: (batch, None), rows=len(batch))
        return result.logits, result.features

    async def _run_upload(self, model: LoadedModel, data: bytes) -> BatchResult[tuple[Prepared, float, float]]:
        """An uploaded image, decoded and preprocessed in its batch's job, then run with that batch."""
        def make_input() -> tuple[np.ndarray, tuple[Prepared, float, float]]:
            prepared = self._prepare(model, data)
            return prepared[0].batch, prepared

        return await self._batcher(model).submit(make_input)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _batcher(self, model: LoadedModel) -> MicroBatcher:
        key = (model.name, model.version)
        if key not in self._batchers:
            def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                started = time.perf_counter()
                logits, features = model.sessions.classify(batch)  # type: ignore[union-attr]
                self.metrics.observe_run(model.name, "model", len(batch), time.perf_counter() - started)
                return logits, features

            s = self.settings
            self._batchers[key] = MicroBatcher(f"{model.name}/{model.version}", run, self.executor,
                                               max_batch_size=s.max_batch_size, max_queue_delay_ms=s.max_queue_delay_ms,
                                               max_queue=s.max_queue, collectors=s.inference_workers)
        return self._batchers[key]

    def _prepare(self, model: LoadedModel, data: bytes) -> tuple[Prepared, float, float]:
        started = time.perf_counter()
        image = decode_image(data, self.settings.max_image_pixels)
        decoded = time.perf_counter()
        return prepare(image, model.manifest), decoded - started, time.perf_counter() - decoded

    async def classify(self, model: LoadedModel, data: bytes, k: int) -> Classification:
        started = time.perf_counter()
        result = await self._run_upload(model, data)
        prepared, decode_s, preprocess_s = result.payload
        probabilities = softmax(result.logits[0])
        timings = {"decode_ms": decode_s, "preprocess_ms": preprocess_s, "inference_ms": result.run_seconds,
                   "total_ms": time.perf_counter() - started}
        return Classification(probabilities, top_k(probabilities, k), prepared,
                              {name: round(seconds * 1e3, 3) for name, seconds in timings.items()})

    async def explain(self, model: LoadedModel, data: bytes, class_ref: str | None, method: CamMethod | None) -> Explanation:
        chosen = resolve_method(model, method)
        result = await self._run_upload(model, data)
        prepared = result.payload[0]
        probabilities = softmax(result.logits[0])
        index = resolve_class(model, class_ref, int(probabilities.argmax()))
        heatmap = await self.run(self._heatmap, model, result.features, index, chosen)
        spec = model.manifest.input
        return Explanation(chosen, index, probabilities, heatmap, cam.upsample(heatmap, spec.width, spec.height), prepared)

    def _heatmap(self, model: LoadedModel, features: np.ndarray, index: int, method: CamMethod) -> np.ndarray:
        if method == "cam":
            return cam.normalise(cam.class_activation_map(features[0], model.cam_weights[index]))  # type: ignore[index]
        seed = np.zeros((1, len(model.manifest.labels)), np.float32)
        seed[0, index] = 1
        started = time.perf_counter()
        gradients = model.sessions.head_gradient(features, seed)  # type: ignore[union-attr]
        self.metrics.observe_run(model.name, "gradcam", 1, time.perf_counter() - started)
        return cam.normalise(cam.grad_cam(features[0], gradients[0]))
