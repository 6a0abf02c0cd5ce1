"""ONNX Runtime sessions for one model version: provider choice, warm-up, thread settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .settings import Settings

log = logging.getLogger("service.runtime")

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def requested_providers(settings: Settings) -> list[str]:
    available = ort.get_available_providers()
    wants_cuda = settings.providers == "cuda" or (settings.providers == "auto" and CUDA in available)
    if settings.providers == "cuda" and CUDA not in available:
        log.warning("CUDA requested but this onnxruntime build has no CUDA provider (%s); using CPU", available)
    return [CUDA, CPU] if wants_cuda and CUDA in available else [CPU]


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


@dataclass
class Sessions:
    """The classifier graph (input → logits, features) and the Grad-CAM head-gradient graph."""

    model: ort.InferenceSession
    gradient: ort.InferenceSession

    @property
    def providers(self) -> list[str]:
        """What ONNX Runtime actually gave us: it drops CUDA silently when it cannot start it."""
        return self.model.get_providers()

    @classmethod
    def load(cls, model_path: Path, gradient_path: Path, settings: Settings) -> "Sessions":
        options, providers = session_options(settings), requested_providers(settings)
        return cls(
            ort.InferenceSession(str(model_path), options, providers=providers),
            ort.InferenceSession(str(gradient_path), options, providers=providers),
        )

    def classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.model.run(None, {"input": batch})
        return logits, features

    def head_gradient(self, features: np.ndarray, seed: np.ndarray) -> np.ndarray:
        (grad,) = self.gradient.run(None, {"features": features, "seed": seed})
        return grad

    def warm_up(self, input_shape: tuple[int, ...], classes: int) -> None:
        logits, features = self.classify(np.zeros((1, *input_shape), np.float32))
        self.head_gradient(features, np.eye(classes, dtype=np.float32)[:1])
