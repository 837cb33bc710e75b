"""The two halves of one journaled action, each way: the file change and the catalog change, done, undone,
and, after a kill, told apart from the files themselves.

:func:`settle` looks at the files an action touches and says whether they are as before the action
(``original``) or as after it (``applied``), tidying what an interrupted step leaves behind on the way
(the empty placeholder of a claimed name, a hidden temporary, a kept copy no longer needed). It never
removes bytes that exist nowhere else. Applying, completing an interrupted apply and undoing are all
built on it, so each can be run again after a kill and carry on where the last run stopped.

An action counts as done once its file change is complete; the catalog half is idempotent
(:mod:`core.catalog.moves`), so finishing it twice changes nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.catalog import Catalog
from core.catalog.moves import SavedRow, adopt_content, move_row, remove_row, restore_row, row_facts
from core.errors import LoupeError
from search.file_actions import (
    WouldOverwriteError,
    is_placeholder,
    keep_copy,
    move_file,
    replace_with_link,
    restore_copy,
    sha256_of,
)
from search.journal import ActionRecord
from search.trash import TrashEntry, find_in_trash, restorable_here, restore_from_trash, send_to_trash

logger = logging.getLogger(__name__)

FileState = Literal["original", "applied"]
LINK_KINDS = ("hardlink", "symlink")
# Actions that take a row out of the catalog or change it, and so keep it for undo.
SAVES_ROW = ("trash", "hardlink", "symlink")


class ActionError(LoupeError):
    """The files of an action are neither as before it nor as after it: something else changed them."""


class UndoRefusedError(ActionError):
    """Undoing would overwrite a file that appeared (or changed) since the action."""


@dataclass(frozen=True)
class FileSide:
    """Where an action's file change stands; ``trash``: where a trashed file lies, when Loupe can tell."""

    state: FileState
    trash: TrashEntry | None = None


def settle(action: ActionRecord, trash: TrashEntry | None = None) -> FileSide:
    """Whether the action's files are as before it or as after it (see the module's docstring)."""
    path = Path(action.path)
    _drop(path.parent / action.temporary)
    if action.kind == "move":
        return _settle_move(action, path, Path(_target(action)))
    if action.kind == "trash":
        return _settle_trash(action, path, trash)
    return _settle_link(action, path)


def do_file(action: ActionRecord) -> TrashEntry | None:
    """Make the action's file change (the caller has checked the file's and the keeper's bytes); returns
    where a trashed file went, when Loupe can tell."""
    path = Path(action.path)
    if action.kind == "move":
        target = Path(_target(action))
        move_file(path, target, action.sha256, target.parent / action.temporary)
        return None
    if action.kind == "trash":
        send_to_trash(path)
        return find_in_trash(path, action.sha256)
    keep_copy(path, Path(_holding(action)), action.sha256)
    replace_with_link(path, Path(_target(action)), path.parent / action.temporary, symbolic=action.kind == "symlink")
    return None


def undo_file(action: ActionRecord, trash: TrashEntry | None) -> None:
    """Reverse an applied file change; :class:`UndoRefusedError` when that would overwrite a file."""
    path = Path(action.path)
    temporary = path.parent / action.temporary
    try:
        if action.kind == "move":
            move_file(Path(_target(action)), path, action.sha256, temporary)
        elif action.kind == "trash":
            if trash is None:
                where = "in a trash Loupe can read" if restorable_here() else "here (this OS's trash keeps no record)"
                raise ActionError(
                    f"{path} was trashed but is not found {where}: restore it from the trash by hand, then run build"
                )
            if os.path.lexists(path) and not is_placeholder(path):
                raise WouldOverwriteError(f"{path} exists; Loupe never overwrites a file")
            restore_from_trash(trash, path, action.sha256, temporary)
        else:
            holding = Path(_holding(action))
            if not _holds(holding, action.sha256):
                raise ActionError(f"the bytes of {path} kept at {holding} are gone or changed: cannot restore it")
            restore_copy(holding, path, action.sha256, temporary)
    except WouldOverwriteError as error:
        raise UndoRefusedError(f"not restoring {path}: a file has appeared there since ({error})") from error


def catalog_forward(catalog: Catalog, action: ActionRecord) -> None:
    """The catalog half of an applied action: the row follows a move, leaves with a trashed file or a
    symbolic link, takes the keeper's content with a hard link."""
    if action.kind == "move":
        target = Path(_target(action))
        info = target.stat()
        move_row(catalog, action.image_id, str(target), info.st_size, info.st_mtime_ns)
    elif action.kind in ("trash", "symlink"):
        remove_row(catalog, action.image_id)
    else:
        info = Path(action.path).stat()
        adopt_content(catalog, action.image_id, action.keeper_id, info.st_size, info.st_mtime_ns)


def catalog_backward(catalog: Catalog, action: ActionRecord) -> None:
    """The catalog half of an undone action: the row as it was, under the restored file's size and mtime."""
    info = Path(action.path).stat()
    if action.kind == "move":
        move_row(catalog, action.image_id, action.path, info.st_size, info.st_mtime_ns)
        return
    facts = row_facts(catalog, action.image_id)
    if facts is not None and (facts.path, facts.sha256, facts.size_bytes, facts.mtime_ns) == (
        action.path,
        action.sha256,
        info.st_size,
        info.st_mtime_ns,
    ):
        return  # never changed (an action interrupted before its file changed), or restored already
    restore_row(catalog, load_saved_row(action), info.st_size, info.st_mtime_ns)


def load_saved_row(action: ActionRecord) -> SavedRow:
    if action.saved_row is None:
        raise ActionError(f"the journal keeps no catalog row for {action.path}")
    try:
        return SavedRow.from_json(Path(action.saved_row).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise ActionError(f"the catalog row of {action.path} kept at {action.saved_row} is unreadable: {error}") from (
            error
        )


def _settle_move(action: ActionRecord, path: Path, target: Path) -> FileSide:
    _drop(target.parent / action.temporary)
    moved = _holds(target, action.sha256) and not _same_file(path, target)
    if moved and is_placeholder(path):
        path.unlink()  # an undo claimed the name and was interrupted before the rename
    if moved:
        if not _holds(path, action.sha256):
            return FileSide("applied")  # with someone else's file at the old name, if any: undo refuses
        target.unlink()  # a verified copy across file systems, the bytes being at the old name too
    if os.path.lexists(path):
        if is_placeholder(target) and not _same_file(path, target):
            target.unlink()  # the name this action claimed before it was interrupted
        return FileSide("original")
    raise ActionError(f"{path} is gone and {target} does not hold its bytes: something else moved or changed them")


def _settle_trash(action: ActionRecord, path: Path, trash: TrashEntry | None) -> FileSide:
    if trash is not None and not _holds(Path(trash.file), action.sha256):
        if not os.path.lexists(trash.file):
            Path(trash.info).unlink(missing_ok=True)  # restored by an undo interrupted before this
        trash = None
    if _holds(path, action.sha256):
        return FileSide("original")
    entry = trash or find_in_trash(path, action.sha256)
    if os.path.lexists(path) and not is_placeholder(path):
        # Someone else's file at the old name: the photo is in the trash (undo refuses), or never was.
        return FileSide("applied", entry) if entry is not None else FileSide("original")
    if is_placeholder(path):
        if entry is None:
            return FileSide("original")  # an empty file of someone else's: not Loupe's to remove
        path.unlink()  # an undo claimed the name and was interrupted before the rename
    return FileSide("applied", entry)


def _settle_link(action: ActionRecord, path: Path) -> FileSide:
    keeper, holding = Path(_target(action)), Path(_holding(action))
    _drop(holding.with_name(f".{holding.name}.partial"))
    if _is_our_link(action, path, keeper):
        return FileSide("applied")
    if is_placeholder(path) and _holds(holding, action.sha256):
        path.unlink()  # an undo claimed the name and was interrupted before the rename
    if not os.path.lexists(path) and _holds(holding, action.sha256):
        restore_copy(holding, path, action.sha256, path.parent / action.temporary)
    if path.is_symlink() or not path.is_file():
        raise ActionError(f"{path} is neither the photo nor the link Loupe made: something else changed it")
    if os.path.lexists(holding):
        if not (_same_file(path, holding) or sha256_of(path) == action.sha256):
            raise UndoRefusedError(f"{path} has changed since; its original bytes stay at {holding}")
        holding.unlink()
    return FileSide("original")


def _is_our_link(action: ActionRecord, path: Path, keeper: Path) -> bool:
    if action.kind == "symlink":
        return path.is_symlink() and os.readlink(path) == str(keeper)
    return not path.is_symlink() and path.is_file() and keeper.exists() and _same_file(path, keeper)


def _holds(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a regular file with bytes ``sha256``."""
    try:
        return not path.is_symlink() and path.is_file() and sha256_of(path) == sha256
    except OSError:
        return False


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _drop(path: Path) -> None:
    if os.path.lexists(path):
        path.unlink()


def _target(action: ActionRecord) -> str:
    if action.target is None:
        raise ActionError(f"the journal names no target for the {action.kind} of {action.path}")
    return action.target


def _holding(action: ActionRecord) -> str:
    if action.holding is None:
        raise ActionError(f"the journal names no holding copy for the {action.kind} of {action.path}")
    return action.holding
