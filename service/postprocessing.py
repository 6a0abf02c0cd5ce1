"""Logits → probabilities and the classes ranked by them."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float64)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices, highest score first, ties by index; per row for a batch."""
    return np.argsort(-scores, axis=-1, kind="stable")
