"""Security: the UI shows only indexed bytes, uploads stay bounded and in memory, weights cannot run code,
SQL takes any file name as data, and the UI listens on loopback unless told otherwise."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import sys
import tomllib
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from streamlit.testing.v1 import AppTest

from core.catalog import Catalog
from core.config import ModelConfig
from core.errors import WeightsError
from core.model import load_model
from search.engine import SearchEngine
from tests.conftest import (
    REPO,
    indexed_collection,
    open_app,
    opened_files,
    opened_outside,
    result_captions,
    small_config,
)
from ui.thumbnails import full_image, thumbnail, thumbnail_dir

QUERY_BYTES = 300_000
QUERY_PIXELS = 4_000_000
NASTY_NAMES = [
    "'; DROP TABLE images; --.jpg",
    'say "cheese".jpg',
    "it's 100% real.jpg",
    "back\\slash.jpg",
    "under_score.jpg",
    "percent%.jpg",
]


def _png(image: Image.Image, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def _noise(seed: int, width: int = 32, height: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _tree(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` -> sha256 of its content (links reported as their target)."""
    found = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                found[str(path)] = (
                    os.readlink(path) if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
                )
    return found


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, data dir): three test photos plus files whose names are SQL and LIKE metacharacters."""

    def add_nasty_names(photos: Path) -> None:
        for i, name in enumerate(NASTY_NAMES):
            _noise(i).save(photos / name, "JPEG")

    names = ("scikit-image__coffee.jpg", "scikit-image__rocket.jpg", "scikit-image__moon.jpg")
    return indexed_collection(tmp_path_factory.mktemp("security"), names, add_nasty_names)


@pytest.fixture()
def app(collection: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    config = f"search:\n  max_query_bytes: {QUERY_BYTES}\n  max_query_pixels: {QUERY_PIXELS}\n"
    return open_app(collection[1], monkeypatch, config)


# --- the UI reads only indexed files, and only the bytes that were indexed --------------------------


def test_a_photo_swapped_for_a_symlink_after_indexing_is_not_shown(
    collection: tuple[Path, Path], tmp_path: Path
) -> None:
    photos, data = collection
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    _noise(99).save(secret)
    engine = SearchEngine.open(small_config(data))
    try:
        for target in (secret, Path("/etc/passwd")):
            victim = photos / "scikit-image__moon.jpg"
            photo = engine.photo(str(victim))
            backup = tmp_path / "moon.bak"
            shutil.move(victim, backup)
            victim.symlink_to(target)
            try:
                assert thumbnail(data, photo, engine.photo_limits) is None
                assert full_image(photo, engine.photo_limits) is None
                assert not list(thumbnail_dir(data).glob(f"{photo.id}-*"))
            finally:
                victim.unlink()
                shutil.move(backup, victim)
        # The real file back in place: shown again.
        assert thumbnail(data, engine.photo(str(photos / "scikit-image__moon.jpg")), engine.photo_limits) is not None
    finally:
        engine.close()


def _indexed_paths(data: Path) -> set[str]:
    catalog = Catalog.open(small_config(data).resolved_db_url, create=False)
    try:
        ids, _ = catalog.indexed_ids()
        return {photo.path for photo in catalog.photos(ids.tolist()).values()}
    finally:
        catalog.close()


def test_crafted_selections_never_reach_a_file(collection: tuple[Path, Path], app: AppTest) -> None:
    _, data = collection
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    with opened_files() as opened:
        for name in ("../../../../etc/passwd", "/etc/passwd", "%", "_"):
            app.text_input(key="search-name").input(name).run()
            assert not app.exception
        # A browser only sends widget values (the photo selectbox accepts catalog ids only). Ids that are
        # not in the catalog (removed by a build between two reruns) show nothing and read nothing.
        app.session_state["search-more-like"] = 10**9
        app.session_state["search-compare"] = 10**9 + 1
        app.run()
    assert not app.exception
    assert not [c for c in app.caption if "passwd" in c.value]
    assert "search-compare" not in app.session_state
    # Every file the reruns opened is the app's code or settings, the data dir's, or an indexed photo ("%"
    # and "_" match indexed names, which are shown: the record sees those reads).
    indexed = _indexed_paths(data)
    photos_read = indexed.intersection(opened)
    assert photos_read, "no indexed photo was read: the record of opened files missed the reads"
    settings = os.environ["LOUPE_CONFIG"]
    outside = opened_outside(opened, REPO, sys.prefix, sys.base_prefix, settings, data, *photos_read)
    assert not outside, outside


# --- uploads: bounded, decoded in memory, never written ------------------------------------------


def test_uploads_are_bounded_and_leave_no_file_behind(collection: tuple[Path, Path], app: AppTest) -> None:
    photos, data = collection
    before = _tree(photos, data)
    marker = "loupe-upload-marker-7f3a"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker)
    upload = _png(_noise(5), pnginfo=info)
    app.file_uploader(key="search-upload").upload("query.png", upload, "image/png").run()
    assert not app.exception
    assert result_captions(app), "the upload was not searched"

    too_big = _png(_noise(6, 400, 400))
    assert len(too_big) > QUERY_BYTES
    app.file_uploader(key="search-upload").upload("big.png", too_big, "image/png").run()
    assert any("the limit is" in e.value for e in app.error)

    bomb = bytearray(_png(Image.new("RGB", (1, 1))))
    bomb[16:24] = struct.pack(">II", 3000, 3000)  # 9 MP declared, over QUERY_PIXELS
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    app.file_uploader(key="search-upload").upload("bomb.png", bytes(bomb), "image/png").run()
    assert any("too-many-pixels" in e.value for e in app.error)

    after = _tree(photos, data)
    changed = {path for path in after if before.get(path) != after[path]}
    # Only thumbnails of the results, and SQLite's shared-memory index (reads touch it), may appear.
    assert all(Path(path).parent == thumbnail_dir(data) or path.endswith("catalog.sqlite-shm") for path in changed), (
        changed
    )
    assert set(before) <= set(after)
    for path in after:
        assert marker.encode() not in Path(path).read_bytes(), f"the upload's bytes ended up in {path}"


# --- weights ---------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: any code path that runs it leaves the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_a_weights_file_with_a_pickle_payload_is_refused_unrun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state": _Payload(marker), "task": "image_classification"}, evil)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="is not a birder"):
        load_model(ModelConfig(weights=str(evil), image_size=64), torch.device("cpu"))
    assert not marker.exists()

    from indexer.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    _noise(1).save(photos / "a.png")
    code = main(["build", str(photos), "--data-dir", str(tmp_path / "data"), "--weights", str(evil), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "evil.pt is not a birder" in err and "Traceback" not in err
    assert not marker.exists()


# --- SQL ---------------------------------------------------------------------------------------------


def test_file_names_are_data_to_sql(collection: tuple[Path, Path]) -> None:
    photos, data = collection
    engine = SearchEngine.open(small_config(data))
    try:
        for name in NASTY_NAMES:
            photo = engine.photo(str(photos / name))
            assert Path(photo.path).name == name
            assert engine.search_similar(str(photos / name), 1, include_self=True)[0].path == photo.path
        catalog: Catalog = engine.catalog
        assert [Path(p.path).name for p in catalog.find_photos("%")] == ["it's 100% real.jpg", "percent%.jpg"]
        assert [Path(p.path).name for p in catalog.find_photos("_s")] == ["under_score.jpg"]
        assert [Path(p.path).name for p in catalog.find_photos("\\")] == ["back\\slash.jpg"]
        assert [Path(p.path).name for p in catalog.find_photos("'; DROP")] == ["'; DROP TABLE images; --.jpg"]
        assert catalog.counts()["images"] == 3 + len(NASTY_NAMES)  # the table is still there
    finally:
        engine.close()


# --- network exposure ----------------------------------------------------------------------------------


def test_the_ui_listens_on_loopback_by_default() -> None:
    settings = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert settings["server"]["address"] == "127.0.0.1"
    assert settings["server"]["maxUploadSize"] <= 64
    assert settings["client"]["showErrorDetails"] != "full"
