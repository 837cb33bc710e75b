"""Patch-level (region) retrieval: id encoding, box geometry, planted regions, consistency after deletes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.catalog import Catalog
from core.index.files import index_dir, index_ids, load_index
from core.index.source import CELL_ID_BASE, PatchVectors, decode_cell_ids, encode_cell_ids
from core.index.verify import check_index
from core.report import collection_status
from indexer.pipeline import run_build
from search.engine import QueryError, SearchEngine
from search.region import CellBlock, Placement, best_placement, cells_under_box, matched_box, search_region
from tests.conftest import PHOTOS, small_config

SOURCE = PHOTOS / "scikit-image__astronaut.jpg"
REGION = (150, 50, 350, 250)  # the astronaut's helmet and face, 200x200 px
PASTED_AT = (380, 200)  # top-left corner in a 600x400 photo, pasted at 0.8x: 160x160 px


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def _pasted_photo() -> Image.Image:
    with Image.open(SOURCE) as source, Image.open(PHOTOS / "scikit-image__coffee.jpg") as target:
        photo = target.convert("RGB")
        photo.paste(source.convert("RGB").crop(REGION).resize((160, 160)), PASTED_AT)
    return photo


TRUE_BOX = (PASTED_AT[0], PASTED_AT[1], PASTED_AT[0] + 160, PASTED_AT[1] + 160)
# Region tests run at 256 px (a 16x16 grid, the default pooled grid): at 128 px a cell is an eighth of
# the photo, too coarse to place a region reliably with random weights (see benchmarks/region.py).
REGION_SIZE = 256


def test_cell_ids_round_trip() -> None:
    photos = np.array([1, 7, 123_456_789], dtype=np.int64)
    ids = encode_cell_ids(photos, 256)
    assert len(ids) == 768 and len(set(ids.tolist())) == 768
    back_photos, cells = decode_cell_ids(ids)
    assert back_photos.tolist() == np.repeat(photos, 256).tolist()
    assert cells.tolist() == list(range(256)) * 3
    with pytest.raises(ValueError, match="exceed"):
        encode_cell_ids(photos, CELL_ID_BASE + 1)


def test_cells_under_a_box() -> None:
    assert cells_under_box(None, 640, 480, 16) == CellBlock(0, 0, 16, 16, 16)
    # Exactly cells 2-4 horizontally (40 px cells) and 3-5 vertically (30 px cells).
    assert cells_under_box((80, 90, 200, 180), 640, 480, 16) == CellBlock(3, 2, 6, 5, 16)
    # A box smaller than a quarter cell still gets the cell under its centre.
    assert cells_under_box((85, 95, 90, 100), 640, 480, 16) == CellBlock(3, 2, 4, 3, 16)
    with pytest.raises(QueryError, match="does not overlap"):
        cells_under_box((700, 10, 800, 20), 640, 480, 16)


def test_boxes_map_back_through_resizing() -> None:
    block = CellBlock(4, 2, 8, 6, 16)
    same_place = Placement(1.0, top=4, left=2, rows=4, cols=4)
    box = (80, 120, 240, 240)  # exactly the block in a 640x480 query
    assert matched_box(box, block, same_place, (640, 480), (640, 480), 16) == box
    # The same cells of a photo twice as large: the box doubles.
    assert matched_box(box, block, same_place, (640, 480), (1280, 960), 16) == (160, 240, 480, 480)
    # Half the size and moved: sub-cell position inside the block is kept.
    moved = Placement(1.0, top=0, left=8, rows=2, cols=2)
    assert matched_box((90, 120, 240, 240), block, moved, (640, 480), (640, 480), 16) == (325, 0, 400, 60)


def test_best_placement_finds_a_planted_template() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.uniform(-0.2, 0.2, size=(2, 3, 16, 16)).astype(np.float32)
    for i in range(2):
        for j in range(3):
            similarity[i, j, 9 + i, 4 + j] = 0.95  # the block sits at rows 9-10, cols 4-6, scale 1
    placement = best_placement(similarity, 1.0, 1.0)
    assert (placement.top, placement.left, placement.rows, placement.cols) == (9, 4, 2, 3)
    assert placement.score == pytest.approx(0.95)


@pytest.fixture(scope="module")
def pasted_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("region")
    photos = root / "photos"
    photos.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg")):
        if photo != SOURCE:
            shutil.copy(photo, photos)
    _pasted_photo().save(photos / "pasted.jpg", quality=92)
    # The same photo stored sideways with an EXIF tag that turns it upright (orientation 6 = rotate
    # 90 degrees clockwise to display): boxes must come back in upright pixels.
    sideways = _pasted_photo().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(photos / "pasted-rotated.jpg", quality=92, exif=exif)
    run_build(small_config(root / "data", **{"model.image_size": REGION_SIZE}), [photos], show_progress=False)
    return root


def test_a_pasted_region_is_found_and_located(pasted_collection: Path) -> None:
    engine = SearchEngine.open(small_config(pasted_collection / "data", **{"model.image_size": REGION_SIZE}))
    found = search_region(engine, SOURCE, REGION, 5)
    engine.close()
    top = {Path(m.path).name: m for m in found.matches[:2]}
    assert set(top) == {"pasted.jpg", "pasted-rotated.jpg"}
    for match in top.values():
        assert (match.width, match.height) == (600, 400)  # upright size, EXIF applied
        assert _iou(match.box, TRUE_BOX) >= 0.5, match.box
        assert match.heatmap.shape == (16, 16)
        assert np.unravel_index(int(np.argmax(match.heatmap)), (16, 16))[1] >= 8  # hottest cells on the right


def test_whole_image_region_query(pasted_collection: Path) -> None:
    engine = SearchEngine.open(small_config(pasted_collection / "data", **{"model.image_size": REGION_SIZE}))
    found = search_region(engine, PHOTOS / "scikit-learn__flower.jpg", None, 3)
    engine.close()
    assert Path(found.matches[0].path).name == "scikit-learn__flower.jpg"
    assert found.matches[0].box == (0, 0, 640, 427)
    # Every cell against itself (cosine 1 up to the codes' error), but not every cell's best match is its
    # own place (flat cells have near-twins), so the spatial verification gives less than its full bonus.
    assert 0.8 <= found.matches[0].similarity <= 1.0 + 1e-3
    assert found.matches[0].similarity > found.matches[1].similarity + 0.05
    # Ranked by how far it stands above the other candidates: well above their median (z > 2).
    assert found.matches[0].score > 2.0
    assert [m.score for m in found.matches] == sorted((m.score for m in found.matches), reverse=True)


def test_patch_index_stays_consistent_after_deletes(photo_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_build(small_config(data), [photo_dir], show_progress=False)
    catalog = Catalog.open(f"sqlite:///{data / 'catalog.sqlite'}")
    doomed = catalog.photo_by_path(str((photo_dir / "scikit-image__moon.jpg").resolve()))
    assert doomed is not None
    (photo_dir / "scikit-image__moon.jpg").unlink()
    (photo_dir / "scikit-image__rocket.jpg").unlink()
    run_build(small_config(data), [photo_dir], show_progress=False)
    source = PatchVectors(catalog, 384, 4)
    assert check_index(catalog, data, source=source) == []
    loaded = load_index(index_dir(data), name="patches")
    assert loaded is not None
    assert doomed.id not in set(decode_cell_ids(index_ids(loaded.index))[0].tolist())
    assert loaded.index.ntotal == 10 * 16
    catalog.close()


def test_no_patches_turns_region_search_off(photo_dir: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / "data", **{"patches.enabled": False})
    run_build(config, [photo_dir], show_progress=False)
    assert collection_status(config)["patches"] == {"enabled": False}
    assert not list((tmp_path / "data" / "index").glob("patches*"))
    engine = SearchEngine.open(config)
    with pytest.raises(QueryError, match="no-patches"):
        search_region(engine, SOURCE, REGION)
    engine.close()


def test_default_patch_data_stays_under_40_kb_per_photo(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("scikit-image__moon.jpg", "scikit-image__coffee.jpg", "scikit-learn__flower.jpg"):
        shutil.copy(PHOTOS / name, photos)
    config = small_config(tmp_path / "data", **{"model.image_size": 256})  # 16x16 native grid, the default
    run_build(config, [photos], show_progress=False)
    patches = collection_status(config)["patches"]
    assert patches["grid"] == 16 and patches["vectors"] == 3 * 256
    assert patches["catalog_bytes_per_image"] == 256 * 78  # 1.6-bit codes and a cosine byte per cell
    assert 0 < patches["bytes_per_image"] <= 17 * 1024  # RaBitQ: 1 bit per value, 16 bytes of factors and id
    assert patches["bytes_per_image"] + patches["catalog_bytes_per_image"] <= 40 * 1024
