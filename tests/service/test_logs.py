"""The JSON log lines, and the access log written once per pass of the event loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

from service.logs import ACCESS_LOGGER, AccessLog, JsonFormatter, configure_logging, timestamp

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_the_lines_of_one_loop_pass_go_out_together_at_its_end():
    stream = CountingStream()
    log = AccessLog(stream)

    async def requests() -> list[str]:
        for status in (200, 404, 422):
            log.write({"status": status, "path": "/predict"})
        before = stream.getvalue()
        await asyncio.sleep(0)  # the pass ends
        return [before, stream.getvalue()]

    before, after = asyncio.run(requests())
    assert before == "" and stream.writes == 1
    entries = [json.loads(line) for line in after.splitlines()]
    assert [e["status"] for e in entries] == [200, 404, 422]
    assert all(e["logger"] == ACCESS_LOGGER and e["level"] == "info" and e["message"] == "request"
               and STAMP.fullmatch(e["time"]) for e in entries)


def test_flush_writes_what_is_kept_at_once_and_nothing_twice():
    stream = CountingStream()
    log = AccessLog(stream)

    async def shutting_down() -> None:
        log.write({"status": 200})
        log.flush()
        assert json.loads(stream.getvalue())["status"] == 200
        await asyncio.sleep(0)  # the pass's own flush finds nothing left

    asyncio.run(shutting_down())
    assert stream.writes == 1


def test_a_stream_that_fails_loses_its_lines_and_nothing_else():
    class BrokenPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    closed, working = io.StringIO(), io.StringIO()
    closed.close()
    log = AccessLog(BrokenPipe())
    errors: list[dict] = []

    async def requests() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        for stream in (closed, working):
            log.write({"status": 500})
            await asyncio.sleep(0)  # the pass's write fails
            log.stream = stream
        log.write({"status": 200})
        await asyncio.sleep(0)

    asyncio.run(requests())
    assert errors == []
    assert [json.loads(line)["status"] for line in working.getvalue().splitlines()] == [200]


def test_the_access_log_follows_the_service_log_level():
    try:
        configure_logging("warning")
        assert not AccessLog().enabled()
        configure_logging("info")
        assert AccessLog().enabled()
    finally:
        configure_logging("warning")


def test_access_lines_and_other_lines_carry_the_same_time_format():
    record = logging.LogRecord("service", logging.WARNING, __file__, 1, "model %s failed", ("lenet5",), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["time"] == timestamp(record.created) and STAMP.fullmatch(line["time"])
    assert line["message"] == "model lenet5 failed" and line["level"] == "warning"
