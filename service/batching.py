"""Dynamic (micro-)batching: requests for one model that arrive together share one ONNX Runtime run.

Each model has a bounded queue and ``inference_workers`` collectors. A collector takes the oldest
request, adds whatever else is queued (waiting at most ``max_queue_delay_ms`` for more) up to
``max_batch_size``, runs the stacked batch on the inference thread pool and hands each caller its own
row. An idle service adds no delay at the default of 0 ms: batches form from requests that queue up
while a run is in progress. A full queue answers 503 with Retry-After instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ServiceUnavailable

RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Request:
    tensor: np.ndarray
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
        self._collectors = [asyncio.create_task(self._collect(), name=f"batcher-{name}-{i}") for i in range(collectors)]

    async def submit(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One 1×C×H×W input → (logits, features) for it alone."""
        if self._queue.qsize() >= self.max_queue:
            raise ServiceUnavailable(f"model {self.name} is busy ({self._queue.qsize()} requests queued); retry shortly",
                                     retry_after=1)
        request = _Request(tensor, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _gather(self) -> list[_Request]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [r for r in batch if not r.future.cancelled()]  # callers that gave up cost nothing

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            stacked = batch[0].tensor if len(batch) == 1 else np.concatenate([r.tensor for r in batch])
            try:
                logits, features = await loop.run_in_executor(self._executor, self._run, stacked)
            except Exception as exc:  # noqa: BLE001 - delivered to every caller of this batch
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            for row, request in enumerate(batch):
                if not request.future.done():
                    request.future.set_result((logits[row:row + 1], features[row:row + 1]))

    async def close(self) -> None:
        for task in self._collectors:
            task.cancel()
        await asyncio.gather(*self._collectors, return_exceptions=True)
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(ServiceUnavailable("the service is shutting down"))
