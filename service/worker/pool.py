"""The server's side of the inference workers: start them, send them jobs, and keep them running.

The server's own process is one Python interpreter, one core's worth of GIL, and HTTP alone nearly fills
it under load. So the CPU work of a request runs in worker processes, each holding ONNX Runtime sessions
for every model version; the event loop sends a worker a job over a socket and goes on serving HTTP
while the worker computes. Workers are started as ``python -c "…serve(fd)"`` with a socket to the
server, not through multiprocessing's spawn, which re-runs the server's main script in the child.

Supervision: a worker's socket closes the moment its process dies, so a death is noticed at once, busy or
idle, and a successor is started straight away (again, with a growing pause, until one comes up). Only
the jobs the dead worker held fail (503, retry). A job over ``worker_timeout_s`` kills its worker the same
way. A lane that has had no worker for ``worker_restore_s`` reports itself unhealthy (``/healthz`` 503), so
an orchestrator restarts the container. Every error raised while talking to a dead worker counts as its
death, whichever event loop raised it (uvloop raises RuntimeError where asyncio raises OSError).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable

from ..errors import ServiceUnavailable
from ..heap import malloc_tunables
from ..settings import Settings
from .protocol import HEADER, Job, Key, Loaded, Reply, RunPlan, Start, Started, Version, frame

log = logging.getLogger("service.worker.pool")
STOP_WAIT_S = 2.0  # at shutdown, a worker busy past this is killed (its requests have had the grace period)


class WorkerLost(Exception):
    """The worker died (or was killed for overrunning) with this job in hand."""


class Worker:
    """One worker process and the socket to it. Replies come back in the order the jobs went out."""

    def __init__(self, process: subprocess.Popen[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_exit: Callable[[Worker], None]) -> None:
        self.process, self._reader, self._writer = process, reader, writer
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._on_exit = on_exit
        self._ended = False
        self._replies = asyncio.create_task(self._read_replies(), name=f"inference-worker-{process.pid}")

    @classmethod
    async def start(cls, start: Start, on_exit: Callable[[Worker], None]) -> tuple[Worker, Started]:
        """A new worker, once it has loaded its versions, and what it loaded."""
        ours, theirs = socket.socketpair()
        with theirs:
            # The server's own import path, so the worker runs the very same `service` package. Its malloc keeps
            # blocks up to 32 MB (a decoded upload and its float planes) instead of mapping them afresh: in
            # some runs glibc's adaptive threshold never rose, and each 288×288 photo cost the worker 300 page
            # faults, 0.3 ms more (lenet5, c=16: 582 req/s against 699–719; docs/PERFORMANCE.md).
            env = {**os.environ, **malloc_tunables(32 << 20, 128 << 20),
                   "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
            code = f"from service.worker.main import serve; serve({theirs.fileno()})"
            # An ordinary worker runs in a session of its own: Linux's autogroup scheduler gives each session one
            # share of the CPU, and sharing the server's left the worker idle more often under load (lenet5, c=16:
            # busy a median 82 % of the time against 91 %, ahead in 21 of 26 interleaved pairs; see
            # docs/PERFORMANCE.md). A heavy worker stays in the server's session, where its niceness keeps it
            # behind the server.
            process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()], env=env,
                                       start_new_session=not start.heavy)
        worker = cls(process, *await asyncio.open_unix_connection(sock=ours), on_exit=lambda _: None)
        timeout = start.settings.worker_start_timeout_s
        try:
            report = await worker.call(start, timeout)
        except (WorkerLost, TimeoutError):
            worker.kill()
            raise RuntimeError(f"an inference worker exited or took over {timeout:.0f} s while loading the "
                               "models") from None
        if not isinstance(report, Started):
            worker.kill()
            raise RuntimeError(f"an inference worker answered its start with {report!r}")
        worker._on_exit = on_exit
        return worker, report

    @property
    def alive(self) -> bool:
        """Not known to be dead. The reader sees the end of its socket as soon as the process dies, and a kill
        counts at once, before the process is reaped: a job sent in between failed too, so a client whose request
        had just failed could lose its next one (three kills under load from 8 clients cost 19–25 requests then,
        8–17 now)."""
        return not self._ended

    @property
    def busy(self) -> int:
        return len(self._waiting)

    async def call(self, job: Job, timeout: float) -> Reply:
        """Send one job and wait for its reply. WorkerLost: the worker died; TimeoutError: it overran
        and has been killed."""
        if not self.alive:
            raise WorkerLost(f"the inference worker has exited (code {self.process.poll()})")
        reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.append(reply)
        try:
            self._writer.write(frame(job))
            await self._writer.drain()
        except Exception as exc:  # noqa: BLE001 - OSError on asyncio, RuntimeError on uvloop: the worker is gone
            self.kill()
            raise WorkerLost(f"the inference worker could not be reached ({type(exc).__name__})") from None
        try:
            async with asyncio.timeout(timeout):  # on timeout the reply is cancelled: a late one is dropped
                return await reply
        except TimeoutError:
            log.error("inference worker %s overran %.1f s; killing it", self.process.pid, timeout)
            self.kill()
            raise

    async def _read_replies(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(HEADER.size)
                message = pickle.loads(await self._reader.readexactly(HEADER.unpack(header)[0]))
                reply = self._waiting.popleft()
                if not reply.done():
                    reply.set_result(message)
        except Exception:  # noqa: BLE001 - end of stream, reset, or a half-written reply: the worker is gone
            pass
        self.kill()
        lost = WorkerLost(f"the inference worker exited (code {self.process.poll()})")
        while self._waiting:  # everyone still waiting hears that the worker died
            reply = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(lost)
        self._on_exit(self)
        await asyncio.to_thread(self.process.wait)  # reaped: no zombie left behind

    def kill(self) -> None:
        self._ended = True
        if self.process.poll() is None:
            self.process.kill()
        self._writer.close()

    async def stop(self) -> None:
        """Ask the worker to finish (it stops at the end of its socket), then make sure it has."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already closed by a death
            pass
        try:
            await asyncio.wait_for(asyncio.to_thread(self.process.wait), STOP_WAIT_S)
        except TimeoutError:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        await asyncio.gather(self._replies, return_exceptions=True)


class WorkerPool:
    """One lane of identical workers, and the one way to use them: ``await pool.call(job)`` runs the job
    on a worker with a free slot. ``slots`` jobs go to each worker at once: with two, the next batch is
    already waiting in a worker's socket when it finishes one, so it never idles while the server is busy
    with HTTP."""

    def __init__(self, name: str, settings: Settings, count: int, slots: int, heavy: bool = False,
                 on_started: Callable[[Started], None] = lambda _: None) -> None:
        self.name, self.settings, self.count, self.slots, self.heavy = name, settings, count, slots, heavy
        self._on_started = on_started
        self._versions: dict[Key, Version] = {}
        self._plans: dict[Key, RunPlan] = {}
        self._free: asyncio.Queue[Worker] = asyncio.Queue()  # one entry per free slot
        self._workers: list[Worker] = []
        self._restarts: set[asyncio.Task[None]] = set()
        self._down_since: float | None = None
        self._closing = False

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    @property
    def running(self) -> int:
        return sum(worker.alive for worker in self._workers)

    def closing(self) -> bool:
        """A method, not an attribute: it changes while _restore awaits."""
        return self._closing

    @property
    def healthy(self) -> bool:
        """False once the lane has been short of a worker for longer than worker_restore_s."""
        return self._down_since is None or time.monotonic() - self._down_since < self.settings.worker_restore_s

    async def start(self, versions: dict[Key, Version]) -> Started:
        """Start the workers and wait until each has loaded ``versions``; the first one's report. The first
        starts alone: it times how each version runs fastest (runtime.plan_runs), on cores nothing else is using,
        and every other worker of the lane, successors included, takes its word."""
        self._versions = versions
        first, report = await self._spawn()
        self._plans = {key: loaded.plan for key, loaded in report.versions.items() if isinstance(loaded, Loaded)}
        others = await asyncio.gather(*(self._spawn() for _ in range(self.count - 1)))
        for worker in (first, *(worker for worker, _ in others)):
            self._add(worker)
        return report

    async def _spawn(self) -> tuple[Worker, Started]:
        return await Worker.start(Start(self.settings, self._versions, self.heavy, self._plans), self._lost)

    def _add(self, worker: Worker) -> None:
        self._workers.append(worker)
        for _ in range(self.slots):
            self._free.put_nowait(worker)

    async def call(self, job: Job) -> Reply:
        timeout = self.settings.worker_timeout_s
        try:
            async with asyncio.timeout(timeout):  # (no task per call, as wait_for would make)
                worker = await self._free_worker()
        except TimeoutError:
            raise ServiceUnavailable(f"no {self.name} inference worker became free within {timeout:.0f} s; retry later",
                                     retry_after=5) from None
        try:
            return await worker.call(job, timeout)
        except WorkerLost as exc:
            raise ServiceUnavailable(f"the inference worker running this request stopped ({exc}); "
                                     "it has been restarted, retry") from None
        except TimeoutError:
            raise ServiceUnavailable(f"the request took over {timeout:g} s (worker_timeout_s); its inference worker "
                                     "has been restarted, retry") from None
        finally:
            if worker.alive:
                self._free.put_nowait(worker)

    async def _free_worker(self) -> Worker:
        while True:
            worker = await self._free.get()
            if worker.alive:  # a dead worker's slots are dropped here; its successor brings its own
                return worker

    def _lost(self, worker: Worker) -> None:
        if self._closing or worker not in self._workers:
            return
        log.error("%s inference worker %s stopped; starting another", self.name, worker.process.pid)
        self._workers.remove(worker)
        self._down_since = self._down_since or time.monotonic()
        task = asyncio.get_running_loop().create_task(self._restore(), name=f"restore-{self.name}-worker")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restore(self) -> None:
        pause = 0.5
        while not self.closing():
            try:
                worker, report = await self._spawn()
            except Exception as exc:  # noqa: BLE001 - keep trying; the lane reports itself unhealthy meanwhile
                log.error("could not start a %s inference worker (%s); retrying in %.1f s", self.name, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if self.closing():  # closed while this worker was starting
                await worker.stop()
                return
            self._add(worker)
            self._on_started(report)
            if len(self._workers) == self.count:
                self._down_since = None
            log.info("%s inference worker %s is serving", self.name, worker.process.pid)
            return

    async def close(self) -> None:
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*(worker.stop() for worker in self._workers), *self._restarts, return_exceptions=True)
        self._workers = []
