"""One model version inside an inference worker, in the stages of KServe's ``Model``: load, preprocess
(form → decoded image → input tensor), predict (one ONNX Runtime run per batch), postprocess (softmax,
ranking) and explain (a heatmap, encoded for the answer), each stage timed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
from PIL import Image

from .. import openinference
from ..errors import InvalidImage, ProblemError
from ..manifest import Manifest
from ..postprocessing import ranking, softmax
from ..preprocessing import Placed, batch, decode, open_image, place, plan_decode
from ..settings import Settings
from ..uploads import image_bytes
from . import explain
from .protocol import (
    Classified,
    Classify,
    Deferred,
    Explain,
    Explained,
    HeatmapArrays,
    HeatmapPicture,
    Infer,
    Inferred,
    RunPlan,
    Upload,
    UploadRow,
    Version,
)
from .runtime import Sessions


class PreparedUpload(NamedTuple):
    placed: Placed
    source_size: tuple[int, int]  # width, height of the uploaded image, before any reduction
    decode_s: float               # the form parse included
    preprocess_s: float


def _own_error(exc: Exception) -> ProblemError:
    """What went wrong with one upload, as its own error: its bytes are the only input, so a decoder's or
    parser's surprise is the upload's 422, not a 500."""
    if isinstance(exc, ProblemError):
        return exc
    return InvalidImage(f"the upload could not be read as an image: {type(exc).__name__}: {exc}")


def _placed_alone(image: Image.Image, manifest: Manifest) -> Placed | Exception:
    try:
        (placed,) = place([image], manifest)
    except Exception as exc:  # noqa: BLE001 - see _own_error
        return exc
    return placed


def read_verified(directory: Path, file: str, manifest: Manifest) -> bytes:
    """A file the manifest lists, read once and checked against its sha256: what is checked is what is loaded."""
    entry = manifest.files.get(file)
    if entry is None:
        raise ValueError(f"{file} is not listed in the manifest's files")
    data = (directory / file).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ValueError(f"{file} does not match the sha256 in its manifest")
    return data


class WorkerModel:
    def __init__(self, manifest: Manifest, sessions: Sessions, settings: Settings) -> None:
        self.manifest = manifest
        self.sessions = sessions
        self.settings = settings
        self._temperature = 1.0 if manifest.calibration is None else manifest.calibration.temperature
        cam = manifest.heatmaps.cam
        self._cam_weights = None if cam is None else np.asarray(cam.weights, np.float32)

    @classmethod
    def load(cls, version: Version, settings: Settings, heavy: bool, plan: RunPlan | None = None) -> WorkerModel:
        """Verified sessions for the version, every batch shape it will see already run once (``plan``: see
        Sessions.load)."""
        manifest = version.manifest
        model_file, gradient_file = manifest.graph_files
        input_shape = tuple(manifest.input.shape[1:])
        sessions = Sessions.load(read_verified(version.directory, model_file, manifest),
                                 read_verified(version.directory, gradient_file, manifest), settings, input_shape,
                                 f"{manifest.name}/{manifest.version}", heavy, plan)
        sessions.warm_up(input_shape, len(manifest.labels))
        return cls(manifest, sessions, settings)

    # What explain's weights functions use (explain.Head).
    @property
    def classes(self) -> int:
        return len(self.manifest.labels)

    @property
    def cam_weights(self) -> np.ndarray | None:
        return self._cam_weights

    def head_gradient(self, features: np.ndarray, seed: np.ndarray) -> np.ndarray:
        return self.sessions.head_gradient(features, seed)

    def prepare(self, uploads: Sequence[Upload], light_only: bool,
                longest: int) -> list[PreparedUpload | Deferred | ProblemError]:
        """Each upload as model input (its image decoded at most ``longest`` px a side), or why not: its own
        error, or with ``light_only`` Deferred when it is costly to decode (light_pixels, light_bytes). The
        batch goes stage by stage (every form parsed and header read, then every image decoded, then every
        placed together), so each stage's code stays in the CPU's caches from one upload to the next: a
        lenet5 batch costs 11–21 % less than upload by upload, for a batch's decoded images held at once
        (docs/PERFORMANCE.md); and images of one size are fitted as one stack (preprocessing.fit)."""
        s = self.settings
        results: list[PreparedUpload | Deferred | ProblemError | None] = [None] * len(uploads)
        opened: list[tuple[int, Image.Image, tuple[int, int], float]] = []
        for i, upload in enumerate(uploads):
            started = time.perf_counter()
            try:
                data = image_bytes(upload.content_type, upload.body)
                image = open_image(data, s.max_image_pixels)
                size = image.size  # before plan_decode may reduce it
                pixels = plan_decode(image, longest)
            except Exception as exc:  # noqa: BLE001 - see _own_error
                results[i] = _own_error(exc)
                continue
            if light_only and (pixels > s.light_pixels or len(data) > s.light_bytes):
                results[i] = Deferred(pixels, len(data))
            else:
                opened.append((i, image, size, time.perf_counter() - started))
        decoded: list[tuple[int, Image.Image, tuple[int, int], float]] = []
        for i, image, size, spent in opened:
            started = time.perf_counter()
            try:
                decoded.append((i, decode(image, longest), size, spent + time.perf_counter() - started))
            except Exception as exc:  # noqa: BLE001 - see _own_error
                results[i] = _own_error(exc)
        started = time.perf_counter()
        images = [image for _, image, _, _ in decoded]
        try:
            placements: list[Placed | Exception] = list(place(images, self.manifest))
        except Exception:  # noqa: BLE001 - some upload's surprise: each is placed alone, so that only it fails
            placements = [_placed_alone(image, self.manifest) for image in images]
        share = (time.perf_counter() - started) / max(len(decoded), 1)  # placed together: each its share
        for (i, _, size, decode_s), placed in zip(decoded, placements, strict=True):
            results[i] = (_own_error(placed) if isinstance(placed, Exception)
                          else PreparedUpload(placed, size, decode_s, share))
        return cast(list[PreparedUpload | Deferred | ProblemError], results)  # each upload's entry is set once

    def classify(self, job: Classify) -> Classified:
        """Prepare every upload, one run for all that prepared. An upload that fails gets its own error;
        the rest of the batch still runs."""
        outcomes = self.prepare(job.uploads, job.light_only, self.settings.working_max_side)
        placed = [outcome.placed for outcome in outcomes if isinstance(outcome, PreparedUpload)]
        started = time.perf_counter()
        inputs = batch(placed, self.manifest) if placed else None
        share = (time.perf_counter() - started) / max(len(placed), 1)  # the batch's normalisation, per image
        rows = iter(range(len(placed)))
        results: list[UploadRow | Deferred | ProblemError] = [
            UploadRow(next(rows), outcome.placed.inverted, outcome.decode_s, outcome.preprocess_s + share)
            if isinstance(outcome, PreparedUpload) else outcome for outcome in outcomes]
        if inputs is None:
            empty = np.empty((0, self.classes))
            return Classified(results, empty, empty.astype(np.int64), 0.0)
        started = time.perf_counter()
        logits, _ = self.sessions.classify(inputs)
        run_s = time.perf_counter() - started
        probabilities = softmax(logits, self._temperature)
        return Classified(results, probabilities, ranking(probabilities), run_s)

    def infer(self, job: Infer) -> Inferred | Deferred:
        """An Open Inference Protocol request, parsed, run and encoded here (its JSON may be megabytes)."""
        header_bytes = openinference.header_size(job.body, job.header_length)
        if job.light_only and header_bytes > self.settings.light_bytes:
            return Deferred(0, len(job.body))
        content, headers = openinference.answer(self.manifest, job.body, job.header_length,
                                                self.settings.max_batch_size, self.sessions.classify)
        return Inferred(content, headers)

    def explain(self, job: Explain) -> Explained | Deferred:
        """One heatmap in one go: prepare, run, weigh the maps, and encode what the format needs."""
        longest = self.settings.working_max_side if job.format == "json" else self.settings.overlay_max_side
        (upload,) = self.prepare((job.upload,), job.light_only, longest)
        if isinstance(upload, ProblemError):
            raise upload
        if isinstance(upload, Deferred):
            return upload
        placed = upload.placed
        started = time.perf_counter()
        inputs = batch((placed,), self.manifest)
        clock = time.perf_counter()
        timings = {"decode": upload.decode_s, "preprocess": upload.preprocess_s + clock - started}

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage], clock = now - clock, now

        logits, features = self.sessions.classify(inputs)
        probabilities = softmax(logits, self._temperature)[0]
        lap("run")
        index = int(probabilities.argmax()) if job.class_index is None else job.class_index
        feature_map = explain.heatmap(self, job.method, features[0], index)
        spec = self.manifest.input
        input_map = explain.upsample(feature_map, spec.width, spec.height)
        lap("heatmap")
        heatmap: HeatmapArrays | HeatmapPicture
        if job.format == "json":
            heatmap = HeatmapArrays(feature_map, input_map)
        else:
            on_image = explain.to_image_space(input_map, placed.image.size, placed.scale, placed.offset)
            picture = (explain.overlay(placed.image, on_image, job.opacity) if job.format == "overlay"
                       else Image.fromarray(explain.colormap(on_image)))
            heatmap = HeatmapPicture(explain.png(picture), picture.size, upload.source_size)
            lap("encode")
        return Explained(index, probabilities, heatmap, timings)
