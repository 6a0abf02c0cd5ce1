"""ONNX Runtime in a worker: provider options built from settings, the strict provider policy, padding
batches to bucket sizes, and a failed run reported as 503 (all on the CPU: CI has no GPU)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from service.app import create_app
from service.errors import ServiceUnavailable
from service.manifest import Manifest
from service.settings import Settings
from service.worker import channel_blocks, runtime
from service.worker.main import handle
from service.worker.model import WorkerModel, read_verified
from service.worker.protocol import Classify, RunPlan, Upload
from service.worker.runtime import (
    BLOCKED_GAIN,
    CPU,
    CUDA,
    SPLIT_GAIN,
    ProviderUnavailable,
    RunFailed,
    Sessions,
    bucket,
    cuda_options,
    pad,
    provider_chain,
)
from tests.helpers import EXAMPLES, MODELS, manifest, upload

LENET = MODELS / "lenet5" / "1"


@pytest.fixture(autouse=True)
def avx512_blocks(monkeypatch):
    """The fill and its choice are checked on AVX-512's blocks of 16 whatever this CPU's block (on AVX2's 8,
    resnet_small has nothing to fill); the timings are still this CPU's."""
    monkeypatch.setattr(runtime, "this_cpus_block", lambda: 16)


def test_cuda_options_come_from_settings():
    assert cuda_options(Settings()) == {"device_id": "0", "cudnn_conv_algo_search": "DEFAULT", "use_tf32": "0",
                                        "arena_extend_strategy": "kSameAsRequested"}
    tuned = Settings(cuda_device_id=1, cuda_conv_algo_search="HEURISTIC", cuda_tf32=True, cuda_mem_limit_mb=512,
                     cuda_arena_strategy="kNextPowerOfTwo")
    assert cuda_options(tuned) == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "1",
                                   "arena_extend_strategy": "kNextPowerOfTwo", "gpu_mem_limit": str(512 * 2**20)}


def test_the_provider_chain_follows_the_policy():
    gpu_build, cpu_build = [CUDA, CPU], [CPU]
    assert provider_chain(Settings(providers="cpu"), gpu_build) == [(CPU, {})]
    assert provider_chain(Settings(providers="auto"), cpu_build) == [(CPU, {})]
    assert provider_chain(Settings(providers="auto"), gpu_build) == [(CUDA, cuda_options(Settings())), (CPU, {})]
    assert provider_chain(Settings(providers="cuda"), gpu_build)[0][0] == CUDA
    with pytest.raises(ProviderUnavailable, match="no CUDA provider.*onnxruntime-gpu"):
        provider_chain(Settings(providers="cuda"), cpu_build)


def test_providers_cuda_without_cuda_is_not_ready_and_says_why(settings):
    if CUDA in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA: the policy under test is its absence")
    with TestClient(create_app(settings.model_copy(update={"providers": "cuda"}))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        errors = ready.json()["errors"]
        assert len(errors) == 16 and all("CNNSERVE_PROVIDERS=cuda" in e and "no CUDA provider" in e for e in errors)
        info = client.get("/models/lenet5").json()
        assert info["status"] == "failed" and info["providers"] == [] and "onnxruntime-gpu" in info["error"]
        digit = upload((EXAMPLES / "digit_7.png").read_bytes())
        assert client.post("/predict?model=lenet5", files=digit).status_code == 404


def test_buckets_and_padding():
    buckets = [1, 2, 4, 8, 16, 32]
    assert [bucket(rows, buckets) for rows in (1, 2, 3, 5, 8, 9, 31, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    batch = np.ones((3, 1, 2, 2), np.float32)
    padded = pad(batch, 4)
    assert padded.shape == (4, 1, 2, 2) and (padded[:3] == 1).all() and not padded[3].any()
    assert pad(batch, 3) is batch


def test_padded_runs_answer_exactly_like_unpadded_ones():
    manifest_ = Manifest.model_validate(manifest("lenet5"))
    model, gradient = (read_verified(LENET, f, manifest_) for f in manifest_.graph_files)
    plain = Sessions.load(model, gradient, Settings(pad_batches="never"), (1, 32, 32), "lenet5/1")
    padded = Sessions.load(model, gradient, Settings(pad_batches="always"), (1, 32, 32), "lenet5/1")
    assert plain.buckets is None and padded.buckets == [1, 2, 4, 8, 16, 32]
    padded.warm_up((1, 32, 32), 10)  # every bucket of both graphs
    x = np.random.default_rng(0).random((5, 1, 32, 32), np.float32)  # runs as 8 rows
    for (a, b) in zip(plain.classify(x), padded.classify(x), strict=True):
        assert a.shape == b.shape and a.shape[0] == 5  # the padding rows are dropped
        np.testing.assert_allclose(a, b, atol=1e-6)
    seed = np.eye(10, dtype=np.float32)[[3, 1, 4, 1, 5]]
    features = plain.classify(x)[1]
    np.testing.assert_allclose(plain.head_gradient(features, seed), padded.head_gradient(features, seed), atol=1e-6)


def _threads(session: ort.InferenceSession) -> int:
    threads: int = session.get_session_options().intra_op_num_threads
    return threads


def _load(name: str, settings: Settings, heavy: bool = False, plan: RunPlan | None = None) -> Sessions:
    manifest_ = Manifest.model_validate(manifest(name))
    model, gradient = (read_verified(MODELS / name / "1", f, manifest_) for f in manifest_.graph_files)
    spec = manifest_.input
    return Sessions.load(model, gradient, settings, (spec.channels, spec.height, spec.width), f"{name}/1", heavy,
                         plan)


def _logged_choice(name: str, text: str) -> re.Match[str] | None:
    return re.search(rf"{name}/1: a batch of 8 in ([0-9.]+) ms on 2 threads, ([0-9.]+) ms on one thread; runs "
                     r"on (2 threads|one thread)", text)


@pytest.mark.parametrize("name", ["lenet5", "resnet_small"])
def test_each_version_splits_its_runs_only_as_its_logged_timings_say(name, caplog):
    """Both ways timed on this machine (lenet5's runs are too small to gain from a split; resnet_small's gain
    1.5–1.8× on 2 idle cores), and the choice, for both graphs, is what the logged timings call for."""
    with caplog.at_level(logging.INFO, logger="service.worker.runtime"):
        sessions = _load(name, Settings(intra_op_threads=2))
    logged = _logged_choice(name, caplog.text)
    assert logged, caplog.text
    split_ms, single_ms = float(logged[1]), float(logged[2])
    threads = 2 if single_ms >= SPLIT_GAIN * split_ms else 1
    assert logged[3] == ("2 threads" if threads == 2 else "one thread")
    assert _threads(sessions.model) == _threads(sessions.gradient) == threads


@pytest.mark.parametrize("gain,threads,windows", [(0.0, 2, 1), (1e9, 1, runtime.TIMING_WINDOWS)])
def test_the_split_is_kept_only_when_that_much_faster(gain, threads, windows, monkeypatch):
    """Whatever the timings: a split that clears the bar is kept at once; one that cannot is timed again in
    every window (a moment's contention must not decide it) and then dropped. (The graph as exported: no
    filled one is timed before.)"""
    monkeypatch.setattr(runtime, "fill_channel_blocks", lambda model, block: None)
    timed = []
    real = runtime.timed_ms

    def counted(*args):
        timed.append(args)
        return real(*args)

    monkeypatch.setattr(runtime, "SPLIT_GAIN", gain)
    monkeypatch.setattr(runtime, "timed_ms", counted)
    sessions = _load("resnet_small", Settings(intra_op_threads=2))
    assert _threads(sessions.model) == _threads(sessions.gradient) == threads
    assert len(timed) == windows


def test_an_earlier_workers_choice_and_a_heavy_worker_are_not_timed(caplog):
    """A successor takes its lane's choice as given; a heavy worker runs on one thread."""
    with caplog.at_level(logging.INFO, logger="service.worker.runtime"):
        given = _load("lenet5", Settings(intra_op_threads=2), plan=RunPlan(2))
        heavy = _load("resnet_small", Settings(intra_op_threads=2), heavy=True)
    assert "a batch of 8" not in caplog.text
    assert _threads(given.model) == _threads(given.gradient) == given.plan.threads == 2
    assert _threads(heavy.model) == _threads(heavy.gradient) == heavy.plan.threads == 1
    assert not given.plan.blocked and not heavy.plan.blocked


def _logged_filling(name: str, text: str) -> re.Match[str] | None:
    return re.search(rf"{name}/1: a batch of 8 in ([0-9.]+) ms with its channels filled to blocks of 16, ([0-9.]+) ms "
                     r"as exported; runs (with its channels filled to blocks of 16|as exported)", text)


def _marked_filler(change: Callable[[onnx.ModelProto], None] = lambda proto: None):
    """The real filler, its graph marked (the model's description, which a session reports) and changed."""
    def fill(model: bytes, block: int) -> bytes | None:
        filled = channel_blocks.fill_channel_blocks(model, block)
        if filled is None:
            return None
        proto = onnx.load_model_from_string(filled)
        proto.doc_string = "filled"
        change(proto)
        return proto.SerializeToString()
    return fill


def _serves_filled(sessions: Sessions) -> bool:
    return sessions.model.get_modelmeta().description == "filled"


@pytest.mark.parametrize("name", ["lenet5", "resnet_small"])
def test_each_version_runs_filled_only_as_its_logged_timings_say(name, caplog, monkeypatch):
    """Both graphs timed on this machine's CPU (on an AVX-512 core resnet_small's filled graph runs 1.09× faster,
    lenet5's 0.71×), and the graph served is the one the logged timings call for."""
    monkeypatch.setattr(runtime, "fill_channel_blocks", _marked_filler())
    with caplog.at_level(logging.INFO, logger="service.worker.runtime"):
        sessions = _load(name, Settings(intra_op_threads=1))
    logged = _logged_filling(name, caplog.text)
    assert logged, caplog.text
    blocked = float(logged[2]) >= BLOCKED_GAIN * float(logged[1])
    assert logged[3] == ("as exported", "with its channels filled to blocks of 16")[blocked]
    assert sessions.plan == RunPlan(1, blocked) and _serves_filled(sessions) == blocked


@pytest.mark.parametrize("gain,threads", [(0.0, 1), (0.0, 2), (1e9, 1)])
def test_the_filled_graph_is_kept_only_when_that_much_faster(gain, threads, monkeypatch):
    """Kept when it clears the bar, split over the threads or not; dropped when it cannot."""
    monkeypatch.setattr(runtime, "fill_channel_blocks", _marked_filler())
    monkeypatch.setattr(runtime, "BLOCKED_GAIN", gain)
    monkeypatch.setattr(runtime, "SPLIT_GAIN", 0.0)
    sessions = _load("resnet_small", Settings(intra_op_threads=threads))
    assert sessions.plan == RunPlan(threads, blocked=not gain)
    assert _serves_filled(sessions) == (not gain) and _threads(sessions.model) == threads


def test_a_version_with_nothing_to_fill_at_this_cpus_block_is_not_timed_filled(caplog, monkeypatch):
    """resnet_small's stages are whole blocks of AVX2's 8; a CPU whose block is unknown fills nothing."""
    for block in (8, None):
        monkeypatch.setattr(runtime, "this_cpus_block", lambda block=block: block)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="service.worker.runtime"):
            sessions = _load("resnet_small", Settings(intra_op_threads=1))
        assert "filled" not in caplog.text and sessions.plan == RunPlan(1, blocked=False)


def test_a_filled_graph_that_answers_differently_is_never_served(caplog, monkeypatch):
    def doubled_head(proto: onnx.ModelProto) -> None:
        weight = next(t for t in proto.graph.initializer if t.name == "model.head.2.weight")
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))

    monkeypatch.setattr(runtime, "fill_channel_blocks", _marked_filler(doubled_head))
    monkeypatch.setattr(runtime, "BLOCKED_GAIN", 0.0)
    sessions = _load("resnet_small", Settings(intra_op_threads=1))
    assert sessions.plan == RunPlan(1) and not _serves_filled(sessions)
    assert "resnet_small/1: the graph with its channels filled to blocks answers differently" in caplog.text


def test_a_successor_serves_the_filled_graph_its_lane_chose_untimed(caplog, monkeypatch):
    monkeypatch.setattr(runtime, "fill_channel_blocks", _marked_filler())
    with caplog.at_level(logging.INFO, logger="service.worker.runtime"):
        given = _load("resnet_small", Settings(intra_op_threads=2), plan=RunPlan(2, blocked=True))
        heavy = _load("resnet_small", Settings(intra_op_threads=2), heavy=True)
    assert "a batch of 8" not in caplog.text
    assert _serves_filled(given) and given.plan == RunPlan(2, True) and _threads(given.model) == 2
    assert not _serves_filled(heavy) and heavy.plan == RunPlan(1)  # a heavy worker: the graph as exported


def test_a_failed_run_is_a_503_for_that_job_and_the_worker_lives_on(settings, tmp_path):
    """A real ONNX Runtime failure: a graph that reshapes its input to a fixed batch of one runs for one
    image and fails for two."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1, 32, 32])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Identity", ["input"], ["features"])], "fixed-batch", [x], [logits, features],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1024]),
         helper.make_tensor("w", TensorProto.FLOAT, [1024, 10], np.zeros(10240, np.float32).tolist())])
    broken = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    manifest_ = Manifest.model_validate(manifest("lenet5"))
    gradient = read_verified(LENET, manifest_.graph_files[1], manifest_)
    model = WorkerModel(manifest_, Sessions.load(broken, gradient, settings, (1, 32, 32), "broken/1"), settings)
    with pytest.raises(RunFailed, match="CPUExecutionProvider failed the run"):
        model.sessions.classify(np.zeros((2, 1, 32, 32), np.float32))
    request = httpx.Request("POST", "http://test/", files=upload((EXAMPLES / "digit_7.png").read_bytes()))
    digit = Upload(request.read(), request.headers["content-type"])
    reply, replace_worker = handle({("lenet5", "1"): model}, Classify(("lenet5", "1"), (digit, digit), True))
    assert isinstance(reply, ServiceUnavailable) and reply.status == 503 and "retry" in reply.detail
    assert replace_worker is False  # a CPU run failure leaves the process sound; a GPU one would replace it
    reply, _ = handle({("lenet5", "1"): model}, Classify(("lenet5", "1"), (digit,), True))
    assert reply.probabilities.shape == (1, 10)
