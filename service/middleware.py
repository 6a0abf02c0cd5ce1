"""One pure-ASGI middleware for what every request needs: a request id (returned in X-Request-ID),
the body size limit (413 before the body is read), one structured log line, and request metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, problem_response
from .metrics import Metrics

access_log = logging.getLogger("service.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
WANTED_HEADERS = (b"x-request-id", b"content-length")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in WANTED_HEADERS}  # names come lowercased
        given = headers.get(b"x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        limit = self.max_body_bytes

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the request body is over the {limit:,}-byte limit")
            return message

        try:
            declared = int(headers.get(b"content-length", "0") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                # Answer without reading the body at all.
                response = problem_response(scope["path"], 413, "Payload too large",
                                            f"the request body is {declared:,} bytes; the limit is {limit:,}",
                                            "/problems/payload-too-large", headers={"Connection": "close"})
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            model = str(state.get("model", ""))
            self.metrics.observe_request(scope["method"], route, model, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("request", extra={"fields": {
                    "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                    "model": model or None, "status": status, "duration_ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                }})


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("service")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
