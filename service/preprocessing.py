"""Upload bytes → the model's input tensor, following the model's manifest.

Decoding uses Pillow (formats, EXIF orientation, GIF frames, bomb checks: a well-kept library for a
job full of edge cases). Geometry is tracked as an affine map ``model = image · scale + offset`` so a
heatmap computed on the model's input can be drawn back onto the user's own image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from .errors import InvalidImage, InvalidParameter, PayloadTooLarge, UnsupportedImage
from .manifest import Manifest

ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "WEBP": "WebP", "GIF": "GIF"}
ACCEPTED = "PNG, JPEG, BMP, WebP or GIF"
MNIST_BOX, MNIST_CANVAS = 20, 28  # MNIST: digit fitted into 20×20, centred by mass on 28×28
LIGHT_BACKGROUND = 127.5

# Pillow's own bomb check raises at open() without saying the size; ours (max_image_pixels, checked
# on the header before any decoding) replaces it and tells the user what was too large.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Prepared:
    batch: np.ndarray          # 1 × C × H × W float32, ready for ONNX Runtime
    image: Image.Image         # the decoded, upright upload (gray or RGB, alpha flattened on white), for overlays
    scale: tuple[float, float]   # model_xy = image_xy * scale + offset
    offset: tuple[float, float]
    inverted: bool = False


def image_from_form(content_type: str, body: bytes) -> bytes:
    """The ``file`` field of a multipart/form-data body.

    python-multipart (the parser FastAPI uses) parses it in the inference worker rather than FastAPI on
    the event loop: that parse was half of what the server process spent per request."""
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidParameter(f"send the image as multipart/form-data, in the field 'file'; got Content-Type {content_type or 'none'!r}")
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    header = [b"", b""]

    def on_header_end() -> None:
        parts[-1][0][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, [])),
        "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
        "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
        "on_header_end": on_header_end,
        "on_part_data": lambda data, start, end: parts[-1][1].append(data[start:end]),
    }
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidParameter(f"the multipart/form-data body could not be parsed: {exc}") from None
    names = []
    for headers, chunks in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("latin-1")
        if name == "file":
            if b"filename" not in disposition and b"filename*" not in disposition:
                raise InvalidParameter("the form field 'file' must be a file upload (a part with a filename), not a text value")
            return b"".join(chunks)
        names.append(name)
    raise InvalidParameter("the form has no field 'file'" + (f" (it has {', '.join(map(repr, names))})" if names else "")
                           + "; send the image as the multipart field 'file'")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an upload, rejecting empty, foreign, oversized (before decoding) and corrupt files."""
    if not data:
        raise InvalidImage(f"the uploaded file is empty (0 bytes); send a {ACCEPTED} image")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise UnsupportedImage(f"the upload is not an image that can be read; send a {ACCEPTED} image") from None
    except OSError as exc:  # a header cut short
        raise InvalidImage(f"the file could not be read as an image (truncated or corrupt): {exc}") from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"{image.format} images are not accepted; send a {ACCEPTED} image")
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    try:
        image.seek(0)  # animated GIF / WebP: the first frame
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the {ACCEPTED_FORMATS[image.format]} file could not be decoded (truncated or corrupt): {exc}") from None


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Gray or RGB on white: a transparent drawing is a dark digit on a light page."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, rgba).convert("RGB")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _border_mean(pixels: np.ndarray) -> np.ndarray:
    edges = [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]
    return np.concatenate([e.reshape(-1, *pixels.shape[2:]) for e in edges]).mean(axis=0)


def _fit(image: Image.Image, width: int, height: int, fill: int | tuple[int, ...]) -> tuple[Image.Image, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio to fit width × height, centre it, pad with ``fill``."""
    ratio = min(width / image.width, height / image.height)
    new_w, new_h = max(1, round(image.width * ratio)), max(1, round(image.height * ratio))
    canvas = Image.new(image.mode, (width, height), fill)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR), (x0, y0))
    return canvas, (new_w / image.width, new_h / image.height), (float(x0), float(y0))


def _mnist_style(gray: Image.Image) -> tuple[Image.Image, tuple[float, float], tuple[float, float], bool]:
    """MNIST's own recipe: light digit on black, cropped to the ink, longest side 20 px, centred by
    mass on 28×28. Images with a light background (border mean above mid-grey) are inverted first."""
    pixels = np.asarray(gray, np.float32)
    background = float(_border_mean(pixels))
    inverted = background > LIGHT_BACKGROUND
    if inverted:
        pixels, background = 255 - pixels, 255 - background
    ink = np.clip(pixels - background, 0, None)
    if ink.max() < 1:  # blank: nothing to centre
        canvas, scale, offset = _fit(Image.fromarray(ink.astype(np.uint8)), MNIST_CANVAS, MNIST_CANVAS, 0)
        return canvas, scale, offset, inverted
    ink *= 255 / ink.max()
    ys, xs = np.nonzero(ink > 0.2 * 255)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    ratio = MNIST_BOX / max(x1 - x0, y1 - y0)
    new_w, new_h = max(1, round((x1 - x0) * ratio)), max(1, round((y1 - y0) * ratio))
    digit = Image.fromarray(ink[y0:y1, x0:x1].astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    weights = np.asarray(digit, np.float64)
    total = weights.sum() or 1.0
    com_y = (weights.sum(axis=1) @ np.arange(new_h)) / total
    com_x = (weights.sum(axis=0) @ np.arange(new_w)) / total
    px, py = round(MNIST_CANVAS / 2 - 0.5 - com_x), round(MNIST_CANVAS / 2 - 0.5 - com_y)
    canvas = Image.new("L", (MNIST_CANVAS, MNIST_CANVAS), 0)
    canvas.paste(digit, (px, py))
    scale = (new_w / (x1 - x0), new_h / (y1 - y0))
    return canvas, scale, (px - x0 * scale[0], py - y0 * scale[1]), inverted


def prepare(image: Image.Image, manifest: Manifest) -> Prepared:
    """Decoded image → normalised 1×C×H×W batch, per the manifest's preprocessing."""
    spec, prep = manifest.input, manifest.preprocessing
    page = _flatten_alpha(image)
    mode = "L" if prep.color == "gray" else "RGB"
    work = page if page.mode == mode else page.convert(mode)
    inverted = False
    if prep.mnist_style:
        content, scale, offset, inverted = _mnist_style(work)
    else:
        fill = tuple(int(v) for v in np.atleast_1d(_border_mean(np.asarray(work))).round())
        content, scale, offset = _fit(work, prep.content_size[1], prep.content_size[0], fill if len(fill) > 1 else fill[0])
    std = np.asarray(prep.std, np.float32)[:, None, None]
    shift = np.asarray(prep.mean, np.float32)[:, None, None] / std
    # Zero-pad to the input size (LeNet-5's 32×32 around a 28×28 digit), normalising padding and content
    # alike; the content is normalised straight from its 8-bit pixels into its place in the batch.
    batch = np.empty((1, spec.channels, spec.height, spec.width), np.float32)
    batch[0] = -shift
    y0, x0 = (spec.height - content.height) // 2, (spec.width - content.width) // 2
    place = batch[0, :, y0:y0 + content.height, x0:x0 + content.width]
    pixels = np.asarray(content).reshape(content.height, content.width, spec.channels).transpose(2, 0, 1)
    np.multiply(pixels, np.float32(prep.scale) / std, out=place)
    place -= shift
    return Prepared(batch, page, scale, (offset[0] + x0, offset[1] + y0), inverted)
