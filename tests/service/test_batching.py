"""Dynamic batching: stacked runs give every caller its own row, bad requests never spoil a batch,
and a full queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.batching import MicroBatcher
from service.errors import ServiceUnavailable, UnsupportedImage
from service.inference_worker import WorkerModel, run_batch
from service.manifest import Manifest
from service.runtime import Sessions
from service.workers import Upload
from tests.conftest import MODELS, encode, upload

LENET = MODELS / "lenet5" / "1"


@pytest.fixture(scope="module")
def lenet(settings) -> WorkerModel:
    """lenet5 as an inference worker holds it, here in the test's own process."""
    manifest = Manifest.model_validate_json((LENET / "manifest.json").read_text())
    return WorkerModel(manifest, Sessions.load(LENET / "model.onnx", LENET / "gradcam.onnx", settings))


def single(x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(LENET / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})


def test_batched_rows_equal_single_runs(lenet):
    inputs = np.random.default_rng(0).random((12, 1, 1, 32, 32), np.float32)
    sizes: list[int] = []

    async def dispatch(items):
        sizes.append(len(items))
        return (await asyncio.to_thread(run_batch, lenet, items, 10**8)).rows()

    async def scenario():
        batcher = MicroBatcher("lenet5", dispatch, max_batch_size=8, max_queue_delay_ms=50, max_queue=64, collectors=1)
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert max(sizes) > 1 and max(sizes) <= 8 and sum(sizes) == 12
    for x, rows in zip(inputs, results):
        single_logits, single_features = single(x)
        np.testing.assert_allclose(rows.logits, single_logits, atol=1e-5)
        np.testing.assert_allclose(rows.features, single_features, atol=1e-5)
        np.testing.assert_allclose(rows.probabilities.sum(axis=1), 1, atol=1e-6)
        assert rows.ranking[0, 0] == single_logits[0].argmax()


def test_multi_image_requests_and_a_failing_input_share_batches_correctly(lenet, mnist_test):
    rows_per_run: list[int] = []

    def counted(items):
        reply = run_batch(lenet, items, 10**8)
        rows_per_run.append(len(reply.logits))
        return reply.rows()

    rng = np.random.default_rng(1)
    tensors = [rng.random((rows, 1, 32, 32), np.float32) for rows in (3, 1, 4, 2, 5, 1)]
    form = httpx.Request("POST", "http://test/", files=upload(encode(mnist_test.images[0, 0])))
    digit = Upload(form.read(), form.headers["content-type"])
    junk = httpx.Request("POST", "http://test/", files=upload(b"junk"))

    async def scenario():
        batcher = MicroBatcher("lenet5", lambda items: asyncio.to_thread(counted, items), max_batch_size=6,
                               max_queue_delay_ms=50, max_queue=64, collectors=1)
        calls = [batcher.submit(t, rows=len(t)) for t in tensors]
        calls.insert(2, batcher.submit(Upload(junk.read(), junk.headers["content-type"])))
        calls.insert(4, batcher.submit(digit))
        results = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    uploaded, failed = results.pop(4), results.pop(2)
    assert isinstance(failed, UnsupportedImage) and failed.status == 415
    assert uploaded.logits.shape == (1, 10)
    assert run_batch(lenet, [digit], 10**8).features is None  # uploads get features only when asked for
    assert uploaded.ranking[0, 0] == mnist_test.labels[0]
    assert max(rows_per_run) <= 6 and sum(rows_per_run) == 17 and len(rows_per_run) < len(tensors) + 1
    for tensor, rows in zip(tensors, results):
        assert rows.logits.shape == (len(tensor), 10)
        np.testing.assert_allclose(rows.logits, single(tensor)[0], atol=1e-5)


def test_full_queue_answers_503_with_retry_after(lenet):
    async def scenario():
        release = asyncio.Event()

        async def dispatch(items):
            await release.wait()  # the worker is busy
            return run_batch(lenet, items, 10**8).rows()

        batcher = MicroBatcher("lenet5", dispatch, max_batch_size=1, max_queue_delay_ms=0, max_queue=2, collectors=1)
        x = np.zeros((1, 1, 32, 32), np.float32)
        first = asyncio.create_task(batcher.submit(x))     # taken by the collector, waits for the worker
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(x)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceUnavailable) as busy:
            await batcher.submit(x)
        release.set()
        done = await asyncio.gather(first, *queued)
        await batcher.close()
        return busy.value, done

    busy, done = asyncio.run(scenario())
    assert busy.status == 503 and busy.headers == {"Retry-After": "1"}
    assert len(done) == 3 and all(rows.logits.shape == (1, 10) for rows in done)


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
