"""Every setting in one place, read from ``CNNSERVE_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNNSERVE_", env_file=".env", extra="ignore")

    # The model repository.
    model_dir: Path = Field(
        Path("models"), description="model repository: <name>/<version>/manifest.json + ONNX files")
    default_model: str = Field("mnist_cnn_b", description="model used when a request names none")
    require_all_models: bool = Field(
        False, description="true: a version that fails to load makes the replica not ready; "
                           "false: that version is unavailable on its own")

    # Execution providers (worker/runtime.py builds the provider list from these, in one place).
    providers: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: CUDA when ONNX Runtime has it and it starts, else CPU (reported); "
                            "cuda: CUDA or not ready; cpu: CPU only")
    cuda_device_id: int = Field(0, ge=0, description="the GPU ONNX Runtime runs on")
    cuda_conv_algo_search: Literal["DEFAULT", "HEURISTIC", "EXHAUSTIVE"] = Field(
        "DEFAULT", description="cuDNN convolution algorithm choice (EXHAUSTIVE benchmarks every new shape: "
                               "slow to warm)")
    cuda_tf32: bool = Field(
        False, description="TF32 matrix maths: faster on Ampere+ GPUs, but logits and heatmaps then differ from "
                           "the CPU by ~1e-3; off keeps them within 1e-4")
    cuda_mem_limit_mb: int = Field(0, ge=0, description="GPU memory arena limit per worker (0: no limit)")
    cuda_arena_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kSameAsRequested", description="how the GPU arena grows: to the next power of two, or by what is asked for")
    batch_buckets: list[int] = Field(
        [1, 2, 4, 8, 16, 32], description="batch sizes runs are padded up to, so every run has a shape warmed at start")
    pad_batches: Literal["auto", "always", "never"] = Field(
        "auto", description="pad each batch to a bucket size: auto = on CUDA (a new shape costs cuDNN a search), "
                            "never on the CPU, where padding only adds work")

    # The server process parses HTTP on one core; inference workers (processes) parse, decode, preprocess
    # and run the models beside it. Rule: inference_workers × intra_op_threads ≤ cores. ONNX Runtime's threads
    # sleep instead of spinning between the pieces of a run, so a run spreads over the cores the server is
    # not using and leaves them when it is (docs/PERFORMANCE.md has the measurements behind the defaults).
    inference_workers: int = Field(1, ge=1, description="inference worker processes for ordinary requests")
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime threads a run may be split over (0: cores // inference_workers, at least "
                             "1); each version is timed as it loads and keeps one thread unless the split is faster")
    heavy_workers: int = Field(
        1, ge=1, description="worker processes, at low CPU priority, for uploads that are costly to decode")
    light_pixels: int = Field(
        512 * 512, gt=0, description="uploads that decode to more pixels (a JPEG after reduced-scale decoding) run "
                                     "on the heavy workers")
    light_bytes: int = Field(
        256 * 1024, gt=0, description="so do image files larger than this (entropy decoding costs by the byte, "
                                      "whatever the scale a JPEG is decoded at)")
    max_heavy_queue: int = Field(
        8, ge=0, description="heavy requests waiting for a heavy worker before new ones get 503")
    working_max_side: int = Field(
        1024, ge=64, description="longest side a large upload is reduced to before preprocessing")
    overlay_max_side: int = Field(
        2048, ge=64, description="longest side of a png / overlay heatmap (larger images are scaled down)")
    worker_timeout_s: float = Field(
        30.0, gt=0, description="a job taking longer fails with 503 and its worker is restarted")
    worker_start_timeout_s: float = Field(300.0, gt=0, description="how long a worker may take to load every model")
    worker_restore_s: float = Field(
        60.0, gt=0, description="a worker lane that cannot be brought back within this long fails /healthz "
                                "(restart me)")

    # Batching and the limits on what one request may ask.
    max_batch_size: int = Field(32, ge=1, description="most images stacked into one ONNX Runtime run")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="how long a batch may wait for more requests (0: only what is already queued, and "
                               "of a queue over batching.SHARE_ABOVE images only a job's share)")
    max_queue: int = Field(256, ge=1, description="requests waiting per model before new ones get 503 + Retry-After")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest request body accepted (413 beyond)")
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="largest width × height decoded (413 beyond, checked before decoding)")
    max_top_k: int = Field(10, ge=1, description="upper bound of the top_k parameter")

    # Connections (service/server.py) and shutdown.
    header_timeout_s: float = Field(10.0, gt=0, description="a request's line and headers must arrive within this long")
    read_timeout_s: float = Field(
        10.0, gt=0, description="a request body that sends nothing for this long is dropped (408)")
    request_timeout_s: float = Field(60.0, gt=0, description="a whole request must arrive within this long (408)")
    keep_alive_s: int = Field(
        5, ge=1, description="an idle connection (before or between requests) is closed after this long")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="request line and headers, in bytes (431 beyond)")
    max_headers: int = Field(100, ge=8, description="headers per request (431 beyond)")
    max_connections: int = Field(
        0, ge=0, description="open connections at most (0: the file-descriptor limit less 64); past it the one "
                             "that waited longest without a request is closed, or, if every one is busy, the new one "
                             "gets 503")
    shutdown_grace_s: int = Field(
        10, ge=0, description="at SIGTERM, how long requests in flight may take to finish before they are cancelled")

    # Optional API keys and rate limit (service/auth.py): no keys, no authentication.
    api_keys: list[str] = Field(
        default_factory=list, description="JSON list of 'name:<sha256 digest>' entries (digests, never keys)")
    api_keys_file: Path | None = Field(None, description="a file of 'name:<sha256 digest>' lines (# comments)")
    protect_metrics: bool = Field(True, description="with keys: /metrics needs one too")
    protect_docs: bool = Field(False, description="with keys: /docs, /redoc and /openapi.json need one too")
    rate_limit_per_s: float = Field(0.0, ge=0, description="with keys: requests a second per key (0: no limit)")
    rate_limit_burst: int = Field(20, ge=1, description="with keys: requests a key may send at once")

    # HTTP.
    allowed_origins: list[str] = Field(
        default_factory=list, description="CORS origins, JSON list; empty: no CORS headers")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="info: one JSON access line per request (about 0.03 ms of the server's CPU); "
                            "debug also logs the traceback of every unexpected error")
    host: str = Field("127.0.0.1", description="bind address (cnn-serve --host overrides)")
    port: int = Field(8000, description="port (cnn-serve --port overrides)")

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if self.intra_op_threads == 0:
            self.intra_op_threads = max(1, cores() // self.inference_workers)
        if min(self.batch_buckets, default=0) < 1:
            raise ValueError("batch_buckets must be positive batch sizes")
        # Every batch the batcher forms fits a bucket, and no bucket is larger than a batch can be.
        smaller = [size for size in sorted(set(self.batch_buckets)) if size < self.max_batch_size]
        self.batch_buckets = [*smaller, self.max_batch_size]
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
