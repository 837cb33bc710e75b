"""Every page of the Streamlit app with ``AppTest``, against a small real index (random weights)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from indexer.pipeline import run_build
from search.keeper import KEEPER_RULE_WORDS
from tests.conftest import (
    PHOTOS,
    REPO,
    captions,
    indexed_collection,
    new_postgres_database,
    open_app,
    opened_files,
    opened_outside,
    result_captions,
    small_config,
)
from ui.thumbnails import thumbnail_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def add_a_copy(photos: Path) -> None:
        shutil.copy(PHOTOS / "scikit-image__moon.jpg", photos / "moon-copy.jpg")

    return indexed_collection(tmp_path_factory.mktemp("ui"), add=add_a_copy)[1]


@pytest.fixture()
def app(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    return open_app(data_dir, monkeypatch)


def test_missing_index_shows_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(tmp_path / "nothing-here", monkeypatch)
    assert not at.exception
    assert any("python -m indexer build" in info.value for info in at.info)


def test_header_shows_the_collection_and_the_random_weights_warning(app: AppTest) -> None:
    assert not app.exception
    header = captions(app)[0]
    assert "13 images (0 failed)" in header and "64 px" in header and "IDMap2,Flat" in header
    assert any("RANDOM weights" in error.value for error in app.error)


def test_search_by_indexed_photo_more_like_this_and_compare(app: AppTest) -> None:
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    app.text_input(key="search-name").input("coffee").run()
    assert not app.exception
    results = result_captions(app)
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
    results = result_captions(app)
    assert "scikit-image__rocket.jpg" in results[0] and "exact" in results[0]

    app.file_uploader(key="search-upload").upload("bad.jpg", b"<html>nope</html>", "image/jpeg").run()
    assert not app.exception
    assert any("not-an-image" in error.value for error in app.error)


def test_filters_in_the_sidebar(app: AppTest) -> None:
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    app.text_input(key="search-name").input("moon").run()
    app.sidebar.slider(key="search-k").set_value(3).run()
    results = result_captions(app)
    assert len(results) == 3
    app.text_input(key="search-under").input("/nowhere").run()
    assert not result_captions(app)
    assert any("No photo passes the filters" in info.value for info in app.info)


def test_name_search_never_reads_outside_the_catalog(app: AppTest, data_dir: Path) -> None:
    photos = data_dir.parent / "photos"
    app.radio(key="search-source").set_value("Pick an indexed photo").run()
    with opened_files() as opened:
        app.text_input(key="search-name").input("../../../etc/passwd").run()
    assert not app.exception
    assert any("No indexed photo matches" in info.value for info in app.info)
    # The run read its code, its settings and the index's pointer files: no photo, no thumbnail, and
    # nothing the name points at (the app runs in the repository, where the name is /etc/passwd).
    outside = opened_outside(opened, REPO, sys.prefix, sys.base_prefix, os.environ["LOUPE_CONFIG"], data_dir)
    assert not outside, outside
    thumbnails = [path for path in opened if Path(path).is_relative_to(thumbnail_dir(data_dir))]
    assert not thumbnails, thumbnails

    # The record sees a photo being read: a name in the catalog opens that photo.
    with opened_files() as opened:
        app.text_input(key="search-name").input("coffee").run()
    assert str((photos / "scikit-image__coffee.jpg").resolve()) in opened


def _drag_component(app: AppTest) -> Any:
    """The region page's drag component, which shows the query image with its box."""
    (drawn,) = [e for e in app.main if e.type == "component_instance"]
    return drawn


def test_region_page(app: AppTest) -> None:
    app.switch_page("views/region.py").run()
    app.radio(key="region-source").set_value("Pick an indexed photo").run()
    app.text_input(key="region-name").input("astronaut").run()
    assert not app.exception
    results = result_captions(app)
    assert results and "scikit-image__astronaut.jpg" in results[0] and "box" in results[0]
    plain = [image.value for image in app.image]
    query_drawn = _drag_component(app).proto.json_args
    app.sidebar.toggle(key="region-heatmaps").set_value(True).run()
    assert not app.exception
    tinted = [image.value for image in app.image]
    # Streamlit names each image it serves by a hash of its bytes: every result is shown again, as other
    # bytes (tinted by its heatmap), while the query, in the drag component, is drawn as it was.
    assert len(tinted) == len(plain) == len(results)
    assert all(with_heatmap != without for with_heatmap, without in zip(tinted, plain, strict=True))
    assert _drag_component(app).proto.json_args == query_drawn


def test_region_sliders_set_the_box_that_is_drawn_and_searched(app: AppTest) -> None:
    """The sliders and a drag share the box's state (ui/region_box.py); the drag itself runs in a real
    browser (tests/test_ui_browser_region.py). Moving a slider searches and redraws the new box."""
    app.switch_page("views/region.py").run()
    app.radio(key="region-source").set_value("Pick an indexed photo").run()
    app.text_input(key="region-name").input("astronaut").run()
    x_key, y_key = "region-x-scikit-image__astronaut.jpg", "region-y-scikit-image__astronaut.jpg"
    assert app.slider(key=x_key).value == (128, 384) and app.slider(key=y_key).value == (128, 384)
    assert any("region snapped to (128, 128, 384, 384)" in c for c in captions(app))
    drawn = [e for e in app.main if e.type == "component_instance"]  # the drag component, with the image
    assert len(drawn) == 1
    before = drawn[0].proto.json_args

    app.slider(key=x_key).set_range(0, 256)
    app.slider(key=y_key).set_range(256, 512).run()
    assert not app.exception
    assert app.slider(key=x_key).value == (0, 256) and app.slider(key=y_key).value == (256, 512)
    assert any("region snapped to (0, 256, 256, 512)" in c for c in captions(app))
    results = result_captions(app)
    assert "scikit-image__astronaut.jpg" in results[0] and results[0].endswith("box 0,256,256,512")
    assert next(e for e in app.main if e.type == "component_instance").proto.json_args != before  # redrawn


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
    monkeypatch.setenv("LOUPE_DB_URL", db_url)
    at = open_app(tmp_path / "data", monkeypatch)
    assert not at.exception
    assert "2 images (0 failed)" in captions(at)[0]
