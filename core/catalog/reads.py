"""Reads of photo rows: change-detection facts, reusable content, counts, failures and photo lookups.

A mixin of :class:`core.catalog.Catalog` (see :mod:`core.catalog.sessions`); embeddings and patch grids
are read by :mod:`core.catalog.vectors`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import func, select

from core.catalog.codecs import bytes_to_vector
from core.catalog.records import FileState, KnownContent, PhotoRecord, StoredGrid, photo_record, stored_metadata
from core.catalog.sessions import CatalogSessions
from core.catalog.tables import STATUS_FAILED, STATUS_INDEXED, CatalogState, ImageRecord, PatchGridRecord

logger = logging.getLogger(__name__)


class PhotoReads(CatalogSessions):
    """What the catalog knows of its files and photos."""

    def revision(self) -> int:
        with self.session() as session:
            value = session.scalar(select(CatalogState.revision).where(CatalogState.id == 1))
            return int(value or 0)

    def file_states(self) -> dict[str, FileState]:
        """Every row's change-detection facts, keyed by path."""
        query = select(
            ImageRecord.path,
            ImageRecord.id,
            ImageRecord.size_bytes,
            ImageRecord.mtime_ns,
            ImageRecord.status,
            ImageRecord.sha256,
        )
        with self.session() as session:
            return {
                path: FileState(id=id_, size_bytes=size, mtime_ns=mtime, status=status, sha256=sha)
                for path, id_, size, mtime, status, sha in session.execute(query)
            }

    def indexed_hashes(self) -> set[str]:
        query = select(ImageRecord.sha256).where(ImageRecord.status == STATUS_INDEXED).distinct()
        with self.session() as session:
            return {sha for sha in session.scalars(query) if sha is not None}

    def known_content(self, sha256: str, dim: int, *, need_grid: bool = False) -> KnownContent | None:
        """An indexed row with this content hash, whose embedding (and patch grid) can be reused.

        A row that has a stored grid is preferred; ``need_grid``: None unless one has (the content must
        then go through the model again, so that no photo is committed without its grid)."""
        query = (
            select(ImageRecord, PatchGridRecord)
            .outerjoin(PatchGridRecord, PatchGridRecord.image_id == ImageRecord.id)
            .where(ImageRecord.sha256 == sha256, ImageRecord.status == STATUS_INDEXED)
            .order_by(PatchGridRecord.image_id.is_(None), ImageRecord.id)
            .limit(1)
        )
        with self.session() as session:
            found = session.execute(query).first()
            if found is None:
                return None
            row, grid = found
            if row.embedding is None or row.width is None or row.height is None or (need_grid and grid is None):
                return None
            return KnownContent(
                id=row.id,
                path=row.path,
                width=row.width,
                height=row.height,
                embedding=bytes_to_vector(row.embedding, dim),
                metadata=stored_metadata(row),
                patches=None if grid is None else StoredGrid(grid.grid, grid.data),
            )

    def photos_without_grid(self) -> list[PhotoRecord]:
        """Indexed photos that have no stored patch grid, by id (a catalog built with patches should have
        none: ``verify`` reports them, the next build recomputes their grids)."""
        query = (
            select(ImageRecord)
            .outerjoin(PatchGridRecord, PatchGridRecord.image_id == ImageRecord.id)
            .where(ImageRecord.status == STATUS_INDEXED, PatchGridRecord.image_id.is_(None))
            .order_by(ImageRecord.id)
        )
        with self.session() as session:
            return [photo_record(row) for row in session.scalars(query)]

    def counts(self) -> dict[str, int]:
        query = select(ImageRecord.status, func.count()).group_by(ImageRecord.status)
        with self.session() as session:
            by_status = {status: int(count) for status, count in session.execute(query)}
        return {
            "images": sum(by_status.values()),
            STATUS_INDEXED: by_status.get(STATUS_INDEXED, 0),
            STATUS_FAILED: by_status.get(STATUS_FAILED, 0),
        }

    def failures_by_reason(self) -> dict[str, int]:
        query = (
            select(ImageRecord.error_reason, func.count())
            .where(ImageRecord.status == STATUS_FAILED)
            .group_by(ImageRecord.error_reason)
        )
        with self.session() as session:
            return {str(reason): int(count) for reason, count in session.execute(query)}

    def failures(self, limit: int | None = None) -> list[tuple[str, str, str]]:
        """``(path, reason, message)`` of failed files, by path."""
        query = (
            select(ImageRecord.path, ImageRecord.error_reason, ImageRecord.error)
            .where(ImageRecord.status == STATUS_FAILED)
            .order_by(ImageRecord.path)
            .limit(limit)
        )
        with self.session() as session:
            return [(path, str(reason), str(message)) for path, reason, message in session.execute(query)]


    def photos(self, ids: Iterable[int]) -> dict[int, PhotoRecord]:
        """Indexed photos by id (ids that are not indexed photos are left out)."""
        wanted = [int(i) for i in ids]
        found: dict[int, PhotoRecord] = {}
        for start in range(0, len(wanted), 500):
            query = select(ImageRecord).where(
                ImageRecord.id.in_(wanted[start : start + 500]), ImageRecord.status == STATUS_INDEXED
            )
            with self.session() as session:
                found.update({row.id: photo_record(row) for row in session.scalars(query)})
        return found

    def photo_by_path(self, path: str) -> PhotoRecord | None:
        query = select(ImageRecord).where(ImageRecord.path == path, ImageRecord.status == STATUS_INDEXED)
        with self.session() as session:
            row = session.scalars(query).first()
            return None if row is None else photo_record(row)


    def find_photos(self, name_contains: str, limit: int = 50) -> list[PhotoRecord]:
        """Indexed photos whose path contains ``name_contains`` (case-insensitive), by path."""
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(ImageRecord)
            .where(ImageRecord.status == STATUS_INDEXED, ImageRecord.path.ilike(f"%{escaped}%", escape="\\"))
            .order_by(ImageRecord.path)
            .limit(limit)
        )
        with self.session() as session:
            return [photo_record(row) for row in session.scalars(query)]


    def same_content_ids(self) -> list[list[int]]:
        """Ids of indexed photos that share their bytes (sha256) with another, grouped, ascending."""
        shared = (
            select(ImageRecord.sha256)
            .where(ImageRecord.status == STATUS_INDEXED)
            .group_by(ImageRecord.sha256)
            .having(func.count() > 1)
        )
        query = (
            select(ImageRecord.sha256, ImageRecord.id)
            .where(ImageRecord.status == STATUS_INDEXED, ImageRecord.sha256.in_(shared))
            .order_by(ImageRecord.sha256, ImageRecord.id)
        )
        groups: dict[str | None, list[int]] = {}
        with self.session() as session:
            for sha, id_ in session.execute(query):
                groups.setdefault(sha, []).append(id_)
        return list(groups.values())

    def path_of(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = [int(i) for i in ids]
        with self.session() as session:
            return {
                id_: path
                for id_, path in session.execute(
                    select(ImageRecord.id, ImageRecord.path).where(ImageRecord.id.in_(wanted))
                )
            }
