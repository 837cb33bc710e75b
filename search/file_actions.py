"""File operations that never lose a byte and never overwrite: the building blocks of acting on duplicates.

- :func:`move_file` claims the destination's name first (``O_CREAT | O_EXCL``: it fails if anything is
  there) and then renames the file over that empty placeholder of its own, so it can never replace
  someone's file, on every OS. Across file systems it copies to a hidden temporary name beside the
  destination, fsyncs, checks the copy's sha256, renames it into place, and only then removes the source.
- :func:`keep_copy` keeps a file's bytes in Loupe's holding folder (a hard link when it can: no bytes
  copied) before :func:`replace_with_link` swaps the file for a link in one atomic rename, so the photo's
  name never points at nothing and undo can put every byte back (:func:`restore_copy`).

Every function raises :class:`OSError` (or :class:`WouldOverwriteError`) and leaves no temporary file
behind; the callers turn errors into messages. Temporary names start with a dot, so builds never index them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from pathlib import Path

from core.durable import fsync_dir
from core.errors import LoupeError

logger = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20


class WouldOverwriteError(LoupeError):
    """The destination of a move or restore exists: Loupe never overwrites a file."""


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes (what the catalog records for every photo)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def os_message(error: OSError) -> str:
    """An OS error as one line for people: what went wrong, and on which file."""
    what = error.strerror or str(error)
    where = error.filename if error.filename is not None else None
    return f"{what} ({where})" if where is not None else what


def reserve(path: Path) -> None:
    """Create ``path`` empty, or raise :class:`WouldOverwriteError` when anything (even a broken link) is
    there: the name is then Loupe's to rename a file over."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise WouldOverwriteError(f"{path} exists; Loupe never overwrites a file") from error
    os.close(fd)


def is_placeholder(path: Path) -> bool:
    """Whether ``path`` is an empty regular file, as :func:`reserve` leaves it (a photo never is empty)."""
    try:
        return not path.is_symlink() and path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def copy_verified(source: Path, destination: Path, sha256: str) -> None:
    """Copy ``source``'s bytes, times and permissions to the new name ``destination``, fsync it, and check
    that its sha256 is ``sha256``; on any failure remove the partial copy and raise."""
    try:
        with source.open("rb") as reader, destination.open("xb") as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK)
            writer.flush()
            os.fsync(writer.fileno())
        shutil.copystat(source, destination)
        copied = sha256_of(destination)
        if copied != sha256:
            raise OSError(f"the copy of {source} at {destination} has other bytes (sha256 {copied[:12]}...)")
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def move_file(source: Path, destination: Path, sha256: str, temporary: Path) -> None:
    """Move ``source`` (whose bytes have ``sha256``) to ``destination``, creating its folder, never
    overwriting anything there; across file systems through ``temporary`` (beside ``destination``)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    reserve(destination)
    try:
        os.replace(source, destination)
    except OSError as error:
        if not _cross_device(error):
            _drop_placeholder(destination)
            raise
        try:
            copy_verified(source, temporary, sha256)
            os.replace(temporary, destination)
        except BaseException:
            temporary.unlink(missing_ok=True)
            _drop_placeholder(destination)
            raise
        fsync_dir(destination.parent)
        source.unlink()
    fsync_dir(destination.parent)
    fsync_dir(source.parent)


def keep_copy(source: Path, holding: Path, sha256: str) -> None:
    """Keep ``source``'s bytes at ``holding`` (a new name in Loupe's holding folder): a hard link when both
    are on one file system that has them, else a verified copy."""
    holding.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, holding)
    except FileExistsError:
        raise
    except OSError:
        partial = holding.with_name(f".{holding.name}.partial")
        partial.unlink(missing_ok=True)
        copy_verified(source, partial, sha256)
        os.replace(partial, holding)
    fsync_dir(holding.parent)


def replace_with_link(path: Path, keeper: Path, temporary: Path, *, symbolic: bool) -> None:
    """Replace ``path`` by a hard or symbolic link to ``keeper`` in one rename: the link is made at
    ``temporary`` (beside ``path``, so the rename stays on one file system), then renamed over ``path``.
    The caller has kept ``path``'s bytes (:func:`keep_copy`)."""
    temporary.unlink(missing_ok=True)  # a leftover of an interrupted run: the name is this action's own
    if symbolic:
        os.symlink(keeper, temporary)
    else:
        os.link(keeper, temporary)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def restore_copy(holding: Path, path: Path, sha256: str, temporary: Path) -> None:
    """Put the bytes kept at ``holding`` back at ``path`` in one rename, through ``temporary`` beside it
    (a hard link to the kept file when it can, else a verified copy). What is at ``path`` now (the link
    Loupe made, which the caller has checked) is replaced; when nothing is there the name is reserved
    first, so a file that appeared meanwhile is never overwritten."""
    temporary.unlink(missing_ok=True)
    if not os.path.lexists(path):
        reserve(path)
    try:
        try:
            os.link(holding, temporary)
        except FileExistsError:
            raise
        except OSError:
            copy_verified(holding, temporary, sha256)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _cross_device(error: OSError) -> bool:
    # EXDEV on POSIX; Windows says ERROR_NOT_SAME_DEVICE (17) in winerror.
    return error.errno == errno.EXDEV or getattr(error, "winerror", None) == 17


def _drop_placeholder(path: Path) -> None:
    """Remove the empty name :func:`reserve` claimed (never anything with bytes in it)."""
    if is_placeholder(path):
        path.unlink(missing_ok=True)
