"""Batch reverse lookup: for every image in a folder of queries, its best matches in the collection.

One model load, the indexer's own decode workers and batched forward passes: a folder of queries costs
what indexing it would, plus one search per image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.config import RobustConfig
from core.decode import supported_extensions
from core.reader import PhotoDataset, WorkItem, make_loader
from core.scan import scan
from search.engine import SearchEngine, SearchResult
from search.robust import encode_variants, robust_results, variant_names

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LookupResult:
    """The matches of one query file, or why it could not be used."""

    query: str
    results: list[SearchResult]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "error": self.error, "results": [r.to_dict() for r in self.results]}


def reverse_lookup(
    engine: SearchEngine,
    folder: Path,
    k: int,
    *,
    min_score: float | None = None,
    show_progress: bool = False,
    robust: RobustConfig | None = None,
) -> Iterator[LookupResult]:
    """Yield a :class:`LookupResult` per image under ``folder``, in path order, matched robustly to edits
    as ``robust`` says (default: the engine's ``search.robust``; :mod:`search.robust`)."""
    config = engine.config
    robust = robust or config.search.robust
    plain = not robust.flips_and_rotations and not robust.local_verification
    items = [
        WorkItem(path=str(found.path), size_bytes=found.size, mtime_ns=found.mtime_ns)
        for found in scan([folder], supported_extensions(), follow_symlinks=config.decode.follow_symlinks)
    ]
    if not items:
        return
    limits = engine.query_limits  # the same bounds as any other query image
    dataset = PhotoDataset(items, engine.provenance.image_size, limits, frozenset())
    loader = make_loader(dataset, engine.batch_size(), engine.decode_workers(), stack_pixels=True)
    with tqdm(total=len(items), desc="looking up", unit="img", disable=not show_progress) as bar:
        for batch in loader:
            decoded = [result for result in batch.results if result.pixels is not None]
            vectors = engine.encode_pixels(batch.pixels) if plain and batch.pixels is not None else None
            encoded = (
                encode_variants(
                    engine,
                    batch.pixels,
                    [(result.width or 0, result.height or 0) for result in decoded],
                    [result.sha256 for result in decoded],
                    variant_names(robust),
                )
                if not plain and batch.pixels is not None
                else None
            )
            position = {result_index: row for row, result_index in enumerate(batch.decoded_positions)}
            for result_index, result in enumerate(batch.results):
                row = position.get(result_index)
                if row is not None and encoded is not None:
                    matches = robust_results(engine, encoded[row], k, robust, min_score=min_score)
                elif row is not None and vectors is not None:
                    matches = engine.search_vector(vectors[row], k, min_score=min_score, query_sha256=result.sha256)
                else:
                    yield LookupResult(result.item.path, [], f"{result.error_reason}: {result.error_message}")
                    continue
                yield LookupResult(result.item.path, matches)
            bar.update(len(batch.results))
