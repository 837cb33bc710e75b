"""No photo loses its patch grid: reused content carries its grid, ``verify`` names each photo without one
(or without its cells in the patch index), and the next build or ``reindex`` repairs it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from sqlalchemy import text

from core.catalog import Catalog
from core.index.files import index_dir, load_index, read_meta, write_index
from core.index.source import encode_cell_ids
from indexer.cli import main as indexer_main
from indexer.pipeline import run_build
from indexer.summary import BuildSummary
from search.engine import SearchEngine
from search.region import search_region
from tests.conftest import call_in_process, small_config

N_PHOTOS = 12
CELLS = 16  # 4x4 cells at the tests' 64 px


def _build(photos: Path, data: Path) -> BuildSummary:
    return run_build(small_config(data), [photos], show_progress=False)


def _grids(data: Path) -> dict[str, np.ndarray]:
    """Every stored grid, by its photo's path."""
    catalog = Catalog.open(small_config(data).resolved_db_url, create=False)
    try:
        ids, _ = catalog.indexed_ids()
        paths = catalog.path_of(ids.tolist())
        return {
            paths[int(i)]: grid
            for chunk, grids in catalog.patch_grids(ids, 384)
            for i, grid in zip(chunk, grids, strict=True)
        }
    finally:
        catalog.close()


def _patch_vectors(data: Path) -> int:
    meta = read_meta(index_dir(data), "patches")
    assert meta is not None
    return meta.ntotal


def _verify(data: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str]:
    result = call_in_process(indexer_main, capsys, ["verify", "--data-dir", str(data)], tmp_path)
    return result.returncode, result.stdout


def test_moved_copied_touched_and_changed_photos_keep_their_grids(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _build(photo_dir, data)
    before = _grids(data)
    assert len(before) == N_PHOTOS and _patch_vectors(data) == N_PHOTOS * CELLS
    photos = sorted(photo_dir.glob("*.jpg"))
    (photo_dir / "moved").mkdir()
    moved_from, moved_to = photos[0], photo_dir / "moved" / photos[0].name
    shutil.move(moved_from, moved_to)
    copied_to = photo_dir / "copy-of-second.jpg"
    shutil.copy2(photos[1], copied_to)
    os.utime(photos[2], ns=(1, 1_700_000_000_000_000_000))
    with Image.open(photos[3]) as image:
        ImageOps.mirror(image).save(photos[3], quality=90)  # same name, new content
    shutil.copy(photos[4], photos[5])  # same name, content known from another file

    summary = _build(photo_dir, data)

    assert (summary.moved, summary.copied, summary.touched, summary.changed) == (1, 1, 1, 2)
    after = _grids(data)
    assert len(after) == N_PHOTOS + 1  # the copy is a photo of its own
    assert _patch_vectors(data) == (N_PHOTOS + 1) * CELLS
    path = {photo: str(photo.resolve()) for photo in [*photos, moved_to, copied_to]}
    np.testing.assert_array_equal(after[path[moved_to]], before[path[moved_from]])
    np.testing.assert_array_equal(after[path[copied_to]], before[path[photos[1]]])
    np.testing.assert_array_equal(after[path[photos[2]]], before[path[photos[2]]])
    np.testing.assert_array_equal(after[path[photos[5]]], before[path[photos[4]]])
    assert not np.allclose(after[path[photos[3]]], before[path[photos[3]]], atol=1e-2)
    code, out = _verify(data, capsys, tmp_path)
    assert code == 0, out

    # The issue's own check: the moved photo, queried whole, finds itself first.
    engine = SearchEngine.open(small_config(data))
    try:
        found = search_region(engine, moved_to, None, 3)
    finally:
        engine.close()
    assert found.matches[0].path == path[moved_to]
    assert found.matches[0].similarity == pytest.approx(1.0, abs=1e-2)


def test_copies_within_one_build_each_get_a_grid(photo_dir: Path, tmp_path: Path) -> None:
    first = sorted(photo_dir.glob("*.jpg"))[0]
    shutil.copy2(first, photo_dir / "copy-a.jpg")
    shutil.copy2(first, photo_dir / "copy-b.jpg")
    data = tmp_path / "data"
    summary = _build(photo_dir, data)
    assert summary.embedded == N_PHOTOS  # the copies went through the model once, with their original
    grids = _grids(data)
    assert len(grids) == N_PHOTOS + 2 and _patch_vectors(data) == (N_PHOTOS + 2) * CELLS
    for copy in ("copy-a.jpg", "copy-b.jpg"):
        np.testing.assert_array_equal(grids[str((photo_dir / copy).resolve())], grids[str(first.resolve())])


def test_verify_names_a_photo_without_its_grid_and_the_next_build_recomputes_it(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _build(photo_dir, data)
    before = _grids(data)
    lost = str(sorted(photo_dir.glob("*.jpg"))[2].resolve())
    catalog = Catalog.open(small_config(data).resolved_db_url, create=False)
    photo = catalog.photo_by_path(lost)
    assert photo is not None
    with catalog.engine.begin() as connection:
        connection.execute(text("DELETE FROM patch_grids WHERE image_id = :id"), {"id": photo.id})
    catalog.close()

    code, out = _verify(data, capsys, tmp_path)
    assert code == 1
    assert f"photo {photo.id} {lost!r}: no patch grid in the catalog" in out
    assert "recomputes missing patch grids" in out

    summary = _build(photo_dir, data)
    assert (summary.regridded, summary.embedded, summary.changed, summary.unchanged) == (1, 1, 0, N_PHOTOS - 1)
    after = _grids(data)
    np.testing.assert_allclose(after[lost].astype(np.float32), before[lost].astype(np.float32), atol=2e-3)
    assert _patch_vectors(data) == N_PHOTOS * CELLS
    code, out = _verify(data, capsys, tmp_path)
    assert code == 0, out


def test_a_copy_without_its_grid_takes_its_twins_on_the_next_build(photo_dir: Path, tmp_path: Path) -> None:
    first = sorted(photo_dir.glob("*.jpg"))[0]
    copy = photo_dir / "copy.jpg"
    shutil.copy2(first, copy)
    data = tmp_path / "data"
    _build(photo_dir, data)
    catalog = Catalog.open(small_config(data).resolved_db_url, create=False)
    photo = catalog.photo_by_path(str(copy.resolve()))
    assert photo is not None
    with catalog.engine.begin() as connection:
        connection.execute(text("DELETE FROM patch_grids WHERE image_id = :id"), {"id": photo.id})
    catalog.close()

    summary = _build(photo_dir, data)
    assert summary.regridded == 1 and summary.changed == 0
    grids = _grids(data)
    np.testing.assert_array_equal(grids[str(copy.resolve())], grids[str(first.resolve())])


def test_verify_names_a_photo_missing_from_the_patch_index_and_reindex_restores_it(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _build(photo_dir, data)
    catalog = Catalog.open(small_config(data).resolved_db_url, create=False)
    path = str(sorted(photo_dir.glob("*.jpg"))[4].resolve())
    photo = catalog.photo_by_path(path)
    catalog.close()
    assert photo is not None
    loaded = load_index(index_dir(data), name="patches")
    assert loaded is not None
    loaded.index.remove_ids(encode_cell_ids(np.array([photo.id]), CELLS)[:3])
    write_index(index_dir(data), loaded.index, loaded.meta, name="patches")

    code, out = _verify(data, capsys, tmp_path)
    assert code == 1
    assert f"photo {photo.id} {path!r}: cells missing from the patch index" in out

    result = call_in_process(indexer_main, capsys, ["reindex", "--data-dir", str(data)], tmp_path)
    assert result.returncode == 0 and "no patch grid" not in result.stdout
    assert _patch_vectors(data) == N_PHOTOS * CELLS
    code, out = _verify(data, capsys, tmp_path)
    assert code == 0, out
