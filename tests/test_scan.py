from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.scan import ScanRootError, scan

EXTENSIONS = frozenset({".jpg", ".png"})


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    _touch(tmp_path / "b.jpg")
    _touch(tmp_path / "a.PNG")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / "sub" / "deeper" / "c.jpg")
    _touch(tmp_path / ".hidden" / "d.jpg")
    _touch(tmp_path / "._shadow.jpg")
    found = [f.path for f in scan([tmp_path], EXTENSIONS)]
    assert found == [tmp_path / "a.PNG", tmp_path / "b.jpg", tmp_path / "sub" / "deeper" / "c.jpg"]


def test_size_and_mtime_recorded(tmp_path: Path) -> None:
    path = _touch(tmp_path / "a.jpg", b"12345")
    os.utime(path, ns=(1_000_000_000, 2_000_000_123))
    (file,) = scan([tmp_path], EXTENSIONS)
    assert (file.size, file.mtime_ns) == (5, 2_000_000_123)


def test_several_roots_and_overlaps_report_each_file_once(tmp_path: Path) -> None:
    _touch(tmp_path / "one" / "a.jpg")
    _touch(tmp_path / "two" / "b.jpg")
    found = [
        f.path for f in scan([tmp_path / "one", tmp_path / "two", tmp_path, tmp_path / "one" / "a.jpg"], EXTENSIONS)
    ]
    assert sorted(found) == [tmp_path / "one" / "a.jpg", tmp_path / "two" / "b.jpg"]


def test_symlink_loop_is_not_followed_forever(tmp_path: Path) -> None:
    _touch(tmp_path / "photos" / "a.jpg")
    (tmp_path / "photos" / "loop").symlink_to(tmp_path / "photos", target_is_directory=True)
    found = [f.path for f in scan([tmp_path / "photos"], EXTENSIONS)]
    assert found == [tmp_path / "photos" / "a.jpg"]


def test_symlinked_file_and_folder_are_stored_resolved(tmp_path: Path) -> None:
    real = _touch(tmp_path / "elsewhere" / "real.jpg")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.jpg").symlink_to(real)
    (root / "linked-folder").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    found = [f.path for f in scan([root], EXTENSIONS)]
    assert found == [real.resolve()]
    assert [f.path for f in scan([root], EXTENSIONS, follow_symlinks=False)] == []


def test_broken_symlink_is_reported_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (file,) = scan([tmp_path], EXTENSIONS)
    assert file.path == tmp_path / "dangling.jpg"
    assert file.size == -1


def test_fifo_named_like_a_photo_is_skipped(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    _touch(tmp_path / "a.jpg")
    assert [f.path.name for f in scan([tmp_path], EXTENSIONS)] == ["a.jpg"]


def test_excluded_folder_is_not_entered(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "loupe-data" / "thumbs" / "t.jpg")
    found = [f.path.name for f in scan([tmp_path], EXTENSIONS, exclude=[tmp_path / "loupe-data"])]
    assert found == ["a.jpg"]


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ScanRootError, match="no such file or folder"):
        list(scan([tmp_path / "nope"], EXTENSIONS))
