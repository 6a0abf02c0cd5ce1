"""Scenes: deterministic from a seed, the digit's box true, sizes from small to filling the frame, pages of
every kind, and the photographed-paper style light with dark ink."""

from __future__ import annotations

import numpy as np

from training.augment import SceneStyle, scenes
from training.data import load_mnist


def _digits(n: int = 200) -> np.ndarray:
    return load_mnist()[0][:n]


def test_scenes_are_deterministic_and_shaped():
    a, boxes_a = scenes([_digits()], np.random.default_rng(3))
    b, boxes_b = scenes([_digits()], np.random.default_rng(3))
    assert a.shape == (200, 3, 64, 64) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(boxes_a, boxes_b)
    c, _ = scenes([_digits()], np.random.default_rng(4))
    assert not np.array_equal(a, c)
    gray, _ = scenes([_digits()], np.random.default_rng(3), color=False)
    assert gray.shape == (200, 1, 64, 64)


def test_boxes_hold_the_digit_and_sizes_span_small_to_full_frame():
    style = SceneStyle(noise=0, jpeg=0, elastic=0, perspective=0, plain_page=1.0)  # flat pages: ink is measurable
    images, boxes = scenes([_digits()], np.random.default_rng(0), style)
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 64).all() and (y1 <= 64).all()
    longest = np.maximum(x1 - x0, y1 - y0)
    assert longest.min() < 24 and longest.max() >= 60  # from about a quarter of the frame to all of it
    strong = 0
    for image, (bx0, by0, bx1, by1) in zip(images.astype(float), boxes, strict=True):
        colours, counts = np.unique(image.reshape(3, -1).T, axis=0, return_counts=True)
        page = colours[counts.argmax()][:, None, None]  # the most common colour
        distance = np.abs(image - page).sum(0)
        outside = distance.copy()
        outside[by0:by1, bx0:bx1] = 0
        inside = distance[by0:by1, bx0:bx1].max()
        assert np.percentile(outside, 99) < min(inside, 60)  # no ink outside the box
        strong += inside > 100
    assert strong >= 0.95 * len(images)  # a few blurred, low-resolution strokes are faint


def test_pages_include_plain_white_gray_black_and_colour():
    images, _ = scenes([_digits()], np.random.default_rng(1), SceneStyle(noise=0, jpeg=0))
    corners = images[:, :, 0, 0].astype(int)
    plain = (corners.max(1) - corners.min(1)) <= 2
    levels = corners[plain, 0]
    assert (levels >= 250).any() and (levels <= 5).any() and ((levels > 100) & (levels < 210)).any()
    assert (~plain).sum() > 50  # coloured pages too


def test_a_printed_glyph_photographed_on_paper_is_dark_ink_on_a_light_page():
    glyph = np.zeros((1, 64, 64), np.uint8)
    glyph[0, 8:56, 28:36] = 255  # a "1"
    style = SceneStyle(canvas=96, digit_sizes=(0.5, 0.5), stroke=0, elastic=0, paper=True, jpeg=0, blur=0)
    (image,), ((x0, y0, x1, y1),) = scenes([glyph], np.random.default_rng(0), style)
    luminance = image.astype(float).mean(0)
    assert np.median(luminance) > 170  # the page
    assert luminance[y0:y1, x0:x1].min() < 90  # the ink
    assert max(x1 - x0, y1 - y0) in range(46, 56)  # half the 96-pixel frame (its faint edge pixels included)
