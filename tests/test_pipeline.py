from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from sqlalchemy.engine import make_url

from core.catalog import Catalog, bytes_to_vector
from core.errors import ProvenanceMismatchError
from core.index.files import index_dir, load_index
from core.index.verify import check_index
from indexer.pipeline import run_build
from indexer.summary import BuildSummary
from tests.conftest import small_config

N_PHOTOS = 12


def _build(photo_dir: Path, data_dir: Path, db_url: str | None = None, **overrides: object) -> BuildSummary:
    return run_build(small_config(data_dir, db_url, **overrides), [photo_dir], show_progress=False)


def _open(data_dir: Path, db_url: str | None) -> Catalog:
    return Catalog.open(small_config(data_dir, db_url).resolved_db_url, create=False)


def _vectors(data_dir: Path, db_url: str | None = None) -> dict[str, np.ndarray]:
    catalog = _open(data_dir, db_url)
    try:
        ids, _ = catalog.indexed_ids()
        paths = catalog.path_of(ids.tolist())
        return {
            paths[int(i)]: v
            for chunk_ids, vectors in catalog.embeddings_for(ids, 384)
            for i, v in zip(chunk_ids, vectors, strict=True)
        }
    finally:
        catalog.close()


def _consistent(data_dir: Path, db_url: str | None = None) -> list[str]:
    catalog = _open(data_dir, db_url)
    try:
        return check_index(catalog, data_dir)
    finally:
        catalog.close()


def test_first_build_indexes_every_photo(photo_dir: Path, tmp_path: Path, db_url: str | None) -> None:
    data = tmp_path / "data"
    if db_url is not None:
        # The test server trusts loopback and ignores passwords; this one must not land on disk.
        db_url = make_url(db_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    summary = _build(photo_dir, data, db_url)
    assert (summary.scanned, summary.new, summary.embedded, summary.failed) == (N_PHOTOS, N_PHOTOS, N_PHOTOS, 0)
    assert summary.index is not None and summary.index.ntotal == N_PHOTOS
    assert _consistent(data, db_url) == []
    vectors = _vectors(data, db_url)
    assert sorted(vectors) == sorted(str(p.resolve()) for p in photo_dir.glob("*.jpg"))
    assert (data / "config.resolved.yaml").exists()
    assert "s3cret-pw" not in (data / "config.resolved.yaml").read_text()

    # Every photo's own embedding finds itself first.
    loaded = load_index(index_dir(data))
    assert loaded is not None
    catalog = _open(data, db_url)
    ids, _ = catalog.indexed_ids()
    for chunk_ids, chunk in catalog.embeddings_for(ids, 384):
        scores, found = loaded.index.search(chunk, 1)
        assert found[:, 0].tolist() == chunk_ids.tolist()
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    catalog.close()


def test_rerun_embeds_nothing_and_changes_nothing(photo_dir: Path, tmp_path: Path, db_url: str | None) -> None:
    data = tmp_path / "data"
    _build(photo_dir, data, db_url)
    before = _vectors(data, db_url)
    again = _build(photo_dir, data, db_url)
    assert (again.unchanged, again.embedded, again.processed, again.removed) == (N_PHOTOS, 0, 0, 0)
    assert again.index is not None and not again.index.wrote
    after = _vectors(data, db_url)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_moved_copied_touched_changed_and_deleted_files(photo_dir: Path, tmp_path: Path, db_url: str | None) -> None:
    data = tmp_path / "data"
    _build(photo_dir, data, db_url)
    before = _vectors(data, db_url)
    photos = sorted(photo_dir.glob("*.jpg"))
    (photo_dir / "moved").mkdir()
    moved_from, moved_to = photos[0], photo_dir / "moved" / photos[0].name
    shutil.move(moved_from, moved_to)
    copied_to = photo_dir / "copy-of-second.jpg"
    shutil.copy2(photos[1], copied_to)
    os.utime(photos[2], ns=(1, 1_700_000_000_000_000_000))
    with Image.open(photos[3]) as image:
        ImageOps.mirror(image).save(photos[3], quality=90)  # same name, new content
    shutil.copy(photos[4], photos[6])  # same name, content known from another file
    photos[5].unlink()

    summary = _build(photo_dir, data, db_url)
    assert (summary.moved, summary.copied, summary.touched, summary.changed, summary.removed) == (1, 1, 1, 2, 2)
    assert summary.embedded == 1  # only the mirrored photo went through the model
    after = _vectors(data, db_url)
    assert np.array_equal(after[str(moved_to.resolve())], before[str(moved_from.resolve())])
    assert np.array_equal(after[str(copied_to.resolve())], before[str(photos[1].resolve())])
    assert np.array_equal(after[str(photos[6].resolve())], before[str(photos[4].resolve())])
    assert not np.allclose(after[str(photos[3].resolve())], before[str(photos[3].resolve())], atol=1e-3)
    assert str(photos[5].resolve()) not in after and str(moved_from.resolve()) not in after
    assert len(after) == N_PHOTOS
    assert _consistent(data, db_url) == []


def test_corrupt_file_is_recorded_and_skipped(photo_dir: Path, tmp_path: Path, db_url: str | None) -> None:
    data = tmp_path / "data"
    good = sorted(photo_dir.glob("*.jpg"))[0]
    (photo_dir / "broken.jpg").write_bytes(b"this is not a jpeg")
    (photo_dir / "half.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    summary = _build(photo_dir, data, db_url)
    assert summary.new == N_PHOTOS and summary.failed == 2
    assert summary.failures_by_reason == {"not-an-image": 1, "truncated": 1}
    catalog = _open(data, db_url)
    failures = {Path(path).name: (reason, message) for path, reason, message in catalog.failures()}
    assert catalog.counts() == {"images": N_PHOTOS + 2, "indexed": N_PHOTOS, "failed": 2}
    catalog.close()
    assert failures["broken.jpg"][0] == "not-an-image"
    assert failures["half.jpg"][0] == "truncated"
    assert _consistent(data, db_url) == []
    # The same bytes would fail the same way: a rerun does not retry them.
    assert _build(photo_dir, data, db_url).processed == 0


def test_identical_new_files_go_through_the_model_once(photo_dir: Path, tmp_path: Path) -> None:
    source = sorted(photo_dir.glob("*.jpg"))[0]
    for name in ("dup-a.jpg", "dup-b.jpg", "dup-c.jpg"):
        shutil.copy(source, photo_dir / name)
    summary = _build(photo_dir, tmp_path / "data", **{"runtime.batch_size": 2})
    assert summary.new + summary.copied == N_PHOTOS + 3
    assert summary.embedded == N_PHOTOS


def test_two_image_threads_build_the_catalog_of_one(photo_dir: Path, tmp_path: Path) -> None:
    """Two photos at once, with the next batch computed while the previous one is committed, give the
    rows and the bit-identical vectors of one photo at a time; content seen in the batch still in flight
    is reused, not embedded twice."""
    source = sorted(photo_dir.glob("*.jpg"))[0]
    for name in ("dup-a.jpg", "dup-b.jpg", "dup-c.jpg", "dup-d.jpg"):  # sorted first: batches 1 and 2
        shutil.copy(source, photo_dir / name)
    whole = _build(photo_dir, tmp_path / "whole", **{"runtime.batch_size": 3, "runtime.parallel_images": 1})
    threaded = _build(photo_dir, tmp_path / "threads", **{"runtime.batch_size": 3, "runtime.parallel_images": 2})
    assert (whole.parallel_images, threaded.parallel_images) == (1, 2)
    for summary in (whole, threaded):
        assert (summary.new + summary.copied, summary.embedded, summary.failed) == (N_PHOTOS + 4, N_PHOTOS, 0)
    assert (threaded.new, threaded.copied, threaded.model_batches) == (whole.new, whole.copied, whole.model_batches)
    expected, got = _vectors(tmp_path / "whole"), _vectors(tmp_path / "threads")
    assert expected.keys() == got.keys()
    for path, vector in expected.items():
        np.testing.assert_array_equal(got[path], vector)
    assert _consistent(tmp_path / "threads") == []


def test_other_image_size_is_refused(photo_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _build(photo_dir, data)
    with pytest.raises(ProvenanceMismatchError, match="image_size: index has 64, this run has 96"):
        _build(photo_dir, data, **{"model.image_size": 96})
    with pytest.raises(ProvenanceMismatchError, match="weights_sha256"):
        _build(photo_dir, data, **{"model.random_seed": 5})


@pytest.mark.slow
def test_decode_workers_give_the_same_vectors_as_in_process(photo_dir: Path, tmp_path: Path) -> None:
    _build(photo_dir, tmp_path / "serial")
    _build(photo_dir, tmp_path / "parallel", **{"runtime.workers": 2})
    serial, parallel = _vectors(tmp_path / "serial"), _vectors(tmp_path / "parallel")
    assert serial.keys() == parallel.keys()
    for key in serial:
        np.testing.assert_allclose(serial[key], parallel[key], atol=1e-6)


def test_stored_vectors_round_trip_bytes() -> None:
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    from core.catalog import vector_to_bytes

    assert np.array_equal(bytes_to_vector(vector_to_bytes(vector), 384), vector)


def test_odd_file_names_round_trip(photo_dir: Path, tmp_path: Path, db_url: str | None) -> None:
    source = sorted(photo_dir.glob("*.jpg"))[0]
    odd = [
        os.fsencode(photo_dir) + b"/caf\xe9-latin1.jpg",
        os.fsencode(photo_dir / 'it\'s "quoted"\nand; DROP TABLE images.jpg'),
    ]
    for name in odd:
        shutil.copy(source, name)
    data = tmp_path / "data"
    summary = _build(photo_dir, data, db_url)
    assert summary.new + summary.copied == N_PHOTOS + 2 and summary.failed == 0
    stored = set(_vectors(data, db_url))
    assert {os.fsdecode(name) for name in odd} <= stored
    assert _build(photo_dir, data, db_url).processed == 0
    for name in odd:
        os.unlink(name)
    assert _build(photo_dir, data, db_url).removed == 2
    assert _consistent(data, db_url) == []
