"""Calibrated probabilities and the unsure judgement, fitted on validation only.

- Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017): one scalar T that
  divides the logits, chosen to minimise the validation negative log-likelihood. It changes no ranking,
  so accuracy is untouched; the service applies it from the manifest.
- Expected calibration error (ECE): the gap between confidence and accuracy, averaged over 15 equal-width
  confidence bins weighted by how many answers fall in each (the same paper's definition).
- Unsure: an answer whose calibrated top probability is below a threshold. The threshold is the one on the
  validation ROC curve (wrong answers as positives, scored by 1 − confidence) with the largest Youden J
  (true-positive rate − false-positive rate). AUROC measures how well confidence separates right answers
  from wrong ones, threshold-free.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import roc_auc_score, roc_curve

BINS = 15


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(logits.astype(np.float64) / temperature, axis=1))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of ``labels``."""
    def nll(log_t: float) -> float:
        return float(-log_softmax(logits.astype(np.float64) / np.exp(log_t), axis=1)[np.arange(len(labels)),
                                                                                  labels].mean())
    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded").x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def separation(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of confidence for right-vs-wrong; None when every answer is right (or every one wrong)."""
    if correct.all() or not correct.any():
        return None
    return float(roc_auc_score(correct, confidence))


def unsure_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The Youden-optimal confidence below which answers are flagged unsure; 0 (flag nothing) when
    validation has no wrong answer to learn from."""
    if correct.all() or not correct.any():
        return 0.0
    false_positive, true_positive, thresholds = roc_curve(~correct, 1 - confidence)
    best = int(np.argmax(true_positive - false_positive))
    # The curve flags scores ≥ its threshold, i.e. confidence ≤ 1 − threshold; the service flags confidence
    # strictly below unsure_below, hence the next float up.
    return float(min(1.0, np.nextafter(1 - thresholds[best], 2.0)))
