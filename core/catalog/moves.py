"""Catalog changes that follow a file Loupe itself moved, trashed or replaced by a link (and their undo).

A build notices such changes too, but on its own terms: a moved file becomes a new row (a new id) and
the old row is removed; a file replaced by a hard link is read again. These functions change the catalog
in the same step as the file instead, so nothing is left for the next build to redo:

- :func:`move_row` changes a row's path and keeps its id, so its vector id, patch grid and anything that
  refers to the id stay;
- :func:`remove_row` drops a row (a trashed file, a file replaced by a symbolic link, which scans see as
  its keeper); its patch grid goes with it;
- :func:`adopt_content` makes a row describe its keeper's bytes (a file replaced by a hard link to it);
- :func:`save_row` and :func:`restore_row` keep a row (embedding and patch grid included) as JSON and
  put it back with its own id, which is how undo brings a photo back without embedding it again.

Each runs in one transaction that bumps the catalog revision (when it changed anything), so the FAISS
files know to catch up; rows put back or given new content get that revision as their vector revision,
so the next index sync re-adds their vectors.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from core.catalog.store import Catalog
from core.catalog.tables import STATUS_INDEXED, CatalogState, ImageRecord, PatchGridRecord
from core.errors import CatalogError

logger = logging.getLogger(__name__)

# The columns a saved row keeps (times as ISO 8601 text, the embedding as base64).
SAVED_COLUMNS = ("id", "path", "size_bytes", "mtime_ns", "sha256", "width", "height", "status", "embedding")


@dataclass(frozen=True)
class RowFacts:
    """What a row says of its file now."""

    id: int
    path: str
    sha256: str | None
    size_bytes: int
    mtime_ns: int
    status: str


@dataclass(frozen=True)
class SavedRow:
    """A catalog row and its patch grid, kept so that undo can put them back as they were."""

    values: dict[str, Any]
    created_at: datetime
    grid: int | None
    grid_data: bytes | None

    @property
    def id(self) -> int:
        return int(self.values["id"])

    def to_json(self) -> str:
        values = dict(self.values)
        if values.get("embedding") is not None:
            values["embedding"] = base64.b64encode(values["embedding"]).decode("ascii")
        return json.dumps(
            {
                "values": values,
                "created_at": self.created_at.isoformat(),
                "grid": self.grid,
                "grid_data": None if self.grid_data is None else base64.b64encode(self.grid_data).decode("ascii"),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SavedRow:
        data = json.loads(text)
        values = dict(data["values"])
        if values.get("embedding") is not None:
            values["embedding"] = base64.b64decode(values["embedding"])
        grid_data = data.get("grid_data")
        return cls(
            values=values,
            created_at=datetime.fromisoformat(data["created_at"]),
            grid=data.get("grid"),
            grid_data=None if grid_data is None else base64.b64decode(grid_data),
        )


def row_facts(catalog: Catalog, image_id: int) -> RowFacts | None:
    """The row ``image_id`` as it is now, or None when there is none."""
    with catalog.session() as session:
        row = session.get(ImageRecord, image_id)
        if row is None:
            return None
        return RowFacts(row.id, row.path, row.sha256, row.size_bytes, row.mtime_ns, row.status)


def save_row(catalog: Catalog, image_id: int) -> SavedRow:
    """Row ``image_id`` and its patch grid, to put back later with :func:`restore_row`."""
    with catalog.session() as session:
        row = session.get(ImageRecord, image_id)
        if row is None:
            raise CatalogError(f"catalog row {image_id} is gone")
        grid = session.get(PatchGridRecord, image_id)
        return SavedRow(
            values={name: getattr(row, name) for name in SAVED_COLUMNS},
            created_at=row.created_at,
            grid=None if grid is None else grid.grid,
            grid_data=None if grid is None else grid.data,
        )


def move_row(catalog: Catalog, image_id: int, path: str, size_bytes: int, mtime_ns: int) -> bool:
    """Give row ``image_id`` its file's new ``path`` (and size and mtime as the file has them now). A row
    some build made meanwhile for ``path`` already describes the file: then ``image_id``'s row, which
    describes nothing any more, is dropped instead. Returns whether anything changed."""
    with catalog.session() as session, session.begin():
        row = session.get(ImageRecord, image_id)
        if row is None:
            return False
        if (row.path, row.size_bytes, row.mtime_ns) == (path, size_bytes, mtime_ns):
            return False
        other = session.scalars(select(ImageRecord).where(ImageRecord.path == path, ImageRecord.id != image_id)).first()
        if other is not None:
            logger.warning("%s is already catalog row %d; dropping row %d", path, other.id, image_id)
            _delete(session, image_id)
        else:
            row.path, row.size_bytes, row.mtime_ns, row.updated_at = path, size_bytes, mtime_ns, _now()
        _bump(session)
    return True


def remove_row(catalog: Catalog, image_id: int) -> bool:
    """Drop row ``image_id`` and its patch grid; returns whether there was one."""
    with catalog.session() as session, session.begin():
        if session.get(ImageRecord, image_id) is None:
            return False
        _delete(session, image_id)
        _bump(session)
    return True


def adopt_content(catalog: Catalog, image_id: int, keeper_id: int, size_bytes: int, mtime_ns: int) -> bool:
    """Make row ``image_id`` describe the keeper's bytes, as a build would after its file became a hard
    link to the keeper: the keeper's sha256, size in pixels, embedding and patch grid, with the file's
    size and mtime as they are now. Returns whether anything changed."""
    with catalog.session() as session, session.begin():
        row = session.get(ImageRecord, image_id)
        keeper = session.get(ImageRecord, keeper_id)
        if row is None:
            return False
        if keeper is None or keeper.status != STATUS_INDEXED:
            raise CatalogError(f"the keeper's catalog row {keeper_id} is gone")
        if (row.sha256, row.size_bytes, row.mtime_ns, row.embedding) == (
            keeper.sha256,
            size_bytes,
            mtime_ns,
            keeper.embedding,
        ):
            return False
        revision = _bump(session)
        row.sha256, row.width, row.height = keeper.sha256, keeper.width, keeper.height
        row.size_bytes, row.mtime_ns, row.status = size_bytes, mtime_ns, STATUS_INDEXED
        row.error_reason = row.error = None
        row.embedding, row.vector_revision, row.updated_at = keeper.embedding, revision, _now()
        keeper_grid = session.get(PatchGridRecord, keeper_id)
        session.execute(delete(PatchGridRecord).where(PatchGridRecord.image_id == image_id))
        if keeper_grid is not None:
            session.add(PatchGridRecord(image_id=image_id, grid=keeper_grid.grid, data=keeper_grid.data))
    return True


def restore_row(catalog: Catalog, saved: SavedRow, size_bytes: int, mtime_ns: int) -> None:
    """Put a saved row back with its own id, path, content and patch grid (its file's size and mtime as
    they are now); a row some build made meanwhile for the same path gives way to it."""
    with catalog.session() as session, session.begin():
        revision = _bump(session)
        values = {
            **saved.values,
            "size_bytes": size_bytes,
            "mtime_ns": mtime_ns,
            "error_reason": None,
            "error": None,
            "vector_revision": revision,
            "updated_at": _now(),
        }
        for other in session.scalars(
            select(ImageRecord.id).where(ImageRecord.path == saved.values["path"], ImageRecord.id != saved.id)
        ).all():
            logger.warning("%s was catalogued again as row %d; restoring row %d", values["path"], other, saved.id)
            _delete(session, other)
        row = session.get(ImageRecord, saved.id)
        if row is None:
            session.execute(insert(ImageRecord).values(**values, created_at=saved.created_at))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        session.flush()
        session.execute(delete(PatchGridRecord).where(PatchGridRecord.image_id == saved.id))
        if saved.grid is not None and saved.grid_data is not None:
            session.add(PatchGridRecord(image_id=saved.id, grid=saved.grid, data=saved.grid_data))


def _delete(session: Session, image_id: int) -> None:
    # Explicitly, not by the foreign key's cascade alone: a catalog opened without SQLite's foreign_keys
    # pragma would keep an orphan grid.
    session.execute(delete(PatchGridRecord).where(PatchGridRecord.image_id == image_id))
    session.execute(delete(ImageRecord).where(ImageRecord.id == image_id))


def _bump(session: Session) -> int:
    state = session.get(CatalogState, 1, with_for_update=True)
    if state is None:
        raise CatalogError("catalog has no provenance yet")
    state.revision += 1
    return int(state.revision)


def _now() -> datetime:
    return datetime.now(UTC)
