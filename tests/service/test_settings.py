"""Settings from the environment, and the rules they derive."""

from __future__ import annotations

import os

import pytest

from service.settings import Settings


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("CNNSERVE_MAX_TOP_K", "3")
    monkeypatch.setenv("CNNSERVE_ALLOWED_ORIGINS", '["http://localhost:3000"]')
    monkeypatch.setenv("CNNSERVE_INFERENCE_WORKERS", "2")
    monkeypatch.setenv("CNNSERVE_CUDA_TF32", "true")
    settings = Settings()
    assert settings.max_top_k == 3 and settings.allowed_origins == ["http://localhost:3000"]
    assert settings.inference_workers == 2 and settings.intra_op_threads >= 1 and settings.cuda_tf32 is True
    monkeypatch.setenv("CNNSERVE_PROVIDERS", "tpu")
    with pytest.raises(ValueError):
        Settings()


def test_thread_rule_shares_the_cores_among_the_workers():
    assert Settings(inference_workers=1).intra_op_threads == len(os.sched_getaffinity(0))
    assert Settings(inference_workers=2).intra_op_threads == max(1, len(os.sched_getaffinity(0)) // 2)
    assert Settings(inference_workers=2, intra_op_threads=3).intra_op_threads == 3  # set explicitly: kept


def test_batch_buckets_end_at_the_largest_batch():
    assert Settings().batch_buckets == [1, 2, 4, 8, 16, 32]
    assert Settings(max_batch_size=12).batch_buckets == [1, 2, 4, 8, 12]  # no bucket a batch can never fill
    assert Settings(max_batch_size=64, batch_buckets=[16, 1, 4, 16]).batch_buckets == [1, 4, 16, 64]
    with pytest.raises(ValueError):
        Settings(batch_buckets=[0, 8])
