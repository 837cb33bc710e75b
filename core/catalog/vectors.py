"""Reads of embeddings and patch grids, in chunks: what the FAISS files are built and synced from.

A mixin of :class:`core.catalog.Catalog` (see :mod:`core.catalog.sessions`). Ids come back as sorted
arrays, with the catalog revision at which each vector was written, so an index sync can tell which are new.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from sqlalchemy import Select, func, select

from core.catalog.codecs import bytes_to_grid, bytes_to_vector
from core.catalog.records import Embeddings, Ids, StoredGrid
from core.catalog.sessions import CatalogSessions
from core.catalog.tables import STATUS_INDEXED, ImageRecord, PatchGridRecord
from core.errors import CatalogError

logger = logging.getLogger(__name__)


class VectorReads(CatalogSessions):
    """The stored embeddings and patch grids of indexed photos."""

    def _ids_and_revisions(self, query: Select[int, int | None]) -> tuple[Ids, npt.NDArray[np.int64]]:
        """The (id, vector revision) rows of ``query`` as two arrays."""
        with self.session() as session:
            rows = session.execute(query).all()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        revisions = np.fromiter((row[1] or 0 for row in rows), dtype=np.int64, count=len(rows))
        return ids, revisions

    def indexed_ids(self) -> tuple[Ids, npt.NDArray[np.int64]]:
        """Ids of indexed rows (sorted) and the revision at which each one's vector was written."""
        query = (
            select(ImageRecord.id, ImageRecord.vector_revision)
            .where(ImageRecord.status == STATUS_INDEXED)
            .order_by(ImageRecord.id)
        )
        return self._ids_and_revisions(query)

    def embeddings_for(
        self, ids: Sequence[int] | Ids, dim: int, chunk: int = 2_000
    ) -> Iterator[tuple[Ids, Embeddings]]:
        """Yield ``(ids, vectors)`` chunks for the given indexed ids, in the order given."""
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            found = self.stored_embeddings(part, dim)
            missing = [i for i in part if i not in found]
            if missing:
                raise CatalogError(f"{len(missing)} indexed rows have no stored embedding (first: id {missing[0]})")
            yield np.asarray(part, dtype=np.int64), np.stack([found[i] for i in part])

    def stored_embeddings(self, ids: Sequence[int], dim: int) -> dict[int, Embeddings]:
        """The stored embeddings of those ``ids`` that are indexed now (rows removed meanwhile are absent)."""
        query = select(ImageRecord.id, ImageRecord.embedding).where(
            ImageRecord.id.in_([int(i) for i in ids]), ImageRecord.status == STATUS_INDEXED
        )
        with self.session() as session:
            return {id_: bytes_to_vector(data, dim) for id_, data in session.execute(query) if data is not None}

    def iter_embeddings(self, dim: int, chunk: int = 2_000) -> Iterator[tuple[Ids, Embeddings]]:
        """Every indexed row's embedding, by id, in chunks (keyset pagination: flat memory)."""
        last = 0
        while True:
            query = (
                select(ImageRecord.id, ImageRecord.embedding)
                .where(ImageRecord.status == STATUS_INDEXED, ImageRecord.id > last)
                .order_by(ImageRecord.id)
                .limit(chunk)
            )
            with self.session() as session:
                rows = session.execute(query).all()
            if not rows:
                return
            vectors: list[Embeddings] = []
            for id_, data in rows:
                if data is None:
                    raise CatalogError(f"indexed row {id_} has no stored embedding")
                vectors.append(bytes_to_vector(data, dim))
            yield np.asarray([row[0] for row in rows], dtype=np.int64), np.stack(vectors)
            last = int(rows[-1][0])


    def embedding(self, id_: int, dim: int) -> Embeddings | None:
        query = select(ImageRecord.embedding).where(ImageRecord.id == id_, ImageRecord.status == STATUS_INDEXED)
        with self.session() as session:
            data = session.scalar(query)
        return None if data is None else bytes_to_vector(data, dim)


    def patch_ids(self) -> tuple[Ids, npt.NDArray[np.int64]]:
        """Ids of indexed photos that have a stored patch grid (sorted), and their vector revisions."""
        query = (
            select(ImageRecord.id, ImageRecord.vector_revision)
            .join(PatchGridRecord, PatchGridRecord.image_id == ImageRecord.id)
            .where(ImageRecord.status == STATUS_INDEXED)
            .order_by(ImageRecord.id)
        )
        return self._ids_and_revisions(query)

    def stored_grids(self, ids: Sequence[int] | Ids, chunk: int = 256) -> Iterator[tuple[Ids, list[StoredGrid]]]:
        """Yield ``(ids, stored grids)`` chunks for photos that have a stored grid, in the order given."""
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            query = select(PatchGridRecord.image_id, PatchGridRecord.grid, PatchGridRecord.data).where(
                PatchGridRecord.image_id.in_(part)
            )
            with self.session() as session:
                found = {id_: StoredGrid(grid, data) for id_, grid, data in session.execute(query)}
            present = [i for i in part if i in found]
            if present:
                yield np.asarray(present, dtype=np.int64), [found[i] for i in present]

    def patch_grids(
        self, ids: Sequence[int] | Ids, dim: int, chunk: int = 256
    ) -> Iterator[tuple[Ids, npt.NDArray[np.float32]]]:
        """Yield ``(ids, decoded grids [n, g, g, dim])`` chunks for photos that have a stored grid, in the
        order given."""
        for present, stored in self.stored_grids(ids, chunk):
            yield present, np.stack([bytes_to_grid(grid.data, grid.grid, dim) for grid in stored])

    def patch_bytes(self) -> tuple[int, int]:
        """``(stored grids, bytes of their data)``: what the grids cost the catalog, before the database's
        own per-row and per-page overhead."""
        query = select(func.count(), func.coalesce(func.sum(func.length(PatchGridRecord.data)), 0))
        with self.session() as session:
            count, size = session.execute(query).one()
        return int(count), int(size)
