"""The external evaluation sets: what they hold, and that none of it is in training's data."""

from __future__ import annotations

import numpy as np

from training import fonts
from training.external import DESCRIPTIONS, external_sets


def test_the_sets_are_balanced_images_as_users_send_them():
    sets = {s.name: s for s in external_sets()}
    assert set(sets) == set(DESCRIPTIONS)
    sklearn, printed, full = sets["sklearn_digits"], sets["printed_heldout"], sets["mnist_full_frame"]
    assert len(sklearn.images) == 1797 and sklearn.images[0].size == (64, 64) and sklearn.images[0].mode == "L"
    page = np.asarray(sklearn.images[0])
    assert page[0, 0] == 255 and page.min() < 60  # dark ink on white
    assert len(printed.images) == 2 * 10 * len(fonts.glyphs("test"))
    assert printed.images[0].size == (96, 96) and printed.images[0].mode == "RGB"
    assert np.median(np.asarray(printed.images[0])) > 150  # paper
    assert len(full.images) == 500 and full.images[0].size == (28, 28)
    for s in sets.values():
        counts = np.bincount(s.labels, minlength=10)
        assert counts.min() >= 0.9 * counts.max()


def test_held_out_fonts_are_not_in_training():
    train = {g.tobytes() for face in fonts.glyphs("train") for g in face}
    assert not any(g.tobytes() in train for face in fonts.glyphs("test") for g in face)
