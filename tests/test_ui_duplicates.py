"""The Duplicates page with ``AppTest``: pages of groups, keep toggles feeding the planner, the stored
decisions, apply with its dry-run plan and confirmation, and undo, on a small real collection."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.catalog import Catalog
from core.catalog.decisions import content_pair, load_decisions
from core.lock import exclusive_writer
from indexer.pipeline import run_build
from search.apply_plan import KEPT_BY_CURATOR
from tests.apply_collection import (
    DUPLICATES,
    KEEPER_OF,
    Collection,
    assert_consistent,
    catalog_rows,
    make_photos,
    restore,
    tree_state,
)
from tests.conftest import PHOTOS, small_config
from ui.contact_sheets import sheet_dir
from ui.state import open_engine
from ui.thumbnails import thumbnail_dir

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
THRESHOLD = 0.999
# Two more groups than apply_collection's five, so that pages of five groups make two pages.
EXTRA = {"more/astronaut.jpg": "scikit-image__astronaut.jpg", "more/flower-small.jpg": "scikit-learn__flower.jpg"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui-duplicates")
    photos = root / "live" / "photos"
    make_photos(photos)
    (photos / "more").mkdir()
    shutil.copyfile(PHOTOS / EXTRA["more/astronaut.jpg"], photos / "more" / "astronaut.jpg")
    with Image.open(PHOTOS / EXTRA["more/flower-small.jpg"]) as flower:
        flower.resize((flower.width * 3 // 4, flower.height * 3 // 4)).save(photos / "more" / "flower-small.jpg")
    run_build(small_config(root / "live" / "data"), [photos], show_progress=False)
    shutil.copytree(root / "live", root / "template", symlinks=True)
    return root


@pytest.fixture()
def collection(template: Path) -> Collection:
    return restore(template)


def open_page(collection: Collection, monkeypatch: pytest.MonkeyPatch, **state: object) -> AppTest:
    """The Duplicates page of ``collection`` at :data:`THRESHOLD`, with ``state`` in the session first."""
    # Every test restores the collection at the same path: an engine cached by an earlier test would
    # still read the catalog file that test replaced.
    open_engine.clear()
    monkeypatch.setenv("LOUPE_DATA_DIR", str(collection.data))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["duplicates-threshold"] = THRESHOLD
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("views/duplicates.py").run()
    assert not at.exception
    return at


@pytest.fixture()
def app(collection: Collection, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    yield open_page(collection, monkeypatch)


def _plain(markdown: str) -> str:
    """Markdown with its backslash escapes read (names like ``scikit-image__moon.jpg`` come escaped)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _group_titles(at: AppTest) -> list[str]:
    return [_plain(md.value) for md in at.markdown if md.value.startswith("**Group ")]


def _group_number(at: AppTest, collection: Collection, relative: str) -> int:
    """The number of the group that holds the photo at ``relative`` on the page now."""
    path = str(collection.path(relative))
    groups = at.session_state["duplicates-groups"]
    return next(n for n, group in enumerate(groups, start=1) if any(m.path == path for m in group.members))


def _tables(at: AppTest) -> list[list[list[str]]]:
    """Each group's table of photos: its rows, each row's cells (Markdown escapes read)."""
    return [
        [[cell.strip() for cell in row.strip("|").split(" | ")] for row in _plain(md.value).splitlines()[2:]]
        for md in at.markdown
        if md.value.startswith("| # |")
    ]


def _photo_id(collection: Collection, relative: str) -> int:
    catalog = Catalog.open(collection.config.resolved_db_url, create=False)
    try:
        photo = catalog.photo_by_path(str(collection.path(relative).resolve()))
    finally:
        catalog.close()
    assert photo is not None, relative
    return photo.id


def _made(collection: Collection) -> tuple[int, int]:
    """How many thumbnails and contact sheets the page has made so far (the collection starts with none)."""
    folder = thumbnail_dir(collection.data)
    return len(list(folder.glob("*.jpg"))), len(list(sheet_dir(collection.data).glob("*.jpg")))


def test_groups_come_a_page_at_a_time(collection: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _made(collection) == (0, 0)
    app = open_page(collection, monkeypatch, **{"duplicates-per-page": 5})
    assert any("7 groups" in md.value for md in app.markdown)
    first = _group_titles(app)
    assert len(first) == 5 and first[0].startswith("**Group 1**")
    assert any(c.value == "Groups 1-5 of 7" for c in app.caption)
    assert _made(collection) == (10, 5) and len(app.image) == 5  # this page's photos only; a sheet per group

    app.button(key="duplicates-next-top").click().run()
    second = _group_titles(app)
    assert [title.split("·")[0] for title in second] == ["**Group 6** ", "**Group 7** "]
    assert not set(second) & set(first)
    assert _made(collection) == (14, 7) and app.number_input(key="duplicates-page").value == 2
    # The keeper rule in words, and each photo's format from its header.
    assert all(title.endswith(")") and "keeper" in title for title in second)
    # Groups 6 and 7: the flower and its smaller copy, the lighthouse and its exact copy, each with its
    # keeper first, and each photo's format from its header.
    flower, lighthouse = _tables(app)
    assert [row[:3] for row in lighthouse] == [
        ["1", "tuxpaint-data__lighthouse.jpg", "★ keeper"],
        ["2", "lighthouse.jpg", "exact copy"],
    ]
    assert flower[1][1] == "flower-small.jpg" and flower[1][2].startswith("similarity ")
    assert all(row[5] == "JPEG" for row in flower + lighthouse)

    app.button(key="duplicates-previous-bottom").click().run()
    assert _group_titles(app) == first
    assert app.get("download_button")  # the CSV, made only when clicked


def test_keep_toggles_feed_the_plan_and_nothing_moves_before_the_confirmation(
    app: AppTest, collection: Collection
) -> None:
    before = tree_state(collection.root)
    kept = _photo_id(collection, "copies/moon-q50.jpg")
    toggles = f"duplicates-keep-{_group_number(app, collection, 'copies/moon-q50.jpg')}"
    app.pills(key=toggles).set_value([kept]).run()
    app.selectbox(key="duplicates-apply-kind").set_value("trash").run()
    app.button(key="duplicates-apply-review").click().run()
    assert not app.exception
    (table,) = app.dataframe
    rows = {row["photo"]: row for row in table.value.to_dict("records")}
    assert rows[str(collection.path("copies/moon-q50.jpg"))]["to / why"] == KEPT_BY_CURATOR
    assert rows[str(collection.path("copies/moon-q50.jpg"))]["do"] == "skip"
    acted = [path for path, row in rows.items() if row["do"] == "trash"]
    assert len(acted) == len(DUPLICATES) + len(EXTRA) - 1
    assert app.button(key="duplicates-apply-confirm").label.startswith("Confirm: trash 6 photos")
    assert tree_state(collection.root) == before  # a dry run

    # Another toggle after the plan was made: the plan is dropped, never carried out.
    app.pills(key=toggles).set_value([]).run()
    assert not [b for b in app.button if b.key == "duplicates-apply-confirm"]
    assert any("review the plan again" in info.value for info in app.info)
    assert tree_state(collection.root) == before


def test_apply_a_move_then_undo_it(app: AppTest, collection: Collection) -> None:
    before_files, before_rows = tree_state(collection.root), catalog_rows(collection)
    kept = "copies/clock-half.jpg"
    app.pills(key=f"duplicates-keep-{_group_number(app, collection, kept)}").set_value(
        [_photo_id(collection, kept)]
    ).run()
    app.text_input(key="duplicates-apply-folder").input("dups").run()
    app.button(key="duplicates-apply-review").click().run()
    assert any("not a full path" in error.value for error in app.error)
    dups = collection.root / "dups"
    app.text_input(key="duplicates-apply-folder").input(str(dups)).run()
    app.button(key="duplicates-apply-review").click().run()
    assert tree_state(collection.root) == before_files
    app.button(key="duplicates-apply-confirm").click().run()
    assert not app.exception
    assert any(s.value.startswith(f"move:{dups}: 6 done, 0 skipped, 0 failed") for s in app.success)

    moved = [relative for relative in [*DUPLICATES, *EXTRA] if relative != kept]
    for relative in moved:
        assert not collection.path(relative).exists()
        landed = dups / Path(relative).name
        assert f"photos/{relative}" in before_files  # its bytes, moved byte for byte
        assert tree_state(dups)[landed.name] == before_files[f"photos/{relative}"]
    assert collection.path(kept).exists()
    rows = catalog_rows(collection)
    assert {rows[i][0] for i in rows} == {before_rows[i][0] for i in before_rows} - {
        str(collection.path(r)) for r in moved
    } | {str(dups / Path(r).name) for r in moved}
    # The groups follow the catalog: the moved copies are still duplicates of their keepers.
    assert any("7 groups" in md.value for md in app.markdown)
    assert any(row[6] == str(dups) for table in _tables(app) for row in table)

    app.button(key="duplicates-apply-undo").click().run()
    assert not app.exception
    assert any("6 undone" in s.value for s in app.success)
    assert not [b for b in app.button if b.key == "duplicates-apply-undo"]
    after = tree_state(collection.root)
    assert {k: v for k, v in after.items() if not k.startswith("data/")} == {
        k: v for k, v in before_files.items() if not k.startswith("data/")
    }
    assert catalog_rows(collection) == before_rows
    assert_consistent(collection)


def test_an_apply_while_a_build_runs_changes_nothing(app: AppTest, collection: Collection) -> None:
    before = tree_state(collection.photos)
    app.selectbox(key="duplicates-apply-kind").set_value("trash").run()
    app.button(key="duplicates-apply-review").click().run()
    with exclusive_writer(collection.data, "a build"):
        app.button(key="duplicates-apply-confirm").click().run()
    assert not app.exception
    assert any(error.value.startswith("Nothing was done:") for error in app.error)
    assert tree_state(collection.photos) == before
    assert [b for b in app.button if b.key == "duplicates-apply-confirm"]  # the plan is still there to confirm


def test_keep_this_one_and_not_a_duplicate_store_decisions_and_regroup(app: AppTest, collection: Collection) -> None:
    half = "copies/clock-half.jpg"
    number = _group_number(app, collection, half)
    app.selectbox(key=f"duplicates-photo-{number}").set_value(_photo_id(collection, half)).run()
    app.button(key=f"duplicates-pin-{number}").click().run()
    assert not app.exception
    assert any("now the keeper of its group" in s.value for s in app.success)
    number = _group_number(app, collection, half)
    assert _group_titles(app)[number - 1].endswith("keeper **clock-half.jpg** (pinned as the keeper)")

    catalog = Catalog.open(collection.config.resolved_db_url, create=False)
    try:
        half_photo = catalog.photo_by_path(str(collection.path(half)))
        assert half_photo is not None and load_decisions(catalog).pinned == (half_photo.sha256,)
    finally:
        catalog.close()
    app.button(key=f"duplicates-unpin-{number}").click().run()
    assert any("no longer pinned" in s.value for s in app.success)
    number = _group_number(app, collection, half)
    assert "keeper **scikit-image__clock_motion.jpg**" in _group_titles(app)[number - 1]

    moon = "copies/moon-q50.jpg"
    number = _group_number(app, collection, moon)
    app.selectbox(key=f"duplicates-photo-{number}").set_value(_photo_id(collection, moon)).run()
    app.button(key=f"duplicates-dismiss-{number}").click().run()
    assert any("not duplicates" in s.value for s in app.success)
    assert any("6 groups" in md.value for md in app.markdown)
    assert not [t for t in _group_titles(app) if "moon" in t]
    catalog = Catalog.open(collection.config.resolved_db_url, create=False)
    try:
        photos = [catalog.photo_by_path(str(collection.path(p))) for p in (moon, KEEPER_OF[moon])]
        assert photos[0] is not None and photos[1] is not None
        assert load_decisions(catalog).dismissed == {content_pair(photos[0].sha256, photos[1].sha256)}
    finally:
        catalog.close()
    # An exact copy cannot be dismissed: the same bytes are always duplicates.
    number = _group_number(app, collection, "copies/rocket-copy.jpg")
    app.selectbox(key=f"duplicates-photo-{number}").set_value(_photo_id(collection, "copies/rocket-copy.jpg")).run()
    assert app.button(key=f"duplicates-dismiss-{number}").disabled


def test_an_earlier_apply_is_undone_from_its_journal(
    app: AppTest, collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree_state(collection.photos)
    app.text_input(key="duplicates-apply-folder").input(str(collection.root / "dups")).run()
    app.button(key="duplicates-apply-review").click().run()
    app.button(key="duplicates-apply-confirm").click().run()
    assert tree_state(collection.photos) != before

    later = open_page(collection, monkeypatch)  # another browser session: its outcome and Undo are gone
    assert not [b for b in later.button if b.key == "duplicates-apply-undo"]
    (journal,) = later.selectbox(key="duplicates-apply-journal").options
    assert journal.startswith("apply-") and journal.endswith(".jsonl")
    later.button(key="duplicates-apply-undo-earlier").click().run()
    assert not later.exception
    assert any("7 undone" in s.value for s in later.success)
    assert tree_state(collection.photos) == before
