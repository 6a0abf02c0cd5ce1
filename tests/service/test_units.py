"""Small pieces on their own: settings, preprocessing geometry and the inversion rule, CAM maths."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from service import cam
from service.manifest import Manifest
from service.postprocessing import ranking, softmax
from service.preprocessing import decode_image, prepare
from service.settings import Settings
from tests.conftest import manifest


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("CNNSERVE_MAX_TOP_K", "3")
    monkeypatch.setenv("CNNSERVE_ALLOWED_ORIGINS", '["http://localhost:3000"]')
    monkeypatch.setenv("CNNSERVE_INFERENCE_WORKERS", "2")
    settings = Settings()
    assert settings.max_top_k == 3 and settings.allowed_origins == ["http://localhost:3000"]
    assert settings.inference_workers == 2 and settings.intra_op_threads >= 1
    monkeypatch.setenv("CNNSERVE_PROVIDERS", "tpu")
    with pytest.raises(ValueError):
        Settings()


def test_thread_rule_leaves_the_server_a_core():
    assert Settings(inference_workers=1).intra_op_threads == max(1, len(os.sched_getaffinity(0)) - 1)
    assert Settings(inference_workers=2).intra_op_threads == max(1, (len(os.sched_getaffinity(0)) - 1) // 2)
    assert Settings(inference_workers=2, intra_op_threads=3).intra_op_threads == 3  # set explicitly: kept


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_inversion_rule_and_mnist_centring():
    lenet = Manifest.model_validate(manifest("lenet5"))
    page = np.full((120, 200), 250, np.uint8)
    page[10:40, 150:160] = 20  # a dark stroke near the top-right corner of a white page
    prepared = prepare(decode_image(_png(page), 10**8), lenet)
    assert prepared.inverted
    x = prepared.batch[0, 0]
    assert x.shape == (32, 32) and x[:2].max() == 0  # LeNet's 2-pixel zero border
    ys, xs = np.nonzero(x > 0.2)
    assert ys.max() - ys.min() + 1 in (19, 20, 21)  # longest side scaled to 20 px
    weights = x / x.sum()
    com = (weights.sum(1) @ np.arange(32), weights.sum(0) @ np.arange(32))
    assert abs(com[0] - 15.5) < 1 and abs(com[1] - 15.5) < 1  # centred by mass (28-px centre + 2 pad)
    # The affine map sends the stroke's centre in the page to where it landed in the input.
    sx, sy = prepared.scale
    ox, oy = prepared.offset
    assert abs((155 * sx + ox) - com[1]) < 1.5 and abs((25 * sy + oy) - com[0]) < 1.5

    dark = 255 - page
    assert not prepare(decode_image(_png(dark), 10**8), lenet).inverted


def test_transparent_drawing_is_put_on_white():
    lenet = Manifest.model_validate(manifest("lenet5"))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[20:44, 30:34] = (0, 0, 0, 255)  # black ink on a transparent canvas
    prepared = prepare(decode_image(_png(rgba, "RGBA"), 10**8), lenet)
    assert prepared.inverted and prepared.batch.max() > 0.9


def test_rgb_fit_keeps_aspect_and_pads_with_the_border_colour():
    cam_net = Manifest.model_validate(manifest("cam_net"))
    wide = np.zeros((50, 200, 3), np.uint8)
    wide[...] = (10, 200, 30)
    prepared = prepare(decode_image(_png(wide), 10**8), cam_net)
    x = prepared.batch[0]
    assert x.shape == (3, 64, 64)
    np.testing.assert_allclose(x[:, 0, 0], np.array([10, 200, 30]) / 255, atol=1e-6)  # padding = border colour
    assert prepared.scale == (64 / 200, 16 / 50) and prepared.offset == (0.0, 24.0)


def test_cam_maths():
    rng = np.random.default_rng(0)
    features = rng.random((4, 5, 6)).astype(np.float32)
    weights = np.array([1.0, -2.0, 0.5, 0.0], np.float32)
    manual = sum(w * f for w, f in zip(weights, features))
    np.testing.assert_allclose(cam.class_activation_map(features, weights), manual, atol=1e-5)
    # Grad-CAM with a GAP + linear head (gradient w / HW everywhere) is CAM after normalisation.
    gradients = np.broadcast_to(weights[:, None, None] / 30, features.shape)
    np.testing.assert_allclose(cam.normalise(cam.grad_cam(features, gradients)), cam.normalise(manual), atol=1e-6)
    normalised = cam.normalise(manual)
    assert normalised.min() == 0 and normalised.max() == 1
    assert not cam.normalise(np.full((3, 3), -1.0)).any()
    up = cam.upsample(normalised, 60, 50)
    assert up.shape == (50, 60) and 0 <= up.min() and up.max() <= 1
    identity = cam.to_image_space(up, (60, 50), (1.0, 1.0), (0.0, 0.0))
    np.testing.assert_allclose(identity, up, atol=1e-5)
    colours = cam.colormap(np.array([[0.0, 0.5, 1.0]]))
    assert colours[0, 0].argmax() == 2 and colours[0, 2].argmax() == 0  # blue → red


def test_softmax_and_ranking():
    p = softmax(np.array([1000.0, 1001.0, 999.0]))
    assert abs(p.sum() - 1) < 1e-12 and p.argmax() == 1
    assert ranking(np.array([0.2, 0.5, 0.2, 0.1])).tolist() == [1, 0, 2, 3]  # ties by index
    assert ranking(np.array([[0.1, 0.9], [0.7, 0.3]])).tolist() == [[1, 0], [0, 1]]
