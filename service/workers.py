"""Inference worker processes: where uploads are parsed, decoded and preprocessed and ONNX Runtime runs.

The server's own process is one Python interpreter, one core's worth of GIL, and HTTP alone nearly
fills it under load (docs/PERFORMANCE.md). So the CPU work of a request runs in worker processes,
each holding its own ONNX Runtime sessions for every model version. The event loop sends a worker a
whole batch (raw upload bodies or ready tensors) over a socket and, while the worker computes, goes on
serving HTTP on its own core; one message each way per batch.

What runs inside a worker is in inference_worker.py; this module is the server's side and the
messages. Workers are started as ``python -c "…serve(fd)"`` with a socket to the server, not through
multiprocessing's spawn, which re-runs the server's main script in the child (a script that builds the
app without a ``__main__`` guard would start a server in every worker).

A worker that dies or overruns ``worker_timeout_s`` fails only the jobs it held (503, retry) and is
replaced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import ProblemError, ServiceUnavailable
from .preprocessing import Prepared
from .settings import Settings

log = logging.getLogger("service.workers")

Key = tuple[str, str]  # (model name, version)


@dataclass(frozen=True)
class Upload:
    """A request body holding an image as the multipart form field ``file``."""

    body: bytes
    content_type: str
    explain: bool = False  # also send back the features and the decoded image, for heatmaps


Item = Union[Upload, np.ndarray]  # an upload, or a ready N×C×H×W float32 tensor


@dataclass(frozen=True)
class Rows:
    """One request's share of a batched run."""

    logits: np.ndarray               # rows × classes
    probabilities: np.ndarray        # rows × classes
    ranking: np.ndarray              # rows × classes: class indices, most probable first
    features: np.ndarray | None      # rows × maps × h × w: for tensors and heatmaps only
    inverted: bool                   # uploads: the image was inverted to MNIST's light-on-dark
    prepared: Prepared | None        # heatmaps: where the upload sits in the model's input
    timings: dict[str, float]        # seconds: decode (the form parse included), preprocess, run


@dataclass(frozen=True)
class Placed:
    """Where one item's rows are in its batch's outputs, and how it was prepared."""

    start: int
    end: int
    inverted: bool
    prepared: Prepared | None
    decode_s: float
    preprocess_s: float


@dataclass(frozen=True)
class BatchReply:
    """A batch's outputs as whole arrays, and each item's place in them or its error: a handful of
    arrays cross the pipe per batch, not a handful per request (unpickling each costs microseconds)."""

    items: list[Placed | ProblemError]
    logits: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    ranking: np.ndarray | None = None
    features: np.ndarray | None = None  # only when an item needs them
    run_s: float = 0.0

    def rows(self) -> list[Rows | ProblemError]:
        """Each item's own rows (views, no copies), in the items' order."""
        def own(placed: Placed) -> Rows:
            part = slice(placed.start, placed.end)
            return Rows(self.logits[part], self.probabilities[part], self.ranking[part],  # type: ignore[index]
                        None if self.features is None else self.features[part], placed.inverted, placed.prepared,
                        {"decode": placed.decode_s, "preprocess": placed.preprocess_s, "run": self.run_s})

        return [item if isinstance(item, ProblemError) else own(item) for item in self.items]


# Messages both ways: an 8-byte length, then the pickle.
HEADER = struct.Struct("!Q")


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class Worker:
    """One worker process and the socket to it, written and read without blocking the event loop.
    Replies come back in the order the jobs went out."""

    def __init__(self, process: subprocess.Popen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.process, self._reader, self._writer = process, reader, writer
        self._waiting: deque[asyncio.Future] = deque()
        self._replies = asyncio.create_task(self._read_replies(), name=f"inference-worker-{process.pid}")
        self.successor: asyncio.Future[Worker] | None = None  # set once the pool replaces this worker

    @classmethod
    async def start(cls, settings: Settings, versions: dict[Key, Path]) -> tuple["Worker", dict[Key, list[str] | str]]:
        """A new worker, once it has loaded ``versions``, and its load report."""
        ours, theirs = socket.socketpair()
        with theirs:
            # The server's own import path, so the worker runs the very same `service` package.
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
            process = subprocess.Popen([sys.executable, "-c", f"from service.inference_worker import serve; serve({theirs.fileno()})"],
                                       pass_fds=[theirs.fileno()], env=env)
        worker = cls(process, *await asyncio.open_unix_connection(sock=ours))
        try:
            report = await worker.send((settings, versions), settings.worker_start_timeout_s)
        except (EOFError, OSError, TimeoutError):
            await worker.stop()
            raise RuntimeError(f"the inference worker exited or took over {settings.worker_start_timeout_s:.0f} s "
                               "while loading the models") from None
        return worker, report

    async def send(self, message: object, timeout: float) -> Any:
        """Send one message and wait for its answer. EOFError: the worker died; TimeoutError."""
        if not self.alive:
            raise EOFError(f"the inference worker has exited (code {self.process.poll()})")
        reply = asyncio.get_running_loop().create_future()
        self._waiting.append(reply)
        self._writer.write(frame(message))
        await self._writer.drain()
        return await asyncio.wait_for(reply, timeout)

    @property
    def alive(self) -> bool:
        """Its socket is open: the reader sees the end of it as soon as the process dies."""
        return not self._replies.done()

    async def call(self, job: tuple, timeout: float) -> Any:
        status, value = await self.send(job, timeout)
        if status == "error":
            raise value
        return value

    async def _read_replies(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(HEADER.size)
                message = pickle.loads(await self._reader.readexactly(HEADER.unpack(header)[0]))
                reply = self._waiting.popleft()
                if not reply.done():  # done: its caller timed out
                    reply.set_result(message)
        except (EOFError, OSError):
            while self._waiting:  # everyone still waiting hears that the worker died
                reply = self._waiting.popleft()
                if not reply.done():
                    reply.set_exception(EOFError(f"the inference worker exited (code {self.process.poll()})"))

    async def stop(self) -> None:
        try:
            self._writer.write(frame(None))
            self._writer.close()
        except OSError:
            pass
        try:
            await asyncio.wait_for(asyncio.to_thread(self.process.wait), 5)
        except TimeoutError:
            self.process.kill()
            self.process.wait()
        self._replies.cancel()


class WorkerPool:
    """The inference workers and the one way to use them: ``await pool.call(job)`` runs the job on
    a worker with a free slot. Each worker has two: one job running, the next already waiting in its
    socket, so a worker never sits idle while the server is busy with HTTP and has yet to send the next
    batch (with one slot, 30 % of the two cores went unused under load)."""

    SLOTS_PER_WORKER = 2

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._versions: dict[Key, Path] = {}
        self._slots: asyncio.Queue[Worker] = asyncio.Queue()
        self._workers: list[Worker] = []

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    @property
    def running(self) -> int:
        """Workers alive (a dead one is replaced when the next job finds it)."""
        return sum(worker.alive for worker in self._workers)

    @property
    def slots(self) -> int:
        """Jobs that can be under way at once: the batchers run this many collectors per model."""
        return self.settings.inference_workers * self.SLOTS_PER_WORKER

    async def start(self, versions: dict[Key, Path]) -> dict[Key, list[str] | str]:
        """Start the workers and wait until each has loaded ``versions``; the first one's report."""
        self._versions = versions
        started = await asyncio.gather(*(Worker.start(self.settings, versions) for _ in range(self.settings.inference_workers)))
        for worker, _ in started:
            self._workers.append(worker)
            for _ in range(self.SLOTS_PER_WORKER):
                self._slots.put_nowait(worker)
        return started[0][1]

    async def call(self, job: tuple) -> Any:
        worker = await self._slots.get()
        try:
            if not worker.alive:  # died since its last job: this one is not lost, it runs on the successor
                worker = await self._replace(worker)
            return await worker.call(job, self.settings.worker_timeout_s)
        except (EOFError, OSError, TimeoutError) as exc:
            worker = await self._replace(worker)
            raise ServiceUnavailable("the inference worker running this request stopped; it has been restarted, retry") from exc
        finally:
            self._slots.put_nowait(worker)

    async def _replace(self, worker: Worker) -> Worker:
        """The worker's successor; every job that found it dead waits for the same one. If starting it
        fails, the callers put the dead worker's slots back, and the next job tries again."""
        if worker.successor is None or (worker.successor.done() and worker.successor.exception() is not None):
            code = worker.process.poll()
            log.error("inference worker %s %s; starting another", worker.process.pid,
                      f"exited with code {code}" if code is not None else "overran worker_timeout_s")
            worker.successor = asyncio.ensure_future(self._restart(worker))
        try:
            return await asyncio.shield(worker.successor)
        except RuntimeError as exc:
            raise ServiceUnavailable(f"no inference worker is running ({exc}); retry later", retry_after=5) from exc

    async def _restart(self, worker: Worker) -> Worker:
        worker.process.kill()
        await worker.stop()
        fresh, _ = await Worker.start(self.settings, self._versions)
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    async def close(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        self._workers = []
