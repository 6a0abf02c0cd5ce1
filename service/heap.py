"""Garbage collection for a long-running server.

CPython's cyclic collector walks every tracked object of the generations it collects; a full collection
walks them all. After startup a process holds hundreds of thousands of long-lived objects (FastAPI's
routes and schemas, pydantic's validators, the manifests, ONNX Runtime's bindings) that requests never
free, so each full collection stalled every request in flight for milliseconds: the latency tail.
``freeze`` moves everything alive at the end of startup into the permanent generation, out of the
collector's reach; collections then walk only what requests allocate (the A/B that found it:
docs/PERFORMANCE.md, "The tail").
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then freeze what survives (call when startup is done, before serving)."""
    gc.collect()
    gc.freeze()
