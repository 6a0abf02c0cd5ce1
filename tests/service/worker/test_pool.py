"""Worker supervision: a worker that dies, busy or idle, is replaced at once on any event loop; only the
jobs it held fail (503, retry); an overrunning job kills its worker; a lane that cannot be restored fails
/healthz; the server process itself never loads ONNX Runtime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.worker.pool import WorkerPool
from tests.helpers import EXAMPLES, large_png, running_server, upload

DIGIT = (EXAMPLES / "digit_7.png").read_bytes()


def wait_for(condition, seconds: float) -> float:
    """Seconds until ``condition()`` held (fails the test past ``seconds``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started


def replaced(lane: WorkerPool, pid: int) -> bool:
    return lane.running == lane.count and pid not in lane.pids


def ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz").status_code == 200


def test_a_worker_killed_while_idle_is_replaced_without_any_request(settings):
    with TestClient(create_app(settings.model_copy(update={"default_model": "lenet5"}))) as client:
        for lane in client.app.state.engine.lanes:
            [pid] = lane.pids
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda lane=lane, pid=pid: pid not in lane.pids, 1.0)  # noticed at once, not at a request
            wait_for(lambda lane=lane, pid=pid: replaced(lane, pid), 30.0)  # a successor loads the models (~1 s idle)
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 2.0)  # reaped, not left a zombie
        assert client.get("/readyz").status_code == 200
        answered = client.post("/predict", files=upload(DIGIT))
        assert answered.status_code == 200 and answered.json()["predictions"][0]["label"] == "7"


def test_a_dead_worker_gets_no_job_while_it_is_still_being_reaped(settings):
    """Its slots go as soon as its death is noticed: a request that comes before the process is reaped waits for
    the successor (200) instead of being sent to the dead worker's socket (503)."""
    with TestClient(create_app(settings.model_copy(update={"default_model": "lenet5"}))) as client:
        lane = client.app.state.engine.ordinary
        [worker] = lane._workers
        reaped, wait = threading.Event(), worker.process.wait
        worker.process.wait = lambda *args, **kwargs: (reaped.wait(10), wait())[1]  # the reaping held back
        try:
            os.kill(worker.process.pid, signal.SIGKILL)
            wait_for(lambda: worker.process.pid not in lane.pids, 1.0)
            assert not worker.alive
            assert client.post("/predict", files=upload(DIGIT)).status_code == 200
        finally:
            reaped.set()


def test_workers_start_with_the_malloc_settings_that_keep_their_freed_blocks(settings, monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with TestClient(create_app(settings.model_copy(update={"default_model": "lenet5"}))) as client:
        for lane in client.app.state.engine.lanes:
            [pid] = lane.pids
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            ours = b"GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432"
            # (glibc shortens the variable, in the process's own view, to the first setting it parsed)
            assert any(variable == ours or variable.startswith(ours + b":") for variable in environment)


def test_an_ordinary_worker_has_a_session_of_its_own_and_a_heavy_one_shares_the_servers(settings):
    """Autogroup scheduling gives each session one CPU share: the ordinary worker gets its own; the heavy worker
    stays in the server's, where its niceness keeps it behind the server."""
    with TestClient(create_app(settings.model_copy(update={"default_model": "lenet5"}))) as client:
        engine = client.app.state.engine
        [ordinary], [heavy] = engine.ordinary.pids, engine.heavy.pids
        assert os.getsid(ordinary) == ordinary != os.getsid(0)
        assert os.getsid(heavy) == os.getsid(0) and os.getpriority(os.PRIO_PROCESS, heavy) >= 10
        assert client.post("/predict", files=upload(DIGIT)).json()["predictions"][0]["label"] == "7"


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_kills_under_load_cost_only_the_jobs_in_flight(settings, loop):
    """Three kills of the ordinary worker during 6 s of load from 8 clients, on each event loop. Requests that
    arrive while a successor loads wait for it, so a kill can cost at most the requests in flight: one per
    client. (A share of the total, as this test first asked, depends on the machine's speed: a slow CI run
    lost 24 of 2,399 requests, exactly 8 a kill, and failed a 99 % bar.)"""
    clients, kills = 8, 3
    app = create_app(settings.model_copy(update={"default_model": "lenet5"}))
    with running_server(app, loop) as url:
        lane = app.state.engine.ordinary
        stop = threading.Event()
        statuses: list[int] = []

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        statuses.append(http.post("/predict", files=upload(DIGIT)).status_code)
                    except httpx.TimeoutException:
                        statuses.append(-1)  # a hang
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for _ in range(kills):
            time.sleep(1.5)
            [pid] = lane.pids
            os.kill(pid, signal.SIGKILL)
            # back within 5 s, not a hang (the ≤ 2 s target is measured by `python -m bench.hardening --only kills`)
            wait_for(lambda pid=pid: replaced(lane, pid) and ready(url), 5)
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join()
    assert -1 not in statuses and set(statuses) <= {200, 503}
    assert statuses.count(503) <= kills * clients and statuses.count(200) > 100, (statuses.count(503), len(statuses))


def test_a_job_over_the_time_limit_answers_503_and_its_worker_is_replaced(settings):
    """What a job in flight gets when its worker is lost: 503 and a retry, never a hang. The job: a
    6,000 × 6,000 RGB image (36 MP, under the pixel limit; a 120 KB PNG), which a heavy worker takes about
    0.3 s to decode."""
    impatient = settings.model_copy(update={"default_model": "lenet5", "worker_timeout_s": 0.1})
    with TestClient(create_app(impatient)) as client:
        heavy = client.app.state.engine.heavy
        [pid] = heavy.pids
        started = time.monotonic()
        response = client.post("/predict", files=upload(large_png(6000, 6000, "RGB")))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "restarted, retry" in response.json()["detail"] and time.monotonic() - started < 30
        wait_for(lambda: replaced(heavy, pid), 30)  # a niced successor loads every version: slow on a busy machine
        answered = client.post("/predict", files=upload(DIGIT))  # light work fits the limit
        assert answered.status_code == 200 and answered.json()["predictions"][0]["label"] == "7"


def test_a_lane_that_cannot_be_restored_fails_liveness(settings):
    with TestClient(create_app(settings.model_copy(update={"worker_restore_s": 0.5}))) as client:
        lane = client.app.state.engine.heavy
        lane.settings = lane.settings.model_copy(update={"worker_start_timeout_s": 0.001})  # no worker can start now
        [pid] = lane.pids
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: client.get("/healthz").status_code == 503, 10)
        body = client.get("/healthz").json()
        assert body["status"] == "failing" and "heavy" in body["detail"]
        assert client.get("/readyz").json()["workers"]["heavy"] == "0/1"


def test_the_server_process_does_not_load_onnxruntime():
    probe = "import sys, service.app; print('onnxruntime' in sys.modules)"
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "False"
