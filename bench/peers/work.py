"""The one piece of work every server in the peer benchmark does, per image: Pillow decode, the manifest's
preprocessing (the service's own functions), one ONNX Runtime run per batch, the calibrated softmax, the
top 5. Imports only what a peer's environment has beside its own package: numpy, Pillow, ONNX Runtime,
pydantic (the manifest) and this repository on the path.

With ``BENCH_CONSTANT=1`` a handler answers a constant instead: the front end's own ceiling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime as ort
from PIL import Image

from service.manifest import Manifest
from service.postprocessing import ranking, softmax
from service.preprocessing import decode, open_image, prepare
from service.worker.cpu import exact_int8

MAX_PIXELS, LONGEST, TOP = 40_000_000, 2048, 5
CONSTANT = {"predictions": [{"index": 0, "label": "0", "probability": 1.0}]}


class Work:
    def __init__(self, model_dir: str | None = None) -> None:
        directory = Path(model_dir or os.environ["BENCH_MODEL_DIR"])
        self.manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
        self.constant = os.environ.get("BENCH_CONSTANT") == "1"
        options = ort.SessionOptions()  # as the service's worker runs this version (bench/peers/__main__.py)
        options.intra_op_num_threads = int(os.environ.get("BENCH_THREADS", "1"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(directory / "model.onnx"), exact_int8(options),
                                            providers=["CPUExecutionProvider"])
        calibration = self.manifest.calibration
        self.temperature = 1.0 if calibration is None else calibration.temperature

    @staticmethod
    def picture(image: bytes | Image.Image) -> Image.Image:
        return image if isinstance(image, Image.Image) else decode(open_image(image, MAX_PIXELS), LONGEST)

    def answers(self, images: list[bytes] | list[Image.Image]) -> list[dict]:
        if self.constant:
            return [CONSTANT] * len(images)
        inputs = prepare([self.picture(i) for i in images], self.manifest)
        logits = self.session.run(["logits"], {"input": inputs})[0]
        probabilities = softmax(logits, self.temperature)
        labels = self.manifest.labels
        return [{"predictions": [{"index": int(i), "label": labels[i], "probability": float(p[i])}
                                 for i in order[:TOP]]}
                for p, order in zip(probabilities, ranking(probabilities), strict=True)]

    def answer_bytes(self, images: list[bytes]) -> list[bytes]:
        return [json.dumps(a).encode() for a in self.answers(images)]
