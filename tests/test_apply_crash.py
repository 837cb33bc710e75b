"""Crash tests of acting on duplicates: ``search duplicates --apply ... --yes`` (and ``search undo``) killed
with SIGKILL mid-way in a subprocess (``tests/apply_crash_harness.py``), then completed by running the
same apply again or reversed by ``undo``. Either way every file ends byte for byte as expected, the
catalog agrees with the files and the FAISS files (``indexer verify``), and the next build has nothing
to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from search.apply import apply_plan
from search.journal import read_journal, unfinished_journals
from search.undo import undo_journal
from tests.apply_collection import (
    DUPLICATES,
    KEEPER_OF,
    THRESHOLD,
    Collection,
    assert_consistent,
    build_template,
    catalog_rows,
    plan_for,
    restore,
    tree_state,
)
from tests.crash_harness import harness_env

pytestmark = pytest.mark.slow

HARNESS = str(Path(__file__).with_name("apply_crash_harness.py"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("apply-crash")
    build_template(root)
    return root


@pytest.fixture
def collection(template: Path) -> Collection:
    return restore(template)


def killed(collection: Collection, tmp_path: Path, phase: str, at: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m search ARGS`` killed at the ``at``-th ``phase``, with its own HOME and trash."""
    home = tmp_path / "home"
    (home / ".local" / "share").mkdir(parents=True, exist_ok=True)
    env = {**harness_env(), "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")}
    result = subprocess.run(
        [sys.executable, HARNESS, phase, str(at), "--", *args, "--data-dir", str(collection.data)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result


def apply_args(action: str, journal: Path) -> list[str]:
    return ["duplicates", "--apply", action, "--yes", "--threshold", str(THRESHOLD), "--journal", str(journal)]


def trash_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process's send2trash and trash lookups pointed at the killed run's HOME."""
    import send2trash.plat_other as freedesktop

    data_home = tmp_path / "home" / ".local" / "share"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setattr(freedesktop, "XDG_DATA_HOME", os.fsencode(data_home))
    monkeypatch.setattr(freedesktop, "HOMETRASH_B", os.fsencode(data_home / "Trash"))
    monkeypatch.setattr(freedesktop, "HOMETRASH", str(data_home / "Trash"))
    return data_home / "Trash"


@pytest.mark.parametrize(
    ("action", "phase", "at"),
    [("move", "begin", 3), ("hardlink", "changed", 2), ("trash", "changed", 4)],
)
def test_a_killed_apply_is_completed_by_running_it_again(
    collection: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str, phase: str, at: int
) -> None:
    before = tree_state(collection.photos)
    spec = f"move:{tmp_path / 'dups'}" if action == "move" else action
    journal = tmp_path / "apply.jsonl"
    killed(collection, tmp_path, phase, at, *apply_args(spec, journal))
    contents = read_journal(journal)
    assert [e.outcome for e in contents.entries.values()] == ["done"] * (at - 1) + [None]
    assert not contents.ended and unfinished_journals(collection.data) == [journal]
    trash = trash_env(monkeypatch, tmp_path)

    report = apply_plan(plan_for(collection, spec), collection.config)
    # The interrupted action is finished (its file had changed) or dropped and planned again (it had not).
    assert [o.status for o in report.recovered] == ["skipped" if phase == "begin" else "done"]
    assert report.count("done") == len(DUPLICATES) - at + (1 if phase == "begin" else 0)
    assert report.count("failed") == 0 and unfinished_journals(collection.data) == []
    assert read_journal(journal).ended
    after = tree_state(collection.photos)
    for relative in DUPLICATES:
        path, keeper = collection.path(relative), collection.path(KEEPER_OF[relative])
        if action == "move":
            assert not path.exists() and tree_state(tmp_path / "dups")[path.name] == before[relative]
        elif action == "hardlink":
            assert os.path.samefile(path, keeper)
        else:
            assert not path.exists()
    if action == "trash":
        assert sorted(tree_state(trash / "files").values()) == sorted(before[r] for r in DUPLICATES)
    assert {k: v for k, v in after.items() if k not in DUPLICATES} == {
        k: v for k, v in before.items() if k not in DUPLICATES
    }
    assert_consistent(collection)


@pytest.mark.parametrize(
    ("action", "phase", "at"),
    [("move", "changed", 3), ("trash", "begin", 2), ("symlink", "changed", 5)],
)
def test_a_killed_apply_is_reversed_by_undo(
    collection: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str, phase: str, at: int
) -> None:
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    spec = f"move:{tmp_path / 'dups'}" if action == "move" else action
    journal = tmp_path / "apply.jsonl"
    killed(collection, tmp_path, phase, at, *apply_args(spec, journal))
    trash_env(monkeypatch, tmp_path)

    report = undo_journal(journal, collection.config)
    assert report.complete
    assert report.count("undone") == at - (1 if phase == "begin" else 0)
    assert tree_state(collection.photos) == before and catalog_rows(collection) == rows
    assert unfinished_journals(collection.data) == []
    assert_consistent(collection)


def test_a_killed_undo_is_finished_by_undo(collection: Collection, tmp_path: Path) -> None:
    before, rows = tree_state(collection.photos), catalog_rows(collection)
    report = apply_plan(plan_for(collection, "hardlink"), collection.config)
    assert report.journal is not None and report.count("done") == len(DUPLICATES)
    killed(collection, tmp_path, "undo-changed", 3, "undo", str(report.journal))
    assert read_journal(report.journal).undo_started and not read_journal(report.journal).undo_ended

    again = undo_journal(report.journal, collection.config)
    assert again.complete and again.count("undone") == len(DUPLICATES) - 2
    assert tree_state(collection.photos) == before and catalog_rows(collection) == rows
    assert_consistent(collection)
