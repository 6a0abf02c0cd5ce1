"""The datasets: real digits, stratified disjoint splits, deterministic placed canvases with true boxes."""

from __future__ import annotations

import numpy as np

from training.data import (
    VAL_PRINTED,
    Mixture,
    load_mnist,
    mnist_digits,
    placed_digits,
    scene_dataset,
    split_indices,
    validation_set,
)


def test_mnist_is_the_real_5000_digits():
    images, labels = load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).min() >= 499 and images.max() == 255


def test_splits_are_disjoint_stratified_and_deterministic():
    _, labels = load_mnist()
    splits = split_indices(labels, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3999, 501, 500]
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["val"]) & set(splits["test"])
    assert np.bincount(labels[splits["test"]]).tolist() == [50] * 10
    again = split_indices(labels, seed=0).values()
    assert all(np.array_equal(a, b) for a, b in zip(splits.values(), again, strict=True))
    assert not np.array_equal(splits["test"], split_indices(labels, seed=1)["test"])


def test_placed_digits_are_deterministic_and_boxes_hold_the_digit():
    a, b = placed_digits("test"), placed_digits("test")
    assert a.images.shape == (500, 3, 64, 64)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, placed_digits("test", variant=1).images)
    assert np.array_equal(a.labels, mnist_digits("test").labels)
    x0, y0, x1, y1 = a.boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 64).all() and (y1 <= 64).all()
    assert ((x1 - x0) >= 1).all() and ((x1 - x0) <= 36).all() and ((y1 - y0) >= 8).all() and ((y1 - y0) <= 36).all()
    # The digit's ink is inside its box: the box differs from the background far more than outside it.
    for image, (bx0, by0, bx1, by1) in zip(a.images[:50].astype(float), a.boxes[:50], strict=True):
        background = np.median(image.reshape(3, -1), axis=1)[:, None, None]
        distance = np.abs(image - background).sum(0)
        inside = distance[by0:by1, bx0:bx1].max()
        outside = distance.copy()
        outside[by0:by1, bx0:bx1] = 0
        assert inside > 100 and np.percentile(outside, 99) < inside


def test_scenes_hold_the_splits_digits_and_printed_glyphs_and_are_fresh_per_variant():
    mixture = Mixture(printed=300, scans=50)
    a = scene_dataset("placed", "val", variant=0, mixture=mixture)
    b = scene_dataset("placed", "val", variant=0, mixture=mixture)
    digits = mnist_digits("val")
    assert a.images.shape == (len(digits) + 350, 3, 64, 64) and a.boxes is not None
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, scene_dataset("placed", "val", variant=1, mixture=mixture).images)
    counts = np.bincount(a.labels, minlength=10)
    assert (counts >= np.bincount(digits.labels)).all() and counts.sum() - len(digits) == 350
    # The form scans come last: dark ink on white filling the frame, their box the whole frame.
    scans = a.images[-50:].astype(int)
    assert (a.boxes[-50:] == [0, 0, 64, 64]).all() and np.median(scans) > 200 and scans.min(axis=(1, 2, 3)).max() < 128
    gray = scene_dataset("mnist", "val", mixture=Mixture(printed=10, scans=0))
    assert gray.images.shape == (len(digits) + 10, 1, 64, 64)


def test_validation_is_the_scenes_for_augmented_models_and_the_plain_split_otherwise():
    assert len(validation_set("mnist")) == 2 * len(mnist_digits("val")) + VAL_PRINTED  # scenes, then form scans
    assert np.array_equal(validation_set("mnist", augmented=False).images, mnist_digits("val").images)
