"""Region search's candidate stages, batched over candidates instead of looped photo by photo.

- :func:`rank_candidates`: a photo's candidate score is the sum over query cells of its best cell match
  in the patch index's neighbours (NumPy over all hits at once instead of a Python loop over them).
- :func:`rerank_all` (and :func:`rerank` for one encoding): every candidate's stored codes decoded in
  one go (:func:`decode_grids`), one matrix product for all their cells against the cells of the query
  and of its views, and the placement search of :func:`search.region.best_placement` run for all
  candidates that share a window size at once. The per-candidate path cost 4-10 ms a photo, most of it
  NumPy call overhead on small arrays; the results are the same to float tolerance
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
from core.grid_codes import BYTE_TRITS, COSINE_FLOOR, COSINE_STEPS, grid_codes
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


# Each code byte's five trits as float32: one row gather per byte (np.take) instead of five lookups.
_BYTE_TRIT_VALUES = np.ascontiguousarray(BYTE_TRITS, dtype=np.float32)
_NONZERO_TRITS = np.count_nonzero(BYTE_TRITS, axis=1).astype(np.int32)


@dataclass(frozen=True)
class DecodedGrids:
    """Candidates' stored codes decoded once, for every query encoding that re-ranks them: per grid
    size, the candidates' positions in the list decoded, their cells' trits (``[cells, dim]``) and each
    cell's scale (1 / (trit norm * cosine))."""

    count: int
    groups: tuple[tuple[int, Ids, Grid, Grid], ...]  # (grid, members, values, scales)


def decode_grids(stored: Sequence[StoredGrid], dim: int) -> DecodedGrids:
    """Decode every stored grid's codes (:mod:`core.grid_codes`), grouped by grid size."""
    sizes = np.array([grid.grid for grid in stored], dtype=int)
    groups = []
    for grid in np.unique(sizes).tolist():
        members = np.flatnonzero(sizes == grid)
        try:
            codes = np.concatenate([grid_codes(stored[i].data, grid, dim) for i in members.tolist()])
        except ValueError as error:
            raise CatalogError(str(error)) from error
        # [cells, dim]: a view of [cells, bytes * 5] (the matrix product takes its row stride as it is).
        values = np.take(_BYTE_TRIT_VALUES, codes[:, 1:], axis=0).reshape(len(codes), -1)[:, :dim]
        norms = np.sqrt(_NONZERO_TRITS[codes[:, 1:]].sum(axis=1, dtype=np.int32).astype(np.float32))
        cosines = COSINE_FLOOR + codes[:, 0].astype(np.float32) / COSINE_STEPS
        scales = (1.0 / (np.maximum(norms, np.float32(1e-12)) * cosines)).astype(np.float32)
        groups.append((int(grid), members, values, scales))
    return DecodedGrids(len(stored), tuple(groups))


def decoded_products(values: Grid, scales: Grid, query: Grid) -> Grid:
    """Inner products of each rotated query cell (``[q, dim]``) with decoded cells (one group of
    :class:`DecodedGrids`): ``[q, cells]``. The trits go through the matrix product as they are; each
    cell's scale is applied to its few products afterwards instead of to its ``dim`` values."""
    products = query @ values.T
    products *= scales[None, :]
    return products


def _by_photo(products: Grid, members: int) -> Grid:
    """``[q, members * g * g]`` products in the layout the placement search gathers from: ``[members, q, g * g]``."""
    return np.ascontiguousarray(products.reshape(products.shape[0], members, -1).transpose(1, 0, 2))


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


@dataclass(frozen=True)
class BlockQuery:
    """One encoding's block of rotated query cells (``[rows, cols, dim]``) with its coverage ``weights``,
    each candidate's aspect correction (``scale_rows``, ``scale_cols``, ``[n]``) and the scales tried."""

    cells: Grid
    weights: Grid
    scale_rows: npt.NDArray[np.float64]
    scale_cols: npt.NDArray[np.float64]
    scales: tuple[float, ...]


def rerank(
    query_cells: Grid,
    weights: Grid,
    stored: Sequence[StoredGrid] | DecodedGrids,
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

    ``stored`` may come decoded already (:func:`decode_grids`). Candidates are batched by grid size (a
    catalog has one; a mixed one is handled group by group)."""
    block = BlockQuery(query_cells, weights, scale_rows, scale_cols, scales)
    return rerank_all([block], stored, photo_ids, dim, verify=verify)[0]


def rerank_all(
    queries: Sequence[BlockQuery],
    stored: Sequence[StoredGrid] | DecodedGrids,
    photo_ids: Sequence[int],
    dim: int,
    *,
    verify: bool = True,
) -> list[list[Reranked]]:
    """:func:`rerank` for several encodings of one query (the query and its views) at once: the codes are
    decoded once and go through one matrix product with all the encodings' cells."""
    decoded = stored if isinstance(stored, DecodedGrids) else decode_grids(stored, dim)
    sizes = [query.cells.shape[0] * query.cells.shape[1] for query in queries]
    bounds = np.cumsum([0, *sizes])
    every_cell = np.concatenate([query.cells.reshape(-1, dim) for query in queries])
    found: list[dict[int, Reranked]] = [{} for _ in queries]
    for grid, members, values, cell_scales in decoded.groups:
        products = decoded_products(values, cell_scales, every_cell)  # [all query cells, cells]
        for number, query in enumerate(queries):
            rows, cols, _ = query.cells.shape
            similarity = _by_photo(products[bounds[number] : bounds[number + 1]], len(members))
            similarity = similarity.reshape(len(members), rows, cols, grid, grid)
            found[number].update(_placed(similarity, query, members, photo_ids, verify))
    return [[found_here[i] for i in range(decoded.count)] for found_here in found]


def _placed(
    similarity: Grid, query: BlockQuery, members: Ids, photo_ids: Sequence[int], verify: bool
) -> dict[int, Reranked]:
    """One group's candidates (``similarity`` ``[n, rows, cols, g, g]``) placed and scored, by position."""
    count, rows, cols, grid, _ = similarity.shape
    placed = best_placements(
        similarity, query.scale_rows[members], query.scale_cols[members], query.weights, query.scales
    )
    scores = placed.scores
    if verify:
        scores = verified_scores(scores, similarity, placed.tops, placed.lefts, placed.rows, placed.cols, query.weights)
    heatmaps = similarity.reshape(count, rows * cols, grid, grid).max(axis=1)
    return {
        member: Reranked(
            int(photo_ids[member]),
            float(scores[slot]),
            int(placed.tops[slot]),
            int(placed.lefts[slot]),
            int(placed.rows[slot]),
            int(placed.cols[slot]),
            heatmaps[slot],
        )
        for slot, member in enumerate(members.tolist())
    }
