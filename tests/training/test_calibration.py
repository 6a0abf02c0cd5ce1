"""Temperature scaling, expected calibration error and the unsure threshold, against synthetic cases
whose answers are known."""

from __future__ import annotations

import numpy as np

from training.calibration import (
    TEMPERATURES,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    separation,
    unsure_threshold,
)


def _overconfident(n: int = 20000, temperature: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true temperature is ``temperature``: labels drawn from softmax(logits / T)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (n, 10))
    p = probabilities(logits, temperature)
    labels = np.array([rng.choice(10, p=row) for row in p])
    return logits, labels


def test_fit_temperature_recovers_the_true_temperature_and_fixes_calibration():
    logits, labels = _overconfident()
    temperature = fit_temperature(logits, labels)
    assert abs(temperature - 2.5) < 0.1
    before = expected_calibration_error(probabilities(logits), labels)
    after = expected_calibration_error(probabilities(logits, temperature), labels)
    assert before > 0.1 and after < 0.02
    # Scaling never changes the ranking.
    assert np.array_equal(probabilities(logits, temperature).argmax(1), logits.argmax(1))


def test_a_few_confidently_wrong_answers_do_not_set_the_temperature():
    """Answers calibrated as they are, plus 2 % wrong with huge margins (the scrawl a model is sure of):
    the negative log-likelihood would soften every answer for their sake; the ECE fit stays near 1 and
    leaves the fitting set no worse calibrated than the raw softmax."""
    logits, labels = _overconfident(temperature=1.0)
    rng = np.random.default_rng(1)
    wild = rng.choice(len(labels), len(labels) // 50, replace=False)
    logits[wild] = 0.0
    logits[wild, (labels[wild] + 1) % 10] = 40.0
    temperature = fit_temperature(logits, labels)
    assert abs(temperature - 1.0) < 0.15
    assert expected_calibration_error(probabilities(logits, temperature), labels) <= \
        expected_calibration_error(probabilities(logits), labels)


def test_a_temperature_is_kept_only_where_it_holds_up_on_held_out_halves():
    """On 1,500 answers (a validation set's size) the lowest ECE of an already calibrated softmax lies off
    T = 1 by noise alone; fitting keeps 1 there, and keeps a real miscalibration's T either way."""
    calibrated, labels = _overconfident(1500, temperature=1.0)
    best_on_the_whole_set = min(TEMPERATURES, key=lambda t: expected_calibration_error(
        probabilities(calibrated, t), labels))
    assert abs(best_on_the_whole_set - 1.0) > 0.05
    assert fit_temperature(calibrated, labels) == 1.0
    for true_temperature in (0.6, 2.5):
        logits, labels = _overconfident(1500, true_temperature)
        assert abs(fit_temperature(logits, labels) / true_temperature - 1) < 0.05


def test_ece_is_the_weighted_confidence_accuracy_gap():
    probs = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 6 + [1] * 4)  # 90 % confident, 60 % right
    assert abs(expected_calibration_error(probs, labels) - 0.3) < 1e-9


def test_unsure_threshold_and_separation():
    confidence = np.array([0.99, 0.98, 0.97, 0.95, 0.6, 0.55, 0.5, 0.9])
    correct = np.array([True, True, True, True, False, False, False, True])
    threshold = unsure_threshold(confidence, correct)
    assert 0.6 < threshold <= 0.9
    assert ((confidence < threshold) == ~correct).all()
    assert separation(confidence, correct) == 1.0
    assert separation(confidence, np.ones(8, bool)) is None
    assert unsure_threshold(confidence, np.ones(8, bool)) == 0.0  # nothing wrong to learn from: flag nothing
