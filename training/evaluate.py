"""Accuracy as users get it: every image through the service's own preprocessing (``prepare``, per the
manifest), then the exported graph in ONNX Runtime. Export and quantize record these numbers, so what the
manifest says a model scores is what the service's pipeline scores: train/serve skew cannot hide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix

from service.manifest import Manifest
from service.preprocessing import prepare
from service.worker.cpu import exact_int8

from .data import LABELS, pictures

BATCH = 256


def served_inputs(images: np.ndarray | list[Image.Image], manifest: Manifest) -> np.ndarray:
    """The model inputs the service would build from these images."""
    if isinstance(images, np.ndarray):
        images = pictures(images)
    return prepare(images, manifest)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic reductions: the same numbers every time
    return ort.InferenceSession(str(path), exact_int8(options), providers=["CPUExecutionProvider"])


def logits(model: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([model.run(["logits"], {"input": inputs[i:i + BATCH]})[0]
                           for i in range(0, len(inputs), BATCH)])


def scores(model: ort.InferenceSession, inputs: np.ndarray, labels: np.ndarray) -> tuple[float, list[list[int]]]:
    """Accuracy and confusion matrix (rows: true, columns: predicted)."""
    predicted = logits(model, inputs).argmax(1)
    confusion = confusion_matrix(labels, predicted, labels=range(len(LABELS))).tolist()
    return float(accuracy_score(labels, predicted)), confusion
