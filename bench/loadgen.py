"""A load generator for hosts without wrk: several client processes, each an asyncio loop of raw HTTP/1.1
keep-alive connections sending one prepared request over and over. No HTTP library sits between the
socket and the clock (a request is one prepared ``bytes``; a response is read by its Content-Length), so
one process drives thousands of requests a second and latencies are the server's, not the client's.

``python -m bench.loadgen URL --image FILE -c 64 -d 10 -p 8`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    request: bytes  # the whole request, headers and body

    @classmethod
    def post(cls, url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Target:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


async def _connection(target: Target, deadline: float, latencies: list[float], statuses: dict[int, int]) -> int:
    """One keep-alive connection until the deadline; returns the transport errors it met."""
    errors = 0
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(target.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection(target.host, target.port)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors += 1
    finally:
        writer.close()
    return errors


async def _process_load(target: Target, connections: int, seconds: float) -> dict[str, object]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = await asyncio.gather(*(_connection(target, deadline, latencies, statuses) for _ in range(connections)))
    return {"latencies": latencies, "statuses": statuses, "errors": sum(errors)}


def upload(image: bytes, filename: str = "image.png") -> tuple[bytes, str]:
    """A multipart/form-data body holding ``image`` as the field ``file``, and its Content-Type."""
    boundary = "cnnservebenchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _run(args: tuple[Target, int, float]) -> dict[str, object]:
    return asyncio.run(_process_load(*args))


def load(target: Target, concurrency: int, seconds: float, processes: int) -> dict[str, float | int]:
    """``concurrency`` connections spread over up to ``processes`` client processes, for ``seconds``."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_run, [(target, share, seconds) for share in shares])
    elapsed = time.perf_counter() - started
    latencies = sorted(x for part in parts for x in part["latencies"])  # type: ignore[attr-defined]
    statuses: dict[int, int] = {}
    for part in parts:
        for status, count in part["statuses"].items():  # type: ignore[attr-defined]
            statuses[status] = statuses.get(status, 0) + count
    ok = statuses.get(200, 0)
    count = len(latencies)

    def percentile(q: float) -> float:
        return round(latencies[min(count - 1, int(q * count))] * 1e3, 3) if count else float("nan")

    transport_errors = sum(int(part["errors"]) for part in parts)  # type: ignore[call-overload]
    return {"concurrency": concurrency, "requests": count, "ok": ok, "errors": count - ok + transport_errors,
            "rps": round(ok / seconds, 1), "p50_ms": percentile(0.5), "p99_ms": percentile(0.99),
            "processes": processes, "wall_s": round(elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--image", required=True, help="image file, posted as the multipart field 'file'")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-d", "--seconds", type=float, default=10)
    parser.add_argument("-p", "--processes", type=int, default=4)
    args = parser.parse_args()
    with open(args.image, "rb") as file:
        target = Target.post(args.url, *upload(file.read()))
    print(json.dumps(load(target, args.concurrency, args.seconds, args.processes)))


if __name__ == "__main__":
    main()
