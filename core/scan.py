"""Find the photo files under one or more roots.

The walk is iterative (no recursion limit on deep trees), deterministic (names sorted), never loops
through symlinked directories, and reports each file once under its resolved path, however many links
lead to it. Hidden files and folders (names starting with ".") are skipped: they hold editor caches,
AppleDouble ``._*`` shadows and the like, never a curator's photos. So are files and folders that the
curator's ``--exclude`` glob patterns match (:class:`ExcludeGlobs`).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from core.errors import LoupeError

logger = logging.getLogger(__name__)


class ScanRootError(LoupeError):
    """A root given to the scan does not exist or cannot be listed."""


@dataclass(frozen=True)
class ScannedFile:
    """A file that looks like a photo. ``size`` and ``mtime_ns`` are -1 when it cannot be stat'ed
    (a broken symlink, say): the decode stage then records why, so no file goes missing silently."""

    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ExcludeGlobs:
    """Glob patterns for files and folders a build leaves out.

    A pattern is matched with :mod:`fnmatch` against a file's whole resolved path written with ``/`` on
    every OS (``C:/Photos/a.jpg`` on Windows), so ``*`` also matches ``/`` and a pattern starts with ``*``,
    ``/`` or a drive: ``*/thumbnails/*``, ``*.tmp.jpg``, ``/photos/raw/*``. A folder is not entered when
    its path followed by ``/`` matches, so ``*/raw/`` names folders. A leading ``~`` is the home folder.
    Case matters except on Windows, whose file names ignore it.
    """

    patterns: tuple[str, ...] = ()
    ignore_case: bool = os.name == "nt"

    def __post_init__(self) -> None:
        expanded = tuple(os.path.expanduser(p) if p.startswith("~") else p for p in self.patterns)
        object.__setattr__(self, "patterns", expanded)

    def _matches(self, text: str) -> bool:
        if self.ignore_case:
            return any(fnmatch.fnmatchcase(text.lower(), pattern.lower()) for pattern in self.patterns)
        return any(fnmatch.fnmatchcase(text, pattern) for pattern in self.patterns)

    def excludes_file(self, path: PurePath) -> bool:
        """True when a pattern matches the file's path."""
        return bool(self.patterns) and self._matches(path.as_posix())

    def excludes_folder(self, path: PurePath) -> bool:
        """True when a pattern matches the folder's path followed by ``/``."""
        return bool(self.patterns) and self._matches(path.as_posix().rstrip("/") + "/")

    def excludes_indexed(self, path: PurePath, roots: Sequence[PurePath]) -> bool:
        """True when a build over ``roots`` would leave out ``path``: the file matches, or one of its
        folders from a root down does (the walk enters no folder above its roots)."""
        if not self.patterns:
            return False
        if self.excludes_file(path):
            return True
        return any(
            self.excludes_folder(folder)
            for folder in path.parents
            if any(folder == root or root in folder.parents for root in roots)
        )


def resolve_roots(roots: Iterable[Path]) -> list[Path]:
    """Resolve and check the roots; raise :class:`ScanRootError` for one that does not exist."""
    resolved: list[Path] = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            raise ScanRootError(f"{root}: no such file or folder")
        resolved.append(path.resolve())
    return resolved


def _stat_file(path: Path) -> ScannedFile | None:
    """Stat ``path`` (following links); None for something that is not a regular file (a FIFO named
    ``x.jpg`` would block the reader forever)."""
    try:
        info = path.stat()
    except OSError:
        return ScannedFile(path=path.absolute(), size=-1, mtime_ns=-1)
    if not stat.S_ISREG(info.st_mode):
        logger.warning("skipping %s: not a regular file", path)
        return None
    return ScannedFile(path=path.resolve(), size=info.st_size, mtime_ns=info.st_mtime_ns)


def scan(
    roots: Iterable[Path],
    extensions: frozenset[str],
    *,
    follow_symlinks: bool = True,
    exclude: Iterable[Path] = (),
    globs: ExcludeGlobs = ExcludeGlobs(),
) -> Iterator[ScannedFile]:
    """Yield every file under ``roots`` whose lower-cased suffix is in ``extensions``.

    ``exclude`` names folders never to enter (the data dir, when it lies inside a root); ``globs`` leaves
    out the files and folders its patterns match.
    """
    excluded = {Path(path).resolve() for path in exclude}
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[Path] = set()

    for root in resolve_roots(roots):
        if root.is_file():
            scanned = _stat_file(root) if root.suffix.lower() in extensions else None
            if scanned is not None and globs.excludes_file(scanned.path):
                logger.info("skipping %s: excluded", scanned.path)
                continue
            if scanned is not None and scanned.path not in seen_files:
                seen_files.add(scanned.path)
                yield scanned
            continue
        stack = [root]
        while stack:
            folder = stack.pop()
            if folder in excluded:
                continue
            if globs.excludes_folder(folder):
                logger.info("skipping %s: excluded", folder)
                continue
            try:
                info = folder.stat()
            except OSError as error:
                logger.warning("cannot enter %s: %s", folder, error.strerror or error)
                continue
            key = (info.st_dev, info.st_ino)
            if key in seen_dirs:
                logger.info("skipping %s: already visited (symlink loop or second link)", folder)
                continue
            seen_dirs.add(key)
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except OSError as error:
                if folder == root:
                    raise ScanRootError(f"{root}: cannot list folder: {error.strerror or error}") from error
                logger.warning("cannot list %s: %s", folder, error.strerror or error)
                continue
            subfolders: list[Path] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                is_link = entry.is_symlink()
                if is_link and not follow_symlinks:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append(path.resolve() if is_link else path)
                    continue
                if path.suffix.lower() not in extensions:
                    continue
                scanned = _stat_file(path)
                if scanned is None or scanned.path in seen_files:
                    continue
                if globs.excludes_file(scanned.path):
                    logger.debug("skipping %s: excluded", scanned.path)
                    continue
                seen_files.add(scanned.path)
                yield scanned
            # Reverse so the stack pops folders in name order.
            stack.extend(reversed(subfolders))
