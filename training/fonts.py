"""Printed digits: every digit of every Latin text font Debian's font packages install, rendered once into a
glyph set that ships in the repository (``training/assets/printed_digits.npz``), so training and tests need
no fonts installed.

Fonts are grouped by *design lineage*, not by file: TeX Gyre Heros, Nimbus Sans and FreeSans are all
Helvetica, and a model that saw one has seen them all. Whole lineages go to training, to validation
(thresholds, calibration) or to the held-out test that the external evaluation reports; no lineage is in two.

``training fonts`` rebuilds the set from the installed fonts (Debian packages: fonts-dejavu-core,
fonts-dejavu-extra, fonts-liberation, fonts-liberation2, fonts-freefont-ttf, fonts-noto-core,
fonts-urw-base35, fonts-texgyre, fonts-crosextra-carlito, fonts-crosextra-caladea, fonts-roboto,
fonts-open-sans, fonts-lato, fonts-linuxlibertine, fonts-cantarell, fonts-hack, fonts-go, fonts-ebgaramond,
fonts-comic-neue, fonts-lmodern, fonts-inconsolata).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ASSETS = Path(__file__).resolve().parent / "assets"
GLYPHS = ASSETS / "printed_digits.npz"
SIZE = 64          # a glyph's canvas, pixels
GLYPH_HEIGHT = 56  # the tallest digit's ink height in that canvas

# Family-name prefixes of each lineage (the first match wins).
LINEAGES: dict[str, tuple[str, ...]] = {
    "Helvetica": ("Nimbus Sans", "TeX Gyre Heros", "FreeSans", "Liberation Sans"),
    "Times": ("Nimbus Roman", "TeX Gyre Termes", "FreeSerif", "Liberation Serif"),
    "Courier": ("Nimbus Mono", "TeX Gyre Cursor", "FreeMono", "Liberation Mono"),
    "Palatino": ("P052", "TeX Gyre Pagella"),
    "Century Schoolbook": ("C059", "TeX Gyre Schola"),
    "Bookman": ("URW Bookman", "TeX Gyre Bonum"),
    "Avant Garde": ("URW Gothic", "TeX Gyre Adventor"),
    "Zapf Chancery": ("Z003", "TeX Gyre Chorus"),
    "Computer Modern": ("Latin Modern",),
    "Bitstream Vera": ("DejaVu", "Hack"),
    "Open Sans": ("Open Sans", "Noto Sans"),
    "Noto Serif": ("Noto Serif",),
    "Roboto": ("Roboto",),
    "Lato": ("Lato", "Carlito"),
    "Cantarell": ("Cantarell",),
    "Caladea": ("Caladea",),
    "Libertine": ("Linux Libertine", "Linux Biolinum"),
    "Garamond": ("EB Garamond",),
    "Comic": ("Comic Neue",),
    "Go": ("Go",),
    "Inconsolata": ("Inconsolata",),
}
# Serif, sans, monospaced, casual and calligraphic on each side; regular to bold, upright and oblique.
SPLITS = {
    "test": ("Palatino", "Bookman", "Libertine", "Lato", "Go", "Comic"),
    "val": ("Caladea", "Inconsolata", "Cantarell"),
}
NOT_TEXT = ("Symbol", "D050000L", "Dingbat", "Music", "Awesome", "Math")


def lineage_of(family: str) -> str | None:
    if any(word in family for word in NOT_TEXT):
        return None
    for lineage, prefixes in LINEAGES.items():
        if any(family == p or family.startswith(p + " ") for p in prefixes):
            return lineage
    return None


def split_of(lineage: str) -> str:
    return next((split for split, lineages in SPLITS.items() if lineage in lineages), "train")


@dataclass(frozen=True)
class Face:
    family: str
    style: str
    file: str
    lineage: str


def installed_faces() -> list[Face]:
    """Every installed TrueType / OpenType face of a known lineage (fontconfig's list)."""
    listing = subprocess.run(["fc-list", "--format", "%{family[0]}|%{style[0]}|%{file}\n"], capture_output=True,
                             text=True, check=True).stdout
    faces = []
    for line in sorted(set(listing.splitlines())):
        family, style, file = line.split("|", 2)
        lineage = lineage_of(family)
        if lineage and file.endswith((".ttf", ".otf")):
            faces.append(Face(family, style, file, lineage))
    return faces


def render(face: Face) -> np.ndarray | None:
    """The ten digits as uint8 ink masks (10 × SIZE × SIZE), each scaled so a digit is GLYPH_HEIGHT tall and
    centred; None when the face has no distinct digits (a symbol font behind a text name)."""
    font = ImageFont.truetype(face.file, 120)
    crops = []
    for digit in "0123456789":
        page = Image.new("L", (240, 240), 0)
        ImageDraw.Draw(page).text((60, 40), digit, fill=255, font=font)
        box = page.getbbox()
        if box is None:
            return None
        crops.append(page.crop(box))
    tallest = max(crop.height for crop in crops)
    glyphs = np.zeros((10, SIZE, SIZE), np.uint8)
    for index, crop in enumerate(crops):
        ratio = min(GLYPH_HEIGHT / tallest, (SIZE - 4) / crop.width)
        resized = crop.resize((max(1, round(crop.width * ratio)), max(1, round(crop.height * ratio))),
                              Image.Resampling.LANCZOS)
        x0, y0 = (SIZE - resized.width) // 2, (SIZE - resized.height) // 2
        glyphs[index, y0:y0 + resized.height, x0:x0 + resized.width] = np.asarray(resized)
    distinct = len({glyph.tobytes() for glyph in glyphs}) == 10
    return glyphs if distinct else None


def build(out: Path = GLYPHS) -> dict[str, int]:
    """Render every installed face into ``out`` (with a JSON list of the faces beside it); counts per split."""
    faces, rendered = [], []
    for face in installed_faces():
        glyphs = render(face)
        if glyphs is not None:
            faces.append(face)
            rendered.append(glyphs)
    out.parent.mkdir(parents=True, exist_ok=True)
    splits = np.array([split_of(face.lineage) for face in faces])
    np.savez_compressed(out, glyphs=np.stack(rendered), splits=splits,
                        lineages=np.array([face.lineage for face in faces]))
    listing = [{"family": f.family, "style": f.style, "file": Path(f.file).name, "lineage": f.lineage,
                "split": split_of(f.lineage)} for f in faces]
    out.with_suffix(".json").write_text(json.dumps(listing, indent=1) + "\n")
    return {split: int((splits == split).sum()) for split in ("train", "val", "test")}


@lru_cache(maxsize=4)
def glyphs(split: str) -> np.ndarray:
    """uint8 faces × 10 × SIZE × SIZE ink masks of one split's lineages."""
    data = np.load(GLYPHS)
    return data["glyphs"][data["splits"] == split]
