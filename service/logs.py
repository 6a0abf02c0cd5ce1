"""Logging: each record one JSON object on one line, in the server process and its workers alike.

The access log (one line per request) is written by ``AccessLog``, past the logging module: a record, a
formatter and a flushed write per request cost the server 0.07–0.12 ms of CPU a lenet5 request at 16 clients
on a 2-vCPU EPYC, a quarter of all it spent; the same line built directly and written with the rest of its
event-loop pass costs about a third of that (docs/PERFORMANCE.md). Its level is still the logger's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from functools import lru_cache
from typing import Any, TextIO

ACCESS_LOGGER = "service.access"


@lru_cache(maxsize=2)
def _stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))


def timestamp(seconds: float) -> str:
    """Local time to the second, as every line carries it (formatted once a second, not once a line)."""
    return _stamp(int(seconds))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": timestamp(record.created), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class AccessLog:
    """One JSON line per request, in the format of every other line, on the service's log stream (stderr,
    looked up when written, unless given one). Lines are kept until the end of the event loop's pass and
    written together; ``flush`` writes what is kept at once (the app calls it as it shuts down)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.stream = stream
        self._lines: list[str] = []

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        """A request's line; call from the event loop's thread."""
        if not self._lines:
            asyncio.get_running_loop().call_soon(self.flush)
        self._lines.append(json.dumps({"time": timestamp(time.time()), "level": "info", "logger": ACCESS_LOGGER,
                                       "message": "request", **fields}, default=str))

    def flush(self) -> None:
        """Write what is kept. A stream that fails (a closed pipe) loses those lines, as the logging module's
        handler would, and never the requests: this runs in a callback of its own."""
        if self._lines:
            lines, self._lines = self._lines, []
            stream = self.stream or sys.stderr
            try:
                stream.write("\n".join(lines) + "\n")
                stream.flush()
            except (OSError, ValueError):  # ValueError: a closed file
                pass


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("service")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
