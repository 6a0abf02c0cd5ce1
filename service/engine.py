"""The server's side of inference.

A :class:`RemoteModel` per model version stands in for the worker-side model (MLServer's
``ParallelModel``): ``classify`` batches uploads, ``ask`` sends any other job (a heatmap, an Open Inference
Protocol request) to a worker in one round trip. The :class:`Engine` holds them and the two worker lanes:

- **ordinary** workers (``inference_workers``, two jobs each in flight): dynamically batched uploads (one
  batcher per version), and unbatched jobs (heatmaps, Open Inference Protocol requests) that are light;
- **heavy** workers (``heavy_workers``, one job each, at low CPU priority): every upload that is costly to
  decode (over ``light_pixels`` decoded or ``light_bytes`` encoded). An ordinary worker reads only such an
  upload's header and answers Deferred; the upload is then sent here, behind its own bounded queue
  (``max_heavy_queue``), so a request, however large, holds up the ordinary ones for no longer than a header
  read.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, replace

import numpy as np

from .admission import Admission
from .batching import MicroBatcher
from .errors import InvalidParameter, ProblemError
from .metrics import Metrics
from .repository import ModelRepository, ModelVersion
from .settings import Settings
from .worker.pool import WorkerPool
from .worker.protocol import Classified, Classify, Deferred, ModelJob, Reply, UnbatchedJob, Upload, UploadRow

UploadRows = tuple[Classified, UploadRow]  # a batch's reply and one upload's row in it
_INDEX = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class Classification:
    probabilities: np.ndarray
    order: np.ndarray  # class indices, most probable first (the worker's ranking)
    top: list[tuple[int, float]]
    inverted: bool
    timings_ms: dict[str, float]


def parse_class(labels: list[str], requested: str | None) -> int | None:
    """``class`` as a label or an index; None (absent) means the top-1 class."""
    if requested is None or requested == "":
        return None
    if requested in labels:
        return labels.index(requested)
    if _INDEX.fullmatch(requested) and int(requested) < len(labels):
        return int(requested)
    shown = requested if len(requested) <= 40 else requested[:40] + "…"
    raise InvalidParameter(f"class must be an index from 0 to {len(labels) - 1} or one of the labels {labels}; "
                           f"got {shown!r}")


class RemoteModel:
    def __init__(self, entry: ModelVersion, engine: Engine) -> None:
        self.entry = entry
        self.engine = engine
        s = engine.settings
        self._batcher: MicroBatcher[Upload, UploadRows | Deferred] = MicroBatcher(
            f"{entry.name}/{entry.version}", self._dispatch, max_batch_size=s.max_batch_size,
            max_queue_delay_ms=s.max_queue_delay_ms, max_queue=s.max_queue,
            collectors=engine.ordinary.count * engine.ordinary.slots)  # one per job a worker can hold

    async def _dispatch(self, uploads: list[Upload]) -> list[UploadRows | Deferred | BaseException]:
        reply = await self.engine.ordinary.call(Classify(self.entry.key, tuple(uploads), light_only=True))
        if isinstance(reply, ProblemError):
            raise reply
        assert isinstance(reply, Classified)
        self._observe(reply)
        return [result if isinstance(result, (ProblemError, Deferred)) else (reply, result) for result in reply.items]

    def _observe(self, reply: Classified) -> None:
        if len(reply.probabilities):
            self.engine.metrics.observe_run(self.entry.name, "model", len(reply.probabilities), reply.run_s)

    async def _heavy(self, job: ModelJob) -> Reply:
        async with self.engine.heavy_admission.slot():
            reply = await self.engine.heavy.call(job)
        if isinstance(reply, ProblemError):
            raise reply
        return reply

    async def ask(self, job: UnbatchedJob) -> Reply:
        """Any job that does not batch, in one round trip: on an ordinary worker behind a bounded queue, or,
        if it turns out costly (Deferred), on a heavy worker. A route that runs a model builds the job and
        awaits this."""
        started = time.perf_counter()
        if job.encoded_bytes > self.engine.settings.light_bytes:  # costly by its size alone: no detour
            reply = await self._heavy(replace(job, light_only=False))
        else:
            async with self.engine.ordinary_admission.slot():
                reply = await self.engine.ordinary.call(job)
            if isinstance(reply, Deferred):
                reply = await self._heavy(replace(job, light_only=False))
        if isinstance(reply, ProblemError):
            raise reply
        self.engine.metrics.observe_run(self.entry.name, job.verb, 1, time.perf_counter() - started)
        return reply

    async def classify(self, upload: Upload, k: int) -> Classification:
        """The upload's top ``k`` classes, batched with whatever else is queued for the version."""
        started = time.perf_counter()
        # A large file is costly whatever it holds: straight to a heavy worker. Others may still be deferred
        # once an ordinary worker has read their header.
        outcome = Deferred(0, len(upload.body)) if len(upload.body) > self.engine.settings.light_bytes else (
            await self._batcher.submit(upload))
        if isinstance(outcome, Deferred):
            heavy = await self._heavy(Classify(self.entry.key, (upload,), light_only=False))
            assert isinstance(heavy, Classified)
            self._observe(heavy)
            (result,) = heavy.items
            if isinstance(result, ProblemError):
                raise result
            assert isinstance(result, UploadRow)  # heavy jobs defer nothing
            outcome = heavy, result
        reply, place = outcome
        probabilities, order = reply.probabilities[place.row], reply.ranking[place.row]
        top = list(zip(order[:k].tolist(), probabilities[order[:k]].tolist(), strict=True))
        timings = {"decode_ms": place.decode_s, "preprocess_ms": place.preprocess_s, "inference_ms": reply.run_s,
                   "total_ms": time.perf_counter() - started}
        timings_ms = {name: round(seconds * 1e3, 3) for name, seconds in timings.items()}
        return Classification(probabilities, order, top, place.inverted, timings_ms)

    def check_explain(self, class_ref: str | None, method: str | None) -> tuple[int | None, str]:
        """``class`` and ``method`` resolved, or a 422 before any model runs."""
        methods = self.entry.methods
        if method is not None and method not in methods:
            raise InvalidParameter(f"model {self.entry.name} supports the heatmap methods {', '.join(methods)} "
                                   f"(CAM needs a global-average-pooling head); got {method!r}")
        return parse_class(self.entry.manifest.labels, class_ref), method or methods[0]

    async def close(self) -> None:
        await self._batcher.close()


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics, repository: ModelRepository) -> None:
        self.settings = settings
        self.metrics = metrics
        self.repository = repository
        record = repository.record
        self.ordinary = WorkerPool("ordinary", settings, settings.inference_workers, slots=2, on_started=record)
        self.heavy = WorkerPool("heavy", settings, settings.heavy_workers, slots=1, heavy=True, on_started=record)
        # Jobs that do not batch (heatmaps) queue here for an ordinary worker; costly uploads for a heavy one.
        self.ordinary_admission = Admission("ordinary", self.ordinary.count * self.ordinary.slots, settings.max_queue)
        self.heavy_admission = Admission("heavy", settings.heavy_workers, settings.max_heavy_queue)
        self._models: dict[tuple[str, str], RemoteModel] = {}

    @property
    def lanes(self) -> tuple[WorkerPool, WorkerPool]:
        return self.ordinary, self.heavy

    async def start(self) -> None:
        """Both lanes' workers, each having loaded and warmed every verified version: one lane after the other,
        so that the ordinary lane times its versions' threads with the cores to itself."""
        versions = self.repository.verified()
        for lane in self.lanes:
            self.repository.record(await lane.start(versions))
        for entry in self.repository.all_versions():
            if entry.providers:
                self.metrics.record_provider(entry.name, entry.version, entry.providers[0], self.settings.providers,
                                             entry.fallback is not None)

    def model(self, name: str, version: str | None) -> RemoteModel:
        """The servable version a request names (ModelNotFound lists what there is)."""
        entry = self.repository.get(name, version)
        if entry.key not in self._models:
            self._models[entry.key] = RemoteModel(entry, self)
        return self._models[entry.key]

    async def close(self) -> None:
        await asyncio.gather(*(model.close() for model in self._models.values()))
        await asyncio.gather(*(lane.close() for lane in self.lanes))
