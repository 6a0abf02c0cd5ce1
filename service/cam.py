"""Class activation maps with numpy alone (torchcam's small-function style).

- CAM (GAP nets): ``Σ_k w_k^c f_k``, the feature maps weighted by class c's linear weights.
- Grad-CAM (every net): ``Σ_k α_k f_k`` with ``α_k`` the spatial mean of ∂score_c/∂f_k; the gradient
  comes from the model's exported head-gradient graph, run by ONNX Runtime.
Both then go through ReLU and min-max normalisation to [0, 1].
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def class_activation_map(features: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """features K×h×w, class_weights K → raw h×w map."""
    return np.tensordot(class_weights, features, axes=1)


def grad_cam(features: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """features and d(score)/d(features), both K×h×w → raw h×w map."""
    alphas = gradients.mean(axis=(1, 2))
    return np.tensordot(alphas, features, axes=1)


def normalise(raw: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1]; an all-zero map stays zero."""
    cam = np.maximum(raw, 0).astype(np.float32)
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a [0, 1] map."""
    return np.asarray(Image.fromarray(cam, mode="F").resize((width, height), Image.Resampling.BILINEAR)).clip(0, 1)


def to_image_space(cam_on_input: np.ndarray, size: tuple[int, int], scale: tuple[float, float], offset: tuple[float, float]) -> np.ndarray:
    """Map a heatmap on the model's input back onto the original image (``model = image·scale + offset``)."""
    heat = Image.fromarray(cam_on_input, mode="F")
    affine = (scale[0], 0.0, offset[0], 0.0, scale[1], offset[1])
    return np.asarray(heat.transform(size, Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR)).clip(0, 1)


def colormap(cam: np.ndarray) -> np.ndarray:
    """The 'jet' colour map (blue → cyan → yellow → red) as uint8 H×W×3."""
    x = cam[..., None] * 4
    rgb = np.clip(1.5 - np.abs(x - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).round().astype(np.uint8)


def overlay(image: Image.Image, cam: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The heatmap (same size as ``image``) blended onto the image."""
    heat = Image.fromarray(colormap(cam), "RGB")
    return Image.blend(image.convert("RGB"), heat, opacity)
