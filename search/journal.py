"""The journal of an apply: one JSON object per line, fsync'ed line by line, so a kill at any moment leaves
a record of exactly what was begun and what was finished.

Records (``"record"`` says which):

- ``header``: the format and version, the journal's id, when, the action, the threshold, the reference
  folders, the data dir, the catalog's id and the holding folder of kept bytes;
- ``begin``: one action (an :class:`ActionRecord`), written before the file is touched;
- ``done`` (with ``trash_file``/``trash_info`` for a trashed file, ``recovered`` when a later run finished
  it), ``failed`` (with ``message``: nothing changed) or ``abandoned`` (interrupted before the file
  changed): the outcome of a ``begin``;
- ``skipped``: a file left alone when the time came to act, and why;
- ``end``: the apply finished (its counts);
- ``undo-start``, ``undone``, ``undo-failed`` (with ``message``) and ``undo-end``: what ``undo`` did.

A kill can tear the last line only: :func:`read_journal` ignores a last line that is not a whole JSON
object, and :meth:`JournalWriter.reopen` cuts it off before appending. Journals of applies that did not
finish are listed in ``<data dir>/journals/unfinished/`` until a later apply completes them or ``undo``
reverses them.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from core.durable import fsync_dir
from core.errors import LoupeError

logger = logging.getLogger(__name__)

JOURNAL_FORMAT = "loupe-apply-journal"
JOURNAL_VERSION = 1
JOURNALS_DIR = "journals"
UNFINISHED_DIR = "unfinished"
HOLDING_DIR = "undo"


class JournalError(LoupeError):
    """A journal cannot be created, read or is not an apply journal of this catalog."""


@dataclass(frozen=True)
class ActionRecord:
    """One action as journaled before it starts: everything undo needs without the plan.

    ``target``: the new path of a move, the keeper a link points to. ``holding``: where a link action keeps
    the replaced file's bytes. ``saved_row``: the file holding the catalog row that trash and links change
    (for undo). ``temporary``: the hidden name this action may use beside the file it writes.
    """

    seq: int
    kind: str
    path: str
    sha256: str
    image_id: int
    keeper: str
    keeper_id: int
    keeper_sha256: str
    group: int
    score: float
    keeper_rule: str
    target: str | None
    holding: str | None
    saved_row: str | None
    temporary: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionRecord:
        names = cls.__dataclass_fields__
        return cls(**{name: data[name] for name in names})


@dataclass
class JournalEntry:
    """A begun action and what became of it (``outcome`` None: interrupted before any outcome)."""

    action: ActionRecord
    outcome: str | None = None
    message: str = ""
    trash_file: str | None = None
    trash_info: str | None = None
    undo: str | None = None
    undo_message: str = ""


@dataclass
class JournalContents:
    """A journal as read back."""

    path: Path
    header: dict[str, Any]
    entries: dict[int, JournalEntry] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False
    undo_started: bool = False
    undo_ended: bool = False
    torn_tail: bool = False

    @property
    def journal_id(self) -> str:
        return str(self.header["id"])

    @property
    def interrupted(self) -> list[JournalEntry]:
        """Actions begun with no outcome recorded."""
        return [entry for entry in self.entries.values() if entry.outcome is None]


def new_journal_id(path: Path) -> str:
    """An id naming the journal's holding folder and temporary files: its file stem and a random suffix."""
    return f"{path.stem}-{uuid.uuid4().hex[:8]}"


def default_journal_path(data_dir: Path, now: datetime | None = None) -> Path:
    """``<data dir>/journals/apply-YYYYmmdd-HHMMSS.jsonl``, with ``-2``, ``-3``... when that name is taken."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    folder = data_dir / JOURNALS_DIR
    path = folder / f"apply-{stamp}.jsonl"
    number = 2
    while path.exists():
        path = folder / f"apply-{stamp}-{number}.jsonl"
        number += 1
    return path


def holding_dir(data_dir: Path, journal_id: str) -> Path:
    """Where the bytes of files replaced by links are kept for undo: ``<data dir>/undo/<journal id>``."""
    return data_dir / HOLDING_DIR / journal_id


class JournalWriter:
    """Appends records to a journal, each written, flushed and fsync'ed before :meth:`append` returns."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def create(cls, path: Path, header: dict[str, Any]) -> JournalWriter:
        """Start a new journal at ``path`` (refused when the file exists) with its header record."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = path.open("x", encoding="utf-8", newline="\n")
        except FileExistsError as error:
            raise JournalError(f"journal {path} exists; name a new file") from error
        writer = cls(path, handle)
        writer.append({"record": "header", "format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, **header})
        fsync_dir(path.parent)
        return writer

    @classmethod
    def reopen(cls, path: Path) -> JournalWriter:
        """Append to an existing journal, first cutting off a torn last line (a record a kill interrupted,
        which never counted)."""
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - end)
            with path.open("r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
        return cls(path, path.open("a", encoding="utf-8", newline="\n"))

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, sort_keys=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def begin(self, action: ActionRecord) -> None:
        self.append({"record": "begin", **asdict(action)})

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_journal(path: Path) -> JournalContents:
    """Read a journal back; a torn last line is ignored, anything else malformed is a :class:`JournalError`."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise JournalError(f"cannot read journal {path}: {error}") from error
    records: list[dict[str, Any]] = []
    torn = False
    complete = lines[:-1]  # the text after the last newline never was a whole record
    if lines[-1].strip():
        torn = True
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except ValueError as error:
            raise JournalError(f"{path}, line {number}: not a journal record: {error}") from error
        if not isinstance(record, dict) or "record" not in record:
            raise JournalError(f"{path}, line {number}: not a journal record")
        records.append(record)
    if not records or records[0].get("format") != JOURNAL_FORMAT:
        raise JournalError(f"{path} is not a Loupe apply journal")
    if records[0].get("version") != JOURNAL_VERSION:
        version = records[0].get("version")
        raise JournalError(f"{path} is a journal of version {version}; this Loupe reads version {JOURNAL_VERSION}")
    contents = JournalContents(path=path, header=records[0], torn_tail=torn)
    for record in records[1:]:
        _apply_record(contents, record, path)
    return contents


def _apply_record(contents: JournalContents, record: dict[str, Any], path: Path) -> None:
    kind = record["record"]
    if kind == "begin":
        action = ActionRecord.from_dict(record)
        contents.entries[action.seq] = JournalEntry(action=action)
        return
    if kind == "skipped":
        contents.skipped.append(record)
        return
    if kind in ("end", "undo-start", "undo-end"):
        contents.ended |= kind == "end"
        contents.undo_started |= kind == "undo-start"
        contents.undo_ended |= kind == "undo-end"
        return
    entry = contents.entries.get(int(record.get("seq", -1)))
    if entry is None:
        raise JournalError(f"{path}: a {kind!r} record for action {record.get('seq')}, which never began")
    if kind in ("done", "failed", "abandoned"):
        entry.outcome = kind
        entry.message = str(record.get("message", ""))
        entry.trash_file = record.get("trash_file")
        entry.trash_info = record.get("trash_info")
    elif kind in ("undone", "undo-failed"):
        entry.undo = kind
        entry.undo_message = str(record.get("message", ""))
    else:
        raise JournalError(f"{path}: unknown record {kind!r}")


# Unfinished journals -----------------------------------------------------------------------------


def _marker(data_dir: Path, journal_id: str) -> Path:
    return data_dir / JOURNALS_DIR / UNFINISHED_DIR / journal_id


def mark_unfinished(data_dir: Path, journal_id: str, journal: Path) -> None:
    """List ``journal`` as unfinished (until :func:`mark_finished`), so the next apply finds it wherever it is."""
    marker = _marker(data_dir, journal_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with marker.open("w", encoding="utf-8") as handle:
        handle.write(str(journal.resolve()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(marker.parent)


def mark_finished(data_dir: Path, journal_id: str) -> None:
    _marker(data_dir, journal_id).unlink(missing_ok=True)


def unfinished_journals(data_dir: Path) -> list[Path]:
    """The journals of applies that were interrupted (or whose undo was), oldest first."""
    folder = data_dir / JOURNALS_DIR / UNFINISHED_DIR
    if not folder.is_dir():
        return []
    markers = sorted(folder.iterdir(), key=lambda marker: marker.stat().st_mtime_ns)
    journals = []
    for marker in markers:
        journal = Path(marker.read_text(encoding="utf-8").strip())
        if journal.is_file():
            journals.append(journal)
        else:
            logger.warning("the unfinished journal %s listed in %s is gone", journal, marker)
    return journals
