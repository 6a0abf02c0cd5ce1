"""The HTTP server: uvicorn (uvloop + httptools), with the connection hygiene uvicorn's httptools protocol
lacks, and a graceful shutdown.

Per connection (``GuardedProtocol``): a request's headers must arrive within ``header_timeout_s`` and stay
under ``max_header_bytes`` / ``max_headers`` (431 otherwise); a body must keep arriving (a byte at least
every ``read_timeout_s``) and be complete within ``request_timeout_s`` of the request's start (408, and
the connection is closed); a connection idle before its first request is closed after ``keep_alive_s``,
like an idle keep-alive one; when a response went out before its request's body was read (a 413, say), the
connection is closed rather than drained. Across connections: at most ``max_connections`` are open; a new
one past that evicts the connection that has waited longest without a complete request, or, when every
one is busy with a request, gets 503 and is closed.

Shutdown (SIGTERM, SIGINT): ``/readyz`` turns 503 at once, requests in flight get ``shutdown_grace_s`` to
finish, stragglers are cancelled and their connections closed, the inference workers are stopped (and
die with the server in any case), and the process exits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import Settings

DESCRIPTORS_KEPT = 64  # file descriptors left for the workers' sockets, model files, logs
SWEEP_S = 0.25  # how often deadlines are checked: one timer for every connection, not one per request
_ARRIVALS = itertools.count()  # a clock that never ties


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    read_timeout_s: float
    request_timeout_s: float
    keep_alive_s: float
    max_header_bytes: int
    max_headers: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cap = max(16, descriptors - DESCRIPTORS_KEPT)
        return cls(settings.header_timeout_s, settings.read_timeout_s, settings.request_timeout_s,
                   settings.keep_alive_s, settings.max_header_bytes, settings.max_headers,
                   min(settings.max_connections, cap) if settings.max_connections else cap)


def _answer(status: int, reason: str, detail: str, retry_after: int | None = None) -> bytes:
    """A complete problem-details response that closes the connection (written below the app)."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail}).encode()
    extra = f"retry-after: {retry_after}\r\n" if retry_after else ""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n").encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines per phase of a request and limits on what it may send."""

    limits: ConnectionLimits

    def __init__(self, config: uvicorn.Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.limits = config.connection_limits  # type: ignore[attr-defined]  # set by build_server
        self.phase = "idle"  # idle → headers → body → app → idle …
        self.waiting_since = next(_ARRIVALS)  # order of connecting or of the last answer: for eviction
        self.deadline = 0.0  # when the current phase expires (loop time; 0: never)
        self.request_deadline = 0.0
        self._header_bytes = 0
        self._header_count = 0
        self._rejected = False
        self._registered = False  # stays False for a connection refused at the limit

    # Phases and their deadlines.
    def _enter(self, phase: str, seconds: float | None) -> None:
        self.phase = phase
        if phase == "idle":
            self.waiting_since = next(_ARRIVALS)
        self.deadline = 0.0 if seconds is None else self.loop.time() + seconds

    def _expired(self) -> None:
        if self.phase == "idle":
            self.transport.close()
        elif self.phase in ("headers", "body"):
            self._reject(408, "Request Timeout", f"the request's {self.phase} did not arrive in time; send it at once")

    def _reject(self, status: int, reason: str, detail: str, retry_after: int | None = None) -> None:
        """Answer below the app and close; nothing more is read from this connection."""
        self._rejected = True
        self.deadline = 0.0
        if not self.transport.is_closing():
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_answer(status, reason, detail, retry_after))
            self.transport.close()

    # The connection.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._evict():
            self.transport = transport
            transport.write(_answer(503, "Service Unavailable", "too many connections; retry shortly", 1))
            transport.close()
            return
        super().connection_made(transport)
        self._registered = True
        self._enter("idle", self.limits.keep_alive_s)
        if getattr(self.server_state, "deadline_sweep", None) is None:
            _sweep(self.loop, self.server_state)

    def _evict(self) -> bool:
        """Close the connection that has waited longest without a complete request, if there is one."""
        waiting = [c for c in self.connections if isinstance(c, GuardedProtocol) and c.phase in ("idle", "headers")]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since)
        oldest._reject(503, "Service Unavailable", "the server is at its connection limit; reconnect", 1)
        self.connections.discard(oldest)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = 0.0
        if self._registered:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self.phase == "headers" or self.phase == "idle":
            end = data.find(b"\r\n\r\n")  # the body may follow in the same chunk: it is not header
            self._header_bytes += len(data) if end < 0 else end
            if self._header_bytes > self.limits.max_header_bytes:
                self._reject(431, "Request Header Fields Too Large",
                             f"the request line and headers are over {self.limits.max_header_bytes:,} bytes")
                return
        elif self.phase == "body":
            self.deadline = min(self.loop.time() + self.limits.read_timeout_s, self.request_deadline)
        super().data_received(data)

    # Parser callbacks.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self.request_deadline = self.loop.time() + self.limits.request_timeout_s
        self._unset_keepalive_if_required()
        self._enter("headers", self.limits.header_timeout_s)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._reject(431, "Request Header Fields Too Large",
                         f"a request may carry at most {self.limits.max_headers} headers")
        elif not self._rejected:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._rejected:
            return
        self._enter("body", min(self.limits.read_timeout_s, self.limits.request_timeout_s))
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self._enter("app", None)  # the app's own limits (the worker timeout) apply from here
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's own, with the idle deadline in place of its keep-alive timer (one timer per response)."""
        self.server_state.total_requests += 1
        if self.phase == "body":  # answered before the body was read: close rather than drain the rest
            self.transport.close()
        if self.transport.is_closing():
            return
        self._header_bytes = 0
        self._enter("idle", self.limits.keep_alive_s)
        self.flow.resume_reading()
        if self.pipeline:  # pipelined requests: the next one starts now
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)


def _sweep(loop: asyncio.AbstractEventLoop, state: Any) -> None:
    """Expire every connection whose phase is past its deadline; again in SWEEP_S while any are open."""
    now = loop.time()
    for connection in list(state.connections):
        if isinstance(connection, GuardedProtocol) and connection.deadline and now >= connection.deadline:
            connection._expired()
    state.deadline_sweep = loop.call_later(SWEEP_S, _sweep, loop, state) if state.connections else None


class Server(uvicorn.Server):
    """uvicorn's server, turning the app not-ready the moment a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.app.state.draining = True
        super().handle_exit(sig, frame)


def build_server(app: FastAPI, settings: Settings, loop: str = "auto") -> Server:
    """``loop``: uvicorn's event loop choice (auto: uvloop where it is installed)."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            http=GuardedProtocol, loop=loop, timeout_keep_alive=settings.keep_alive_s,
                            timeout_graceful_shutdown=settings.shutdown_grace_s,
                            access_log=False)  # our middleware writes one structured line per request
    config.connection_limits = ConnectionLimits.from_settings(settings)  # type: ignore[attr-defined]
    return Server(config, app)
