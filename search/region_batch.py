"""Region search's candidate stages, batched over candidates instead of looped photo by photo.

- :func:`rank_candidates`: a photo's candidate score is the sum over query cells of its best cell match
  in the patch index's neighbours (NumPy over all hits at once instead of a Python loop over them).
- :func:`rerank`: every candidate's stored codes decoded in one go, one matrix product for all their
  cells against the query's, and the placement search of :func:`search.region.best_placement` run for
  all candidates that share a window size at once. The per-candidate path cost 4-10 ms a photo, most of
  it NumPy call overhead on small arrays; the results are the same to float tolerance
  (``tests/test_region_batch.py`` keeps the per-candidate path as the reference).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.catalog import StoredGrid
from core.errors import CatalogError
from core.grid_codes import BYTE_TRITS, COSINE_FLOOR, COSINE_STEPS, TRITS_PER_BYTE, grid_codes
from search.region_verify import verified_scores

logger = logging.getLogger(__name__)

Grid = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Placements:
    """Each candidate's best placement, in cells: ``[n]`` arrays (:class:`search.region.Placement`'s fields)."""

    scores: npt.NDArray[np.float32]
    tops: Ids
    lefts: Ids
    rows: Ids
    cols: Ids


@dataclass(frozen=True)
class Reranked:
    """One candidate's best placement (score and cells) and its heatmap (``grid x grid``, best query
    cell per cell)."""

    photo_id: int
    score: float
    top: int
    left: int
    rows: int
    cols: int
    heatmap: Grid


def rank_candidates(scores: Grid, vector_photos: Ids, valid: npt.NDArray[np.bool_], limit: int) -> list[int]:
    """The ``limit`` best photos by the sum over query cells of their best match.

    ``scores``, ``vector_photos`` and ``valid`` are ``[cells, neighbours]``: the patch index's scores, the
    photo of each hit and whether the hit is real (FAISS pads with -1). Ties keep the order in which the
    photos were first hit, cell by cell."""
    cells, neighbours = scores.shape
    cell_of = np.broadcast_to(np.arange(cells)[:, None], (cells, neighbours))[valid]
    photos = vector_photos[valid]
    hit_scores = scores[valid].astype(np.float32)
    if photos.size == 0:
        return []
    unique_photos, first_hit, photo_index = np.unique(photos, return_index=True, return_inverse=True)
    # Best score of each (photo, cell); a photo's missing cells count 0, as do negative best scores.
    pair = photo_index.astype(np.int64) * cells + cell_of
    best = np.zeros(len(unique_photos) * cells, dtype=np.float32)
    np.maximum.at(best, pair, hit_scores)
    totals = best.reshape(len(unique_photos), cells).sum(axis=1)
    order = np.lexsort((first_hit, -totals))[:limit]
    return [int(photo) for photo in unique_photos[order]]


# Each code byte's five trits as int8 in the low bytes of one int64: one gather per byte instead of five.
_PACKED_TRITS = np.zeros((3**TRITS_PER_BYTE, 8), dtype=np.int8)
_PACKED_TRITS[:, :TRITS_PER_BYTE] = BYTE_TRITS.astype(np.int8)
_PACKED_TRITS_64 = _PACKED_TRITS.view(np.int64).ravel()
_NONZERO_TRITS = np.count_nonzero(BYTE_TRITS, axis=1).astype(np.int32)


def code_similarities(stored: Sequence[StoredGrid], query: Grid) -> Grid:
    """Inner products of every cell of the stored grids (all of one size) with each rotated query cell
    (``[q, dim]``): ``[n, q, g * g]``, equal to those of :func:`core.grid_codes.rotated_cells`.

    The trits go through the matrix product as they are; each cell's scale (1 / (trit norm * cosine))
    is applied to its few products afterwards instead of to its ``dim`` values."""
    dim = query.shape[1]
    try:
        codes = np.concatenate([grid_codes(grid.data, grid.grid, dim) for grid in stored])
    except ValueError as error:
        raise CatalogError(str(error)) from error
    packed = _PACKED_TRITS_64[codes[:, 1:]]  # [cells, bytes] int64
    trits = packed.view(np.int8).reshape(len(codes), -1, 8)[:, :, :TRITS_PER_BYTE].reshape(len(codes), -1)
    values = trits[:, :dim].astype(np.float32)
    norms = np.sqrt(_NONZERO_TRITS[codes[:, 1:]].sum(axis=1, dtype=np.int32).astype(np.float32))
    cosines = COSINE_FLOOR + codes[:, 0].astype(np.float32) / COSINE_STEPS
    scale = 1.0 / (np.maximum(norms, np.float32(1e-12)) * cosines)
    # One matrix product for all cells; then [n, q, g * g], the layout the placement search gathers from.
    products = (values @ query.T) * scale[:, None]
    return np.ascontiguousarray(products.reshape(len(stored), -1, query.shape[0]).transpose(0, 2, 1))


@functools.lru_cache(maxsize=4096)
def _positions(rows: int, cols: int, height: int, width: int, grid: int) -> Ids:
    """Where each query cell lands in a photo's flattened ``[cells, g, g]`` similarities, for every
    placement of a ``height x width`` window: ``[cells, positions down * positions across]``."""
    query_rows, query_cols = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    offset_rows = ((query_rows.ravel() + 0.5) * height / rows).astype(int)
    offset_cols = ((query_cols.ravel() + 0.5) * width / cols).astype(int)
    window_rows = offset_rows[:, None, None] + np.arange(grid - height + 1)[None, :, None]
    window_cols = offset_cols[:, None, None] + np.arange(grid - width + 1)[None, None, :]
    cell = np.arange(rows * cols)[:, None, None]
    positions = ((cell * grid + window_rows) * grid + window_cols).reshape(rows * cols, -1)
    positions.setflags(write=False)
    return positions


def best_placements(
    similarity: Grid,
    scale_rows: npt.NDArray[np.float64],
    scale_cols: npt.NDArray[np.float64],
    weights: Grid,
    scales: tuple[float, ...],
) -> Placements:
    """:func:`search.region.best_placement` (weighted, ``keep=1``) for a batch of candidates.

    ``similarity`` is ``[n, rows, cols, g, g]``; ``scale_rows``/``scale_cols`` are each candidate's aspect
    correction. Candidates whose window has the same size at a scale are scored in one gather."""
    count, rows, cols, grid, _ = similarity.shape
    flat = similarity.reshape(count, -1)
    cell_weights = weights.ravel().astype(np.float32)
    cell_weights = (cell_weights / cell_weights.sum())[None, :, None]
    # [n, scales]: the window each candidate tries at each scale, and its best score and position there.
    heights = np.clip(np.round(rows * np.outer(scale_rows, scales)), 1, grid).astype(int)
    widths = np.clip(np.round(cols * np.outer(scale_cols, scales)), 1, grid).astype(int)
    best_scores = np.full(heights.shape, -np.inf, dtype=np.float64)
    best_tops = np.zeros(heights.shape, dtype=int)
    best_lefts = np.zeros(heights.shape, dtype=int)
    keys, inverse = np.unique((heights * (grid + 1) + widths).ravel(), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    for number, key in enumerate(keys.tolist()):
        candidates, scale_steps = np.divmod(order[bounds[number] : bounds[number + 1]], len(scales))
        group, slot = np.unique(candidates, return_inverse=True)
        height, width = divmod(key, grid + 1)
        aligned = flat[group[:, None, None], _positions(rows, cols, height, width, grid)[None]]
        scores = (aligned * cell_weights).sum(axis=1)  # [group, positions down * positions across]
        where = scores.argmax(axis=1)
        found = scores[np.arange(len(group)), where]
        tops, lefts = np.divmod(where, grid - width + 1)
        best_scores[candidates, scale_steps] = found[slot]
        best_tops[candidates, scale_steps] = tops[slot]
        best_lefts[candidates, scale_steps] = lefts[slot]
    # The first scale reaching the best score wins, as in the one-candidate loop (strictly greater).
    step = best_scores.argmax(axis=1)
    picked = np.arange(count)
    return Placements(
        best_scores[picked, step].astype(np.float32),
        best_tops[picked, step],
        best_lefts[picked, step],
        heights[picked, step],
        widths[picked, step],
    )


def rerank(
    query_cells: Grid,
    weights: Grid,
    stored: Sequence[StoredGrid],
    photo_ids: Sequence[int],
    scale_rows: npt.NDArray[np.float64],
    scale_cols: npt.NDArray[np.float64],
    dim: int,
    scales: tuple[float, ...],
    *,
    verify: bool = True,
) -> list[Reranked]:
    """Best placement of the rotated query block ``query_cells`` (``[rows, cols, dim]``, coverage
    ``weights``) in every candidate's stored grid, candidates in the order given. ``verify`` adds the
    spatial-consistency bonus of :func:`search.region_verify.verified_scores` to each score.

    Candidates are batched by grid size (a catalog has one; a mixed one is handled group by group)."""
    rows, cols, _ = query_cells.shape
    query = query_cells.reshape(rows * cols, dim)
    found: dict[int, Reranked] = {}
    sizes = np.array([grid.grid for grid in stored], dtype=int)
    for grid in np.unique(sizes).tolist():
        members = np.flatnonzero(sizes == grid)
        # One matrix product for every candidate cell against every query cell.
        similarity = code_similarities([stored[i] for i in members.tolist()], query)  # [n, q, g * g]
        similarity = similarity.reshape(len(members), rows, cols, grid, grid)
        placed = best_placements(similarity, scale_rows[members], scale_cols[members], weights, scales)
        scores = placed.scores
        if verify:
            scores = verified_scores(scores, similarity, placed.tops, placed.lefts, placed.rows, placed.cols, weights)
        heatmaps = similarity.reshape(len(members), rows * cols, grid, grid).max(axis=1)
        for slot, member in enumerate(members.tolist()):
            found[member] = Reranked(
                int(photo_ids[member]),
                float(scores[slot]),
                int(placed.tops[slot]),
                int(placed.lefts[slot]),
                int(placed.rows[slot]),
                int(placed.cols[slot]),
                heatmaps[slot],
            )
    return [found[i] for i in range(len(stored))]
