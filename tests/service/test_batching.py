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
from service.batching import SHARE_ABOVE, MicroBatcher
from service.errors import ProblemError, ServiceUnavailable, UnsupportedImage
from service.manifest import Manifest
from service.postprocessing import softmax
from service.preprocessing import prepare
from service.worker.model import WorkerModel
from service.worker.protocol import Classified, Classify, Upload, Version
from tests.helpers import MODELS, decoded, encode, upload

LENET = MODELS / "lenet5" / "1"


@pytest.fixture(scope="module")
def lenet(settings) -> WorkerModel:
    """lenet5 as an inference worker holds it, here in the test's own process."""
    manifest = Manifest.model_validate_json((LENET / "manifest.json").read_text())
    return WorkerModel.load(Version(LENET, manifest), settings, heavy=False)


def rows_of(reply: Classified) -> list:
    """Each upload's own probabilities, or its error (what the engine's dispatch hands back)."""
    return [item if isinstance(item, ProblemError) else reply.probabilities[item.row] for item in reply.items]


def form(data: bytes) -> Upload:
    request = httpx.Request("POST", "http://test/", files=upload(data))
    return Upload(request.read(), request.headers["content-type"])


def single(data: bytes) -> np.ndarray:
    """The probabilities ONNX Runtime gives this image alone, from the service's own preprocessing."""
    manifest = Manifest.model_validate_json((LENET / "manifest.json").read_text())
    batch = prepare([decoded(data)], manifest)
    session = ort.InferenceSession(str(LENET / "model.onnx"), providers=["CPUExecutionProvider"])
    assert manifest.calibration is not None
    return softmax(session.run(["logits"], {"input": batch})[0], manifest.calibration.temperature)[0]  # as served


def test_batched_rows_equal_single_runs_and_a_bad_upload_spoils_nothing(lenet, mnist_test):
    digits = [encode(mnist_test.images[i, 0]) for i in range(0, 120, 10)]
    sizes: list[int] = []

    async def dispatch(items):
        sizes.append(len(items))
        return rows_of(await asyncio.to_thread(lenet.classify, Classify(("lenet5", "1"), tuple(items), True)))

    async def scenario():
        batcher = MicroBatcher("lenet5", dispatch, max_batch_size=5, max_queue_delay_ms=50, max_queue=64, collectors=1)
        uploads = [form(d) for d in digits]
        uploads.insert(3, form(b"junk"))
        results = await asyncio.gather(*(batcher.submit(u) for u in uploads), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    failed = results.pop(3)
    assert isinstance(failed, UnsupportedImage) and failed.status == 415
    assert max(sizes) == 5 and sum(sizes) == 13 and len(sizes) == 3  # batches of up to five, junk included
    for data, probabilities, index in zip(digits, results, range(0, 120, 10), strict=True):
        np.testing.assert_allclose(probabilities, single(data), atol=1e-6)
        assert probabilities.argmax() == mnist_test.labels[index]


@pytest.mark.parametrize("queued, collectors, delay_ms, expected", [
    (30, 2, 0, [15, 8, 7]),  # each its share of what is queued as it starts: 30/2, then 15/2 rounded up, then 7
    (10, 2, 0, [8, 2]),      # up to SHARE_ABOVE images a collector takes them all
    (30, 1, 0, [30]),        # one collector: all of it, up to max_batch_size
    (30, 2, 20, [30]),       # with a queue delay a collector gathers up to max_batch_size
])
def test_a_collector_takes_its_share_of_a_long_queue(queued, collectors, delay_ms, expected):
    assert SHARE_ABOVE == 8  # the expected sizes above assume it
    sizes: list[int] = []

    async def scenario():
        release = asyncio.Event()

        async def dispatch(items):
            sizes.append(len(items))
            await release.wait()
            return items

        batcher = MicroBatcher("m", dispatch, max_batch_size=32, max_queue_delay_ms=delay_ms, max_queue=64,
                               collectors=collectors)
        submitted = [asyncio.create_task(batcher.submit(i)) for i in range(queued)]  # all queued before a gather
        await asyncio.sleep(0.1)
        release.set()
        results = await asyncio.gather(*submitted)
        await batcher.close()
        return results

    assert asyncio.run(scenario()) == list(range(queued))
    assert sizes == expected


def test_full_queue_answers_503_with_retry_after(lenet):
    async def scenario():
        release = asyncio.Event()

        async def dispatch(items):
            await release.wait()  # the worker is busy
            return rows_of(lenet.classify(Classify(("lenet5", "1"), tuple(items), True)))

        batcher = MicroBatcher("lenet5", dispatch, max_batch_size=1, max_queue_delay_ms=0, max_queue=2, collectors=1)
        x = form(encode(np.zeros((28, 28), np.uint8)))
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
    assert len(done) == 3 and all(probabilities.shape == (10,) for probabilities in done)


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
