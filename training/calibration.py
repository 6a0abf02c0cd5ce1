"""Calibrated probabilities and the unsure judgement, fitted on validation only.

- Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017): one scalar T that
  divides the logits. It changes no ranking, so accuracy is untouched; the service applies it from the
  manifest. The paper picks T by validation negative log-likelihood; here T is the one with the lowest
  validation ECE, the figure calibration is judged by. NLL lets a few confidently wrong answers (a
  scrawled form scan, an int8 model's clipped activations) set T for everyone: fitted that way, most
  shipped versions came out with a *higher* validation ECE than with no scaling at all (README,
  "Calibrated probabilities"). On 1,500 validation images the ECE is itself noisy, so its lowest point
  can be noise: a fitted T is kept only when it holds up on validation images it was not fitted on.
- Expected calibration error (ECE): the gap between confidence and accuracy, averaged over 15 equal-width
  confidence bins weighted by how many answers fall in each (the same paper's definition).
- Unsure: an answer whose calibrated top probability is below a threshold. The threshold is the one on the
  validation ROC curve (wrong answers as positives, scored by 1 − confidence) with the largest Youden J
  (true-positive rate − false-positive rate). AUROC measures how well confidence separates right answers
  from wrong ones, threshold-free.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn.metrics import roc_auc_score, roc_curve

BINS = 15
# The temperatures tried: 1 % apart from 0.05 to 20, and 1 (no scaling) itself, so that fitting never
# leaves validation worse calibrated than the raw softmax.
TEMPERATURES = np.union1d(np.geomspace(0.05, 20.0, 603), [1.0])


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(logits.astype(np.float64) / temperature, axis=1))


HALVINGS = 5  # random halvings of the fitting set that test whether a fitted T generalises


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T of TEMPERATURES with the lowest ECE on ``logits``, if it earns its place; otherwise 1.

    It earns it when T fitted on one half of the set lowers the ECE of the other half, on average over
    HALVINGS random halvings, each half used both ways (a fixed seed: the same logits give the same T).
    Where the raw softmax is already as well calibrated as noise lets one tell, scaling only moves it
    about."""
    fitted = _lowest_ece_temperature(logits, labels)
    if fitted == 1.0:
        return fitted
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(HALVINGS):
        halves = np.array_split(rng.permutation(len(labels)), 2)
        for fit_on, held_out in (halves, halves[::-1]):
            t = _lowest_ece_temperature(logits[fit_on], labels[fit_on])
            probs, truth = probabilities(logits[held_out]), labels[held_out]
            gains.append(expected_calibration_error(probs, truth)
                         - expected_calibration_error(probabilities(logits[held_out], t), truth))
    return fitted if np.mean(gains) > 0 else 1.0


def _lowest_ece_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T of TEMPERATURES with the lowest expected calibration error (the first, if tied)."""
    # Scaling keeps the argmax, and the top probability is 1 / Σ exp((logit − top logit) / T).
    logits = logits.astype(np.float64)
    below_top = logits - logits.max(1, keepdims=True)
    correct = logits.argmax(1) == labels
    errors = [_binned_gap(1 / np.exp(below_top / t).sum(1), correct) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(errors))])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    return _binned_gap(probs.max(1), probs.argmax(1) == labels, bins)


def _binned_gap(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    # Per bin, |Σ correct − Σ confidence| / N is its share of answers times its accuracy-confidence gap.
    gaps = np.bincount(which, correct, bins) - np.bincount(which, confidence, bins)
    return float(np.abs(gaps).sum() / len(correct))


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
