"""The external evaluation: digits from outside the training data, scored per model and version at export
and published beside the in-distribution accuracy. These sets are test-only: nothing here is trained on,
and no model, epoch or threshold is chosen with them (validation does that).

- ``sklearn_digits``: scikit-learn's ``load_digits``, 1,797 handwritten digits from 43 writers (UCI
  optdigits, not MNIST), 8×8 with 17 levels, drawn as a user's low-resolution scan: dark ink on white,
  upscaled to 64×64 (bilinear), the digit filling the frame.
- ``printed_heldout``: the ten digits of every face of the held-out font lineages (``training.fonts``)
  photographed: dark ink on off-white, unevenly lit paper, rotated up to ±10°, sometimes in perspective or
  blurred, anywhere on a 96×96 frame at 35–75 % of its size, with noise, then JPEG-compressed; two shots
  per glyph.
- ``mnist_full_frame``: the MNIST test split as the 28×28 files themselves (light digit on black filling
  the frame): in-distribution for the gray nets, a full-frame crop for the RGB ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from . import fonts
from .augment import SceneStyle, scenes
from .data import DEFAULT_SEED, mnist_digits

SCAN_SIZE = 64
PHOTO = SceneStyle(canvas=96, digit_sizes=(0.35, 0.75), stroke=0, elastic=0, rotation_deg=10, shear=0.05,
                   perspective=0.3, low_resolution=0, blur=0.3, paper=True, noise=0.04, jpeg=1.0)
DESCRIPTIONS = {
    "sklearn_digits": "scikit-learn load_digits: other writers' handwriting, 8×8 scans upscaled to 64×64",
    "printed_heldout": "printed digits in held-out font lineages, photographed (±10°, off-centre, noise, JPEG)",
    "mnist_full_frame": "MNIST test digits as the 28×28 files, digit filling the frame",
}


@dataclass(frozen=True)
class ExternalSet:
    name: str
    images: list[Image.Image]  # as a user would upload them
    labels: np.ndarray


def sklearn_digits() -> ExternalSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pages = (255 - bunch.images * (255 / 16)).round().astype(np.uint8)
    images = [Image.fromarray(page).resize((SCAN_SIZE, SCAN_SIZE), Image.Resampling.BILINEAR) for page in pages]
    return ExternalSet("sklearn_digits", images, bunch.target.astype(np.int64))


def printed_heldout(shots: int = 2) -> ExternalSet:
    glyphs = fonts.glyphs("test").reshape(-1, fonts.SIZE, fonts.SIZE)
    glyphs = np.concatenate([glyphs] * shots)
    photos, _ = scenes([glyphs], np.random.default_rng([DEFAULT_SEED, 97]), PHOTO)
    labels = np.tile(np.arange(10), len(glyphs) // 10)
    return ExternalSet("printed_heldout", [Image.fromarray(p.transpose(1, 2, 0)) for p in photos], labels)


def mnist_full_frame() -> ExternalSet:
    test = mnist_digits("test")
    return ExternalSet("mnist_full_frame", [Image.fromarray(d[0]) for d in test.images], test.labels)


@lru_cache(maxsize=1)
def external_sets() -> tuple[ExternalSet, ...]:
    return sklearn_digits(), printed_heldout(), mnist_full_frame()
