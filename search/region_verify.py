"""Spatial verification of region matches: does a placement agree with where the cells match best?

The placement search (:mod:`search.region_batch`) scores a window by the mean similarity of the cells it
aligns; a photo full of vaguely similar cells (plain walls, sky, foliage) scores well wherever the window
goes. Local-feature re-ranking checks instead that individual matches agree with one geometry; on stored
grids the same check is cheap, from the similarities the placement search already has:

- forward: the query cell's best cell anywhere in the photo lies within one cell of where the placement
  puts it;
- mutual: among all the query's cells, the aligned photo cell's best one is the query cell that was
  aligned to it, or its neighbour.

Each is a coverage-weighted share of the query cells (0..1); the candidate's score becomes the placement's
mean similarity plus :data:`FORWARD_WEIGHT` and :data:`MUTUAL_WEIGHT` times them, divided by
:data:`VERIFIED_SCALE` so that it stays at most 1, as a cosine is. On the region
benchmark's tune split this raised recall@10 from 0.39 to 0.53 at 256 px, and on the held-out
split from 0.375 to 0.484 at 512 px (``docs/region-search.md``).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Grid = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
FORWARD_WEIGHT = 0.5
MUTUAL_WEIGHT = 0.5
VERIFIED_SCALE = 1.0 + FORWARD_WEIGHT + MUTUAL_WEIGHT
SLACK = 1  # cells a match may be off and still agree: placements snap to whole cells at seven scales


def verified_scores(
    scores: Grid, similarity: Grid, tops: Ids, lefts: Ids, heights: Ids, widths: Ids, weights: Grid
) -> Grid:
    """The placements' ``scores`` (``[n]``) with the verification bonus of :func:`consistency`, scaled
    back to at most 1."""
    bonus = consistency(similarity, tops, lefts, heights, widths, weights)
    return ((scores + bonus) / VERIFIED_SCALE).astype(np.float32)


def consistency(similarity: Grid, tops: Ids, lefts: Ids, heights: Ids, widths: Ids, weights: Grid) -> Grid:
    """Each candidate's verification bonus, ``[n]``: the weighted forward and mutual shares.

    ``similarity`` is ``[n, rows, cols, g, g]`` (each query cell against each photo cell); ``tops``,
    ``lefts``, ``heights`` and ``widths`` (``[n]``) are the placements in photo cells; ``weights``
    (``[rows, cols]``) how much of each query cell the box covers."""
    count, rows, cols, grid, _ = similarity.shape
    if weights.shape != (rows, cols):
        raise ValueError(f"weights are {weights.shape}, the query block {(rows, cols)}")
    cells = rows * cols
    flat = similarity.reshape(count, cells, grid * grid)
    share = (weights.ravel() / weights.sum()).astype(np.float32)
    query_rows, query_cols = (axis.ravel() for axis in np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"))
    # Where the placement puts each query cell's centre, in photo cells: [n, cells].
    centre_rows = tops[:, None] + (query_rows[None, :] + 0.5) * heights[:, None] / rows
    centre_cols = lefts[:, None] + (query_cols[None, :] + 0.5) * widths[:, None] / cols

    best_rows, best_cols = np.divmod(flat.argmax(axis=2), grid)
    forward = (np.abs(best_rows + 0.5 - centre_rows) <= SLACK) & (np.abs(best_cols + 0.5 - centre_cols) <= SLACK)

    aligned = centre_rows.astype(np.int64) * grid + centre_cols.astype(np.int64)  # [n, cells]
    # [n, query cell j, aligned cell of query cell i]: which query cell each aligned photo cell likes best.
    columns = flat[np.arange(count)[:, None, None], np.arange(cells)[None, :, None], aligned[:, None, :]]
    liked_rows, liked_cols = np.divmod(columns.argmax(axis=1), cols)
    mutual = (np.abs(liked_rows - query_rows[None, :]) <= SLACK) & (np.abs(liked_cols - query_cols[None, :]) <= SLACK)

    bonus = FORWARD_WEIGHT * (forward @ share) + MUTUAL_WEIGHT * (mutual @ share)
    return bonus.astype(np.float32)
