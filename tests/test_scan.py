from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest

from core.scan import ExcludeGlobs, ScanRootError, scan

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


def test_exclude_globs_leave_out_matching_files_and_folders(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "a.tmp.jpg")
    _touch(tmp_path / "thumbnails" / "t.jpg")
    _touch(tmp_path / "2020" / "thumbnails" / "deep" / "t.jpg")
    _touch(tmp_path / "raw" / "r.jpg")
    _touch(tmp_path / "rawest" / "kept.jpg")
    globs = ExcludeGlobs(("*/thumbnails/*", "*.tmp.jpg", f"{tmp_path.as_posix()}/raw/"))
    found = [f.path.relative_to(tmp_path).as_posix() for f in scan([tmp_path], EXTENSIONS, globs=globs)]
    assert found == ["a.jpg", "rawest/kept.jpg"]


def test_an_excluded_folder_is_never_entered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path / "keep" / "a.jpg")
    _touch(tmp_path / "skip" / "b.jpg")
    entered: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: Path) -> Any:
        entered.append(Path(path).name)
        return real_scandir(path)

    monkeypatch.setattr("core.scan.os.scandir", recording_scandir)
    found = [f.path.name for f in scan([tmp_path], EXTENSIONS, globs=ExcludeGlobs(("*/skip/",)))]
    assert found == ["a.jpg"] and "skip" not in entered and "keep" in entered


def test_a_root_file_can_be_excluded_too(tmp_path: Path) -> None:
    photo = _touch(tmp_path / "a.tmp.jpg")
    assert list(scan([photo], EXTENSIONS, globs=ExcludeGlobs(("*.tmp.jpg",)))) == []


def test_exclude_globs_match_windows_paths_with_forward_slashes_ignoring_case() -> None:
    # Simulated: Windows paths as PureWindowsPath; patterns are written with "/" on every OS.
    globs = ExcludeGlobs(("*/Thumbnails/*", "c:/photos/raw/"), ignore_case=True)
    assert globs.excludes_file(PureWindowsPath(r"C:\Photos\2020\thumbnails\a.jpg"))
    assert globs.excludes_folder(PureWindowsPath(r"C:\PHOTOS\Raw"))
    assert not globs.excludes_file(PureWindowsPath(r"C:\Photos\2020\a.jpg"))
    assert not ExcludeGlobs(("*/Thumbnails/*",), ignore_case=False).excludes_file(
        PurePosixPath("/photos/thumbnails/a.jpg")
    )


def test_excluded_catalog_paths_are_judged_from_their_root_down() -> None:
    root = PurePosixPath("/data/raw/photos")
    globs = ExcludeGlobs(("*/raw/", "*/private/"))
    # The root's own parent is named raw, but the walk starts below it: its files are not excluded.
    assert not globs.excludes_indexed(root / "a.jpg", [root])
    assert globs.excludes_indexed(root / "private" / "b.jpg", [root])
    assert globs.excludes_indexed(root / "x" / "raw" / "c.jpg", [root])


def test_home_folder_in_a_pattern_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ExcludeGlobs(("~/private/*",)).patterns == (f"{tmp_path}/private/*",)
