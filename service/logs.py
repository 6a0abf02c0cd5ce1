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


def json_line(seconds: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
    """One log line, the one format of every line: the logging module's records and the access log's."""
    return json.dumps({"time": timestamp(seconds), "level": level, "logger": logger, "message": message, **fields},
                      default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


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
        self._lines.append(json_line(time.time(), "info", ACCESS_LOGGER, "request", fields))

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
