"""The messages between the server process and its inference workers, imported by both sides.

Each message is an 8-byte length and a pickle (both ends run this very package). The messages are frozen
dataclasses without slots: with slots, dataclasses pickles each through Python-level ``__getstate__`` and
``__setstate__``, and a lenet5 job of 6 uploads and its answer cost the two processes 60 µs to pickle and
unpickle instead of 34. A worker answers its jobs in the order they came. The jobs:

- :class:`Start` → :class:`Started`: load these model versions (once, at the worker's start).
- :class:`Classify` → :class:`Classified`: one batch of uploads for one version.
- :class:`Explain` → :class:`Explained`: one heatmap, computed and encoded entirely in the worker.
- :class:`Infer` → :class:`Inferred`: one Open Inference Protocol request, body in, response body out.

A model job names the worker-side model's method that answers it (``verb``): adding an endpoint that
runs a model is a job here, a method on ``WorkerModel`` and the route that sends the job.

In a job marked ``light_only`` (what ordinary workers get), an upload that is costly to decode — more than
``light_pixels`` decoded or ``light_bytes`` encoded, or an inference request with more than ``light_bytes``
of JSON — is not decoded: its answer is :class:`Deferred`, and the server sends it on to a heavy worker.
A request's own error (a broken image, a bad form) comes back as its :class:`~service.errors.ProblemError`;
so does a job that fails as a whole.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal

import numpy as np

from ..errors import ProblemError
from ..manifest import Manifest
from ..settings import Settings

Key = tuple[str, str]  # (model name, version)
HeatmapFormat = Literal["json", "png", "overlay"]


@dataclass(frozen=True)
class Upload:
    """A request body holding an image as the multipart form field ``file``."""

    body: bytes
    content_type: str


@dataclass(frozen=True)
class Version:
    """A model version the server has read and verified; the worker checks the files' hashes again as it loads them."""

    directory: Path
    manifest: Manifest


@dataclass(frozen=True)
class RunPlan:
    """How a version's runs go on this machine: timed by the first worker of a lane (runtime.plan_runs), and
    taken as given by the others."""

    threads: int           # ONNX Runtime threads a run is split over
    blocked: bool = False  # the graph with its channels filled to whole blocks runs (worker.channel_blocks)


@dataclass(frozen=True)
class Start:
    settings: Settings
    versions: dict[Key, Version]
    heavy: bool  # a heavy worker: low CPU priority, one thread a run, no memory arena kept, batch-1 warm-up
    plans: dict[Key, RunPlan]  # per version, what an earlier worker timed (absent: time it)


@dataclass(frozen=True)
class Loaded:
    providers: list[str]        # what ONNX Runtime assigned, in priority order
    plan: RunPlan
    fallback: str | None = None  # providers=auto: why CUDA was not used


@dataclass(frozen=True)
class Started:
    versions: dict[Key, Loaded | str]  # str: why the version could not be loaded
    heavy: bool  # from a heavy worker, whose plan is always the graph as exported on one thread


@dataclass(frozen=True)
class Classify:
    verb: ClassVar[str] = "classify"
    key: Key
    uploads: tuple[Upload, ...]
    light_only: bool  # defer uploads over light_pixels / light_bytes (see the module docstring)


@dataclass(frozen=True)
class UploadRow:
    row: int
    inverted: bool  # the image was inverted to MNIST's light-on-dark
    decode_s: float  # the form parse included
    preprocess_s: float


@dataclass(frozen=True)
class Deferred:
    pixels: int  # what decoding this upload would produce
    bytes: int   # its encoded size


@dataclass(frozen=True)
class Classified:
    """A batch's outputs as whole arrays (two cross the socket per batch, not two per request) and each
    upload's row in them, or why it has none."""

    items: list[UploadRow | Deferred | ProblemError]
    probabilities: np.ndarray   # rows × classes
    ranking: np.ndarray         # rows × classes: class indices, most probable first
    run_s: float


@dataclass(frozen=True)
class Explain:
    verb: ClassVar[str] = "explain"
    key: Key
    upload: Upload
    class_index: int | None  # None: the top-1 class
    method: str              # a name in service.worker.explain.METHODS, checked by the server
    format: HeatmapFormat
    opacity: float
    light_only: bool

    @property
    def encoded_bytes(self) -> int:
        return len(self.upload.body)


@dataclass(frozen=True)
class HeatmapArrays:
    feature_map: np.ndarray  # h×w in [0, 1], feature-map resolution
    input_map: np.ndarray    # H×W in [0, 1], the model's input resolution


@dataclass(frozen=True)
class HeatmapPicture:
    png: bytes
    size: tuple[int, int]         # width, height of the picture
    source_size: tuple[int, int]  # width, height of the uploaded image (the picture is smaller when it was large)


@dataclass(frozen=True)
class Explained:
    class_index: int
    probabilities: np.ndarray  # classes
    heatmap: HeatmapArrays | HeatmapPicture
    timings: dict[str, float]  # seconds per stage


@dataclass(frozen=True)
class Infer:
    verb: ClassVar[str] = "infer"
    key: Key
    body: bytes
    header_length: str | None  # the Inference-Header-Content-Length header (binary tensor data)
    light_only: bool

    @property
    def encoded_bytes(self) -> int:
        """What must be parsed as JSON: its header, or the whole body without the binary extension."""
        return int(self.header_length) if self.header_length and self.header_length.isdecimal() else len(self.body)


@dataclass(frozen=True)
class Inferred:
    content: bytes
    headers: dict[str, str]


UnbatchedJob = Explain | Infer  # each has encoded_bytes: what its costly part weighs
ModelJob = Classify | UnbatchedJob
Job = Start | ModelJob
Reply = Started | Classified | Explained | Inferred | Deferred | ProblemError

HEADER = struct.Struct("!Q")


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def read_message(stream: BinaryIO) -> object | None:
    """The next message from a blocking stream; None when the other side has gone."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    message: object = pickle.loads(stream.read(HEADER.unpack(header)[0]))
    return message
