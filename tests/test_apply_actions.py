"""``duplicates --apply`` and ``undo`` on a real indexed collection (random weights, small images): every
action changes the files and the catalog together, ``indexer verify`` passes and the next build has
nothing to do, re-running is a no-op, and undo puts every byte and every catalog row back."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from core.lock import BuildLockedError, exclusive_writer
from search import file_actions
from search.apply import apply_plan
from search.cli import main as search_main
from search.journal import read_journal, unfinished_journals
from search.undo import undo_journal
from tests.apply_collection import (
    DUPLICATES,
    KEEPER_OF,
    THRESHOLD,
    Collection,
    assert_consistent,
    build_collection,
    build_template,
    catalog_rows,
    freedesktop_trash,
    plan_for,
    restore,
    tree_state,
)
from tests.conftest import call_in_process, new_postgres_database

pytestmark = pytest.mark.slow

__all__ = ["freedesktop_trash"]  # a fixture, used by name

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("apply-actions")
    build_template(root)
    return root


@pytest.fixture
def collection(template: Path) -> Collection:
    return restore(template)


@pytest.fixture
def search(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return call_in_process(search_main, capsys, args, tmp_path)

    return run


def _ids_by_path(collection: Collection) -> dict[str, int]:
    return {row[0]: id_ for id_, row in catalog_rows(collection).items()}


def test_dry_run_prints_the_plan_and_changes_nothing(collection: Collection, search: Run, tmp_path: Path) -> None:
    before, rows = tree_state(collection.root), catalog_rows(collection)
    data = ["--data-dir", str(collection.data), "--threshold", str(THRESHOLD)]
    reference = ["--reference", str(collection.photos / "ref")]
    table = search("duplicates", "--apply", f"move:{tmp_path / 'dups'}", *reference, *data)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[-1] == "dry run: nothing changed; add --yes to act"
    assert lines[0].startswith("plan: move:") and "5 groups (10 photos)" in lines[0]
    # The reference folder's copy is its group's keeper (keeper rule 'reference'); its other photo is acted on.
    assert "5 to act on, 0 left alone" in lines[0]
    assert sum(1 for line in lines if "keeper chosen by rule '" in line) == 5
    assert sum(1 for line in lines if "keeper chosen by rule 'reference'" in line) == 1
    for relative in [*DUPLICATES[:4], KEEPER_OF["ref/lighthouse.jpg"]]:
        (line,) = [line for line in lines if f" {collection.path(relative)}" in line]
        assert line.split()[0] == "move" and line.endswith(str(tmp_path / "dups" / Path(relative).name))
    (line,) = [line for line in lines if f" {collection.path('ref/lighthouse.jpg')}" in line]
    assert line.split()[:2] == ["keep", "keeper"]
    payload = json.loads(search("duplicates", "--apply", "trash", *reference, *data, "--json").stdout)
    assert payload["dry_run"] is True and payload["action"] == "trash" and payload["to_act"] == 5
    member = next(item for item in payload["items"] if item["path"] == str(collection.path("copies/clock-half.jpg")))
    assert member["keeper"] == str(collection.path("scikit-image__clock_motion.jpg"))
    assert member["keeper_rule"] == "pixels" and 0.999 <= member["score"] < 1 and member["decision"] == "act"
    assert tree_state(collection.root) == before and catalog_rows(collection) == rows
    assert not (tmp_path / "dups").exists()


def test_move_then_undo(collection: Collection, search: Run, tmp_path: Path) -> None:
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    dups = tmp_path / "new" / "dups"
    dups.mkdir(parents=True)
    # A file of someone's own with the name of one moved: never overwritten, the move keeps its folder.
    (dups / "rocket-copy.jpg").write_bytes(b"not a photo of Loupe's")
    result = search(
        "duplicates", "--apply", f"move:{dups}", "--yes", "--data-dir", str(collection.data),
        "--threshold", str(THRESHOLD), "--reference", str(collection.photos / "ref"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "move:" in result.stdout and "5 done, 0 skipped, 0 failed" in result.stdout
    journal = Path(result.stdout.split("journal: ", 1)[1].split()[0])
    assert f"to undo: python -m search undo {journal} --data-dir {collection.data}" in result.stdout
    assert journal.parent == collection.data / "journals" and journal.name.startswith("apply-")

    assert (dups / "rocket-copy.jpg").read_bytes() == b"not a photo of Loupe's"
    moved = {relative: dups / Path(relative).name for relative in [*DUPLICATES[:4], KEEPER_OF["ref/lighthouse.jpg"]]}
    moved["copies/rocket-copy.jpg"] = dups / "copies" / "rocket-copy.jpg"
    after = tree_state(collection.photos)
    ids = {row[0]: id_ for id_, row in catalog_rows(collection).items()}
    for relative, target in moved.items():
        assert not collection.path(relative).exists() and relative not in after
        assert tree_state(target.parent)[target.name] == before[relative]
        old_id = {row[0]: id_ for id_, row in rows.items()}[str(collection.path(relative))]
        assert ids[str(target)] == old_id  # the same row: vector and patch grid stay
        assert catalog_rows(collection)[old_id][1:] == rows[old_id][1:]
    assert after["ref/lighthouse.jpg"] == before["ref/lighthouse.jpg"]
    assert_consistent(collection)

    again = apply_plan(plan_for(collection, f"move:{dups}", (collection.photos / "ref",)), collection.config)
    assert again.count("done") == 0 and again.journal is None  # moved files are in the move folder now

    undone = search("undo", str(journal), "--data-dir", str(collection.data))
    assert undone.returncode == 0, undone.stderr
    assert "5 undone, 0 with nothing to undo, 0 refused, 0 failed" in undone.stdout
    assert tree_state(collection.photos) == before and catalog_rows(collection) == rows
    assert tree_state(dups) == {"rocket-copy.jpg": tree_state(dups)["rocket-copy.jpg"]}
    assert unfinished_journals(collection.data) == []
    assert_consistent(collection)


def test_trash_then_undo(collection: Collection, freedesktop_trash: Path) -> None:
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    ids = _ids_by_path(collection)
    report = apply_plan(plan_for(collection, "trash"), collection.config)
    assert report.count("done") == 5 and report.journal is not None
    trashed = tree_state(freedesktop_trash / "files")
    assert sorted(trashed.values()) == sorted(before[relative] for relative in DUPLICATES)
    infos = sorted((freedesktop_trash / "info").iterdir())
    assert len(infos) == 5 and all(f"Path={collection.photos}" in info.read_text() for info in infos)
    remaining = catalog_rows(collection)
    assert set(remaining) == set(rows) - {ids[str(collection.path(relative))] for relative in DUPLICATES}
    assert_consistent(collection)
    assert apply_plan(plan_for(collection, "trash"), collection.config).journal is None  # nothing left to do

    undone = undo_journal(report.journal, collection.config)
    assert undone.complete and undone.count("undone") == 5
    assert tree_state(collection.photos) == before
    assert catalog_rows(collection) == rows  # the same ids, vectors and patch grids: nothing to embed again
    assert list((freedesktop_trash / "files").iterdir()) == list((freedesktop_trash / "info").iterdir()) == []
    assert not (collection.data / "undo").exists() or list((collection.data / "undo").rglob("*")) == []
    assert_consistent(collection)


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_links_then_undo(collection: Collection, kind: str) -> None:
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    ids = _ids_by_path(collection)
    report = apply_plan(plan_for(collection, kind), collection.config)
    assert report.count("done") == 5 and report.journal is not None
    for relative in DUPLICATES:
        path, keeper = collection.path(relative), collection.path(KEEPER_OF[relative])
        if kind == "hardlink":
            assert os.path.samefile(path, keeper) and not path.is_symlink()
            row = catalog_rows(collection)[ids[str(path)]]
            assert row[1:4] == rows[ids[str(keeper)]][1:4] and row[5:] == rows[ids[str(keeper)]][5:]
        else:
            assert path.is_symlink() and os.readlink(path) == str(keeper)
            assert ids[str(path)] not in catalog_rows(collection)
    # The replaced bytes are kept for undo under the data dir.
    kept = sorted(tree_state(collection.data / "undo").values())
    assert set(kept) >= {before[relative] for relative in DUPLICATES}
    assert_consistent(collection)
    again = apply_plan(plan_for(collection, kind), collection.config)
    assert again.count("done") == 0 and again.journal is None

    undone = undo_journal(report.journal, collection.config)
    assert undone.complete and undone.count("undone") == 5
    assert tree_state(collection.photos) == before and catalog_rows(collection) == rows
    assert_consistent(collection)


def test_reference_folders_and_changed_files_are_left_alone(collection: Collection) -> None:
    changed = collection.path("copies/moon-q50.jpg")
    plan = plan_for(collection, "trash", (collection.photos / "ref",))
    with changed.open("ab") as handle:  # after the plan, before the apply: the sha256 is read again
        handle.write(b"\0")
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    left = [item for item in plan.items if item.decision == "skip"]
    assert [item.path for item in left] == [str(collection.path("ref/lighthouse.jpg"))]
    report = apply_plan(plan, collection.config)
    outcome = {o.path: o for o in report.outcomes}
    assert outcome[str(changed)].status == "skipped" and "changed since it was indexed" in outcome[str(changed)].message
    assert report.count("done") == 3
    after = tree_state(collection.photos)
    assert after["copies/moon-q50.jpg"] == before["copies/moon-q50.jpg"]
    assert after["ref/lighthouse.jpg"] == before["ref/lighthouse.jpg"]
    assert report.journal is not None
    skipped = read_journal(report.journal).skipped
    assert [record["path"] for record in skipped] == [str(changed)]
    assert len(catalog_rows(collection)) == len(rows) - 3


def test_a_failing_file_stops_only_its_own_action(collection: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk on one file: that move fails with the reason, journaled; the others go ahead."""
    target = collection.root / "dups"
    full = collection.path("copies/clock-half.jpg")
    real_replace = os.replace

    def replace(source: object, destination: object) -> None:
        if str(source) == str(full):
            raise OSError(errno.ENOSPC, "No space left on device", str(destination))
        real_replace(source, destination)  # type: ignore[arg-type]

    monkeypatch.setattr(file_actions.os, "replace", replace)
    plan = plan_for(collection, f"move:{target}")
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    report = apply_plan(plan, collection.config)
    monkeypatch.undo()
    outcome = {o.path: o for o in report.outcomes}
    assert outcome[str(full)].status == "failed"
    assert outcome[str(full)].message == (
        f"cannot move {full} to {target / 'clock-half.jpg'}: No space left on device ({target / 'clock-half.jpg'})"
    )
    assert report.count("done") == 4 and not (target / "clock-half.jpg").exists()
    assert tree_state(collection.photos)["copies/clock-half.jpg"] == before["copies/clock-half.jpg"]
    assert report.journal is not None
    entries = read_journal(report.journal).entries
    assert [e.outcome for e in entries.values()].count("failed") == 1
    clock_id = next(id_ for id_, row in rows.items() if row[0] == str(full))
    assert catalog_rows(collection)[clock_id] == rows[clock_id]
    assert_consistent(collection)
    # The same apply again does the one left, and nothing else.
    again = apply_plan(plan_for(collection, f"move:{target}"), collection.config)
    assert [(o.path, o.status) for o in again.outcomes] == [(str(full), "done")]


def test_a_target_that_cannot_be_a_folder_fails_every_move_cleanly(collection: Collection, tmp_path: Path) -> None:
    target = tmp_path / "dups"
    target.write_bytes(b"a file where the folder should be")
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    report = apply_plan(plan_for(collection, f"move:{target}"), collection.config)
    assert report.count("failed") == 5 and report.count("done") == 0
    assert all(o.message.startswith(f"cannot move {o.path} to {target}/") for o in report.outcomes)
    assert tree_state(collection.photos) == before and catalog_rows(collection) == rows
    assert verify_ok(collection)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_target_folder(collection: Collection, tmp_path: Path) -> None:
    target = tmp_path / "dups"
    target.mkdir()
    target.chmod(0o500)
    try:
        report = apply_plan(plan_for(collection, f"move:{target}"), collection.config)
    finally:
        target.chmod(0o755)
    assert report.count("failed") == 5 and all("Permission denied" in o.message for o in report.outcomes)
    assert verify_ok(collection)


def test_undo_never_overwrites_a_file_that_appeared_since(collection: Collection, search: Run) -> None:
    target = collection.root / "dups"
    data = ["--data-dir", str(collection.data), "--threshold", str(THRESHOLD)]
    applied = search("duplicates", "--apply", f"move:{target}", "--yes", "--json", *data)
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert (report["dry_run"], report["done"], report["skipped"], report["failed"]) == (False, 5, 0, 0)
    assert {o["status"] for o in report["outcomes"]} == {"done"} and report["recovered"] == []
    journal = Path(report["journal"])
    newcomer = collection.path("copies/rocket-copy.jpg")
    newcomer.write_bytes(b"a new file at the old name")
    result = search("undo", str(journal), "--data-dir", str(collection.data))
    assert result.returncode == 1
    assert "4 undone, 0 with nothing to undo, 1 refused, 0 failed" in result.stdout
    assert f"refused   {newcomer}: not restoring {newcomer}: a file has appeared there since" in result.stdout
    assert newcomer.read_bytes() == b"a new file at the old name"
    assert (target / "rocket-copy.jpg").is_file()
    assert verify_ok(collection)
    newcomer.unlink()
    retried = search("undo", str(journal), "--data-dir", str(collection.data), "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["undone"] == 1
    assert_consistent(collection)


def test_apply_and_undo_wait_for_no_build(collection: Collection, search: Run, tmp_path: Path) -> None:
    plan = plan_for(collection, f"move:{tmp_path / 'dups'}")
    with exclusive_writer(collection.data, "indexer build"):
        with pytest.raises(BuildLockedError, match="being written by indexer build"):
            apply_plan(plan, collection.config)
        refused = search("duplicates", "--apply", "trash", "--yes", "--data-dir", str(collection.data))
    assert refused.returncode == 2 and "\nerror: " in refused.stderr and "indexer build" in refused.stderr
    assert len(catalog_rows(collection)) == 17 and all(collection.path(r).exists() for r in DUPLICATES)
    assert unfinished_journals(collection.data) == [] and not (collection.data / "journals").exists()
    report = apply_plan(plan, collection.config)
    assert report.journal is not None
    with exclusive_writer(collection.data, "indexer build"), pytest.raises(BuildLockedError):
        undo_journal(report.journal, collection.config)
    assert undo_journal(report.journal, collection.config).count("undone") == 5


def test_on_a_postgresql_catalog(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Rows keep their ids through a move and come back with them (an explicit id in a serial column)."""
    collection = build_collection(tmp_path / "pg", new_postgres_database(request))
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    journals = []
    for action in (f"move:{tmp_path / 'dups'}", "symlink"):
        report = apply_plan(plan_for(collection, action), collection.config)
        assert report.count("done") == len(DUPLICATES) and report.journal is not None
        journals.append(report.journal)
        assert_consistent(collection)
        undone = undo_journal(report.journal, collection.config)
        assert undone.complete and undone.count("undone") == len(DUPLICATES)
        assert tree_state(collection.photos) == before and catalog_rows(collection) == rows
    assert_consistent(collection)
    assert len(set(journals)) == 2


def verify_ok(collection: Collection) -> bool:
    from core.report import verify_collection

    return verify_collection(collection.config).problems == []
