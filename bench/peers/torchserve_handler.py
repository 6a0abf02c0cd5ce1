"""TorchServe: a Java front end, Python backend workers, server-side batching (batchSize, maxBatchDelay).
A function handler: the raw request body of each request in the batch in, one JSON answer each out."""

from __future__ import annotations

from typing import Any

from bench.peers.work import Work

_work: Work | None = None


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[dict] | None:
    global _work
    if _work is None:
        _work = Work()
    if data is None:  # TorchServe's initialisation call
        return None
    return _work.answers([bytes(row.get("data") or row.get("body")) for row in data])
