"""One model version inside a worker: costly uploads are deferred unread, explanations come back small
and in one piece, and large images are reduced before anything else is done with them."""

from __future__ import annotations

import io
import pickle

import httpx
import numpy as np
import pytest
from PIL import Image

from service.manifest import Manifest
from service.worker.model import WorkerModel
from service.worker.protocol import (
    Classify,
    Deferred,
    Explain,
    Explained,
    HeatmapArrays,
    HeatmapPicture,
    Upload,
    Version,
)
from tests.helpers import EXAMPLES, MODELS, encode, large_png, upload

KEY = ("cam_net", "1")


@pytest.fixture(scope="module")
def cam_net(settings) -> WorkerModel:
    directory = MODELS / "cam_net" / "1"
    return WorkerModel.load(Version(directory, Manifest.model_validate_json((directory / "manifest.json").read_text())),
                            settings, heavy=False)


def form(data: bytes) -> Upload:
    request = httpx.Request("POST", "http://test/", files=upload(data))
    return Upload(request.read(), request.headers["content-type"])


def test_costly_uploads_are_deferred_without_decoding_and_decoded_when_asked(cam_net, settings):
    png = large_png(3000, 3000)
    big, photo = form(png), form(encode(np.full((600, 800, 3), 128, np.uint8), "JPEG", quality=95))
    small = form(encode(np.zeros((64, 64, 3), np.uint8)))
    reply = cam_net.classify(Classify(KEY, (big, small), light_only=True))
    assert reply.items[0] == Deferred(pixels=3000 * 3000, bytes=len(png))  # read up to its header only
    assert len(reply.probabilities) == 1  # the small one still ran
    # A JPEG is decoded at reduced scale first: 800×600 needs no reduction at working_max_side 1024, so its
    # pixels are 480,000 > light_pixels: deferred too.
    assert isinstance(cam_net.classify(Classify(KEY, (photo,), light_only=True)).items[0], Deferred)
    heavy = cam_net.classify(Classify(KEY, (big,), light_only=False))
    assert heavy.probabilities.shape == (1, 10)


def test_a_batch_keeps_each_uploads_outcome_in_its_place_whatever_stage_it_failed_at(cam_net):
    """The batch is prepared stage by stage (forms and headers, then decoding, then preprocessing): each upload
    that fails at any stage gets its own error in its own place, and each good one its own row."""
    placed = (EXAMPLES / "placed_3.png").read_bytes()
    noise = encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    cut = encode(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8))[:-200]  # its header reads fine
    uploads = (form(placed), Upload(b"--x\r\nnot a form", "multipart/form-data; boundary=x"),
               form(b"not an image"), form(cut), form(large_png(3000, 3000)), form(noise))
    reply = cam_net.classify(Classify(KEY, uploads, light_only=True))
    statuses = [getattr(item, "status", type(item).__name__) for item in reply.items]
    assert statuses == ["UploadRow", 422, 415, 422, "Deferred", "UploadRow"]
    assert "could not be parsed" in str(reply.items[1]) and "truncated or corrupt" in str(reply.items[3])
    for item, data in ((reply.items[0], placed), (reply.items[5], noise)):
        alone = cam_net.classify(Classify(KEY, (form(data),), light_only=True))
        assert np.allclose(reply.probabilities[item.row], alone.probabilities[0], atol=1e-6)
    assert reply.ranking[reply.items[0].row][0] == 3  # placed_3 is a 3


def test_an_upload_the_preprocessing_fails_on_fails_alone(cam_net, monkeypatch):
    """A batch's decoded images are placed in one call; if that raises, each is placed alone, so that only the
    upload whose image raised gets an error (here a stand-in fault for images 65 px wide) and the others their rows."""
    from service.worker import model

    def place(images, manifest):
        if any(image.width == 65 for image in images):
            raise ValueError("a fault in the preprocessing")
        return real_place(images, manifest)

    real_place = model.place
    monkeypatch.setattr(model, "place", place)
    placed = (EXAMPLES / "placed_3.png").read_bytes()
    odd = encode(np.zeros((64, 65, 3), np.uint8))
    reply = cam_net.classify(Classify(KEY, (form(placed), form(odd), form(placed)), light_only=True))
    statuses = [getattr(item, "status", type(item).__name__) for item in reply.items]
    assert statuses == ["UploadRow", 422, "UploadRow"]
    assert "a fault in the preprocessing" in str(reply.items[1])
    assert reply.ranking[reply.items[0].row][0] == reply.ranking[reply.items[2].row][0] == 3


@pytest.mark.parametrize("format", ["json", "png", "overlay"])
def test_an_explanation_crosses_back_small_whatever_the_upload(cam_net, settings, format):
    job = Explain(KEY, form(large_png(6000, 6000, "RGB")), None, "cam", format, 0.5, light_only=False)
    reply = cam_net.explain(job)
    assert isinstance(reply, Explained)
    size = len(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    if format == "json":
        assert isinstance(reply.heatmap, HeatmapArrays) and reply.heatmap.feature_map.shape == (16, 16)
        assert size < 64 * 1024  # the maps and the probabilities: no decoded image, no feature maps
    else:
        assert isinstance(reply.heatmap, HeatmapPicture)
        assert reply.heatmap.size == (settings.overlay_max_side, settings.overlay_max_side)
        assert reply.heatmap.source_size == (6000, 6000)
        assert Image.open(io.BytesIO(reply.heatmap.png)).size == reply.heatmap.size
        assert size < 1024 * 1024  # a PNG of at most overlay_max_side², nothing else
    assert set(reply.timings) >= {"decode", "preprocess", "run", "heatmap"}


def test_light_explanations_run_where_they_land_and_heavy_ones_are_deferred(cam_net):
    small, large = form(encode(np.zeros((64, 64, 3), np.uint8))), form(large_png(2000, 2000))
    light = cam_net.explain(Explain(KEY, small, 3, "gradcam", "json", 0.5, light_only=True))
    assert isinstance(light, Explained) and light.class_index == 3
    assert isinstance(cam_net.explain(Explain(KEY, large, None, "cam", "png", 0.5, light_only=True)), Deferred)
