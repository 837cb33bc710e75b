"""File steps of acting on duplicates (:mod:`search.file_actions`, :mod:`search.action_steps`,
:mod:`search.trash`) on real files: nothing is ever overwritten, a move across file systems is a verified
copy, and every state an interrupted step can leave is told apart and tidied without losing a byte."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from search import file_actions
from search.action_steps import UndoRefusedError, settle
from search.file_actions import WouldOverwriteError, keep_copy, move_file, replace_with_link, reserve
from search.journal import ActionRecord
from search.trash import find_in_trash

BYTES = b"\xff\xd8 a photo's bytes " * 100
SHA = hashlib.sha256(BYTES).hexdigest()


def photo(path: Path, data: bytes = BYTES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return path


def action(kind: str, path: Path, target: Path | None, holding: Path | None = None) -> ActionRecord:
    return ActionRecord(
        seq=1, kind=kind, path=str(path), sha256=SHA, image_id=1, keeper=str(target), keeper_id=2,
        keeper_sha256=SHA, group=1, score=1.0, keeper_rule="pixels", target=None if target is None else str(target),
        holding=None if holding is None else str(holding), saved_row=None, temporary=".loupe-j-1.tmp",
    )  # fmt: skip


def test_move_never_overwrites(tmp_path: Path) -> None:
    source = photo(tmp_path / "a.jpg")
    taken = photo(tmp_path / "dups" / "a.jpg", b"someone's")
    with pytest.raises(WouldOverwriteError):
        move_file(source, taken, SHA, taken.parent / ".t")
    assert source.read_bytes() == BYTES and taken.read_bytes() == b"someone's"
    dangling = tmp_path / "dups" / "b.jpg"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(WouldOverwriteError):
        reserve(dangling)


def test_move_across_file_systems_is_a_verified_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = photo(tmp_path / "a.jpg")
    destination = tmp_path / "new" / "folder" / "a.jpg"
    real_replace = os.replace

    def replace(src: object, dst: object) -> None:
        if str(src) == str(source):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(file_actions.os, "replace", replace)
    move_file(source, destination, SHA, destination.parent / ".loupe-j-1.tmp")
    assert not source.exists() and destination.read_bytes() == BYTES
    assert destination.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert sorted(os.listdir(destination.parent)) == ["a.jpg"]


def test_a_failed_copy_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = photo(tmp_path / "a.jpg")
    destination = tmp_path / "dups" / "a.jpg"

    def no_room(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def cross_device(*_: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(file_actions.os, "replace", cross_device)
    monkeypatch.setattr(file_actions.shutil, "copyfileobj", no_room)
    with pytest.raises(OSError, match="No space"):
        move_file(source, destination, SHA, destination.parent / ".loupe-j-1.tmp")
    assert source.read_bytes() == BYTES and os.listdir(destination.parent) == []


def test_settle_a_move_interrupted_at_each_step(tmp_path: Path) -> None:
    source, target = tmp_path / "a.jpg", tmp_path / "dups" / "a.jpg"
    step = action("move", source, target)
    photo(source)
    target.parent.mkdir()
    reserve(target)  # killed after claiming the name
    assert settle(step).state == "original" and not target.exists() and source.read_bytes() == BYTES
    photo(target)  # killed after a copy across file systems, before the source went
    assert settle(step).state == "original" and not target.exists()
    os.replace(source, target)  # killed after the rename, before the catalog followed
    assert settle(step).state == "applied"
    reserve(source)  # an undo killed after claiming the old name
    assert settle(step).state == "applied" and not source.exists()
    photo(source, b"a new file at the old name")
    assert settle(step).state == "applied"  # undo will refuse; nothing is dropped
    assert target.read_bytes() == BYTES and source.read_bytes() == b"a new file at the old name"


def test_settle_a_hard_link_interrupted_at_each_step(tmp_path: Path) -> None:
    keeper, duplicate = photo(tmp_path / "k.jpg"), photo(tmp_path / "d.jpg", BYTES)
    holding = tmp_path / "data" / "undo" / "j" / "1" / "d.jpg"
    step = action("hardlink", duplicate, keeper, holding)
    keep_copy(duplicate, holding, SHA)  # killed after keeping the bytes
    (tmp_path / ".loupe-j-1.tmp").hardlink_to(keeper)  # and making the link under its temporary name
    assert settle(step).state == "original" and not holding.exists()
    assert sorted(os.listdir(tmp_path)) == ["d.jpg", "data", "k.jpg"]
    keep_copy(duplicate, holding, SHA)
    replace_with_link(duplicate, keeper, tmp_path / ".loupe-j-1.tmp", symbolic=False)
    assert settle(step).state == "applied" and holding.read_bytes() == BYTES
    duplicate.unlink()
    photo(duplicate, b"the user's new file")  # replaced since: the kept bytes stay, undo refuses
    with pytest.raises(UndoRefusedError, match="has changed since"):
        settle(step)
    assert holding.read_bytes() == BYTES


def test_find_in_trash_by_path_and_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    trash = tmp_path / "share" / "Trash"
    original = tmp_path / "photos" / "my photo.jpg"
    (trash / "info").mkdir(parents=True)
    for name, data, where in [
        ("my photo.jpg", b"another file once there", original),
        ("my photo 1.jpg", BYTES, original),
        ("my photo 2.jpg", BYTES, tmp_path / "elsewhere" / "my photo.jpg"),
    ]:
        photo(trash / "files" / name, data)
        info = trash / "info" / f"{name}.trashinfo"
        info.write_text(f"[Trash Info]\nPath={str(where).replace(' ', '%20')}\nDeletionDate=2026-01-01T00:00:00\n")
    found = find_in_trash(original, SHA)
    assert found is not None and Path(found.file) == trash / "files" / "my photo 1.jpg"
    assert Path(found.info) == trash / "info" / "my photo 1.jpg.trashinfo"
    assert find_in_trash(tmp_path / "photos" / "other.jpg", SHA) is None
