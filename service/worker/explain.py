"""Heatmaps, with numpy and Pillow alone (torchcam's small-function style): every method is one pipeline
that differs only in how it weighs the feature maps (torchcam's ``_get_weights``):

    map = normalise(ReLU(Σ_k α_k f_k))      normalise: min-max to [0, 1]

- CAM (GAP nets, Zhou et al. 2016): α_k = w_k^c, class c's weights in the linear layer after global
  average pooling.
- Grad-CAM (every net, Selvaraju et al. 2017): α_k = the spatial mean of ∂score_c/∂f_k; the gradient comes
  from the model's exported head-gradient graph, run by ONNX Runtime.

Then the colour map, the overlay on the user's image and PNG encoding. The server imports METHODS (no
ONNX Runtime here) to validate ``method`` before any model runs. Adding a method: a weights function and
an entry in METHODS.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from ..manifest import Heatmaps


class Head(Protocol):
    """What a weights function may ask of the model version."""

    @property
    def classes(self) -> int: ...

    @property
    def cam_weights(self) -> np.ndarray | None: ...  # classes × maps: a GAP head's linear weights

    def head_gradient(self, features: np.ndarray, seed: np.ndarray) -> np.ndarray: ...


Weights = Callable[[Head, np.ndarray, int], np.ndarray]  # (head, features K×h×w, class) → α, K values


def cam_weights(head: Head, features: np.ndarray, class_index: int) -> np.ndarray:
    assert head.cam_weights is not None  # METHODS offers cam only where the manifest has the weights
    weights: np.ndarray = head.cam_weights[class_index]
    return weights


def gradcam_weights(head: Head, features: np.ndarray, class_index: int) -> np.ndarray:
    seed = np.zeros((1, head.classes), np.float32)
    seed[0, class_index] = 1
    gradients = head.head_gradient(features[None], seed)[0]
    alphas: np.ndarray = gradients.mean(axis=(1, 2))
    return alphas


@dataclass(frozen=True)
class Method:
    title: str  # how people write its name (the page shows it)
    weights: Weights
    needs_cam_weights: bool  # only for nets whose head is global average pooling + one linear layer


METHODS: dict[str, Method] = {
    "cam": Method("CAM", cam_weights, needs_cam_weights=True),
    "gradcam": Method("Grad-CAM", gradcam_weights, needs_cam_weights=False),
}


def methods_for(heatmaps: Heatmaps) -> list[str]:
    """The methods a model version supports, the preferred (default) one first."""
    return [name for name, method in METHODS.items() if heatmaps.cam is not None or not method.needs_cam_weights]


def normalise(raw: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1]; an all-zero map stays zero."""
    cam = np.maximum(raw, 0).astype(np.float32)
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


def heatmap(head: Head, method: str, features: np.ndarray, class_index: int) -> np.ndarray:
    """features K×h×w → the normalised h×w map for the class."""
    alphas = METHODS[method].weights(head, features, class_index)
    return normalise(np.tensordot(alphas, features, axes=1))


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a [0, 1] map."""
    return np.asarray(Image.fromarray(cam, mode="F").resize((width, height), Image.Resampling.BILINEAR)).clip(0, 1)


def to_image_space(cam_on_input: np.ndarray, size: tuple[int, int], scale: tuple[float, float],
                   offset: tuple[float, float]) -> np.ndarray:
    """Map a heatmap on the model's input back onto the image (``model = image·scale + offset``)."""
    heat = Image.fromarray(cam_on_input, mode="F")
    affine = (scale[0], 0.0, offset[0], 0.0, scale[1], offset[1])
    return np.asarray(heat.transform(size, Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR)).clip(0, 1)


def _jet(levels: int = 1024) -> np.ndarray:
    """The 'jet' colour map (blue → cyan → yellow → red): levels × 3 uint8."""
    x = np.linspace(0, 4, levels)[:, None]
    table: np.ndarray = (np.clip(1.5 - np.abs(x - np.array([3.0, 2.0, 1.0])), 0, 1) * 255).round().astype(np.uint8)
    return table


JET = _jet()


def colormap(cam: np.ndarray) -> np.ndarray:
    """A [0, 1] map coloured with 'jet', as uint8 H×W×3: a table lookup, so a 2048² map needs no float copies."""
    return JET[(cam * (len(JET) - 1) + 0.5).astype(np.uint16)]


def overlay(image: Image.Image, cam: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The heatmap (same size as ``image``) blended onto the image."""
    heat = Image.fromarray(colormap(cam), "RGB")
    return Image.blend(image.convert("RGB"), heat, opacity)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast: a heatmap is a throwaway answer, not an archive
    return buffer.getvalue()
