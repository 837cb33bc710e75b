"""The platform's trash: send a file there, and, where the trash is the freedesktop.org one, find it there
again and put it back.

Sending uses ``send2trash`` (the Recycle Bin on Windows, the Finder's Trash on macOS, the freedesktop.org
trash elsewhere), never a plain delete. ``send2trash`` has no way back, so on freedesktop systems (Linux,
the BSDs) this module reads the trash itself: a trashed file lies in ``<trash>/files/NAME`` beside
``<trash>/info/NAME.trashinfo``, whose ``Path=`` line holds the original path, percent-encoded (relative to
the trash's top folder for a trash on another volume). The trashes looked at are the home trash
(``$XDG_DATA_HOME/Trash``, by default ``~/.local/share/Trash``) and, for a file on another volume, that
volume's ``.Trash/$uid`` and ``.Trash-$uid``, as the specification and ``send2trash`` have them. A file
is recognised by its original path and its sha256, so a different file trashed from the same path is
never taken for it. The Windows and macOS trashes keep no such record that Loupe can read: files
trashed there are restored from the Trash by hand.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from search.file_actions import move_file, sha256_of

logger = logging.getLogger(__name__)

INFO_SUFFIX = ".trashinfo"


@dataclass(frozen=True)
class TrashEntry:
    """A trashed file: its bytes (``file``) and its freedesktop ``.trashinfo`` record (``info``)."""

    file: str
    info: str


def restorable_here() -> bool:
    """Whether this platform's trash is the freedesktop.org one, which Loupe can restore from."""
    return sys.platform not in ("darwin", "win32")


def send_to_trash(path: Path) -> None:
    """Move ``path`` to the platform's trash (``send2trash``); raises :class:`OSError` when it cannot."""
    from send2trash import send2trash

    send2trash(str(path))


def home_trash() -> Path:
    """The user's home trash (``$XDG_DATA_HOME/Trash``), read from the environment at each call."""
    data_home = os.environ.get("XDG_DATA_HOME") or ""
    base = Path(data_home) if Path(data_home).is_absolute() else Path.home() / ".local" / "share"
    return base / "Trash"


def trash_folders(original: Path) -> list[tuple[Path, Path]]:
    """The trashes a file from ``original`` may be in, each with the folder its relative ``Path=`` lines
    start from: the home trash, then the volume's own (``.Trash/$uid``, ``.Trash-$uid``)."""
    home = home_trash()
    folders = [(home, home.parent)]
    if hasattr(os, "getuid"):
        top = _mount_point(original.parent)
        uid = str(os.getuid())
        folders += [(top / ".Trash" / uid, top), (top / f".Trash-{uid}", top)]
    return folders


def find_in_trash(original: Path, sha256: str) -> TrashEntry | None:
    """The trashed file that was at ``original`` and has ``sha256``, or None (nothing matching, or a
    trash Loupe cannot read); the most recently trashed one when there are several."""
    if not restorable_here():
        return None
    wanted = os.fsencode(os.path.abspath(original))
    found: list[tuple[float, TrashEntry]] = []
    for trash, top in trash_folders(original):
        info_dir = trash / "info"
        try:
            # send2trash names a clash "NAME N.EXT" and gio "NAME.N.EXT": both start with the stem.
            candidates = list(info_dir.glob(glob.escape(original.stem) + "*" + INFO_SUFFIX))
        except OSError:
            continue
        for info in candidates:
            stored = _original_path(info, top)
            if stored != wanted:
                continue
            file = trash / "files" / info.name[: -len(INFO_SUFFIX)]
            try:
                if file.is_file() and not file.is_symlink() and sha256_of(file) == sha256:
                    found.append((info.stat().st_mtime, TrashEntry(file=str(file), info=str(info))))
            except OSError as error:
                logger.warning("cannot read %s: %s", file, error)
    return max(found, key=lambda pair: pair[0])[1] if found else None


def restore_from_trash(entry: TrashEntry, destination: Path, sha256: str, temporary: Path) -> None:
    """Move a trashed file back to ``destination`` (never overwriting anything there) and drop its
    ``.trashinfo`` record."""
    move_file(Path(entry.file), destination, sha256, temporary)
    Path(entry.info).unlink(missing_ok=True)


def _original_path(info: Path, top: Path) -> bytes | None:
    """The original path a ``.trashinfo`` file records, as bytes (None when it has none)."""
    try:
        lines = info.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("Path="):
            raw = unquote_to_bytes(line[len("Path=") :].strip())
            if not raw.startswith(b"/"):
                raw = os.path.join(os.fsencode(top), raw)
            return os.path.normpath(raw)
    return None


def _mount_point(path: Path) -> Path:
    """The mount point of the volume holding ``path`` (the top folder of its volume's trash)."""
    current = Path(os.path.realpath(path))
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current
