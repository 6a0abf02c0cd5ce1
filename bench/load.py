"""The load generator: wrk (Debian's ``wrk`` package) in its own process, C keep-alive connections
posting one real image over loopback for a bounded time. wrk is a small C program: it takes a few
percent of a core where a Python client took most of one, so on these 2 shared cores the server, not
the client, is what gets measured, and its latencies are the server's, not the client's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).with_name("post_image.lua")


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the benchmark drives load with wrk: install it (`apt-get install wrk`, or `make bench`)")
    return wrk


def load(url: str, image: Path, concurrency: int, seconds: float, body: dict[str, str] | None = None) -> dict:
    """One wrk run: requests/s, p50 / p95 / p99 latency in ms and the error count (connection errors,
    timeouts and non-2xx answers). ``body``: BENCH_BODY / BENCH_CONTENT_TYPE / BENCH_HEADER for a server
    that takes another encoding than the multipart upload (post_image.lua)."""
    command = [require_wrk(), "--threads", "1", "--connections", str(concurrency), "--duration", f"{seconds:g}s",
               "--timeout", "30s", "--script", str(SCRIPT), url]
    environment = {**os.environ, "BENCH_IMAGE": str(image), **(body or {})}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    elapsed = r["microseconds"] / 1e6
    return {"concurrency": concurrency, "requests": r["requests"], "errors": r["errors"], "seconds": round(elapsed, 2),
            "rps": round(r["requests"] / elapsed, 1), "p50_ms": r["p50_us"] / 1e3, "p95_ms": r["p95_us"] / 1e3,
            "p99_ms": r["p99_us"] / 1e3}
