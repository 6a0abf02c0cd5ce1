"""Decoding and preprocessing: the inversion rule and MNIST centring, transparency, the letterbox fit,
reduced-scale decoding of large images, and normalisation shared with training."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedImage
from service.manifest import Manifest
from service.preprocessing import (
    KINDS,
    Placed,
    _lanczos,
    _median,
    _placed,
    _settled,
    batch,
    decode,
    normalise,
    open_image,
    pixels_of,
    place,
    plan_decode,
    prepare,
)
from tests.helpers import encode, manifest, png_chunk, png_declaring


def load(data: bytes, longest: int = 4096) -> Image.Image:
    return decode(open_image(data, 10**8), longest)


def prepared(data: bytes, model: Manifest) -> tuple[np.ndarray, Placed]:
    """An upload's model input (1×C×H×W) and where its image went."""
    (placed,) = place([load(data)], model)
    return batch([placed], model), placed


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_inversion_rule_and_mnist_centring():
    lenet = Manifest.model_validate(manifest("lenet5"))
    page = np.full((120, 200), 250, np.uint8)
    page[10:40, 150:160] = 20  # a dark stroke near the top-right corner of a white page
    inputs, placed = prepared(_png(page), lenet)
    assert placed.inverted
    x = inputs[0, 0]
    assert x.shape == (32, 32) and x[:2].max() == 0  # LeNet's 2-pixel zero border
    ys, xs = np.nonzero(x > 0.2)
    assert ys.max() - ys.min() + 1 in (19, 20, 21)  # longest side scaled to 20 px
    weights = x / x.sum()
    com = (weights.sum(1) @ np.arange(32), weights.sum(0) @ np.arange(32))
    assert abs(com[0] - 15.5) < 1 and abs(com[1] - 15.5) < 1  # centred by mass (28-px centre + 2 pad)
    # The affine map sends the stroke's centre in the page to where it landed in the input.
    sx, sy = placed.scale
    ox, oy = placed.offset
    assert abs((155 * sx + ox) - com[1]) < 1.5 and abs((25 * sy + oy) - com[0]) < 1.5

    dark = 255 - page
    assert not place([load(_png(dark))], lenet)[0].inverted


def _crop_box(x: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(x > 0.2)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def test_a_photo_with_uneven_light_and_noise_is_cropped_to_the_digit_not_the_shading():
    lenet = Manifest.model_validate(manifest("lenet5"))
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:200, 0:200]
    page = 150 + 0.45 * xs - 0.2 * ys + rng.normal(0, 8, (200, 200))  # lit from one side, grainy
    page[60:140, 120:130] -= 110  # a dark "1" off to the right
    inputs, placed = prepared(_png(page.clip(0, 255).astype(np.uint8)), lenet)
    x = inputs[0, 0]
    assert placed.inverted
    assert _crop_box(x)[0] in (19, 20, 21)  # the stroke, 80 px tall, scaled to 20: the shading is not ink
    assert (x > 0.2).sum() < 80  # a thin bar, not a speckled square
    sx, sy = placed.scale
    ox, oy = placed.offset
    assert abs((100 * sy + oy) - 15.5) < 1.5  # the stroke's centre lands at the centre


def test_light_ink_on_a_mid_grey_page_and_a_digit_touching_the_frame():
    lenet = Manifest.model_validate(manifest("lenet5"))
    page = np.full((64, 64), 120, np.uint8)
    page[5:59, 28:36] = 230  # light ink on grey: polarity from the ink, not from the page's level
    assert not place([load(_png(page))], lenet)[0].inverted
    full = np.full((64, 64), 255, np.uint8)
    full[:, 24:40] = 0  # dark ink from the top edge to the bottom one (a full-frame crop)
    inputs, placed = prepared(_png(full), lenet)
    assert placed.inverted and _crop_box(inputs[0, 0])[0] in (19, 20, 21)


def test_a_blank_page_stays_blank():
    lenet = Manifest.model_validate(manifest("lenet5"))
    noise = (200 + np.random.default_rng(1).normal(0, 6, (80, 80))).clip(0, 255).astype(np.uint8)
    assert prepare([load(_png(noise))], lenet).max() == 0


def test_images_fitted_together_come_out_as_each_alone_to_the_bit():
    """A batch's images of one size go through the MNIST fit as one stack: each must come out exactly as it does
    alone, whatever its neighbours (flat or uneven page, dark or light ink, blank), and a batch of mixed sizes
    keeps its order."""
    lenet = Manifest.model_validate(manifest("lenet5"))
    rng = np.random.default_rng(5)
    drawing = np.zeros((40, 40), np.uint8)
    drawing[8:32, 18:23] = 255  # light ink on a flat black page
    on_paper = np.full((40, 40), 245, np.uint8)
    on_paper[5:35, 10:14] = 30  # dark ink on a flat white page
    shaded = 140 + 1.5 * np.mgrid[0:40, 0:40][1] + rng.normal(0, 6, (40, 40))  # light from one side, grain
    shaded[10:30, 20:26] -= 100
    blank = np.full((40, 40), 128, np.uint8)
    small = np.zeros((28, 28), np.uint8)
    small[4:24, 12:16] = 200
    pages = (drawing, on_paper, shaded, blank, small, on_paper, drawing)
    images = [Image.fromarray(page.clip(0, 255).astype(np.uint8)) for page in pages]
    together = place(images, lenet)
    for image, placed in zip(images, together, strict=True):
        (alone,) = place([image], lenet)
        np.testing.assert_array_equal(placed.content, alone.content)
        assert (placed.scale, placed.offset, placed.inverted) == (alone.scale, alone.offset, alone.inverted)
    assert [placed.inverted for placed in together[:3]] == [False, True, True]
    assert together[3].content.max() == 0 and together[0].content.max() > 0


def test_transparent_drawing_is_put_on_white():
    lenet = Manifest.model_validate(manifest("lenet5"))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[20:44, 30:34] = (0, 0, 0, 255)  # black ink on a transparent canvas
    inputs, placed = prepared(_png(rgba, "RGBA"), lenet)
    assert placed.inverted and inputs.max() > 0.9


def test_letterbox_keeps_aspect_and_pads_with_the_border_colour():
    cam_net = Manifest.model_validate(manifest("cam_net"))
    wide = np.zeros((50, 200, 3), np.uint8)
    wide[...] = (10, 200, 30)
    inputs, placed = prepared(_png(wide), cam_net)
    x = inputs[0]
    assert x.shape == (3, 64, 64)
    np.testing.assert_allclose(x[:, 0, 0], np.array([10, 200, 30]) / 255, atol=1e-6)  # padding = border colour
    assert placed.scale == (64 / 200, 16 / 50) and placed.offset == (0.0, 24.0)


def test_an_image_of_the_models_size_goes_in_pixel_for_pixel():
    """A canvas already 64×64 skips the resize-and-pad: the input is its exact pixels and the geometry the
    identity, as the resize-and-pad would give, so heatmaps land on the same pixels."""
    cam_net = Manifest.model_validate(manifest("cam_net"))
    canvas = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    inputs, placed = prepared(_png(canvas), cam_net)
    np.testing.assert_array_equal(inputs[0], canvas.transpose(2, 0, 1) * np.float32(1 / 255))
    assert placed.scale == (1.0, 1.0) and placed.offset == (0.0, 0.0)


def test_every_shipped_kind_is_known_and_an_unknown_one_is_refused():
    data = manifest("lenet5")
    assert {Manifest.model_validate(manifest(name)).preprocessing.kind for name in ("lenet5", "cam_net")} <= set(KINDS)
    data["preprocessing"]["kind"] = "sepia"
    with pytest.raises(ValueError, match="unknown preprocessing kind 'sepia'"):
        Manifest.model_validate(data)


def test_normalise_places_and_scales_like_training():
    lenet = Manifest.model_validate(manifest("lenet5"))
    pixels = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 1, 28, 28).astype(np.uint8)
    batch = normalise(pixels, lenet.preprocessing, (32, 32))
    assert batch.shape == (2, 1, 32, 32) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[:, :, 2:30, 2:30], pixels / 255, atol=1e-7)
    assert not batch[:, :, :2].any() and not batch[:, :, :, 30:].any()


def test_large_jpeg_decodes_at_reduced_scale_and_large_images_shrink():
    photo = encode(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8), "JPEG", quality=70)
    image = open_image(photo, 10**8)
    assert plan_decode(image, 1024) == 2000 * 1500  # decoded at 1/2 in the DCT (keeping ≥ 1024 px): 4× fewer pixels
    assert decode(image, 1024).size == (1024, 768)
    png = _png(np.zeros((3000, 4000), np.uint8))
    image = open_image(png, 10**8)
    assert plan_decode(image, 1024) == 4000 * 3000  # a PNG has no cheaper decode: it is counted in full
    assert decode(image, 1024).size == (1024, 768)


def test_refusals_before_and_during_decoding():
    with pytest.raises(InvalidImage, match="empty"):
        open_image(b"", 10**8)
    with pytest.raises(UnsupportedImage):
        open_image(b"%PDF-1.7", 10**8)
    with pytest.raises(PayloadTooLarge, match="100000×100000"):
        open_image(png_declaring(100_000, 100_000), 10**8)
    # Ancillary chunks too short for what they declare make Pillow raise ValueError: a 422, not a 500.
    for chunk in (png_chunk(b"pHYs", b"\x01"), png_chunk(b"gAMA", b"\x01"), png_chunk(b"sRGB", b"")):
        with pytest.raises(InvalidImage):
            load(png_declaring(8, 8, chunk))


@pytest.mark.parametrize("count", [1, 2, 111, 112, 256])
def test_the_page_fits_median_is_numpys_to_the_bit(count):
    """The page plane's robust fit uses its own median (np.median's overhead was half the fit's time): it must
    give np.median's exact value, odd and even counts alike, or the service would no longer feed the models
    what they were measured on."""
    rng = np.random.default_rng(count)
    for values in (rng.normal(128, 40, count), rng.integers(0, 256, count).astype(np.float64)):
        assert _median(values) == float(np.median(values))


def test_the_speck_filter_keeps_pixels_with_two_marked_neighbours():
    """The filter's box sum must count exactly the eight neighbours, at the edges too."""
    rng = np.random.default_rng(3)
    for density in (0.05, 0.3, 0.7):
        mask = rng.random((23, 31)) < density
        padded = np.pad(mask, 1).astype(int)
        neighbours = sum(np.roll(np.roll(padded, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                         if dy or dx)[1:-1, 1:-1]
        np.testing.assert_array_equal(_settled(mask), mask & (neighbours >= 2))


@pytest.mark.parametrize("x, y", [(4, 4), (-3, 2), (2, -5), (15, 20), (27, 27), (30, 0), (-20, -20)])
def test_a_digit_placed_over_the_canvas_edge_is_cut_off_as_pillow_pastes_it(x, y):
    tile = np.random.default_rng([x + 50, y + 50]).integers(1, 256, (20, 17), dtype=np.uint8)
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(Image.fromarray(tile), (x, y))
    np.testing.assert_array_equal(_placed(tile, x, y, (28, 28)), np.asarray(canvas))


@pytest.mark.parametrize("mode, shape", [("L", (1, 1)), ("L", (19, 7)), ("RGB", (5, 33)), ("RGB", (64, 64))])
def test_pixels_of_an_image_are_numpys_view_of_it(mode, shape):
    pixels = np.random.default_rng(shape).integers(0, 256, (*shape, 3) if mode == "RGB" else shape, dtype=np.uint8)
    image = Image.fromarray(pixels, mode)
    got = pixels_of(image)
    assert got.dtype == np.uint8 and not got.flags.writeable
    np.testing.assert_array_equal(got, np.asarray(image))


@pytest.mark.parametrize("tile_shape, size", [((20, 16), (16, 20)), ((20, 20), (20, 20)), ((1, 20), (20, 1)),
                                              ((40, 13), (6, 20)), ((7, 5), (20, 14))])
def test_the_digit_is_resized_as_pillows_lanczos_filter_does(tile_shape, size):
    """A tile already of its size skips Pillow, so it must be exactly what Pillow would have given."""
    tile = np.random.default_rng(tile_shape).integers(0, 256, tile_shape, dtype=np.uint8)
    expected = np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(_lanczos(tile, size), expected)
