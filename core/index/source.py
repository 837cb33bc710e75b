"""What a FAISS index holds, read from the catalog: one vector per photo, or one per patch cell.

:mod:`core.index` builds (:mod:`~core.index.build`, :mod:`~core.index.ondisk`), syncs
(:mod:`~core.index.sync`) and checks (:mod:`~core.index.verify`) an index from a :class:`VectorSource`
without knowing which kind it is. Both kinds are keyed by catalog photo id ("items"); a patch vector's id encodes
``(photo id, cell)`` as ``photo_id * CELL_ID_BASE + cell`` so that it maps back to its photo and place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from core.catalog import Catalog, Embeddings, Ids

# 32x32 = 1024 cells at 512 px is the finest grid; 4096 leaves room for larger inputs.
CELL_ID_BASE = 4096


def encode_cell_ids(photo_ids: Ids, cells: int) -> Ids:
    """Vector ids of every cell of each photo, photo by photo, cells in row-major order."""
    if cells > CELL_ID_BASE:
        raise ValueError(f"{cells} cells per photo exceed the id encoding's {CELL_ID_BASE}")
    return (np.asarray(photo_ids, dtype=np.int64)[:, None] * CELL_ID_BASE + np.arange(cells, dtype=np.int64)).ravel()


def decode_cell_ids(vector_ids: Ids) -> tuple[Ids, Ids]:
    """``(photo ids, cells)`` of patch vector ids."""
    vector_ids = np.asarray(vector_ids, dtype=np.int64)
    return vector_ids // CELL_ID_BASE, vector_ids % CELL_ID_BASE


class VectorSource(Protocol):
    """The catalog's view of one index."""

    @property
    def name(self) -> str:
        """File name prefix of the index: ``global`` or ``patches``."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def vectors_per_item(self) -> int: ...

    def item_ids(self) -> tuple[Ids, Ids]:
        """Photo ids that have vectors (sorted) and the catalog revision each was written at."""
        ...

    def vectors_for(self, item_ids: Sequence[int] | Ids) -> Iterator[tuple[Ids, Embeddings]]:
        """``(vector ids, vectors)`` chunks for these photos."""
        ...

    def iter_vectors(self) -> Iterator[tuple[Ids, Embeddings]]:
        """Every vector, in chunks of bounded size."""
        ...

    def items_of(self, vector_ids: Ids) -> Ids:
        """The photo id of each vector id."""
        ...

    def vector_ids_of(self, item_ids: Ids) -> Ids:
        """Every vector id of these photos."""
        ...


@dataclass(frozen=True)
class GlobalVectors:
    """One embedding per photo; vector id = photo id."""

    catalog: Catalog
    dim: int
    name: str = "global"
    vectors_per_item: int = 1

    def item_ids(self) -> tuple[Ids, Ids]:
        return self.catalog.indexed_ids()

    def vectors_for(self, item_ids: Sequence[int] | Ids) -> Iterator[tuple[Ids, Embeddings]]:
        return self.catalog.embeddings_for(item_ids, self.dim)

    def iter_vectors(self) -> Iterator[tuple[Ids, Embeddings]]:
        return self.catalog.iter_embeddings(self.dim, chunk=20_000)

    def items_of(self, vector_ids: Ids) -> Ids:
        return np.asarray(vector_ids, dtype=np.int64)

    def vector_ids_of(self, item_ids: Ids) -> Ids:
        return np.asarray(item_ids, dtype=np.int64)


@dataclass(frozen=True)
class PatchVectors:
    """``grid x grid`` L2-normalised cell vectors per photo, from the catalog's stored patch grids."""

    catalog: Catalog
    dim: int
    grid: int
    name: str = "patches"

    @property
    def vectors_per_item(self) -> int:
        return self.grid * self.grid

    def item_ids(self) -> tuple[Ids, Ids]:
        return self.catalog.patch_ids()

    def vectors_for(self, item_ids: Sequence[int] | Ids) -> Iterator[tuple[Ids, Embeddings]]:
        for photo_ids, grids in self.catalog.patch_grids(item_ids, self.dim):
            yield encode_cell_ids(photo_ids, self.vectors_per_item), _unit_rows(grids.reshape(-1, self.dim))

    def iter_vectors(self) -> Iterator[tuple[Ids, Embeddings]]:
        ids, _ = self.item_ids()
        return self.vectors_for(ids)

    def items_of(self, vector_ids: Ids) -> Ids:
        return decode_cell_ids(vector_ids)[0]

    def vector_ids_of(self, item_ids: Ids) -> Ids:
        return encode_cell_ids(np.asarray(item_ids, dtype=np.int64), self.vectors_per_item)


def _unit_rows(values: npt.NDArray[np.floating]) -> Embeddings:
    rows = values.astype(np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def patch_vectors_of(catalog: Catalog) -> PatchVectors | None:
    """The patch vectors of a catalog built with them, else None."""
    provenance = catalog.provenance()
    if provenance is None or provenance.patch_grid == 0:
        return None
    return PatchVectors(catalog, provenance.dim, provenance.patch_grid)
