"""The query's extra encodings for region search (search/region_scales.py): where each view's pixels come
from, and a copy pasted larger than the region found and placed through them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import run_build
from search.engine import SearchEngine
from search.region import search_region
from search.region_scales import query_views
from tests.conftest import PHOTOS, small_config

SIDE = 256
MARKED = (100, 80, 180, 160)  # a red square in a 400x300 grey photo


def _marked_photo() -> Image.Image:
    photo = Image.new("RGB", (400, 300), (90, 90, 90))
    photo.paste((255, 0, 0), MARKED)
    return photo


def _red_extent(image: Image.Image) -> tuple[int, int, int, int]:
    pixels = np.asarray(image, dtype=np.int16)
    red = (pixels[:, :, 0] > 170) & (pixels[:, :, 1] < 80)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@pytest.mark.parametrize("decoded_width", [400, 200])  # decoded at full size, or reduced (draft decoding)
def test_each_view_shows_its_window_of_the_photo(decoded_width: int) -> None:
    photo = _marked_photo().resize((decoded_width, decoded_width * 3 // 4), Image.Resampling.NEAREST)
    views = query_views(photo, (400, 300), MARKED, (0.5, 1.0, 1.414, 4.0, float("inf")), SIDE)
    # 1 is the photo itself; 4x is a window (100x75) too small for the 80x80 box, so it is skipped.
    assert [round(view.scale, 3) for view in views] == [0.5, 1.414, float("inf")]
    for view in views:
        assert view.image.size == (SIDE, SIDE)
        width, height = view.size
        x0, y0, x1, y1 = view.box_in_view(MARKED)
        expected = (x0 * SIDE / width, y0 * SIDE / height, x1 * SIDE / width, y1 * SIDE / height)
        # The box, carried into the view's pixels and squashed onto the square, is where the red square is.
        assert np.allclose(_red_extent(view.image), expected, atol=2.5), (view.scale, expected)
    shrunk, enlarged, cut_out = views
    assert shrunk.size == pytest.approx((800, 600), rel=0.01)  # the photo in the middle half of the canvas
    assert enlarged.size == pytest.approx((400 / 1.414, 300 / 1.414), abs=2)
    assert cut_out.size == pytest.approx((80, 80), abs=1) and cut_out.box_in_view(MARKED) == (0, 0, 80, 80)


SOURCE = PHOTOS / "scikit-image__astronaut.jpg"
REGION = (150, 50, 350, 250)  # the astronaut's helmet and face, 200x200 px
PASTED_AT = (260, 50)  # top-left corner in a 600x400 photo, pasted at 1.5x: 300x300 px
TRUE_BOX = (260, 50, 560, 350)


@pytest.fixture(scope="module")
def enlarged_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("region-scales")
    photos = root / "photos"
    photos.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg")):
        if photo != SOURCE:
            shutil.copy(photo, photos)
    with Image.open(SOURCE) as source, Image.open(PHOTOS / "scikit-image__coffee.jpg") as host:
        pasted = host.convert("RGB")
        pasted.paste(source.convert("RGB").crop(REGION).resize((300, 300)), PASTED_AT)
    pasted.save(photos / "pasted.jpg", quality=92)
    run_build(small_config(root / "data", **{"model.image_size": SIDE}), [photos], show_progress=False)
    return root


def test_a_copy_pasted_larger_is_found_and_placed_through_the_views(enlarged_copy: Path) -> None:
    engine = SearchEngine.open(small_config(enlarged_copy / "data", **{"model.image_size": SIDE}))
    try:
        found = search_region(engine, SOURCE, REGION, 3, query_scales=(1.189, 1.414, 1.682))
    finally:
        engine.close()
    top = found.matches[0]
    assert Path(top.path).name == "pasted.jpg"
    ix = max(0, min(top.box[2], TRUE_BOX[2]) - max(top.box[0], TRUE_BOX[0]))
    iy = max(0, min(top.box[3], TRUE_BOX[3]) - max(top.box[1], TRUE_BOX[1]))
    area = (top.box[2] - top.box[0]) * (top.box[3] - top.box[1]) + 300 * 300 - ix * iy
    assert ix * iy / area >= 0.5, top.box
