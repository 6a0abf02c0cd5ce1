"""What runs inside an inference worker process (workers.py starts them and says why): load every
model version's sessions, then answer jobs: a batch to prepare and run, or a Grad-CAM head gradient."""

from __future__ import annotations

import io
import logging
import pickle
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from .errors import ProblemError
from .manifest import Manifest
from .postprocessing import ranking, softmax
from .preprocessing import Prepared, decode_image, image_from_form, prepare
from .runtime import Sessions
from .settings import Settings
from .workers import HEADER, BatchReply, Item, Key, Placed, Upload, frame


@dataclass
class WorkerModel:
    manifest: Manifest
    sessions: Sessions


class Input(NamedTuple):
    tensor: np.ndarray               # N×C×H×W, ready for the model
    upload: Upload | None            # None: the item was a tensor already
    prepared: Prepared | None
    decode_s: float
    preprocess_s: float


def _prepare(model: WorkerModel, item: Item, max_pixels: int) -> Input:
    if isinstance(item, np.ndarray):
        return Input(item, None, None, 0.0, 0.0)
    started = time.perf_counter()
    image = decode_image(image_from_form(item.content_type, item.body), max_pixels)
    decoded = time.perf_counter()
    prepared = prepare(image, model.manifest)
    return Input(prepared.batch, item, prepared, decoded - started, time.perf_counter() - decoded)


def run_batch(model: WorkerModel, items: list[Item], max_pixels: int) -> BatchReply:
    """Prepare every item, one run for all that prepared; an item that fails to prepare gets its own
    error and the rest still run."""
    inputs: list[Input | ProblemError] = []
    for item in items:
        try:
            inputs.append(_prepare(model, item, max_pixels))
        except ProblemError as exc:
            inputs.append(exc)
    ready = [i for i in inputs if isinstance(i, Input)]
    if not ready:
        return BatchReply(inputs)  # type: ignore[arg-type]
    stacked = ready[0].tensor if len(ready) == 1 else np.concatenate([i.tensor for i in ready])
    started = time.perf_counter()
    logits, features = model.sessions.classify(stacked)
    seconds = time.perf_counter() - started
    probabilities = softmax(logits)
    placed: list[Placed | ProblemError] = []
    start = 0
    for i in inputs:
        if isinstance(i, ProblemError):
            placed.append(i)
            continue
        explain = i.upload is not None and i.upload.explain
        placed.append(Placed(start, start + len(i.tensor), bool(i.prepared and i.prepared.inverted),
                             i.prepared if explain else None, i.decode_s, i.preprocess_s))
        start += len(i.tensor)
    wants_features = any(i.upload is None or i.upload.explain for i in ready)
    return BatchReply(placed, logits, probabilities, ranking(probabilities), features if wants_features else None, seconds)


def load_models(settings: Settings, versions: dict[Key, Path]) -> tuple[dict[Key, WorkerModel], dict[Key, list[str] | str]]:
    """Sessions for every version, warmed up; the report says per version which providers ONNX
    Runtime gave it, or why it failed (a broken model never takes the others down)."""
    models: dict[Key, WorkerModel] = {}
    report: dict[Key, list[str] | str] = {}
    for key, directory in versions.items():
        try:
            manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
            sessions = Sessions.load(directory / "model.onnx", directory / manifest.heatmaps.gradcam_graph.file, settings)
            sessions.warm_up(tuple(manifest.input.shape[1:]), len(manifest.labels))
            models[key] = WorkerModel(manifest, sessions)
            report[key] = sessions.providers
        except Exception as exc:  # noqa: BLE001 - reported, and the model is marked failed
            report[key] = f"{type(exc).__name__}: {exc}"
    return models, report


def _warm_up_decoding() -> None:
    """The first decode imports Pillow's format plugins (~10 ms): before the first request, not in it."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    decode_image(buffer.getvalue(), 1)


def _handle(models: dict[Key, WorkerModel], settings: Settings, job: tuple) -> Any:
    kind, key, *args = job
    model = models[key]
    if kind == "classify":
        return run_batch(model, args[0], settings.max_image_pixels)
    if kind == "gradient":
        started = time.perf_counter()
        return model.sessions.head_gradient(*args), time.perf_counter() - started
    raise ValueError(f"unknown job {kind!r}")


def serve(fd: int) -> None:
    """The worker's main: settings and versions in, load, report, then answer jobs until told to stop
    or the server goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole process group; the server stops us
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)  # its parse errors go back to the client as 422
    with socket.socket(fileno=fd) as sock, sock.makefile("rb") as incoming:
        def receive() -> Any:
            header = incoming.read(HEADER.size)
            if len(header) < HEADER.size:
                return None  # the server went away
            return pickle.loads(incoming.read(HEADER.unpack(header)[0]))

        settings, versions = receive()
        models, report = load_models(settings, versions)
        _warm_up_decoding()
        try:
            sock.sendall(frame(report))
            while (job := receive()) is not None:
                try:
                    reply = ("ok", _handle(models, settings, job))
                except ProblemError as exc:
                    reply = ("error", exc)
                except Exception as exc:  # noqa: BLE001 - sent as text: not every exception survives pickling
                    reply = ("error", RuntimeError(f"{type(exc).__name__}: {exc}"))
                sock.sendall(frame(reply))
        except (BrokenPipeError, ConnectionResetError):
            return  # the server went away mid-answer


