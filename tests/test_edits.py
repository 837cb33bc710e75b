"""Synthetic edits: every family makes an RGB copy that differs from the photo, the same one for a seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from indexer.edits import EDIT_FAMILIES, Edit, make_edit, make_edits


def _photo(width: int = 64, height: int = 48) -> Image.Image:
    """A seeded photo-like image: smooth colour fields, an off-centre bright square, some noise."""
    rng = np.random.default_rng(7)
    coarse = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((width, height))
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
    pixels[5:20, 8:25] = (250, 240, 30)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_each_family_changes_the_photo_the_same_way_for_a_seed(family: str) -> None:
    photo = _photo()
    edit = make_edit(photo, family, np.random.default_rng(3))
    again = make_edit(photo, family, np.random.default_rng(3))
    assert isinstance(edit, Edit) and edit.family == family and edit.name
    assert edit.image.mode == "RGB"
    assert (edit.name, edit.image.size) == (again.name, again.image.size)
    assert np.array_equal(np.asarray(edit.image), np.asarray(again.image))
    if edit.image.size == photo.size:
        difference = np.abs(np.asarray(edit.image, dtype=np.int16) - np.asarray(photo, dtype=np.int16))
        assert difference.mean() > 1.0, f"{edit.name} left the photo almost as it was"
    assert photo.size == (64, 48)  # the source is never edited in place


def test_sizes_follow_what_each_edit_says() -> None:
    photo = _photo()
    for seed in range(8):
        edits = {e.family: e for e in make_edits(photo, np.random.default_rng(seed))}
        width, height = edits["resize"].image.size
        assert 0.28 * 64 <= width <= 0.72 * 64 and 0.28 * 48 <= height <= 0.72 * 48
        for crop in ("crop", "crop-offcentre"):
            width, height = edits[crop].image.size
            assert 0.69 * 64 <= width <= 0.96 * 64 and 0.69 * 48 <= height <= 0.96 * 48
        turned = edits["rotate90"]
        assert turned.image.size == ((48, 64) if turned.name in ("rotate 90", "rotate 270") else (64, 48))
        assert edits["border"].image.width > 64 and edits["border"].image.height > 48
        for same_size in ("jpeg", "mirror", "rotate-small", "grayscale", "color", "blur", "overlay"):
            assert edits[same_size].image.size == (64, 48)
        gray = np.asarray(edits["grayscale"].image, dtype=np.int16)
        assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
        assert np.array_equal(np.asarray(edits["mirror"].image), np.asarray(photo)[:, ::-1])
        assert 2 <= edits["combo"].name.count(" + ") + 1 <= 3


def test_make_edits_gives_one_per_family_in_order_and_names_vary_with_the_seed() -> None:
    photo = _photo().convert("L")  # any mode in, RGB out
    edits = make_edits(photo, np.random.default_rng(0))
    assert [e.family for e in edits] == list(EDIT_FAMILIES)
    assert all(e.image.mode == "RGB" for e in edits)
    names = {tuple(e.name for e in make_edits(photo, np.random.default_rng(seed))) for seed in range(4)}
    assert len(names) == 4
    assert [e.family for e in make_edits(photo, np.random.default_rng(0), ("blur", "jpeg"))] == ["blur", "jpeg"]


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown edit family 'sepia'"):
        make_edit(_photo(), "sepia", np.random.default_rng(0))
