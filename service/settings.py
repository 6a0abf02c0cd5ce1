"""Every setting in one place, read from ``CNNSERVE_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNNSERVE_", env_file=".env", extra="ignore")

    model_dir: Path = Field(Path("models"), description="model repository: <name>/<version>/manifest.json + ONNX files")
    default_model: str = Field("mnist_cnn_b", description="model used when a request names none")
    providers: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: CUDA when ONNX Runtime has it and a GPU answers, else CPU; cuda: ask for CUDA (falls back to CPU, reported); cpu")
    # The server process parses HTTP on one core; inference workers (processes) parse, decode, preprocess
    # and run the models beside it. Rule: inference_workers × intra_op_threads ≤ cores − 1, leaving the
    # server its core (PERFORMANCE.md has the measurements behind the defaults).
    inference_workers: int = Field(1, ge=1, description="inference worker processes (each runs one batch at a time)")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads inside one run (0: (cores - 1) // inference_workers, at least 1)")
    worker_timeout_s: float = Field(30.0, gt=0, description="a batch taking longer fails with 503 and its worker is restarted")
    worker_start_timeout_s: float = Field(300.0, gt=0, description="how long a worker may take to load every model")
    max_batch_size: int = Field(32, ge=1, description="most images stacked into one ONNX Runtime run")
    max_queue_delay_ms: float = Field(0.0, ge=0, description="how long a batch may wait for more requests (0: only what is already queued)")
    max_queue: int = Field(256, ge=1, description="requests waiting per model before new ones get 503 + Retry-After")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest request body accepted (413 beyond)")
    max_image_pixels: int = Field(40_000_000, gt=0, description="largest width × height decoded (413 beyond, checked before decoding)")
    max_top_k: int = Field(10, ge=1, description="upper bound of the top_k parameter")
    allowed_origins: list[str] = Field(default_factory=list, description="CORS origins, JSON list; empty: no CORS headers")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _threads(self) -> "Settings":
        if self.intra_op_threads == 0:
            self.intra_op_threads = max(1, (_cores() - 1) // self.inference_workers)
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
