"""Logits → probabilities and the top-k classes."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float64)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(class index, probability) of the k most probable classes, best first; ties by index."""
    order = np.lexsort((np.arange(len(probabilities)), -probabilities))[:k]
    return [(int(i), float(probabilities[i])) for i in order]
