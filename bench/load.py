"""Load generator, run as its own process: C concurrent clients posting one image over loopback,
for a bounded time and request count. Prints one JSON line of results.

Each client first opens its keep-alive connection with one unmeasured request; the clock starts when
all are connected, so the figures are the steady state, not 64 simultaneous TCP handshakes."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np


async def client(url: str, files: list[bytes], seconds: float, start: asyncio.Barrier, budget: list[int],
                 latencies: list[float], errors: list[int]) -> None:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as http:
        await http.post(url, files={"file": ("image.png", files[0], "image/png")})  # connect (not measured)
        await start.wait()
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                response = await http.post(url, files={"file": ("image.png", files[i % len(files)], "image/png")})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors[0] += not ok
            i += 1


async def run(url: str, images: list[bytes], concurrency: int, seconds: float, max_requests: int) -> dict:
    latencies: list[float] = []
    errors, budget = [0], [max_requests]
    start = asyncio.Barrier(concurrency + 1)
    clients = asyncio.gather(*(client(url, images[k:] + images[:k], seconds, start, budget, latencies, errors)
                               for k in range(concurrency)))
    await start.wait()
    started = time.perf_counter()
    await clients
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors[0], "seconds": round(elapsed, 2),
            "rps": round(len(latencies) / elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    images = [open(path, "rb").read() for path in args.images]
    print(json.dumps(asyncio.run(run(args.url, images, args.concurrency, args.seconds, args.max_requests))))


if __name__ == "__main__":
    main()
