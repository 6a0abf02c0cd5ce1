"""Dynamic (micro-)batching: requests for one model that arrive together share one ONNX Runtime run.

Each model has a bounded queue and ``inference_workers`` collectors. A collector takes the oldest
request, adds whatever else is queued (waiting at most ``max_queue_delay_ms`` for more) up to
``max_batch_size`` images, and hands the whole batch to the inference thread pool as one job: there
each request's input is prepared (an upload is decoded and preprocessed; a ready tensor is taken as
is), the inputs are stacked into one run, and each caller gets its own rows back (a request may carry
several images, as Open Inference Protocol requests do). One thread hop per batch, not two per
request. A request whose input fails to prepare gets its own error; the rest of the batch runs. An idle
service adds no delay at the default of 0 ms: batches form from requests that queue up while a run is
in progress. A full queue answers 503 with Retry-After instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import numpy as np

from .errors import ServiceUnavailable

P = TypeVar("P")
# A request's input, made on the inference thread: (N×C×H×W tensor, whatever the caller wants back).
MakeInput = Callable[[], tuple[np.ndarray, P]]
RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchResult(Generic[P]):
    payload: P
    logits: np.ndarray
    features: np.ndarray
    run_seconds: float   # how long the run this request shared took


@dataclass
class _Request:
    make_input: MakeInput
    rows: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, name: str, run: RunBatch, executor: Executor, *, max_batch_size: int,
                 max_queue_delay_ms: float, max_queue: int, collectors: int) -> None:
        self.name = name
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max_queue_delay_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._held: list[_Request] = []  # taken from the queue but did not fit the last batch; goes first next
        self._collectors = [asyncio.create_task(self._collect(), name=f"batcher-{name}-{i}") for i in range(collectors)]

    async def submit(self, make_input: MakeInput[P], rows: int = 1) -> BatchResult[P]:
        """``make_input`` (run on the inference thread) gives ``rows`` ≤ max_batch_size images; the
        result holds the model's outputs for those rows alone."""
        if rows > self.max_batch_size:
            raise ValueError(f"{rows} images in one request; the limit is {self.max_batch_size}")
        if self._queue.qsize() >= self.max_queue:
            raise ServiceUnavailable(f"model {self.name} is busy ({self._queue.qsize()} requests queued); retry shortly",
                                     retry_after=1)
        request = _Request(make_input, rows, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _gather(self) -> list[_Request]:
        batch = [self._held.pop() if self._held else await self._queue.get()]
        rows = batch[0].rows
        deadline = time.monotonic() + self.max_delay
        while rows < self.max_batch_size:
            if not self._queue.empty():
                request = self._queue.get_nowait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if rows + request.rows > self.max_batch_size:
                self._held.append(request)
                break
            batch.append(request)
            rows += request.rows
        return [r for r in batch if not r.future.cancelled()]  # callers that gave up cost nothing

    def _run_batch(self, batch: list[_Request]) -> list[BatchResult | BaseException]:
        """On the inference thread: prepare every input, one run for all that prepared, split the rows."""
        prepared: list[tuple[np.ndarray, Any] | BaseException] = []
        for request in batch:
            try:
                prepared.append(request.make_input())
            except Exception as exc:  # noqa: BLE001 - this request's own error (bad image, ...)
                prepared.append(exc)
        inputs = [p for p in prepared if not isinstance(p, BaseException)]
        if not inputs:
            return prepared  # type: ignore[return-value]
        stacked = inputs[0][0] if len(inputs) == 1 else np.concatenate([tensor for tensor, _ in inputs])
        started = time.perf_counter()
        logits, features = self._run(stacked)
        seconds = time.perf_counter() - started
        results: list[BatchResult | BaseException] = []
        start = 0
        for item in prepared:
            if isinstance(item, BaseException):
                results.append(item)
                continue
            tensor, payload = item
            end = start + len(tensor)
            results.append(BatchResult(payload, logits[start:end], features[start:end], seconds))
            start = end
        return results

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - the run itself failed: every caller of this batch hears it
                results = [exc] * len(batch)
            for request, result in zip(batch, results):
                if request.future.done():
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    async def close(self) -> None:
        for task in self._collectors:
            task.cancel()
        await asyncio.gather(*self._collectors, return_exceptions=True)
        while self._held or not self._queue.empty():
            request = self._held.pop() if self._held else self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(ServiceUnavailable("the service is shutting down"))
