"""The comparison servers, each started by uvicorn in its own process.

- ``bare``: the bare stack: one FastAPI route on the same uvicorn, no middleware, reading the raw body
  and answering a constant: the limit any service on this stack works against.
- ``ceiling``: the same FastAPI/uvicorn stack receiving the same multipart upload, parsed by the service's
  own form parser, and answering a constant: what HTTP and form parsing cost.
- ``naive``: a minimal FastAPI app that decodes the image and runs the PyTorch model eagerly per
  request, the way a first prototype would.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from service.uploads import image_bytes

CONSTANT = {"model": "constant", "predictions": [{"index": 0, "label": "0", "probability": 1.0}]}


def bare() -> FastAPI:
    app = FastAPI()
    answer = json.dumps(CONSTANT).encode()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    return app


def ceiling() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        image_bytes(request.headers.get("content-type", ""), await request.body())
        return CONSTANT

    return app


def naive() -> FastAPI:
    import torch

    from training.export import load_exported

    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "0")) or torch.get_num_threads())
    model = load_exported(Path(os.environ["BENCH_MODEL_DIR"]))
    channels, height, width = model.input_spec.shape
    app = FastAPI()

    def classify(upload: bytes) -> dict:
        image = Image.open(io.BytesIO(upload)).convert("L" if channels == 1 else "RGB")
        pixels = np.asarray(image.resize((width, height)), np.float32).reshape(height, width, channels) / 255
        with torch.no_grad():
            probabilities = torch.softmax(model(torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())), 1)[0]
        top = int(probabilities.argmax())
        best = {"index": top, "label": str(top), "probability": float(probabilities[top])}
        return {"model": "naive", "predictions": [best]}

    @app.post("/predict")
    async def predict(request: Request) -> dict:  # the model off the event loop, as a sync route would run it
        return await run_in_threadpool(classify, image_bytes(request.headers.get("content-type", ""),
                                                             await request.body()))

    return app
