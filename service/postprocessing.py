"""Logits → calibrated probabilities, the classes ranked by them, and whether the answer is sure."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of ``logits / temperature``: the manifest's temperature (fitted on validation) makes
    them calibrated, an answer given with p = 0.9 right about nine times in ten."""
    scaled = logits / np.float32(temperature)
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float64)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices, highest score first, ties by index; per row for a batch."""
    return np.argsort(-scores, axis=-1, kind="stable")


def judgement(probabilities: np.ndarray, order: np.ndarray, labels: list[str], unsure_below: float) -> tuple[bool, str]:
    """Unsure when the calibrated top probability is under the model's threshold; the message names the
    two likeliest labels (``order``: the probabilities' ranking) then, as a person would hedge."""
    first, second = order[:2].tolist()
    if probabilities[first] < unsure_below:
        return True, f"not sure: looks like {labels[first]} or {labels[second]}"
    return False, f"looks like {labels[first]}"
