"""ONNX Runtime inside a worker: the execution providers and their options (built here, in one place),
session options, one model version's two sessions, warm-up, and padding batches to fixed shapes.

Provider policy (``CNNSERVE_PROVIDERS``): ``cpu``; ``cuda`` means CUDA or the version is not loaded,
with the reason (ONNX Runtime's own fallback to the CPU is switched off); ``auto`` tries CUDA when this
ONNX Runtime build has it and falls back to the CPU with a warning and a recorded reason.

On CUDA every run is padded up to a bucket size (``batch_buckets``) and every bucket of both graphs is
run once before the worker reports ready, so cuDNN never meets a new shape while serving.

On the CPU each version is timed as it loads (``plan_runs``), on a batch of the size an ordinary worker runs:

- the graph with its channels filled to whole blocks of ONNX Runtime's CPU layout (``channel_blocks``, blocks of
  this CPU's size) against the graph as exported, on one thread: it is kept when it answers the same and is
  clearly faster, which depends on the model and the CPU (on an AVX-512 core resnet_small's runs are 1.09×
  faster, lenet5's 0.71×; on an AVX2 core resnet_small has nothing to fill);
- then a run split over ``intra_op_threads`` against one thread. A split pays for a model with work to split
  and costs a small one more in hand-offs than it saves (a batch of 8 on 2 cores: resnet_small 6.4 → 3.6 ms,
  lenet5 0.18 → 0.27 ms), so a version keeps one thread unless the split is clearly faster.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ..settings import Settings
from .channel_blocks import fill_channel_blocks
from .cpu import exact_int8, this_cpus_block
from .protocol import RunPlan

log = logging.getLogger("service.worker.runtime")

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
SPLIT_GAIN = 1.2  # a split run must be this much faster to be kept: under load its threads compete with the server
BLOCKED_GAIN = 1.04  # the filled graph must be this much faster to be kept: the timing's noise is a percent or two
TIMED_ROWS = 8    # the batch both ways are timed on: about what an ordinary worker runs at 16 clients
SET_UP_RUNS = 3   # untimed runs of each first: the shape set up, the threads spread over the cores
TIMED_TURNS = 10  # timed runs of each, taken in turn
# A split run needs both cores, so a moment's contention on either (another process, the host) slows it and
# not a run on one: a split that does not clear the bar is timed again, a little later, before it is dropped.
# (One other busy process for 0.15 s as resnet_small's int8 version loaded made it drop the split in 4 of 5
# loads; at c=16 that version then served 1,618 req/s against 2,194 split; docs/PERFORMANCE.md.)
TIMING_WINDOWS, WINDOW_GAP_S = 3, 0.1


class ProviderUnavailable(RuntimeError):
    """``providers=cuda`` and CUDA cannot be had: the version is not served."""


class RunFailed(RuntimeError):
    """ONNX Runtime failed a run of valid input (a GPU error, say): the job fails with 503."""


def cuda_options(settings: Settings) -> dict[str, str]:
    """The CUDA execution provider's options (ONNX Runtime's names), from settings."""
    options = {
        "device_id": str(settings.cuda_device_id),
        "cudnn_conv_algo_search": settings.cuda_conv_algo_search,
        "use_tf32": "1" if settings.cuda_tf32 else "0",
        "arena_extend_strategy": settings.cuda_arena_strategy,
    }
    if settings.cuda_mem_limit_mb:
        options["gpu_mem_limit"] = str(settings.cuda_mem_limit_mb * 1024 * 1024)
    return options


def provider_chain(settings: Settings, available: list[str]) -> list[tuple[str, dict[str, str]]]:
    """What to ask ONNX Runtime for, in priority order, each with its options."""
    if settings.providers == "cpu" or (settings.providers == "auto" and CUDA not in available):
        return [(CPU, {})]
    if CUDA not in available:
        raise ProviderUnavailable(f"CNNSERVE_PROVIDERS=cuda, but this ONNX Runtime build has no CUDA provider "
                                  f"(it has {', '.join(available)}): install onnxruntime-gpu, or set providers to "
                                  "auto or cpu")
    return [(CUDA, cuda_options(settings)), (CPU, {})]


_shared_arena = False
_cuda_libraries = False


def _load_cuda_libraries() -> None:
    """CUDA and cuDNN from the nvidia-* wheels that ``onnxruntime-gpu[cuda,cudnn]`` installs (ONNX Runtime's own
    preload_dlls); where they are on the loader's path already, or missing, CUDA's start says so below."""
    global _cuda_libraries
    if not _cuda_libraries and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - the session's own start reports what is really missing
            log.debug("preload_dlls: %s", exc)
    _cuda_libraries = True


def _share_cpu_arena() -> None:
    """One CPU memory arena for every session in this process, instead of one each: a worker's memory is
    then what its largest model needs, not the sum over every version (docs/PERFORMANCE.md, memory)."""
    global _shared_arena
    if not _shared_arena:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena = True


def session_options(settings: Settings, heavy: bool = False) -> ort.SessionOptions:
    """Thread counts, optimisation level and memory: heavy workers keep no arena between their rare runs."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.intra_op_threads
    # Threads that spin while waiting for work take the core from the server process between runs: on 2 cores,
    # 2 spinning threads cost lenet5 at c=16 a third of its throughput, 2 sleeping ones 7 % (so it keeps one,
    # Sessions.load), and gave resnet_small a third more (docs/PERFORMANCE.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: a failed provider is reported by us, with its reason
    if heavy:
        options.enable_cpu_mem_arena = False
    else:
        _share_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    return exact_int8(options)


@contextmanager
def as_file(data: bytes) -> Iterator[str]:
    """Verified bytes as a path ONNX Runtime can open: an anonymous in-memory file, gone once loaded. (Given
    bytes, ONNX Runtime's Python API keeps a second copy for the session's whole life.)"""
    fd = os.memfd_create("onnx-model", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as file:
            file.write(data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def open_session(model: bytes, settings: Settings, options: ort.SessionOptions,
                 providers: list[tuple[str, dict[str, str]]] | None = None) -> tuple[ort.InferenceSession, str | None]:
    """A session under the provider policy, and (auto) why CUDA was not used, if it was tried."""
    chain = providers or provider_chain(settings, ort.get_available_providers())
    names, provider_options = [name for name, _ in chain], [opts for _, opts in chain]
    if names[0] == CUDA:
        _load_cuda_libraries()
    with as_file(model) as path:
        try:
            session = ort.InferenceSession(path, options, providers=names, provider_options=provider_options,
                                           enable_fallback=0)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises RuntimeError subclasses of its own
            if names[0] != CUDA:
                raise
            reason = f"CUDA could not start: {str(exc).strip().splitlines()[0]}"
            if settings.providers == "cuda":
                raise ProviderUnavailable(reason) from None
            return ort.InferenceSession(path, options, providers=[CPU], enable_fallback=0), reason
    if names[0] == CUDA and session.get_providers()[0] != CUDA:
        reason = f"ONNX Runtime assigned {session.get_providers()} instead of CUDA"
        if settings.providers == "cuda":
            raise ProviderUnavailable(reason)
        return session, reason
    return session, None


def timed_ms(first: ort.InferenceSession, second: ort.InferenceSession, batch: np.ndarray) -> tuple[float, float]:
    """Each session's best run of ``batch``, in ms, of runs taken in turn (after a few that set up the shape and
    let the threads spread over the cores): a core that is busy for a moment slows both alike. (Also how
    training.quantize compares two int8 models.)"""
    feeds = {session: {session.get_inputs()[0].name: batch} for session in (first, second)}
    best = dict.fromkeys(feeds, float("inf"))
    for turn in range(SET_UP_RUNS + TIMED_TURNS):
        for session, feed in feeds.items():
            started = time.perf_counter()
            session.run(None, feed)
            if turn >= SET_UP_RUNS:
                best[session] = min(best[session], (time.perf_counter() - started) * 1e3)
    return best[first], best[second]


def clearly_faster(candidate: ort.InferenceSession, baseline: ort.InferenceSession, gain: float,
                   input_shape: tuple[int, ...], label: str, ways: tuple[str, str]) -> bool:
    """Whether ``candidate`` runs ``gain`` times faster than ``baseline``, timed on a batch of TIMED_ROWS in up
    to TIMING_WINDOWS windows (each session's best over them); ``ways`` names the two in the log. A graph that
    cannot run such a batch is never faster (its runs fail, or not, as they would)."""
    batch = np.zeros((TIMED_ROWS, *input_shape), np.float32)
    candidate_ms = baseline_ms = float("inf")
    faster = False
    for window in range(TIMING_WINDOWS):
        if window:
            time.sleep(WINDOW_GAP_S)
        try:
            candidate_now, baseline_now = timed_ms(candidate, baseline, batch)
        except Exception:  # noqa: BLE001 - whatever ONNX Runtime raised; the version's own runs will report it
            return False
        candidate_ms, baseline_ms = min(candidate_ms, candidate_now), min(baseline_ms, baseline_now)
        faster = baseline_ms >= gain * candidate_ms
        if faster:
            break
    log.info("%s: a batch of %d in %.2f ms %s, %.2f ms %s; runs %s", label, TIMED_ROWS, candidate_ms, ways[0],
             baseline_ms, ways[1], ways[0] if faster else ways[1])
    return faster


def same_answers(first: ort.InferenceSession, second: ort.InferenceSession, input_shape: tuple[int, ...]) -> bool:
    """Both graphs' outputs for one random batch, equal to within float32 summation order."""
    batch = np.random.default_rng(0).random((TIMED_ROWS, *input_shape), np.float32)
    feed = {first.get_inputs()[0].name: batch}
    return all(np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))
               for a, b in zip(first.run(None, feed), second.run(None, feed), strict=True))


def filled_to_blocks(model: bytes) -> bytes | None:
    """The graph with its channels filled to whole blocks of this CPU's layout; None if there is nothing to fill."""
    block = this_cpus_block()
    return None if block is None else fill_channel_blocks(model, block)


def plan_runs(model: bytes, opened: ort.InferenceSession, settings: Settings, input_shape: tuple[int, ...],
              label: str) -> tuple[RunPlan, ort.InferenceSession]:
    """How the version runs fastest on this machine's CPU (see the module docstring), and a session that runs it
    so. ``opened`` runs the graph as exported on ``intra_op_threads``."""
    threads = settings.intra_op_threads
    one = session_options(settings.model_copy(update={"intra_op_threads": 1}))
    single = opened if threads == 1 else open_session(model, settings, one, [(CPU, {})])[0]
    blocked = False
    filled = filled_to_blocks(model)
    if filled is not None:
        candidate, _ = open_session(filled, settings, one, [(CPU, {})])
        ways = (f"with its channels filled to blocks of {this_cpus_block()}", "as exported")
        if not same_answers(candidate, single, input_shape):
            log.warning("%s: the graph with its channels filled to blocks answers differently; runs as exported", label)
        elif clearly_faster(candidate, single, BLOCKED_GAIN, input_shape, label, ways):
            blocked, single = True, candidate
            if threads > 1:
                opened, _ = open_session(filled, settings, session_options(settings), [(CPU, {})])
    split = threads > 1 and clearly_faster(opened, single, SPLIT_GAIN, input_shape, label,
                                           (f"on {threads} threads", "on one thread"))
    return RunPlan(threads if split else 1, blocked), opened if split else single


def bucket(rows: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``rows`` (the settings make the last bucket max_batch_size)."""
    return next((size for size in buckets if size >= rows), rows)


def pad(batch: np.ndarray, rows: int) -> np.ndarray:
    """``batch`` with zero rows appended up to ``rows``."""
    if len(batch) == rows:
        return batch
    padded = np.zeros((rows, *batch.shape[1:]), batch.dtype)
    padded[:len(batch)] = batch
    return padded


@dataclass
class Sessions:
    """The classifier graph (input → logits, features) and the Grad-CAM head-gradient graph."""

    model: ort.InferenceSession
    gradient: ort.InferenceSession
    buckets: list[int] | None  # pad every run up to one of these sizes; None: run batches as they come
    plan: RunPlan  # the threads a run of either graph is split over, and whether the classifier's channels are filled
    fallback: str | None = None

    @property
    def providers(self) -> list[str]:
        providers: list[str] = self.model.get_providers()
        return providers

    @classmethod
    def load(cls, model: bytes, gradient: bytes, settings: Settings, input_shape: tuple[int, ...], label: str,
             heavy: bool = False, plan: RunPlan | None = None) -> Sessions:
        """``plan``: what an earlier worker timed for this version (None: time it here, on the CPU); a heavy
        worker runs the graph as exported on one thread, behind the ordinary work. ``label`` (model/version)
        names the version in the log."""
        if heavy:
            plan = RunPlan(threads=1)
        if plan is not None:
            settings = settings.model_copy(update={"intra_op_threads": plan.threads})
            model = (filled_to_blocks(model) or model) if plan.blocked else model
        options = session_options(settings, heavy)
        classifier, fallback = open_session(model, settings, options)
        if plan is None:
            plan = RunPlan(options.intra_op_num_threads)  # what CUDA runs on, untimed
            if classifier.get_providers()[0] == CPU:
                plan, classifier = plan_runs(model, classifier, settings, input_shape, label)
                options = session_options(settings.model_copy(update={"intra_op_threads": plan.threads}))
        # The gradient graph goes where the classifier went (its features come from there), with its threads.
        head, _ = open_session(gradient, settings, options, None if fallback is None else [(CPU, {})])
        on_cuda = classifier.get_providers()[0] == CUDA
        padded = settings.pad_batches == "always" or (settings.pad_batches == "auto" and on_cuda)
        if fallback:
            log.warning("providers=auto: %s; %s runs on the CPU", fallback, label)
        buckets = ([1] if heavy else list(settings.batch_buckets)) if padded else None  # heavy jobs are single images
        return cls(classifier, head, buckets, plan, fallback)

    def _run(self, session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(feed.values())))
        if self.buckets is not None:
            size = bucket(rows, self.buckets)
            feed = {name: pad(value, size) for name, value in feed.items()}
        try:
            outputs = session.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - whatever the provider raised: this run's failure, reported as 503
            provider = session.get_providers()[0]
            raise RunFailed(f"{provider} failed the run: {str(exc).strip().splitlines()[0]}") from None
        return [output[:rows] for output in outputs]  # padding rows are dropped

    def classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self._run(self.model, {"input": batch})
        return logits, features

    def head_gradient(self, features: np.ndarray, seed: np.ndarray) -> np.ndarray:
        (grad,) = self._run(self.gradient, {"features": features, "seed": seed})
        return grad

    def warm_up(self, input_shape: tuple[int, ...], classes: int) -> None:
        """One run of each graph at every batch size it will see, before the first request."""
        for rows in self.buckets or [1]:
            _, features = self.classify(np.zeros((rows, *input_shape), np.float32))
            self.head_gradient(features, np.eye(classes, dtype=np.float32)[np.arange(rows) % classes])
