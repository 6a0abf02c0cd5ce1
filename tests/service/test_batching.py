"""Dynamic batching: stacked runs give every caller its own row, bad requests never spoil a batch,
and a full queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.batching import MicroBatcher
from service.errors import ServiceUnavailable
from tests.conftest import MODELS, encode, upload

LENET = str(MODELS / "lenet5" / "1" / "model.onnx")


def test_batched_rows_equal_single_runs():
    session = ort.InferenceSession(LENET, providers=["CPUExecutionProvider"])
    run = lambda batch: tuple(session.run(None, {"input": batch}))  # noqa: E731
    inputs = np.random.default_rng(0).random((12, 1, 1, 32, 32), np.float32)
    sizes: list[int] = []

    def counted(batch):
        sizes.append(len(batch))
        return run(batch)

    async def scenario():
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher("lenet5", counted, pool, max_batch_size=8, max_queue_delay_ms=50, max_queue=64, collectors=1)
            results = await asyncio.gather(*(batcher.submit(lambda x=x: (x, None)) for x in inputs))
            await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert max(sizes) > 1 and max(sizes) <= 8 and sum(sizes) == 12
    for x, result in zip(inputs, results):
        single_logits, single_features = run(x)
        np.testing.assert_allclose(result.logits, single_logits, atol=1e-5)
        np.testing.assert_allclose(result.features, single_features, atol=1e-5)


def test_multi_image_requests_and_a_failing_input_share_batches_correctly():
    session = ort.InferenceSession(LENET, providers=["CPUExecutionProvider"])
    sizes: list[int] = []

    def run(batch):
        sizes.append(len(batch))
        return tuple(session.run(None, {"input": batch}))

    rng = np.random.default_rng(1)
    tensors = [rng.random((rows, 1, 32, 32), np.float32) for rows in (3, 1, 4, 2, 5, 1)]

    def broken():
        raise ValueError("cannot decode this one")

    async def scenario():
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher("lenet5", run, pool, max_batch_size=6, max_queue_delay_ms=50, max_queue=64, collectors=1)
            calls = [batcher.submit(lambda t=t, i=i: (t, i), rows=len(t)) for i, t in enumerate(tensors)]
            calls.insert(2, batcher.submit(broken))
            results = await asyncio.gather(*calls, return_exceptions=True)
            await batcher.close()
        return results

    results = asyncio.run(scenario())
    failed = results.pop(2)
    assert isinstance(failed, ValueError) and "cannot decode" in str(failed)
    assert max(sizes) <= 6 and sum(sizes) == 16 and len(sizes) < len(tensors)
    for i, (tensor, result) in enumerate(zip(tensors, results)):
        assert result.payload == i and result.logits.shape == (len(tensor), 10)
        np.testing.assert_allclose(result.logits, session.run(None, {"input": tensor})[0], atol=1e-5)


def test_full_queue_answers_503_with_retry_after():
    session = ort.InferenceSession(LENET, providers=["CPUExecutionProvider"])
    release = threading.Event()

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            pool.submit(release.wait)  # the only inference thread is busy
            batcher = MicroBatcher("lenet5", lambda b: tuple(session.run(None, {"input": b})), pool,
                                   max_batch_size=1, max_queue_delay_ms=0, max_queue=2, collectors=1)
            x = np.zeros((1, 1, 32, 32), np.float32)
            make = lambda: (x, None)  # noqa: E731
            first = asyncio.create_task(batcher.submit(make))     # taken by the collector, waits for a thread
            await asyncio.sleep(0.05)
            queued = [asyncio.create_task(batcher.submit(make)) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(ServiceUnavailable) as busy:
                await batcher.submit(make)
            release.set()
            done = await asyncio.gather(first, *queued)
            await batcher.close()
            return busy.value, done

    busy, done = asyncio.run(scenario())
    assert busy.status == 503 and busy.headers == {"Retry-After": "1"}
    assert len(done) == 3 and all(result.logits.shape == (1, 10) for result in done)


def test_bad_requests_inside_a_batch_of_good_ones(settings, mnist_test):
    batching = settings.model_copy(update={"max_queue_delay_ms": 30.0, "default_model": "lenet5"})
    digits = [encode(mnist_test.images[i, 0]) for i in range(0, 500, 50)]
    with TestClient(create_app(batching)) as client:
        expected = [client.post("/predict", files=upload(d)).json()["predictions"] for d in digits]

        async def burst():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                good = [http.post("/predict", files=upload(d)) for d in digits]
                bad = [http.post("/predict", files=upload(b"junk")) for _ in range(5)]
                return await asyncio.gather(*good, *bad)

        responses = client.portal.call(burst)
        good, bad = responses[:10], responses[10:]
        for response, predictions in zip(good, expected):
            assert response.status_code == 200
            got = response.json()["predictions"]
            assert [p["index"] for p in got] == [p["index"] for p in predictions]
            assert all(abs(a["probability"] - b["probability"]) < 1e-5 for a, b in zip(got, predictions))
        assert all(r.status_code == 415 for r in bad)
        metrics = client.get("/metrics").text
        batched = [line for line in metrics.splitlines() if line.startswith('model_batch_size_bucket{le="1.0",model="lenet5"}')]
        total = [line for line in metrics.splitlines() if line.startswith('model_batch_size_count{model="lenet5"}')]
        assert float(batched[0].split()[-1]) < float(total[0].split()[-1])  # some runs held more than one image
