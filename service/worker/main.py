"""An inference worker process: load the model versions it is given, then answer jobs, in order, until
the server goes away. pool.py starts it as ``python -c "from service.worker.main import serve; serve(fd)"``."""

from __future__ import annotations

import ctypes
import io
import logging
import os
import signal
import socket
import warnings

from PIL import Image

from ..errors import InternalError, ProblemError, ServiceUnavailable
from ..heap import freeze_startup_objects
from ..logs import configure_logging
from ..preprocessing import decode, open_image
from .model import WorkerModel
from .protocol import Key, Loaded, ModelJob, Reply, Start, Started, frame, read_message
from .runtime import CUDA, ProviderUnavailable, RunFailed

log = logging.getLogger("service.worker")
PR_SET_PDEATHSIG = 1
HEAVY_NICENESS = 10  # a heavy worker gets the CPU the ordinary work leaves (about a tenth when both are busy)


def load(start: Start) -> tuple[dict[Key, WorkerModel], Started]:
    """Every version that loads, warmed up; the report says per version which providers ONNX Runtime
    gave it, or why it failed (a broken model never takes the others down)."""
    models: dict[Key, WorkerModel] = {}
    outcomes: dict[Key, Loaded | str] = {}
    for key, version in start.versions.items():
        try:
            model = WorkerModel.load(version, start.settings, start.heavy, start.plans.get(key))
        except (ValueError, ProviderUnavailable) as exc:  # our own checks: the message says it all
            outcomes[key] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - reported, and the version is marked failed
            log.error("%s/%s could not be loaded: %s", *key, exc)
            outcomes[key] = f"ONNX Runtime could not load it: {str(exc).strip().splitlines()[0]}"
            continue
        models[key] = model
        outcomes[key] = Loaded(model.sessions.providers, model.sessions.plan, model.sessions.fallback)
    return models, Started(outcomes, start.heavy)


def _warm_up_decoding() -> None:
    """The first decode imports Pillow's format plugins: before the first request, not in it."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    decode(open_image(buffer.getvalue(), 1), 1)


def handle(models: dict[Key, WorkerModel], job: ModelJob) -> tuple[Reply, bool]:
    """The job's reply (from the model's method the job names), and whether this worker must be replaced
    after sending it (a GPU that failed a run may have lost its context: a fresh process gets a fresh one)."""
    model = models.get(job.key)
    if model is None:
        return ServiceUnavailable(f"model {job.key[0]}/{job.key[1]} is not loaded in this worker; retry later"), False
    try:
        reply: Reply = getattr(model, job.verb)(job)
        return reply, False
    except ProblemError as exc:
        return exc, False
    except RunFailed as exc:
        log.error("%s/%s: %s", *job.key, exc)
        return ServiceUnavailable(f"{exc}; retry"), model.sessions.providers[0] == CUDA
    except Exception as exc:  # noqa: BLE001 - one line here; the job's caller gets a 500 problem, the worker lives on
        log.error("%s/%s: %s: %s", *job.key, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return InternalError("the inference worker failed this request; it has been logged"), False


def _die_with_the_server() -> None:
    """Linux: the kernel kills this worker when the server process ends, however it ends (no orphans)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # elsewhere the worker still stops at the end of its socket


def serve(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole process group; the server stops us
    _die_with_the_server()
    warnings.filterwarnings("ignore", module="PIL")  # a corrupt file's warnings: its own 4xx says enough
    with socket.socket(fileno=fd) as sock, sock.makefile("rb") as incoming:
        start = read_message(incoming)
        if not isinstance(start, Start):
            return
        configure_logging(start.settings.log_level)
        if start.heavy:
            os.nice(HEAVY_NICENESS)
        models, report = load(start)
        _warm_up_decoding()
        freeze_startup_objects()
        try:
            sock.sendall(frame(report))
            while isinstance(job := read_message(incoming), ModelJob):  # anything else (None: the server left): stop
                reply, replace_me = handle(models, job)
                sock.sendall(frame(reply))
                if replace_me:
                    return
        except (BrokenPipeError, ConnectionResetError):
            return  # the server went away mid-answer
