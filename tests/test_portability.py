"""What Loupe does on the OSes this suite does not run on, simulated on Linux: the writer lock without
``fcntl`` (Windows' ``msvcrt``), no directory fsync on Windows, ``--under`` with Windows separators, and
``--device auto`` on Apple's MPS."""

from __future__ import annotations

import errno
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from core.durable import fsync_dir
from core.errors import ConfigError
from core.lock import LOCK_FILE, MSVCRT_LOCK_OFFSET, BuildLockedError, exclusive_writer, lock_calls
from core.model import resolve_device
from search.engine import folder_prefix


class FakeMsvcrt(types.ModuleType):
    """``msvcrt.locking`` as Windows documents it: a byte range per file, LK_NBLCK fails at once with
    EACCES when another handle holds it, LK_UNLCK releases it."""

    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self) -> None:
        super().__init__("msvcrt")
        self.held: dict[tuple[int, int], int] = {}  # (inode, offset) -> fd
        self.calls: list[tuple[int, int]] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        assert nbytes == 1
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        self.calls.append((mode, offset))
        key = (os.fstat(fd).st_ino, offset)
        if mode == self.LK_NBLCK:
            if key in self.held:
                raise OSError(errno.EACCES, "Permission denied")
            self.held[key] = fd
        elif mode == self.LK_UNLCK:
            self.held.pop(key)


@pytest.fixture()
def windows_locking(monkeypatch: pytest.MonkeyPatch) -> FakeMsvcrt:
    fake = FakeMsvcrt()
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl now raises ImportError
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    return fake


def test_without_fcntl_the_lock_is_a_locked_byte_past_the_holders_line(
    tmp_path: Path, windows_locking: FakeMsvcrt
) -> None:
    lock, _ = lock_calls()
    assert lock.__name__ == "lock_byte"
    with exclusive_writer(tmp_path, "first build"):
        assert windows_locking.held  # taken
        # A second writer (another handle on the same file) is refused at once, told who holds it.
        with (
            pytest.raises(BuildLockedError, match=r"is being written by first build pid \d+"),
            exclusive_writer(tmp_path, "second build"),
        ):
            pass
    assert not windows_locking.held  # released
    assert windows_locking.calls == [
        (FakeMsvcrt.LK_NBLCK, MSVCRT_LOCK_OFFSET),
        (FakeMsvcrt.LK_NBLCK, MSVCRT_LOCK_OFFSET),
        (FakeMsvcrt.LK_UNLCK, MSVCRT_LOCK_OFFSET),
    ]
    with exclusive_writer(tmp_path, "third build"):
        assert (tmp_path / LOCK_FILE).read_text().startswith("third build pid ")


def test_with_fcntl_the_lock_is_flock() -> None:
    lock, unlock = lock_calls()
    assert (lock.__name__, unlock.__name__) == ("flock", "unflock")


def test_no_directory_fsync_where_folders_cannot_be_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []

    def recording_open(path: object, flags: int, *args: object) -> int:
        opened.append(path)
        raise PermissionError(errno.EACCES, "a folder cannot be opened here", str(path))

    with monkeypatch.context() as patch:  # scoped tightly: pathlib itself reads os.name
        patch.setattr(os, "open", recording_open)
        patch.setattr(os, "name", "nt")
        fsync_dir(tmp_path)
    assert opened == []
    with monkeypatch.context() as patch:
        patch.setattr(os, "open", recording_open)
        with pytest.raises(PermissionError):
            fsync_dir(tmp_path)  # POSIX: the folder is opened and fsynced
    assert opened == [tmp_path]


@pytest.mark.parametrize(
    ("folder", "sep", "prefix"),
    [
        ("/photos/2020", "/", "/photos/2020/"),
        ("/", "/", "/"),
        ("C:\\Photos\\2020", "\\", "C:\\Photos\\2020\\"),
        ("C:\\", "\\", "C:\\"),
    ],
)
def test_under_prefix_uses_the_os_separator(folder: str, sep: str, prefix: str) -> None:
    assert folder_prefix(folder, sep) == prefix


def test_under_a_windows_folder_keeps_its_photos_and_not_its_namesakes() -> None:
    prefix = folder_prefix("C:\\Photos\\2020", "\\")
    assert "C:\\Photos\\2020\\a.jpg".startswith(prefix)
    assert not "C:\\Photos\\2020-old\\a.jpg".startswith(prefix)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"), (True, False, "cuda")],
)
def test_auto_device_is_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)


def test_mps_asked_for_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no Apple MPS device"):
        resolve_device("mps")
