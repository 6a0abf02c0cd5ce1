"""BentoML 1.4: a service class, an adaptive-batching API; its idiomatic image input: a multipart file
that it opens as a PIL image. Started with ``bentoml serve bench.peers.bentoml_app:Classify``."""

from __future__ import annotations

import bentoml
from PIL.Image import Image

from bench.peers.work import Work


@bentoml.service(workers=1)
class Classify:
    def __init__(self) -> None:
        self.work = Work()

    @bentoml.api(batchable=True, max_batch_size=16, max_latency_ms=1000)
    def predict(self, images: list[Image]) -> list[dict]:
        return self.work.answers(images)
