"""The printed-digit glyph set that ships in the repository: whole font lineages per split, ten distinct
digits per face, and the lineage table grouping clones of one design together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import fonts


def test_clones_of_one_design_share_a_lineage_and_symbol_fonts_have_none():
    assert {fonts.lineage_of(f) for f in ("Nimbus Sans", "TeX Gyre Heros", "FreeSans", "Liberation Sans Narrow")} \
        == {"Helvetica"}
    assert fonts.lineage_of("TeX Gyre Pagella Math") is None and fonts.lineage_of("Standard Symbols PS") is None
    assert fonts.lineage_of("Goudy Bookletter 1911") is None  # unknown designs are not guessed at
    assert fonts.split_of("Palatino") == "test" and fonts.split_of("Caladea") == "val"
    assert fonts.split_of("Helvetica") == "train"


def test_the_shipped_glyphs_split_by_lineage_with_no_lineage_in_two_splits():
    listing = json.loads(fonts.GLYPHS.with_suffix(".json").read_text())
    by_split: dict[str, set[str]] = {}
    for face in listing:
        by_split.setdefault(face["split"], set()).add(face["lineage"])
        assert face["split"] == fonts.split_of(face["lineage"])
    assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["val"]
    assert not by_split["val"] & by_split["test"]
    assert by_split["test"] == set(fonts.SPLITS["test"]) and by_split["val"] == set(fonts.SPLITS["val"])
    assert len(by_split["train"]) >= 10
    counts = {split: len(fonts.glyphs(split)) for split in ("train", "val", "test")}
    assert counts == {split: sum(face["split"] == split for face in listing) for split in counts}
    assert counts["train"] >= 200 and counts["test"] >= 50


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_face_has_ten_distinct_centred_digits(split):
    glyphs = fonts.glyphs(split)
    assert glyphs.shape[1:] == (10, fonts.SIZE, fonts.SIZE) and glyphs.dtype == np.uint8
    for face in glyphs:
        assert len({digit.tobytes() for digit in face}) == 10
        rows = np.flatnonzero(face.max(axis=(0, 2)) > 64)
        assert rows.max() - rows.min() + 1 in range(fonts.GLYPH_HEIGHT - 2, fonts.GLYPH_HEIGHT + 3)
