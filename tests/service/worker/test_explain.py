"""Heatmap maths: every method is one pipeline that differs in its channel weights; the colour map."""

from __future__ import annotations

import numpy as np

from service.worker import explain


class GapHead:
    """A GAP + linear head, worked out by hand: logits_c = Σ_k w_ck · mean(f_k), so ∂logit_c/∂f_k = w_ck / (h·w)."""

    def __init__(self, weights: np.ndarray, cells: int) -> None:
        self.cam_weights = weights
        self.classes = len(weights)
        self.cells = cells

    def head_gradient(self, features: np.ndarray, seed: np.ndarray) -> np.ndarray:
        per_map = seed @ self.cam_weights / self.cells  # batch × maps
        return np.broadcast_to(per_map[:, :, None, None], features.shape).astype(np.float32)


def test_cam_and_gradcam_share_the_pipeline_and_agree_on_a_gap_head():
    rng = np.random.default_rng(0)
    features = rng.random((4, 5, 6)).astype(np.float32)
    weights = rng.normal(size=(3, 4)).astype(np.float32)
    head = GapHead(weights, cells=30)
    manual = np.tensordot(weights[2], features, axes=1)
    np.testing.assert_allclose(explain.heatmap(head, "cam", features, 2), explain.normalise(manual), atol=1e-6)
    # Grad-CAM's α_k on a GAP head is w_k / HW: the same map after normalisation (the CAM paper's point).
    np.testing.assert_allclose(explain.heatmap(head, "gradcam", features, 2), explain.normalise(manual), atol=1e-6)


def test_normalise_upsample_and_image_space():
    manual = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)
    normalised = explain.normalise(manual)
    assert normalised.min() == 0 and normalised.max() == 1 and normalised[0, 0] == 0  # ReLU first
    assert not explain.normalise(np.full((3, 3), -1.0)).any()
    up = explain.upsample(normalised, 60, 50)
    assert up.shape == (50, 60) and 0 <= up.min() and up.max() <= 1
    np.testing.assert_allclose(explain.to_image_space(up, (60, 50), (1.0, 1.0), (0.0, 0.0)), up, atol=1e-5)


def test_colormap_runs_blue_to_red_like_the_jet_formula():
    cam = np.linspace(0, 1, 101, dtype=np.float32)[None]
    colours = explain.colormap(cam)
    assert colours.shape == (1, 101, 3) and colours.dtype == np.uint8
    assert colours[0, 0].argmax() == 2 and colours[0, -1].argmax() == 0  # blue → red
    x = cam[0, :, None] * 4
    formula = (np.clip(1.5 - np.abs(x - np.array([3.0, 2.0, 1.0])), 0, 1) * 255).round()
    assert np.abs(colours[0].astype(int) - formula).max() <= 1  # the table is the formula to within a level


def test_methods_follow_the_manifest():
    from service.manifest import Manifest
    from tests.helpers import manifest

    assert explain.methods_for(Manifest.model_validate(manifest("cam_net")).heatmaps) == ["cam", "gradcam"]
    assert explain.methods_for(Manifest.model_validate(manifest("lenet5")).heatmaps) == ["gradcam"]
