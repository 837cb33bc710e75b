"""Does every indexed photo have its patch grid? In the catalog, and as cells in the patch index.

A photo without its grid silently drops out of region search (and of the local re-scoring of robust
queries), which no other check notices: the patch index agrees with the catalog's grids, just not with
its photos. ``verify`` reports each such photo. A missing grid is recomputed from the photo's file by the
next build; missing cells are written back by ``reindex`` (or the next build's index sync).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.catalog import Catalog, PhotoRecord
from core.errors import IndexFileError
from core.index.files import index_dir, index_ids, load_index
from core.index.source import decode_cell_ids

logger = logging.getLogger(__name__)

# Photos named per kind of problem; past this, a count (a catalog that lost every grid has as many lines).
SHOWN_PHOTOS = 100


@dataclass(frozen=True)
class GridAudit:
    """Indexed photos lacking their grid in the catalog, and photos whose grid's cells the patch index
    lacks (any of them)."""

    without_grid: list[PhotoRecord]
    without_cells: list[PhotoRecord]

    @property
    def ok(self) -> bool:
        return not self.without_grid and not self.without_cells

    def problems(self, shown: int = SHOWN_PHOTOS) -> list[str]:
        """One line per photo (up to ``shown`` of each kind, then a count), for ``verify``."""
        lines: list[str] = []
        for photos, what in (
            (self.without_grid, "no patch grid in the catalog"),
            (self.without_cells, "cells missing from the patch index"),
        ):
            lines.extend(f"photo {photo.id} {photo.path!r}: {what}" for photo in photos[:shown])
            if len(photos) > shown:
                lines.append(f"... and {len(photos) - shown} more photos with {what}")
        return lines

    def repairs(self) -> list[str]:
        """What repairs the problems found."""
        lines = []
        if self.without_grid:
            lines.append("`python -m indexer build` on the same folders recomputes missing patch grids from the files.")
        if self.without_cells:
            lines.append("`python -m indexer reindex` writes missing cells back into the patch index.")
        return lines


def audit_grids(catalog: Catalog, data_dir: Path) -> GridAudit | None:
    """Check a catalog built with patches (None for one built without)."""
    provenance = catalog.provenance()
    if provenance is None or provenance.patch_grid == 0:
        return None
    cells = provenance.patch_grid**2
    with_grid, _ = catalog.patch_ids()
    try:
        loaded = load_index(index_dir(data_dir), name="patches")
    except IndexFileError as error:
        logger.warning("%s", error)  # check_index reports the unreadable file itself
        loaded = None
    if loaded is None:
        lacking = with_grid
    else:
        photo_ids, counts = np.unique(decode_cell_ids(index_ids(loaded.index))[0], return_counts=True)
        complete = photo_ids[counts >= cells]
        lacking = np.setdiff1d(with_grid, complete)
    photos = catalog.photos(lacking.tolist())
    return GridAudit(
        without_grid=catalog.photos_without_grid(),
        without_cells=[photos[int(i)] for i in lacking if int(i) in photos],
    )
