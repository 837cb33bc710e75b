"""A real catalog (SQLite in a data dir) filled with synthetic vectors, and its index, for the benchmarks.

Rows are committed the way a build commits them (``Catalog.commit_outcomes``), without photos or a model:
the vectors are what is being measured. Photo sizes and times are seeded so that suggested originals vary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.catalog import Catalog, IndexedFile, Provenance, StoredGrid
from core.config import LoupeConfig, with_overrides
from core.index.sync import sync_index

logger = logging.getLogger(__name__)

COMMIT_ROWS = 20_000


def synthetic_config(data_dir: Path) -> LoupeConfig:
    return with_overrides(LoupeConfig(), {"data_dir": data_dir, "model.weights": "random", "runtime.device": "cpu"})


def fill_catalog(
    config: LoupeConfig,
    vectors: npt.NDArray[np.float32],
    same_bytes_as: npt.NDArray[np.int64] | None = None,
    *,
    grid_of: Callable[[int], StoredGrid] | None = None,
    patch_grid: int = 0,
    build_index: bool = True,
) -> Catalog:
    """Commit one indexed row per vector (row ``i`` has id ``i + 1``), then build the index the indexer
    would choose (unless ``build_index`` is False). ``same_bytes_as[i]`` (default ``i``) is the row whose
    content hash row ``i`` shares; ``grid_of(i)``, row ``i``'s stored patch grid of ``patch_grid`` cells a
    side (made chunk by chunk, so that a large catalog's grids are never all in memory)."""
    catalog = Catalog.open(config.resolved_db_url)
    catalog.ensure_provenance(
        Provenance(
            model=config.model.network,
            weights_kind="random",
            weights_sha256="0" * 64,
            weights_source="synthetic",
            image_size=config.model.image_size,
            dim=vectors.shape[1],
            preprocessing="synthetic",
            patch_grid=patch_grid,
        )
    )
    content = np.arange(len(vectors)) if same_bytes_as is None else same_bytes_as
    rng = np.random.default_rng(7)
    sides = rng.integers(200, 4000, size=(len(vectors), 2))
    for start in range(0, len(vectors), COMMIT_ROWS):
        catalog.commit_outcomes(
            [
                IndexedFile(
                    path=f"/synthetic/{i // 1000:04d}/{i:08d}.jpg",
                    size_bytes=int(sides[i, 0] * sides[i, 1] // 4),
                    mtime_ns=int(1_600_000_000_000_000_000 + i),
                    sha256=f"{int(content[i]):064x}",
                    width=int(sides[i, 0]),
                    height=int(sides[i, 1]),
                    embedding=vectors[i],
                    patches=None if grid_of is None else grid_of(i),
                )
                for i in range(start, min(len(vectors), start + COMMIT_ROWS))
            ]
        )
    if build_index:
        sync_index(catalog, config.data_dir, config.index)
    return catalog
