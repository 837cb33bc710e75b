"""A small indexed collection with duplicates, for the tests of acting on them, and what they check it with.

The collection (built once per test module with random weights at the test image size, then restored
from a copy before each test, modification times included, so every test starts from the same indexed
state) holds the test photos and:

- ``copies/scikit-image__coffee.jpg`` and ``copies/rocket-copy.jpg``: exact copies (newer, so not keepers);
- ``copies/clock-half.jpg``: the clock photo at half size (a near duplicate with other bytes);
- ``copies/moon-q50.jpg``: the moon photo re-compressed;
- ``ref/lighthouse.jpg``: an exact copy in a folder the tests name as a reference folder.

At the threshold :data:`THRESHOLD` these make five groups of two (random weights score the resized and
re-compressed copies above 0.9998 and no two different photos above 0.99).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from core.catalog import Catalog, path_from_db
from core.config import LoupeConfig
from core.report import verify_collection
from indexer.pipeline import run_build
from indexer.summary import BuildSummary
from search.apply_plan import Plan, parse_action, plan_actions
from search.duplicates import find_duplicate_groups
from search.engine import SearchEngine
from tests.conftest import PHOTOS, small_config

THRESHOLD = 0.999
# The copies each test acts on (the non-keepers), by their path below the photos folder.
DUPLICATES = (
    "copies/scikit-image__coffee.jpg",
    "copies/rocket-copy.jpg",
    "copies/clock-half.jpg",
    "copies/moon-q50.jpg",
    "ref/lighthouse.jpg",
)
KEEPER_OF = {
    "copies/scikit-image__coffee.jpg": "scikit-image__coffee.jpg",
    "copies/rocket-copy.jpg": "scikit-image__rocket.jpg",
    "copies/clock-half.jpg": "scikit-image__clock_motion.jpg",
    "copies/moon-q50.jpg": "scikit-image__moon.jpg",
    "ref/lighthouse.jpg": "tuxpaint-data__lighthouse.jpg",
}
# An hour after the originals: copies are never the oldest, so never keepers.
LATER_NS = 3_600 * 10**9


@dataclass(frozen=True)
class Collection:
    root: Path
    photos: Path
    data: Path
    config: LoupeConfig

    def path(self, relative: str) -> Path:
        return self.photos / relative


def make_photos(photos: Path) -> None:
    shutil.copytree(PHOTOS, photos)
    (photos / "copies").mkdir()
    (photos / "ref").mkdir()
    shutil.copyfile(PHOTOS / "scikit-image__coffee.jpg", photos / "copies" / "scikit-image__coffee.jpg")
    shutil.copyfile(PHOTOS / "scikit-image__rocket.jpg", photos / "copies" / "rocket-copy.jpg")
    shutil.copyfile(PHOTOS / "tuxpaint-data__lighthouse.jpg", photos / "ref" / "lighthouse.jpg")
    with Image.open(PHOTOS / "scikit-image__clock_motion.jpg") as clock:
        clock.resize((clock.width // 2, clock.height // 2)).save(photos / "copies" / "clock-half.jpg", quality=90)
    with Image.open(PHOTOS / "scikit-image__moon.jpg") as moon:
        moon.save(photos / "copies" / "moon-q50.jpg", quality=50)
    for relative in DUPLICATES:
        original = (photos / KEEPER_OF[relative]).stat().st_mtime_ns
        os.utime(photos / relative, ns=(original + LATER_NS, original + LATER_NS))


def build_collection(root: Path, db_url: str | None = None) -> Collection:
    """The collection built in ``root`` (its catalog at ``db_url``, default SQLite in ``root/data``)."""
    make_photos(root / "photos")
    config = small_config(root / "data", db_url)
    run_build(config, [root / "photos"], show_progress=False)
    return Collection(root=root, photos=root / "photos", data=root / "data", config=config)


def build_template(root: Path) -> None:
    """Build the collection in ``root/live`` and keep a pristine copy in ``root/template``."""
    build_collection(root / "live")
    shutil.copytree(root / "live", root / "template", symlinks=True)


def restore(root: Path) -> Collection:
    """``root/live`` as the template has it (copytree keeps modification times, so the catalog matches)."""
    live = root / "live"
    if live.exists():
        for folder, subfolders, _ in os.walk(live):
            os.chmod(folder, 0o755)  # a test may have made one read-only
            for name in subfolders:
                os.chmod(os.path.join(folder, name), 0o755)
        shutil.rmtree(live)
    shutil.copytree(root / "template", live, symlinks=True)
    return Collection(root=live, photos=live / "photos", data=live / "data", config=small_config(live / "data"))


def plan_for(collection: Collection, action: str, reference: tuple[Path, ...] = ()) -> Plan:
    """The plan of ``action`` at :data:`THRESHOLD`, groups found as the CLI finds them."""
    engine = SearchEngine.open(collection.config)
    try:
        groups = find_duplicate_groups(engine, THRESHOLD)
    finally:
        engine.close()
    return plan_actions(groups, parse_action(action), THRESHOLD, reference)


def tree_state(root: Path) -> dict[str, str]:
    """Every file and link below ``root``: a regular file's sha256, a link's target, a folder's mark."""
    state: dict[str, str] = {}
    for folder, subfolders, files in os.walk(root):
        for name in sorted(files + [s for s in subfolders if os.path.islink(os.path.join(folder, s))]):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                state[relative] = "link -> " + os.readlink(path)
            else:
                state[relative] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return state


def catalog_rows(collection: Collection) -> dict[int, tuple[Any, ...]]:
    """Every catalog row by id: path, sha256, size, mtime, status, and the sha256 of its embedding and of
    its patch grid (None without one)."""
    catalog = Catalog.open(collection.config.resolved_db_url, create=False)
    try:
        with catalog.session() as session:
            rows = session.execute(
                text(
                    "SELECT i.id, i.path, i.sha256, i.size_bytes, i.mtime_ns, i.status, i.embedding, g.data "
                    "FROM images i LEFT JOIN patch_grids g ON g.image_id = i.id"
                )
            ).all()
    finally:
        catalog.close()
    return {row[0]: (path_from_db(row[1]), *row[2:6], _digest(row[6]), _digest(row[7])) for row in rows}


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def assert_consistent(collection: Collection) -> None:
    """``indexer verify`` passes, and a build over the photos has nothing to do."""
    problems = verify_collection(collection.config).problems
    assert problems == []
    summary = run_build(collection.config, [collection.photos], show_progress=False)
    assert nothing_done(summary), summary


def nothing_done(summary: BuildSummary) -> bool:
    work = (summary.new, summary.changed, summary.moved, summary.copied, summary.touched, summary.removed)
    return work == (0,) * 6 and summary.embedded == 0 and summary.failed == 0 and summary.unchanged == summary.scanned


@pytest.fixture
def freedesktop_trash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test's own freedesktop trash: HOME and XDG_DATA_HOME below ``tmp_path`` (on the photos' file
    system, so send2trash uses the home trash), set in send2trash too, which reads them once at import.
    Returns the trash folder. No test touches the real trash."""
    import send2trash
    import send2trash.plat_other as freedesktop

    if send2trash.send2trash is not freedesktop.send2trash:
        pytest.skip("send2trash uses gio here; these tests drive its own freedesktop implementation")
    home = tmp_path / "home"
    data_home = home / ".local" / "share"
    data_home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setattr(freedesktop, "XDG_DATA_HOME", os.fsencode(data_home))
    monkeypatch.setattr(freedesktop, "HOMETRASH_B", os.fsencode(data_home / "Trash"))
    monkeypatch.setattr(freedesktop, "HOMETRASH", str(data_home / "Trash"))
    return data_home / "Trash"
