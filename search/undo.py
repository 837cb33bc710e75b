"""``search undo JOURNAL``: reverse what an apply did, newest action first, file and catalog together.

Each action is looked at on disk (:func:`search.action_steps.settle`), so an apply that was killed
mid-way and an undo that was killed mid-way are both reversed from where they stopped. A moved file goes
back to where it was; a trashed one comes back from a freedesktop.org trash (on Windows and macOS it is
restored from the Trash by hand); a link is replaced by the bytes kept for it. Every restored file is
checked byte for byte (sha256) and its catalog row put back with its own id, vector and patch grid, so
nothing is embedded again. A file that has appeared (or changed) where one would be restored is never
overwritten: that action is reported as refused, and the others go on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core.catalog import Catalog
from core.config import LoupeConfig
from core.errors import CatalogError
from core.lock import exclusive_writer
from search.action_steps import ActionError, UndoRefusedError, catalog_backward, settle, undo_file
from search.apply import sync_after_error, sync_indexes
from search.file_actions import os_message, sha256_of
from search.journal import (
    JournalContents,
    JournalEntry,
    JournalError,
    JournalWriter,
    holding_dir,
    mark_finished,
    read_journal,
)
from search.trash import TrashEntry

logger = logging.getLogger(__name__)

UndoStatus = Literal["undone", "nothing", "refused", "failed"]


@dataclass(frozen=True)
class UndoOutcome:
    """What became of one action: ``undone``; ``nothing`` (it had changed nothing, or was undone before);
    ``refused`` (restoring would overwrite a file); ``failed``."""

    path: str
    status: UndoStatus
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UndoReport:
    journal: Path
    outcomes: tuple[UndoOutcome, ...]

    def count(self, status: UndoStatus) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def complete(self) -> bool:
        """Whether every action of the journal is reversed (nothing refused or failed)."""
        return not (self.count("refused") or self.count("failed"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "journal": str(self.journal),
            "complete": self.complete,
            **{status: self.count(status) for status in ("undone", "nothing", "refused", "failed")},
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }


def undo_journal(journal_path: Path, config: LoupeConfig) -> UndoReport:
    """Reverse every action of the journal at ``journal_path`` on the collection of ``config``. Raises
    :class:`~search.journal.JournalError` for a journal that is unreadable or of another catalog."""
    contents = read_journal(journal_path)
    with exclusive_writer(config.data_dir, f"search undo {journal_path.name}", config.resolved_db_url):
        catalog = Catalog.open(config.resolved_db_url, create=False)
        try:
            provenance = catalog.provenance()
            if provenance is None:
                raise CatalogError(f"no index in {config.data_dir}")
            if contents.header.get("catalog_id") != provenance.catalog_id:
                raise JournalError(
                    f"{journal_path} records changes to catalog {contents.header.get('catalog_id')}, not to the "
                    f"catalog of {config.data_dir} ({provenance.catalog_id}): pass that collection's --data-dir"
                )
            try:
                with JournalWriter.reopen(journal_path) as journal:
                    journal.append({"record": "undo-start", "at": datetime.now(UTC).isoformat(timespec="seconds")})
                    outcomes = tuple(
                        _undo(catalog, journal, entry)
                        for entry in sorted(contents.entries.values(), key=lambda e: -e.action.seq)
                        if entry.undo != "undone"
                    )
                    report = UndoReport(journal_path, outcomes)
                    journal.append({"record": "undo-end", "complete": report.complete})
            except BaseException:
                sync_after_error(catalog, config)
                raise
            mark_finished(config.data_dir, contents.journal_id)
            if report.complete:
                _drop_holding(config.data_dir, contents)
            sync_indexes(catalog, config)
        finally:
            catalog.close()
    return report


def _undo(catalog: Catalog, journal: JournalWriter, entry: JournalEntry) -> UndoOutcome:
    action = entry.action
    trash = TrashEntry(entry.trash_file, entry.trash_info) if entry.trash_file and entry.trash_info else None
    try:
        side = settle(action, trash)
        if side.state == "applied":
            undo_file(action, side.trash)
            if settle(action).state != "original" or sha256_of(Path(action.path)) != action.sha256:
                raise ActionError(f"{action.path} was put back but does not hold its bytes")
            status: UndoStatus = "undone"
        else:
            # Undone before (by an undo killed before it said so), or never changed (failed, interrupted).
            status = "undone" if entry.outcome == "done" else "nothing"
            if status == "undone" and not _holds(Path(action.path), action.sha256):
                raise ActionError(
                    f"{action.path} holds other bytes than the photo this action changed, which Loupe cannot "
                    "find: its catalog row is left as it is"
                )
        if status == "undone":
            catalog_backward(catalog, action)
    except UndoRefusedError as error:
        journal.append({"record": "undo-failed", "seq": action.seq, "message": str(error), "refused": True})
        return UndoOutcome(action.path, "refused", str(error))
    except (OSError, ActionError) as error:
        message = os_message(error) if isinstance(error, OSError) else str(error)
        journal.append({"record": "undo-failed", "seq": action.seq, "message": message})
        return UndoOutcome(action.path, "failed", message)
    journal.append({"record": "undone", "seq": action.seq})
    if action.saved_row is not None:
        Path(action.saved_row).unlink(missing_ok=True)
    return UndoOutcome(action.path, status)


def _holds(path: Path, sha256: str) -> bool:
    try:
        return path.is_file() and sha256_of(path) == sha256
    except OSError:
        return False


def _drop_holding(data_dir: Path, contents: JournalContents) -> None:
    """Remove the journal's holding folders once every action is reversed: by then they are empty (each
    kept file went back, each kept row was dropped); anything still in them is left, and logged."""
    folder = holding_dir(data_dir, contents.journal_id)
    if not folder.is_dir():
        return
    for inner, _, _ in sorted(os.walk(folder), key=lambda walked: -len(walked[0])):
        try:
            os.rmdir(inner)
        except OSError:
            logger.warning("keeping %s: it is not empty", inner)
