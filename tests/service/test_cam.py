"""CAM / Grad-CAM from the service against a PyTorch autograd reference, and whether the heatmaps
point at the digit on the placed-digits test split."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from service.manifest import Manifest
from service.preprocessing import prepare
from tests.helpers import ARTIFACTS, MODELS, SHIPPED, decoded, encode, manifest, upload
from training.export import load_exported


def torch_heatmap(model: torch.nn.Module, batch: np.ndarray, class_index: int, method: str) -> np.ndarray:
    """The reference: the same formulas with torch autograd, on weights read back from model.onnx."""
    maps = model.features(torch.from_numpy(batch)).detach().requires_grad_(True)
    logits = model.head(maps)
    if method == "cam":
        weights = model.cam_weights()[0][class_index]
        raw = torch.einsum("k,khw->hw", weights, maps[0])
    else:
        (grad,) = torch.autograd.grad(logits[0, class_index], maps)
        raw = (grad[0].mean(dim=(1, 2))[:, None, None] * maps[0]).sum(0)
    cam = torch.relu(raw)
    span = cam.max() - cam.min()
    return ((cam - cam.min()) / span if span > 0 else torch.zeros_like(cam)).detach().numpy()


def sample_images(name: str, mnist_test, placed_test) -> list[bytes]:
    data = placed_test if manifest(name)["metrics"]["dataset"] == "placed" else mnist_test
    return [encode(data.images[i]) for i in (0, 137, 402)]


@pytest.mark.parametrize("name", SHIPPED)
def test_heatmaps_equal_the_torch_reference(client, mnist_test, placed_test, name):
    reference_model = load_exported(MODELS / name / "1")
    model_manifest = Manifest.model_validate(manifest(name))
    for data in sample_images(name, mnist_test, placed_test):
        batch = prepare([decoded(data)], model_manifest)
        for method in (["cam", "gradcam"] if model_manifest.heatmaps.cam else ["gradcam"]):
            for requested in (None, "3"):
                query = f"method={method}" + (f"&class={requested}" if requested else "")
                body = client.post(f"/models/{name}/cam?{query}", files=upload(data)).json()
                assert body["method"] == method
                if requested:
                    assert body["class_index"] == 3 and body["label"] == "3"
                else:
                    assert body["class_index"] == body["predicted"]["index"]
                expected = torch_heatmap(reference_model, batch, body["class_index"], method)
                got = np.array(body["heatmap"])
                assert got.shape == expected.shape == tuple(body["feature_size"])
                assert np.abs(got - expected).max() <= 1e-4
                upsampled = np.array(body["heatmap_input"])
                assert upsampled.shape == tuple(body["input_size"]) and 0 <= upsampled.min() and upsampled.max() <= 1


def test_default_method_is_the_best_supported(client, placed_test, mnist_test):
    assert client.post("/models/cam_net/cam", files=upload(encode(placed_test.images[0]))).json()["method"] == "cam"
    digit = upload(encode(mnist_test.images[0, 0]))
    assert client.post("/models/lenet5/cam", files=digit).json()["method"] == "gradcam"


def test_png_and_overlay_formats(client, placed_test):
    canvas = np.asarray(Image.fromarray(placed_test.images[5].transpose(1, 2, 0)).resize((200, 150)))
    for fmt in ("png", "overlay"):
        response = client.post(f"/models/cam_net/cam?format={fmt}&class=2", files=upload(encode(canvas)))
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.headers["x-class-index"] == "2" and response.headers["x-method"] == "cam"
        picture = Image.open(io.BytesIO(response.content))
        assert picture.size == (200, 150) and picture.mode == "RGB"  # the input image's own size

    def picture(query: str) -> np.ndarray:
        answer = client.post(f"/models/cam_net/cam?{query}", files=upload(encode(canvas)))
        return np.asarray(Image.open(io.BytesIO(answer.content)))

    plain, faint = picture("format=png"), picture("format=overlay&opacity=0")
    assert np.abs(faint.astype(int) - canvas.astype(int)).max() <= 1  # opacity 0: the image itself
    assert not np.array_equal(plain, faint)


def localisation_rates(client, name: str, placed_test, count: int) -> dict[str, float]:
    """How often the heatmap's peak is on the digit: the peak pixel of the map upsampled to the input
    inside the digit's box; that pixel at most one feature cell away from the box (the pointing game's
    tolerance, scaled to the map); and the peak cell of the map at its own resolution overlapping the box."""
    pixel = near = cell = 0
    for image, (x0, y0, x1, y1) in zip(placed_test.images[:count], placed_test.boxes[:count], strict=True):
        body = client.post(f"/models/{name}/cam", files=upload(encode(image))).json()
        heat = np.array(body["heatmap_input"])
        y, x = np.unravel_index(int(heat.argmax()), heat.shape)
        pixel += bool(x0 <= x < x1 and y0 <= y < y1)
        cells = np.array(body["heatmap"])
        cy, cx = np.unravel_index(int(cells.argmax()), cells.shape)
        h, w = heat.shape[0] / cells.shape[0], heat.shape[1] / cells.shape[1]
        near += max(x0 - x, x - (x1 - 1), y0 - y, y - (y1 - 1), 0) <= max(h, w)
        cell += bool(cx * w < x1 and (cx + 1) * w > x0 and cy * h < y1 and (cy + 1) * h > y0)
    return {"peak_pixel_in_box": pixel / count, "peak_pixel_within_one_cell_of_box": near / count,
            "peak_cell_overlaps_box": cell / count}


@pytest.mark.slow
def test_heatmap_peaks_fall_on_the_digit(client, placed_test):
    rates = {name: localisation_rates(client, name, placed_test, 500)
             for name in SHIPPED if manifest(name)["metrics"]["dataset"] == "placed"}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "localisation.json").write_text(json.dumps(rates, indent=2))
    print("heatmap localisation on the 500 placed-digit test images:", json.dumps(rates))
    # The target: cam_net's peak pixel inside the digit's box for >= 90 % of the test canvases
    # (100 % measured, trained with the box-attention term). The label-only GAP nets keep their measured
    # levels as regression floors (README "Do the heatmaps point at the digit?").
    assert rates["cam_net"]["peak_pixel_in_box"] >= 0.90
    assert rates["resnet_small"]["peak_pixel_in_box"] >= 0.80
    assert rates["inception_small"]["peak_pixel_within_one_cell_of_box"] >= 0.95
