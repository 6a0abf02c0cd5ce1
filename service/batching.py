"""Dynamic (micro-)batching: requests for one model that arrive together share one ONNX Runtime run.

Each model has a bounded queue and one collector per job a worker can hold. A collector takes the oldest
request, adds whatever else is queued (waiting at most ``max_queue_delay_ms`` for more) up to
``max_batch_size`` images, and dispatches the requests' items as one job to an inference worker, which
parses, decodes and preprocesses each, stacks them into one run and sends each its row back. An item that
fails to prepare gets its own error; the rest of the batch runs. An idle service adds no delay at the
default of 0 ms: batches form from requests that queue up while a run is in progress. A full queue answers
503 with Retry-After instead of growing without bound.

With no queue delay, a collector that finds more than ``SHARE_ABOVE`` images queued takes only its share
(queued ÷ collectors) and leaves the rest to the next: one outsized job no longer holds half the clients
while the other job in flight carries a few (lenet5 at 16 clients: 5–14 % more requests a second, p99 ÷
p50 1.4–1.7 against 1.3–2.2). Up to ``SHARE_ABOVE`` it takes them all, since splitting a small batch costs a job's
fixed overhead for nothing (splitting every batch cost 12 % at 8 clients; docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import ServiceUnavailable

SHARE_ABOVE = 8  # images: a batch this small is taken whole (see above)

I = TypeVar("I")  # noqa: E741 - what a request hands in
R = TypeVar("R")  # what it gets back
# Runs one batch: the requests' items in, one result or error per item out, in order.
Dispatch = Callable[[list[I]], Awaitable[list[R | BaseException]]]


@dataclass
class _Request(Generic[I, R]):
    item: I
    future: asyncio.Future[R] = field(repr=False)


class MicroBatcher(Generic[I, R]):
    def __init__(self, name: str, dispatch: Dispatch[I, R], *, max_batch_size: int, max_queue_delay_ms: float,
                 max_queue: int, collectors: int) -> None:
        self.name = name
        self._dispatch = dispatch
        self.max_batch_size = max_batch_size
        self.max_delay = max_queue_delay_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Request[I, R]] = asyncio.Queue()
        self._collectors = [asyncio.create_task(self._collect(), name=f"batcher-{name}-{i}") for i in range(collectors)]

    async def submit(self, item: I) -> R:
        """One image in; the result, this item's alone."""
        if self._queue.qsize() >= self.max_queue:
            queued = self._queue.qsize()
            raise ServiceUnavailable(f"model {self.name} is busy ({queued} requests queued); retry shortly",
                                     retry_after=1)
        request: _Request[I, R] = _Request(item, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _gather(self) -> list[_Request[I, R]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_delay
        limit = self.max_batch_size
        if not self.max_delay:
            share = -(-(self._queue.qsize() + 1) // len(self._collectors))  # ceil: this collector's part
            limit = min(limit, max(share, SHARE_ABOVE))
        while len(batch) < limit:
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
        while True:
            batch = await self._gather()
            if not batch:
                continue
            try:
                results = await self._dispatch([request.item for request in batch])
                answers = list(zip(batch, results, strict=True))
            except Exception as exc:  # noqa: BLE001 - the run itself failed: every caller of this batch hears it
                answers = [(request, exc) for request in batch]
            for request, result in answers:
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
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(ServiceUnavailable("the service is shutting down"))
