"""Dynamic batching: stacked runs give every caller its own rows, bad requests never spoil a batch, and a
full queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.batching import MicroBatcher
from service.errors import ProblemError, ServiceUnavailable, UnsupportedImage
from service.manifest import Manifest
from service.worker.model import WorkerModel
from service.worker.protocol import Classified, Classify, TensorRows, Upload, UploadRow, Version
from tests.helpers import MODELS, encode, upload

LENET = MODELS / "lenet5" / "1"


@pytest.fixture(scope="module")
def lenet(settings) -> WorkerModel:
    """lenet5 as an inference worker holds it, here in the test's own process."""
    manifest = Manifest.model_validate_json((LENET / "manifest.json").read_text())
    return WorkerModel.load(Version(LENET, manifest), settings, heavy=False)


def single(x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(LENET / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})


def rows_of(reply: Classified) -> list:
    """Each item's own slice of a batch reply, or its error (what the engine's dispatch hands back)."""
    out = []
    for item in reply.items:
        if isinstance(item, ProblemError):
            out.append(item)
        else:
            part = slice(item.start, item.stop) if isinstance(item, TensorRows) else slice(item.row, item.row + 1)
            features = None if reply.features is None else reply.features[part]
            out.append((reply.logits[part], features, reply.ranking[part]))
    return out


def form(data: bytes) -> Upload:
    request = httpx.Request("POST", "http://test/", files=upload(data))
    return Upload(request.read(), request.headers["content-type"])


def test_batched_rows_equal_single_runs(lenet):
    inputs = np.random.default_rng(0).random((12, 1, 1, 32, 32), np.float32)
    sizes: list[int] = []

    async def dispatch(items):
        sizes.append(len(items))
        return rows_of(await asyncio.to_thread(lenet.classify, Classify(("lenet5", "1"), tuple(items), True)))

    async def scenario():
        batcher = MicroBatcher("lenet5", dispatch, max_batch_size=8, max_queue_delay_ms=50, max_queue=64, collectors=1)
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert max(sizes) > 1 and max(sizes) <= 8 and sum(sizes) == 12
    for x, (logits, features, order) in zip(inputs, results, strict=True):
        single_logits, single_features = single(x)
        np.testing.assert_allclose(logits, single_logits, atol=1e-5)
        np.testing.assert_allclose(features, single_features, atol=1e-5)
        assert order[0, 0] == single_logits[0].argmax()


def test_multi_image_requests_and_a_failing_input_share_batches_correctly(lenet, mnist_test):
    rows_per_run: list[int] = []

    def counted(items):
        reply = lenet.classify(Classify(("lenet5", "1"), tuple(items), True))
        rows_per_run.append(len(reply.logits))
        return rows_of(reply)

    rng = np.random.default_rng(1)
    tensors = [rng.random((rows, 1, 32, 32), np.float32) for rows in (3, 1, 4, 2, 5, 1)]
    digit = form(encode(mnist_test.images[0, 0]))

    async def scenario():
        batcher = MicroBatcher("lenet5", lambda items: asyncio.to_thread(counted, items), max_batch_size=6,
                               max_queue_delay_ms=50, max_queue=64, collectors=1)
        calls = [batcher.submit(t, rows=len(t)) for t in tensors]
        calls.insert(2, batcher.submit(form(b"junk")))
        calls.insert(4, batcher.submit(digit))
        results = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    uploaded, failed = results.pop(4), results.pop(2)
    assert isinstance(failed, UnsupportedImage) and failed.status == 415
    assert uploaded[0].shape == (1, 10) and uploaded[2][0, 0] == mnist_test.labels[0]
    reply = lenet.classify(Classify(("lenet5", "1"), (digit,), True))
    assert reply.features is None and isinstance(reply.items[0], UploadRow)  # uploads alone: no feature maps sent
    assert max(rows_per_run) <= 6 and sum(rows_per_run) == 17 and len(rows_per_run) < len(tensors) + 1
    for tensor, (logits, _, _) in zip(tensors, results, strict=True):
        assert logits.shape == (len(tensor), 10)
        np.testing.assert_allclose(logits, single(tensor)[0], atol=1e-5)


def test_full_queue_answers_503_with_retry_after(lenet):
    async def scenario():
        release = asyncio.Event()

        async def dispatch(items):
            await release.wait()  # the worker is busy
            return rows_of(lenet.classify(Classify(("lenet5", "1"), tuple(items), True)))

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
    assert len(done) == 3 and all(logits.shape == (1, 10) for logits, _, _ in done)


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
        for response, predictions in zip(good, expected, strict=True):
            assert response.status_code == 200
            got = response.json()["predictions"]
            assert [p["index"] for p in got] == [p["index"] for p in predictions]
            assert all(abs(a["probability"] - b["probability"]) < 1e-5 for a, b in zip(got, predictions, strict=True))
        assert all(r.status_code == 415 for r in bad)
        metrics = client.get("/metrics").text
        def count(prefix: str) -> float:
            return float(next(line for line in metrics.splitlines() if line.startswith(prefix)).split()[-1])

        single = count('model_batch_size_bucket{le="1.0",model="lenet5"}')
        assert single < count('model_batch_size_count{model="lenet5"}')  # some runs held more than one image
