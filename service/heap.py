"""Memory for long-running processes: the garbage collector and the C allocator.

CPython's cyclic collector walks every tracked object of the generations it collects; a full collection
walks them all. After startup a process holds hundreds of thousands of long-lived objects (FastAPI's
routes and schemas, pydantic's validators, the manifests, ONNX Runtime's bindings) that requests never
free, so each full collection stalled every request in flight for milliseconds: the latency tail.
``freeze`` moves everything alive at the end of startup into the permanent generation, out of the
collector's reach; collections then walk only what requests allocate (the A/B that found it:
docs/PERFORMANCE.md, "The tail").

glibc's malloc maps each block above its mmap threshold (adaptive, at most 32 MB) afresh and unmaps it
when it is freed, and hands the heap's top back to the kernel past a trim threshold. A process that
allocates and frees the same large arrays over and over (a decoded photo and its float planes in a
worker; an epoch's scenes and input tensor in a training job) then faults every page of them back in,
each zeroed by the kernel, every time. ``malloc_tunables`` keeps such blocks on the heap instead.
"""

from __future__ import annotations

import gc
import os


def freeze_startup_objects() -> None:
    """Collect once, then freeze what survives (call when startup is done, before serving)."""
    gc.collect()
    gc.freeze()


def malloc_tunables(mmap_threshold: int, trim_threshold: int) -> dict[str, str]:
    """The environment variable that has a new process's glibc malloc serve blocks up to ``mmap_threshold``
    bytes from its heap and keep up to ``trim_threshold`` bytes of freed heap top. glibc reads it when a
    process starts (``mallopt``, the call for a running process, refuses thresholds above 32 MB); other C
    libraries ignore it. A GLIBC_TUNABLES already set is the user's and is kept as it is."""
    ours = f"glibc.malloc.mmap_threshold={mmap_threshold}:glibc.malloc.trim_threshold={trim_threshold}"
    return {"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ours)}
