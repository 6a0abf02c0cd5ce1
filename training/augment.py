"""Scenes: digits as users photograph, scan, draw and print them, made from real MNIST digits and rendered
font glyphs. A digit's ink mask is thinned or thickened, elastically distorted, rotated, sheared, put in
perspective, sometimes brought down to a few pixels and back (an 8×8 scan) or blurred; then it is placed at
any size, from small to filling the frame, on a plain white, grey or black page or on a coloured,
shaded one, in a contrasting ink, with noise and sometimes JPEG artefacts. Batches are made with torch
(the geometry in one ``grid_sample``); the scenes are then uint8 images that go through the service's own
preprocessing, like uploads.

Every choice is drawn from a numpy generator seeded by the caller: the same seed, the same scenes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

WORK = 64  # the working resolution of ink masks
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class SceneStyle:
    """How varied the scenes are. The defaults are what training uses; ``clean`` scenes are the plain
    placed-digit or MNIST look (a light affine jitter only)."""

    canvas: int = 64
    digit_sizes: tuple[float, float] = (0.25, 1.0)  # the digit box's longest side, as a share of the canvas
    stroke: float = 0.5        # chance of a thicker or thinner stroke
    elastic: float = 0.4
    rotation_deg: float = 15.0
    shear: float = 0.25
    perspective: float = 0.3   # chance of a perspective warp
    low_resolution: float = 0.25  # chance of going down to 6–14 px and back up
    blur: float = 0.3
    plain_page: float = 0.4    # white, grey or black page; else a coloured, shaded one
    paper: bool = False        # every page light paper with dark ink (printed digits photographed)
    noise: float = 0.06        # the largest per-pixel noise, on [0, 1]
    jpeg: float = 0.3


def ink_masks(digits: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 N×h×w ink arrays (MNIST digits at 28², glyphs at 64²) → float N×1×WORK×WORK in [0, 1]."""
    parts = []
    for part in digits:
        masks = torch.from_numpy(part).float().div_(255).unsqueeze(1)
        if masks.shape[-1] != WORK:
            masks = F.interpolate(masks, size=(WORK, WORK), mode="bilinear", align_corners=False)
        parts.append(masks)
    return torch.cat(parts)


def _stroke(masks: torch.Tensor, rng: np.random.Generator, chance: float) -> torch.Tensor:
    """Some masks thickened (1–2 px dilation) or thinned (1 px erosion), the rest unchanged."""
    change = rng.random(len(masks)) < chance
    thicker = rng.random(len(masks)) < 0.6
    out = masks.clone()
    for steps, pick in ((1, change & thicker & (rng.random(len(masks)) < 0.6)),
                        (2, change & thicker), (-1, change & ~thicker)):
        index = torch.from_numpy(np.flatnonzero(pick))
        if len(index):
            x = masks[index]
            for _ in range(abs(steps)):
                x = F.max_pool2d(x, 3, 1, 1) if steps > 0 else -F.max_pool2d(-x, 3, 1, 1)
            out[index] = x
    return out


def _grids(n: int, size: int, rng: np.random.Generator, style: SceneStyle) -> torch.Tensor:
    """Sampling grids (N×size×size×2, in the mask's [-1, 1] coordinates) for rotation, shear, scale, an
    optional perspective warp and an optional elastic displacement."""
    angle = np.deg2rad(rng.uniform(-style.rotation_deg, style.rotation_deg, n))
    shear = rng.uniform(-style.shear, style.shear, n)
    sx, sy = rng.uniform(0.85, 1.15, n), rng.uniform(0.85, 1.15, n)
    cos, sin = np.cos(angle), np.sin(angle)
    # output → source: inverse of rotate · shear · scale
    a = np.stack([np.stack([cos / sx, (sin + shear * cos) / sx, np.zeros(n)], 1),
                  np.stack([-sin / sy, (cos - shear * sin) / sy, np.zeros(n)], 1),
                  np.stack([np.zeros(n), np.zeros(n), np.ones(n)], 1)], 1)
    warp = rng.random(n) < style.perspective
    a[:, 2, 0] = np.where(warp, rng.uniform(-0.2, 0.2, n), 0.0)
    a[:, 2, 1] = np.where(warp, rng.uniform(-0.2, 0.2, n), 0.0)
    line = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(line, line, indexing="ij")
    points = torch.stack([x, y, torch.ones_like(x)], -1).reshape(1, -1, 3)
    mapped = points @ torch.from_numpy(a).float().transpose(1, 2)
    grid = (mapped[..., :2] / mapped[..., 2:].clamp_min(0.3)).reshape(n, size, size, 2)
    elastic = torch.from_numpy(rng.random(n) < style.elastic)
    if elastic.any():
        field = torch.from_numpy(rng.normal(0, 1, (n, 2, 5, 5)).astype(np.float32))
        field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)
        strength = torch.from_numpy(rng.uniform(0.03, 0.08, n).astype(np.float32))[:, None, None, None]
        grid = grid + (field * strength).permute(0, 2, 3, 1) * elastic[:, None, None, None]
    return grid


def _low_resolution(masks: torch.Tensor, rng: np.random.Generator, chance: float) -> torch.Tensor:
    """Some masks brought down to 6–14 px (area average) and back up (bilinear): a coarse scan. Half of
    those are binarised first and rounded to 17 levels, as form readers that count the inked pixels of each
    cell store them (UCI's optdigits: 4×4 cells of a 32×32 bitmap)."""
    pick = np.flatnonzero(rng.random(len(masks)) < chance)
    sizes = rng.integers(6, 15, len(pick))
    counted = rng.random(len(pick)) < 0.5
    out = masks.clone()
    for size in np.unique(sizes):
        index = torch.from_numpy(pick[sizes == size])
        count = torch.from_numpy(counted[sizes == size])[:, None, None, None]
        source = torch.where(count, (masks[index] > 0.5).float(), masks[index])
        small = F.interpolate(source, size=(int(size), int(size)), mode="area")
        small = torch.where(count, (small * 16).round() / 16, small)
        out[index] = F.interpolate(small, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    return out


# NIST's character normalisation, which UCI's optdigits (scikit-learn's load_digits) went through (Garris et
# al., "NIST Form-Based Handprint Recognition System", NISTIR 5469, 1994): the slant taken out, the character
# stretched to a 20-wide, 32-high box whatever its shape, centred in a 32×32 bitmap. A "1" comes out as wide
# as a "0"; every character fills the bitmap's height.
NIST_BOX = (20, 32)


def _deslant(digit: np.ndarray) -> np.ndarray:
    """A digit sheared so its ink's second-order moment μ11 is 0 (upright), on a canvas three times as wide."""
    ink = digit.astype(np.float64)
    ys, xs = np.mgrid[:ink.shape[0], :ink.shape[1]]
    mass = ink.sum()
    xc, yc = (ink * xs).sum() / mass, (ink * ys).sum() / mass
    slant = (ink * (xs - xc) * (ys - yc)).sum() / max((ink * (ys - yc) ** 2).sum(), 1e-9)
    h, w = digit.shape
    wide = Image.fromarray(digit).crop((-w, 0, 2 * w, h))
    # output (x, y) samples the input at (x + slant·(y − yc), y)
    return np.asarray(wide.transform(wide.size, Image.Transform.AFFINE, (1, slant, -slant * yc, 0, 1, 0),
                                     Image.Resampling.BILINEAR))


def form_scans(digits: np.ndarray, rng: np.random.Generator, size: int = 64, nist: float = 0.7) -> np.ndarray:
    """uint8 N×h×w ink → N×size×size dark-on-white low-resolution scans, as form readers store digits: the
    digit cropped to its ink and fitted into a bitmap of 4 pixels per cell, binarised, its inked pixels
    counted per 4×4 cell (0–16) and upscaled (bilinear) to fill the frame. A ``nist`` share is normalised
    as NIST's form reader does (``NIST_BOX``: deslanted, stretched to the 20×32 box, 8×8 cells, at times a
    pixel bolder); the rest keep their shape and slant, in 7×7 to 10×10 cells (other scanners)."""
    scans = np.empty((len(digits), size, size), np.uint8)
    for n, digit in enumerate(digits):
        normalised = rng.random() < nist
        grid = 8 if normalised else int(rng.integers(7, 11))
        side = 4 * grid
        source = _deslant(digit) if normalised else digit
        ys, xs = np.nonzero(source > 0.2 * source.max())
        crop = Image.fromarray(source[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
        if normalised:
            shape = (round(side * NIST_BOX[0] / NIST_BOX[1]), side)
        else:
            ratio = side / max(crop.size)
            shape = (max(1, round(crop.width * ratio)), max(1, round(crop.height * ratio)))
        glyph = crop.resize(shape, Image.Resampling.BILINEAR)
        if normalised and rng.random() < 0.3:
            glyph = glyph.filter(ImageFilter.MaxFilter(3))
        bitmap = np.zeros((side, side), np.uint8)
        y0, x0 = (side - glyph.height) // 2, (side - glyph.width) // 2
        bitmap[y0:y0 + glyph.height, x0:x0 + glyph.width] = np.asarray(glyph) > 127
        counts = bitmap.reshape(grid, 4, grid, 4).sum(axis=(1, 3))
        page = Image.fromarray((255 - counts * (255 / 16)).round().astype(np.uint8))
        scans[n] = np.asarray(page.resize((size, size), Image.Resampling.BILINEAR))
    return scans


def _blur(masks: torch.Tensor, rng: np.random.Generator, chance: float) -> torch.Tensor:
    pick = np.flatnonzero(rng.random(len(masks)) < chance)
    if not len(pick):
        return masks
    sigma = float(rng.uniform(0.6, 1.6))
    radius = math.ceil(2 * sigma)
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()
    out = masks.clone()
    x = masks[pick]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))
    out[pick] = x
    return out


def _boxes(masks: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Each mask's tight ink box (x0, y0, x1, y1), x1 / y1 exclusive; the whole mask when it has no ink."""
    ink = masks[:, 0] > threshold
    rows, cols = ink.any(2), ink.any(1)
    size = masks.shape[-1]
    index = torch.arange(size)

    def span(line: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.where(line, index, size).min(1).values
        high = torch.where(line, index, -1).max(1).values + 1
        empty = high <= 0
        return torch.where(empty, 0, low), torch.where(empty, size, high)

    x0, x1 = span(cols)
    y0, y1 = span(rows)
    return torch.stack([x0, y0, x1, y1], 1)


def _paper(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Off-white, slightly tinted paper and near-black ink."""
    page = rng.uniform(0.72, 1.0, (n, 1)) + rng.uniform(-0.04, 0.04, (n, 3))
    ink = rng.uniform(0.0, 0.3, (n, 1)) + rng.uniform(-0.03, 0.03, (n, 3))
    return page.clip(0, 1).astype(np.float32), ink.clip(0, 1).astype(np.float32)


def _contrasting(rng: np.random.Generator, n: int, plain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Page and ink colours (N×3 in [0, 1]) whose luminances differ by at least 0.35."""
    page = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    shade = rng.choice([1.0, 0.78, 0.0, 0.5], n, p=[0.45, 0.2, 0.25, 0.1]).astype(np.float32)
    page[plain] = shade[plain, None]
    ink = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    for _ in range(50):
        bad = np.abs((page - ink) @ LUMINANCE) < 0.35
        if not bad.any():
            break
        ink[bad] = rng.uniform(0, 1, (int(bad.sum()), 3))
    dark_page = page @ LUMINANCE < 0.5
    still = np.abs((page - ink) @ LUMINANCE) < 0.35
    ink[still] = np.where(dark_page[still, None], 1.0, 0.0)
    return page, ink


def scenes(digits: Sequence[np.ndarray], rng: np.random.Generator, style: SceneStyle = SceneStyle(),
           color: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×h×w ink masks (one array or several of different sizes, in order) → uint8
    N×C×canvas×canvas scenes (C = 3, or 1 for gray) and each digit's box in the scene (x0, y0, x1, y1;
    every pixel with ≥ 5 % ink)."""
    masks = ink_masks(digits)
    n, canvas = len(masks), style.canvas
    masks = _stroke(masks, rng, style.stroke)
    masks = F.grid_sample(masks, _grids(n, WORK, rng, style), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    masks = _blur(_low_resolution(masks, rng, style.low_resolution), rng, style.blur)
    # Place the digit: its ink box scaled to a drawn share of the canvas, at a drawn position.
    box = _boxes(masks).float()
    width, height = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    longest = torch.maximum(width, height).clamp_min(1)
    target = torch.from_numpy(rng.uniform(*style.digit_sizes, n).astype(np.float32)) * canvas
    scale = target / longest  # canvas pixels per mask pixel
    out_w, out_h = width * scale, height * scale
    x0 = torch.from_numpy(rng.random(n).astype(np.float32)) * (canvas - out_w).clamp_min(0)
    y0 = torch.from_numpy(rng.random(n).astype(np.float32)) * (canvas - out_h).clamp_min(0)
    # canvas pixel centre c ↦ mask coordinate box0 + (c − x0) / scale, in grid_sample's [-1, 1] units
    line = torch.arange(canvas, dtype=torch.float32) + 0.5
    mx = box[:, 0, None] + (line[None] - x0[:, None]) / scale[:, None]
    my = box[:, 1, None] + (line[None] - y0[:, None]) / scale[:, None]
    gx = (mx / WORK * 2 - 1)[:, None, :].expand(n, canvas, canvas)
    gy = (my / WORK * 2 - 1)[:, :, None].expand(n, canvas, canvas)
    grid = torch.stack([gx, gy], -1)
    alpha = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    boxes = _boxes(alpha[:, None], threshold=0.05)
    # Page and ink.
    plain = rng.random(n) < (1.0 if style.paper else style.plain_page)
    page, ink = _paper(rng, n) if style.paper else _contrasting(rng, n, plain)
    ramp = torch.linspace(-0.5, 0.5, canvas)
    lit = np.full(n, 0.4, np.float32) if style.paper else (~plain).astype(np.float32)  # uneven light on paper
    tilt = torch.from_numpy(rng.uniform(-0.25, 0.25, (n, 2)).astype(np.float32) * lit[:, None])
    shading = tilt[:, 0, None, None] * ramp[None, None, :] + tilt[:, 1, None, None] * ramp[None, :, None]
    page_t = torch.from_numpy(page)[:, :, None, None] + shading[:, None]
    image = page_t * (1 - alpha[:, None]) + torch.from_numpy(ink)[:, :, None, None] * alpha[:, None]
    sigma = torch.from_numpy(rng.uniform(0, style.noise, n).astype(np.float32))[:, None, None, None]
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    image = image + torch.randn(image.shape, generator=generator) * sigma
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if not color:
        pixels = np.round(np.einsum("nchw,c->nhw", pixels.astype(np.float32), LUMINANCE))[:, None].astype(np.uint8)
    for index in np.flatnonzero(rng.random(n) < style.jpeg):
        pixels[index] = _jpeg(pixels[index], int(rng.integers(30, 90)))
    return pixels, boxes.numpy()


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """One C×H×W image through a JPEG encode and decode."""
    image = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer))
    return decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
