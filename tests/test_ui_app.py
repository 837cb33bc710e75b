"""Every page of the Streamlit app with ``AppTest``, against a small real index (random weights)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from indexer.pipeline import run_build
from search.keeper import KEEPER_RULE_WORDS
from tests.conftest import PHOTOS, new_postgres_database, small_config

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    shutil.copytree(PHOTOS, root / "photos")
    shutil.copy(PHOTOS / "scikit-image__moon.jpg", root / "photos" / "moon-copy.jpg")
    run_build(small_config(root / "data"), [root / "photos"], show_progress=False)
    return root / "data"


@pytest.fixture()
def app(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv("LOUPE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("LOUPE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    yield at


def _captions(at: AppTest) -> list[str]:
    return [caption.value for caption in at.caption]


def test_missing_index_shows_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_DATA_DIR", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("python -m indexer build" in info.value for info in at.info)


def test_header_shows_the_collection_and_the_random_weights_warning(app: AppTest) -> None:
    assert not app.exception
    header = _captions(app)[0]
    assert "13 images (0 failed)" in header and "64 px" in header and "IDMap2,Flat" in header
    assert any("RANDOM weights" in error.value for error in app.error)


def test_search_by_indexed_photo_more_like_this_and_compare(app: AppTest) -> None:
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    app.text_input(key="search-name").input("coffee").run()
    assert not app.exception
    captions = _captions(app)
    results = [c for c in captions if c.startswith("#")]
    assert results[0].startswith("#1 · 1.000 · exact") and "scikit-image__coffee.jpg" in results[0]
    assert len(results) == 13  # the slider starts at twice search.default_k (20), capped by the collection

    second = next(b for b in app.button if b.key and b.key.startswith("search-more-"))
    second_id = int(second.key.rsplit("-", 1)[1])
    app.button(key=f"search-more-{second_id}").click().run()
    assert not app.exception
    assert app.session_state["search-picked"] == second_id

    app.button(key=f"search-compare-{second_id}").click().run()
    assert any(sub.value == "Side by side" for sub in app.subheader)


def test_search_by_upload_and_its_limits(app: AppTest) -> None:
    app.file_uploader(key="search-upload").upload(
        "q.jpg", (PHOTOS / "scikit-image__rocket.jpg").read_bytes(), "image/jpeg"
    ).run()
    assert not app.exception
    results = [c for c in _captions(app) if c.startswith("#")]
    assert "scikit-image__rocket.jpg" in results[0] and "exact" in results[0]

    app.file_uploader(key="search-upload").upload("bad.jpg", b"<html>nope</html>", "image/jpeg").run()
    assert not app.exception
    assert any("not-an-image" in error.value for error in app.error)


def test_filters_in_the_sidebar(app: AppTest) -> None:
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    app.text_input(key="search-name").input("moon").run()
    app.sidebar.slider(key="search-k").set_value(3).run()
    results = [c for c in _captions(app) if c.startswith("#")]
    assert len(results) == 3
    app.text_input(key="search-under").input("/nowhere").run()
    assert not [c for c in _captions(app) if c.startswith("#")]
    assert any("No photo passes the filters" in info.value for info in app.info)


def test_name_search_never_reads_outside_the_catalog(app: AppTest) -> None:
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    app.text_input(key="search-name").input("../../../etc/passwd").run()
    assert not app.exception
    assert any("No indexed photo matches" in info.value for info in app.info)


def test_region_page(app: AppTest) -> None:
    app.switch_page("views/region.py").run()
    app.radio(key="region-source").set_value("Pick an indexed photo").run()
    app.text_input(key="region-name").input("astronaut").run()
    assert not app.exception
    results = [c for c in _captions(app) if c.startswith("#")]
    assert results and "scikit-image__astronaut.jpg" in results[0] and "box" in results[0]
    app.sidebar.toggle(key="region-heatmaps").set_value(True).run()
    assert not app.exception and len(app.image) > len(results)


def test_duplicates_page(app: AppTest) -> None:
    app.switch_page("views/duplicates.py").run()
    app.slider(key="duplicates-threshold").set_value(0.99).run()
    assert not app.exception
    assert any("1 groups" in md.value for md in app.markdown)
    assert len(app.image) == 1  # the group's contact sheet
    # The keeper rule that chose the original, in words, and each photo's format from its header.
    (group,) = [md.value for md in app.markdown if md.value.startswith("**Group ")]
    assert group.endswith(tuple(f"({words})" for words in KEEPER_RULE_WORDS.values())), group
    (table,) = [md.value for md in app.markdown if md.value.startswith("| # |")]
    rows = [row for row in table.splitlines() if "moon" in row]
    assert len(rows) == 2 and all("| JPEG |" in row for row in rows)
    assert "| ★ keeper |" in rows[0] and "| exact copy |" in rows[1]
    assert app.get("download_button")
    # Review, apply and undo: tests/test_ui_duplicates.py.


def test_the_app_reads_a_postgresql_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    db_url = new_postgres_database(request)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("scikit-image__moon.jpg", "scikit-image__rocket.jpg"):
        shutil.copy(PHOTOS / name, photos)
    run_build(small_config(tmp_path / "data", db_url), [photos], show_progress=False)
    monkeypatch.setenv("LOUPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOUPE_DB_URL", db_url)
    monkeypatch.delenv("LOUPE_CONFIG", raising=False)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert "2 images (0 failed)" in _captions(at)[0]
