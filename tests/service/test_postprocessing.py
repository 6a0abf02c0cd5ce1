"""Logits → probabilities and ranking."""

from __future__ import annotations

import numpy as np

from service.postprocessing import ranking, softmax


def test_softmax_and_ranking():
    p = softmax(np.array([1000.0, 1001.0, 999.0]))
    assert abs(p.sum() - 1) < 1e-12 and p.argmax() == 1
    assert ranking(np.array([0.2, 0.5, 0.2, 0.1])).tolist() == [1, 0, 2, 3]  # ties by index
    assert ranking(np.array([[0.1, 0.9], [0.7, 0.3]])).tolist() == [[1, 0], [0, 1]]
