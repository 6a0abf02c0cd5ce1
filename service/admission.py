"""Admission control for work that does not batch (heatmaps, heavy uploads): at most ``running`` jobs
under way and ``waiting`` queued behind them; past that, 503 + Retry-After at once, never an unbounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import ServiceUnavailable


class Admission:
    def __init__(self, name: str, running: int, waiting: int) -> None:
        self.name = name
        self.waiting_limit = waiting
        self._running = asyncio.Semaphore(running)
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._running.locked() and self.waiting >= self.waiting_limit:
            raise ServiceUnavailable(f"{self.waiting} requests are already waiting for a {self.name} inference worker; "
                                     "retry shortly", retry_after=2)
        self.waiting += 1
        try:
            await self._running.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._running.release()
