"""The request pipelines: an upload or tensor → an inference worker (dynamically batched) → the answer
or a heatmap. The server process only routes; the CPU work runs in the workers (see workers.py), and
what is left here that could hold up the event loop (decoding Open Inference Protocol tensors) on one
helper thread."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from . import cam
from .batching import MicroBatcher
from .errors import InvalidParameter
from .metrics import Metrics
from .preprocessing import Prepared
from .repository import LoadedModel
from .schemas import CamMethod
from .settings import Settings
from .workers import BatchReply, Item, Rows, Upload, WorkerPool

T = TypeVar("T")


@dataclass(frozen=True)
class Classification:
    probabilities: np.ndarray
    top: list[tuple[int, float]]
    inverted: bool
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
    """Runs the pipelines: model work on the inference workers through per-model batchers."""

    def __init__(self, settings: Settings, metrics: Metrics, pool: WorkerPool) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool = pool
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="server-cpu")
        self._batchers: dict[tuple[str, str], MicroBatcher[Item, Rows]] = {}

    @property
    def workers(self) -> str:
        return f"{self.pool.running}/{self.settings.inference_workers}"

    @property
    def ready(self) -> bool:
        """Every inference worker is running (readiness probes look here as well as at the models)."""
        return self.pool.running == self.settings.inference_workers

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """CPU work of the server process's own, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run_model(self, model: LoadedModel, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N×C×H×W model input → (logits, features), batched with whatever else is queued for the model."""
        rows = await self._batcher(model).submit(batch, rows=len(batch))
        return rows.logits, rows.features  # type: ignore[return-value]

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _batcher(self, model: LoadedModel) -> MicroBatcher[Item, Rows]:
        if model.key not in self._batchers:
            async def dispatch(items: list[Item]) -> list[Rows | BaseException]:
                reply: BatchReply = await self.pool.call(("classify", model.key, items))
                if reply.logits is not None:
                    self.metrics.observe_run(model.name, "model", len(reply.logits), reply.run_s)
                return reply.rows()

            s = self.settings
            self._batchers[model.key] = MicroBatcher(f"{model.name}/{model.version}", dispatch, max_batch_size=s.max_batch_size,
                                                     max_queue_delay_ms=s.max_queue_delay_ms, max_queue=s.max_queue,
                                                     collectors=self.pool.slots)
        return self._batchers[model.key]

    async def classify(self, model: LoadedModel, upload: Upload, k: int) -> Classification:
        started = time.perf_counter()
        rows = await self._batcher(model).submit(upload)
        probabilities = rows.probabilities[0]
        timings = {"decode_ms": rows.timings["decode"], "preprocess_ms": rows.timings["preprocess"],
                   "inference_ms": rows.timings["run"], "total_ms": time.perf_counter() - started}
        top = [(int(i), float(probabilities[i])) for i in rows.ranking[0, :k]]
        return Classification(probabilities, top, rows.inverted,
                              {name: round(seconds * 1e3, 3) for name, seconds in timings.items()})

    async def explain(self, model: LoadedModel, upload: Upload, class_ref: str | None, method: CamMethod | None) -> Explanation:
        chosen = resolve_method(model, method)
        rows = await self._batcher(model).submit(Upload(upload.body, upload.content_type, explain=True))
        probabilities = rows.probabilities[0]
        index = resolve_class(model, class_ref, int(probabilities.argmax()))
        features = rows.features
        assert features is not None
        # A weighted sum over a few feature maps: microseconds, so on the loop rather than a thread hop away.
        if chosen == "cam":
            heatmap = cam.normalise(cam.class_activation_map(features[0], model.cam_weights[index]))  # type: ignore[index]
        else:
            seed = np.zeros((1, len(model.manifest.labels)), np.float32)
            seed[0, index] = 1
            gradients, seconds = await self.pool.call(("gradient", model.key, features, seed))
            self.metrics.observe_run(model.name, "gradcam", 1, seconds)
            heatmap = cam.normalise(cam.grad_cam(features[0], gradients[0]))
        spec = model.manifest.input
        return Explanation(chosen, index, probabilities, heatmap, cam.upsample(heatmap, spec.width, spec.height), rows.prepared)  # type: ignore[arg-type]
