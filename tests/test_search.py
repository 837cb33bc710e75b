"""The search engine, duplicate groups and reverse lookup on a small real index (random weights)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import LoupeConfig
from indexer.pipeline import run_build
from search.duplicates import find_duplicate_groups
from search.engine import QueryError, SearchEngine, match_label
from search.lookup import reverse_lookup
from tests.conftest import PHOTOS, new_postgres_database, small_config

NEAR_COPY_THRESHOLD = 0.99  # random weights at 64 px: re-encoded copies score >= 0.997, distinct photos <= 0.97


def _near_copy(source: Path, target: Path, scale: float = 0.6, quality: int = 70) -> Path:
    with Image.open(source) as image:
        small = image.convert("RGB").resize((int(image.width * scale), int(image.height * scale)))
    small.save(target, "JPEG", quality=quality)
    return target


# The catalog each collection was built into (None: SQLite in its data dir).
_CATALOGS: dict[Path, str | None] = {}


def _config(collection: Path) -> LoupeConfig:
    return small_config(collection / "data", _CATALOGS[collection])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def collection(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """12 photos split over two folders, plus an exact copy and a near copy of two of them; built once into
    SQLite and once into PostgreSQL."""
    db_url = None if request.param == "sqlite" else new_postgres_database(request)
    root = tmp_path_factory.mktemp("collection")
    photos = sorted(PHOTOS.glob("*.jpg"))
    for number, photo in enumerate(photos):
        folder = root / "photos" / ("a" if number % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, folder / photo.name)
    planted = root / "photos" / "planted"
    planted.mkdir()
    shutil.copy2(PHOTOS / "scikit-image__moon.jpg", planted / "moon-exact-copy.jpg")
    _near_copy(PHOTOS / "scikit-image__astronaut.jpg", planted / "astronaut-small.jpg")
    _CATALOGS[root] = db_url
    run_build(_config(root), [root / "photos"], show_progress=False)
    return root


@pytest.fixture()
def engine(collection: Path) -> Iterator[SearchEngine]:
    opened = SearchEngine.open(_config(collection))
    yield opened
    opened.close()


def test_an_indexed_file_finds_itself_first(engine: SearchEngine, collection: Path) -> None:
    for photo in sorted((collection / "photos" / "a").glob("*.jpg")):
        results = engine.search_image(photo, 3)
        assert results[0].path == str(photo.resolve())
        assert results[0].score >= 0.99 and results[0].label == "exact"
        assert [r.rank for r in results] == [1, 2, 3]


def test_a_resized_recompressed_copy_finds_its_original(engine: SearchEngine, collection: Path, tmp_path: Path) -> None:
    for photo in sorted((collection / "photos" / "b").glob("*.jpg")):
        copy = _near_copy(photo, tmp_path / f"{photo.stem}-copy.jpg", scale=0.5, quality=60)
        top5 = [r.path for r in engine.search_image(copy, 5)]
        assert str(photo.resolve()) in top5


def test_file_bytes_and_pil_queries_agree(engine: SearchEngine) -> None:
    path = PHOTOS / "scikit-image__coffee.jpg"
    by_file = engine.search_image(path, 4)
    by_bytes = engine.search_image(path.read_bytes(), 4)
    with Image.open(path) as image:
        by_pil = engine.search_image(image.convert("RGB"), 4)
    assert [r.id for r in by_file] == [r.id for r in by_bytes] == [r.id for r in by_pil]
    # Files and bytes are decoded exactly as the indexer does (JPEG draft mode); a PIL image arrives
    # decoded at full size, so its scores may differ in the 4th decimal.
    np.testing.assert_allclose([r.score for r in by_file], [r.score for r in by_bytes], atol=1e-6)
    np.testing.assert_allclose([r.score for r in by_file], [r.score for r in by_pil], atol=2e-3)
    assert by_file[0].label == "exact" and by_pil[0].label != "exact"  # a PIL image has no bytes to compare


def test_more_like_this_by_path_or_id_needs_no_model(collection: Path) -> None:
    engine = SearchEngine.open(_config(collection))
    photo = engine.photo(collection / "photos" / "a" / "scikit-image__moon.jpg")
    by_path = engine.search_similar(collection / "photos" / "a" / "scikit-image__moon.jpg", 3)
    by_id = engine.search_similar(str(photo.id), 3)
    assert [r.id for r in by_path] == [r.id for r in by_id]
    assert photo.id not in [r.id for r in by_path]
    assert by_path[0].path.endswith("moon-exact-copy.jpg") and by_path[0].label == "exact"
    assert engine.search_similar(photo.id, 3, include_self=True)[0].id == photo.id
    assert not engine.queries.loaded  # the model was never loaded
    engine.close()


def test_filters_keep_k_results(engine: SearchEngine, collection: Path) -> None:
    query = collection / "photos" / "a" / "scikit-image__moon.jpg"
    under_b = engine.search_image(query, 4, under=collection / "photos" / "b")
    assert len(under_b) == 4
    assert all(r.path.startswith(str((collection / "photos" / "b").resolve()) + "/") for r in under_b)
    everything = engine.search_image(query, 20)
    floor = everything[5].score
    strong = engine.search_image(query, 20, min_score=floor)
    assert [r.id for r in strong] == [r.id for r in everything if r.score >= floor]
    assert len(engine.search_image(query, 100)) == engine.ntotal == 14


def test_raw_vector_queries_and_their_errors(engine: SearchEngine) -> None:
    vector = engine.catalog.embedding(1, engine.dim)
    assert vector is not None
    assert engine.search_vector(vector * 3.0, 1)[0].id == 1  # vectors are normalised
    with pytest.raises(QueryError, match="384"):
        engine.search_vector(np.ones(10, dtype=np.float32))
    with pytest.raises(QueryError, match="zeros"):
        engine.search_vector(np.zeros(384, dtype=np.float32))
    with pytest.raises(QueryError, match="no indexed photo has id 999"):
        engine.search_similar(999)
    with pytest.raises(QueryError, match="not an indexed photo"):
        engine.search_similar("/nowhere/x.jpg")
    with pytest.raises(QueryError, match="not-an-image"):
        engine.search_image(b"<html>not an image</html>")


def test_match_labels() -> None:
    assert match_label(0.5, True, 0.95) == "exact"
    assert match_label(0.95, False, 0.95) == "near-duplicate"
    assert match_label(0.949, False, 0.95) == "similar"


def test_duplicate_groups_find_planted_copies(engine: SearchEngine, collection: Path) -> None:
    groups = find_duplicate_groups(engine, NEAR_COPY_THRESHOLD)
    by_original = {Path(g.original.path).name: g for g in groups}
    assert set(by_original) == {"scikit-image__moon.jpg", "scikit-image__astronaut.jpg"}

    moon = by_original["scikit-image__moon.jpg"]
    assert [Path(m.path).name for m in moon.members] == ["scikit-image__moon.jpg", "moon-exact-copy.jpg"]
    assert moon.members[1].exact and moon.members[1].score >= 0.9999

    astronaut = by_original["scikit-image__astronaut.jpg"]  # the full-size one is the suggested original
    assert astronaut.original.width == 512 and astronaut.original.original
    small = astronaut.members[1]
    assert Path(small.path).name == "astronaut-small.jpg" and not small.exact and small.score >= NEAR_COPY_THRESHOLD
    assert all(len(g.members) == 2 for g in groups)


def test_low_threshold_merges_more(engine: SearchEngine) -> None:
    strict = find_duplicate_groups(engine, NEAR_COPY_THRESHOLD)
    loose = find_duplicate_groups(engine, 0.9)
    assert sum(len(g.members) for g in loose) > sum(len(g.members) for g in strict)
    assert [len(g.members) for g in loose] == sorted((len(g.members) for g in loose), reverse=True)


def test_duplicate_groups_never_chain(engine: SearchEngine) -> None:
    """At a loose threshold (random weights put many photos close): every member scores at least the
    threshold against its group's original by the stored vectors, no photo is in two groups, and the
    groups are the same on a second run."""
    groups = find_duplicate_groups(engine, 0.9)
    assert groups
    members = [m.id for g in groups for m in g.members]
    assert len(members) == len(set(members))
    for group in groups:
        original = engine.catalog.embedding(group.original.id, engine.dim)
        assert original is not None and group.original.original
        for member in group.members[1:]:
            vector = engine.catalog.embedding(member.id, engine.dim)
            assert vector is not None and float(original @ vector) >= 0.9 and not member.original
    assert [g.to_dict() for g in find_duplicate_groups(engine, 0.9)] == [g.to_dict() for g in groups]


def test_engine_follows_new_commits(tmp_path: Path, db_url: str | None) -> None:
    config = small_config(tmp_path / "data", db_url)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTOS / "scikit-image__rocket.jpg", photos)
    run_build(config, [photos], show_progress=False)
    engine = SearchEngine.open(config)
    assert engine.ntotal == 1
    shutil.copy(PHOTOS / "scikit-image__coffee.jpg", photos)
    run_build(config, [photos], show_progress=False)
    assert engine.ntotal == 2
    assert engine.search_image(PHOTOS / "scikit-image__coffee.jpg", 1)[0].path.endswith("coffee.jpg")
    engine.close()


def test_reverse_lookup_over_a_folder(engine: SearchEngine, tmp_path: Path) -> None:
    queries = tmp_path / "queries"
    queries.mkdir()
    _near_copy(PHOTOS / "scikit-image__rocket.jpg", queries / "1-rocket.jpg")
    shutil.copy(PHOTOS / "tuxpaint-data__lighthouse.jpg", queries / "2-lighthouse.jpg")
    (queries / "3-broken.jpg").write_bytes(b"garbage")
    found = list(reverse_lookup(engine, queries, 2))
    assert [Path(item.query).name for item in found] == ["1-rocket.jpg", "2-lighthouse.jpg", "3-broken.jpg"]
    assert found[0].results[0].path.endswith("scikit-image__rocket.jpg")
    assert found[1].results[0].path.endswith("tuxpaint-data__lighthouse.jpg") and found[1].results[0].label == "exact"
    assert found[2].results == [] and found[2].error is not None and "not-an-image" in found[2].error
    assert all(len(item.results) == 2 for item in found[:2])


def test_query_image_limits(collection: Path) -> None:
    config = small_config(collection / "data", _CATALOGS[collection], **{"search.max_query_bytes": 1000})
    engine = SearchEngine.open(config)
    with pytest.raises(QueryError, match="file-too-large"):
        engine.search_image(PHOTOS / "scikit-image__rocket.jpg")
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(buffer, "PNG")
    big_config = small_config(collection / "data", _CATALOGS[collection], **{"search.max_query_pixels": 1_000_000})
    big = SearchEngine.open(big_config)
    with pytest.raises(QueryError, match="too-many-pixels"):
        big.search_image(buffer.getvalue())
    engine.close()
    big.close()


def test_compressed_index_candidates_are_rescored_exactly(photo_dir: Path, tmp_path: Path) -> None:
    """With 4-bit codes the index's own scores are approximate; re-scored with the catalog's exact vectors
    they are the true cosine similarities, in exact-search order."""
    config = small_config(tmp_path / "data", **{"index.exact_codec": "SQ4"})
    run_build(config, [photo_dir], show_progress=False)
    engine = SearchEngine.open(config)
    try:
        ids, vectors = next(engine.catalog.embeddings_for(engine.catalog.indexed_ids()[0], engine.dim))
        query = vectors[3]
        exact = sorted(zip(ids.tolist(), (vectors @ query).tolist(), strict=True), key=lambda pair: -pair[1])[:5]
        rescored = engine.search_vector(query, 5)
    finally:
        engine.close()
    assert [r.id for r in rescored] == [id_ for id_, _ in exact]
    np.testing.assert_allclose([r.score for r in rescored], [score for _, score in exact], atol=1e-5)
    raw_config = small_config(tmp_path / "data", **{"index.exact_codec": "SQ4", "search.rescore_candidates": 0})
    engine = SearchEngine.open(raw_config)
    try:
        raw = engine.search_vector(query, 5)
    finally:
        engine.close()
    # The test can fail: without re-scoring the 4-bit scores are visibly off.
    assert max(abs(r.score - dict(exact).get(r.id, r.score)) for r in raw) > 1e-4
