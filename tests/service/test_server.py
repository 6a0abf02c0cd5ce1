"""Connection hygiene and shutdown, over raw sockets against the service's own server: deadlines per
phase of a request, header limits, no draining after an early answer, the connection cap, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.helpers import EXAMPLES, ROOT, free_port, running_server, wait_until_ready

pytestmark = pytest.mark.slow  # real servers and real timeouts
DIGIT = (EXAMPLES / "digit_7.png").read_bytes()


@pytest.fixture(scope="module")
def strict_url(settings) -> Iterator[str]:
    strict = settings.model_copy(update={"default_model": "lenet5", "keep_alive_s": 1, "header_timeout_s": 1.0,
                                         "read_timeout_s": 1.0, "request_timeout_s": 3.0, "max_headers": 20,
                                         "max_header_bytes": 4096, "max_connections": 6, "max_upload_bytes": 100_000})
    with running_server(create_app(strict)) as url:
        yield url


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes the connection, and how long that took."""
    started, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def test_a_silent_connection_is_closed(strict_url):
    data, waited = read_all(connect(strict_url))
    assert data == b"" and 0.8 < waited < 3


def test_headers_that_do_not_arrive_in_time_get_408(strict_url):
    sock = connect(strict_url)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    data, waited = read_all(sock)
    assert data.startswith(b"HTTP/1.1 408") and b"headers did not arrive" in data and waited < 3


@pytest.mark.parametrize("headers", [b"X-Big: " + b"a" * 10_000 + b"\r\n",
                                     b"".join(b"X-%d: 1\r\n" % i for i in range(50))])
def test_too_large_or_too_many_headers_get_431(strict_url, headers):
    sock = connect(strict_url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    data, _ = read_all(sock)
    assert data.startswith(b"HTTP/1.1 431") and b"application/problem+json" in data


def test_a_trickled_body_gets_408(strict_url):
    sock = connect(strict_url)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 1000\r\n\r\nab")
    started = time.monotonic()
    try:
        while time.monotonic() - started < 10:
            sock.sendall(b"x")  # a byte every 0.5 s: more than the read timeout allows in total
            time.sleep(0.5)
    except OSError:
        pass
    data, _ = read_all(sock)
    assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5  # request_timeout_s 3


def test_an_early_answer_closes_the_connection_instead_of_reading_the_rest(strict_url):
    sock = connect(strict_url)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    sent, chunk = 0, b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
    with pytest.raises(OSError):
        while sent < 200_000_000:
            sock.sendall(chunk)
            sent += 65536
    assert sent < 50_000_000  # refused at the 100 kB limit, closed: not drained to the end


def test_past_the_connection_cap_the_longest_waiting_idle_connection_makes_room(strict_url):
    stalled = [connect(strict_url) for _ in range(6)]  # the cap; none sends anything
    for sock in stalled:
        sock.sendall(b"G")  # a request begun and never finished
    answered = httpx.post(f"{strict_url}/predict", files={"file": ("7.png", DIGIT)}, timeout=10)
    assert answered.status_code == 200 and answered.json()["predictions"][0]["label"] == "7"
    evicted, _ = read_all(stalled[0])
    assert evicted.startswith(b"HTTP/1.1 503") and b"connection limit" in evicted


def test_sigterm_with_a_half_sent_upload_exits_within_the_grace_period():
    port = free_port()
    env = {**os.environ, "CNNSERVE_PORT": str(port), "CNNSERVE_SHUTDOWN_GRACE_S": "1", "CNNSERVE_LOG_LEVEL": "error",
           "CNNSERVE_MODEL_DIR": str(ROOT / "models")}
    server = subprocess.Popen([sys.executable, "-m", "service"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until_ready(url, 60)
        workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(workers) == 2
        upload = connect(url)
        upload.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                       b"Content-Length: 100000\r\n\r\n--b\r\n")
        time.sleep(0.3)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        assert time.monotonic() - started < 1 + 1.5  # grace 1 s, plus a margin for a loaded CI machine
        time.sleep(0.2)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # no orphaned worker
    finally:
        if server.poll() is None:
            server.kill()
