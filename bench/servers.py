"""Servers under test, each in its own process group on a free loopback port, and what a load run costs
them: CPU time per request (the process and its children), how busy the cores were, resident memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.load import load

ROOT = Path(__file__).resolve().parents[1]


def free_port(span: int = 1) -> int:
    """A free loopback port, and the ``span - 1`` ports after it free too (TorchServe listens on three in a
    row; the one after a free port may be a client's ephemeral port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if all(_bindable(port + offset) for offset in range(1, span)):
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (the service's inference workers)."""
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:  # the process, or one of its threads (TorchServe's Java side), ended meanwhile
        pass
    return [pid] + [p for child in children for p in process_tree(child)]


def idle_seconds() -> float:
    """Idle time of all cores since boot (/proc/stat): how much of the machine a run left unused."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Server:
    """A server in its own process (and its children), listening on a free loopback port."""

    def __init__(self, command: list[str], env: dict[str, str], port: int | None = None, cwd: Path = ROOT) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen([part.format(port=self.port) for part in command], cwd=cwd,
                                        env={**os.environ, **env, "BENCH_PORT": str(self.port)},
                                        stdout=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    @classmethod
    def uvicorn(cls, app: str, env: dict[str, str], factory: bool = False) -> Server:
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}",
                   "--log-level", "warning", *(["--factory"] if factory else [])]
        return cls(command, env)

    def wait(self, path: str) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server on {self.url} did not start")

    def cpu_seconds(self, workers: bool = True) -> float:
        """User + system CPU time of the server process, all its threads, and of its workers."""
        total = 0
        for pid in process_tree(self.process.pid) if workers else [self.process.pid]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # ended since the tree was read
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def measure(self, path: str, image: Path, concurrency: int, seconds: float, repeat: int = 1,
                body: dict[str, str] | None = None) -> dict:
        """The run with the median requests/s of ``repeat`` load runs (this host's speed drifts by ±10 %
        from one run to the next), plus the CPU time per request of the server process and its workers:
        what a request costs, whatever the load generator and the other core were doing."""
        runs = []
        for _ in range(repeat):
            before, before_server = self.cpu_seconds(), self.cpu_seconds(workers=False)
            idle_before = idle_seconds()
            result = load(self.url + path, image, concurrency, seconds, body)
            result["cores_busy_pct"] = round(100 * (1 - (idle_seconds() - idle_before) / result["seconds"]
                                                    / len(os.sched_getaffinity(0))), 1)
            requests = max(result["requests"], 1)
            result["cpu_ms_per_request"] = round((self.cpu_seconds() - before) / requests * 1e3, 3)
            server_seconds = self.cpu_seconds(workers=False) - before_server
            result["server_process_cpu_ms_per_request"] = round(server_seconds / requests * 1e3, 3)
            runs.append(result)
        return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]

    def stop(self) -> None:
        """The server, then anything it started and left behind (a peer's workers, TorchServe's Java side)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
