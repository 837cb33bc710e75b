"""Region search: find every photo that contains a region of a query image, and where.

1. Encode the query and take the cells of its pooled patch grid that the box touches (at least a
   quarter of a cell's width and height; at least the cell under the box's centre), each weighted by
   how much of it the box covers.
2. Candidates: each query cell searches the patch index; a photo's candidate score is the sum over
   query cells of its best cell match, so photos matching many parts of the region rise.
3. Re-ranking from the stored grids of the best candidates (compact codes whose inner products estimate
   the original cells' without bias, :mod:`core.grid_codes`): the query's block of cells is slid
   over the candidate's grid at seven scales (0.5x to 2x, corrected for both photos' aspect ratios,
   since each is squashed to a square); a placement scores the coverage-weighted mean similarity of
   the cells it aligns. The best placement is the match; the query box, carried through it, is the
   matched box. Requiring the cells to line up in the same layout is
   the spatial-consistency check that a bag of best matches lacks.
4. Verification (:mod:`search.region_verify`): the placement's score gains a bonus for the share of
   query cells whose best match anywhere in the photo is where the placement puts them, and whose
   aligned photo cell likes them best in return.
5. Views and fusion: the query's enlarged views (:mod:`search.region_scales`) re-rank the same
   candidates at window sizes near one photo cell per query cell; each encoding's verified scores are
   standardised against its own candidates and each candidate keeps the encoding where it stands out
   most (:mod:`search.region_fusion`). That fused score orders the matches.

Steps 2 and 3 run over all candidates at once (:mod:`search.region_batch`); :func:`best_placement` is the
one-photo form that robust queries' local re-scoring uses, and the reference the batches are tested
against.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from PIL import Image

from core.catalog import Catalog, StoredGrid
from core.config import PatchConfig
from core.errors import CatalogError
from core.grid_codes import grid_codes, rotate, rotated_cells
from core.index.source import decode_cell_ids
from search.engine import QueryError, SearchEngine
from search.region_batch import BlockQuery, Reranked, rank_candidates, rerank_all
from search.region_fusion import Encoding, fuse, fused_box
from search.region_geometry import MIN_COVER as MIN_COVER
from search.region_geometry import Box as Box
from search.region_geometry import CellBlock as CellBlock
from search.region_geometry import Grid as Grid
from search.region_geometry import Placement as Placement
from search.region_geometry import block_to_box as block_to_box
from search.region_geometry import cell_coverage as cell_coverage
from search.region_geometry import cells_under_box as cells_under_box
from search.region_geometry import matched_box as matched_box
from search.region_scales import EncodedView, encode_with_views
from search.region_verify import verified_scores

logger = logging.getLogger(__name__)

SCALES = tuple(2.0 ** (step / 3) for step in range(-3, 4))  # 0.5 ... 2, in steps of 2^(1/3)
# Scales around one photo cell per query cell that the query's extra views try (search.region_scales).
NATIVE_SCALES = (2.0 ** (-1 / 3), 1.0, 2.0 ** (1 / 3))


@dataclass(frozen=True)
class RegionMatch:
    """A photo that contains the region: its score, the matched box in its own pixels (after EXIF
    orientation) and the per-cell similarity heatmap (``grid x grid``, best query cell per cell).

    ``score`` ranks the matches: how far the photo stands above the other candidates (a robust z-score,
    best over the query's encodings; :mod:`search.region_fusion`). ``similarity`` is the verified
    placement score behind it (a cosine-like value, at most 1)."""

    rank: int
    id: int
    path: str
    score: float
    similarity: float
    box: Box
    width: int
    height: int
    heatmap: Grid

    def to_dict(self, with_heatmap: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rank": self.rank,
            "id": self.id,
            "path": self.path,
            "score": self.score,
            "similarity": self.similarity,
            "box": list(self.box),
            "width": self.width,
            "height": self.height,
        }
        if with_heatmap:
            data["heatmap"] = np.round(self.heatmap, 4).tolist()
        return data


@dataclass(frozen=True)
class RegionResults:
    """The query box actually used (snapped to whole cells, in the query's pixels) and the matches."""

    query_box: Box
    query_width: int
    query_height: int
    matches: list[RegionMatch]


def best_placement(
    similarity: Grid,
    scale_rows: float,
    scale_cols: float,
    weights: Grid | None = None,
    *,
    keep: float = 1.0,
    scales: tuple[float, ...] = SCALES,
) -> Placement:
    """Slide the query block over a photo's grid at every scale; return the best-scoring placement.

    ``similarity`` is ``[rows, cols, g, g]``: each query cell against each photo cell. ``scale_rows`` and
    ``scale_cols`` convert a length in query cells into photo cells at scale 1 (the aspect correction).
    ``weights`` (``[rows, cols]``, e.g. how much of each cell the box covers) weight the mean. ``keep``
    below 1 scores a placement by the mean of only its best ``keep`` share of cells (unweighted), so cells
    hidden under an overlay do not count against it.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    rows, cols, grid, _ = similarity.shape
    query_rows, query_cols = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    flat = similarity.reshape(rows * cols, grid, grid)
    cell_index = np.arange(rows * cols)[:, None, None]
    cell_weights = (np.ones(rows * cols) if weights is None else weights.ravel()).astype(np.float32)
    cell_weights = (cell_weights / cell_weights.sum())[:, None, None]
    best = Placement(-math.inf, 0, 0, 1, 1)
    tried: set[tuple[int, int]] = set()
    kept_cells = max(1, round(keep * rows * cols))
    for scale in scales:
        height = int(np.clip(round(rows * scale * scale_rows), 1, grid))
        width = int(np.clip(round(cols * scale * scale_cols), 1, grid))
        if (height, width) in tried:
            continue
        tried.add((height, width))
        # Where each query cell lands inside a window of height x width photo cells.
        offset_rows = ((query_rows.ravel() + 0.5) * height / rows).astype(int)
        offset_cols = ((query_cols.ravel() + 0.5) * width / cols).astype(int)
        window_rows = offset_rows[:, None] + np.arange(grid - height + 1)[None, :]
        window_cols = offset_cols[:, None] + np.arange(grid - width + 1)[None, :]
        aligned = flat[cell_index, window_rows[:, :, None], window_cols[:, None, :]]
        if kept_cells < rows * cols:
            scores = np.partition(aligned, rows * cols - kept_cells, axis=0)[rows * cols - kept_cells :].mean(axis=0)
        else:
            scores = (aligned * cell_weights).sum(axis=0)
        top, left = np.unravel_index(int(np.argmax(scores)), scores.shape)
        score = float(scores[top, left])
        if score > best.score:
            best = Placement(score, int(top), int(left), height, width)
    return best


def stored_cells(stored: StoredGrid, dim: int) -> Grid:
    """A stored grid decoded into the codes' rotated space (``[g, g, dim]``; see :func:`rotated_cells`)."""
    try:
        codes = grid_codes(stored.data, stored.grid, dim)
    except ValueError as error:
        raise CatalogError(str(error)) from error
    return rotated_cells(codes, dim).reshape(stored.grid, stored.grid, dim)


def search_region(
    engine: SearchEngine,
    image: Image.Image | bytes | Path,
    box: Box | None = None,
    k: int | None = None,
    query_scales: Sequence[float] | None = None,
) -> RegionResults:
    """Photos containing the ``box`` region of ``image`` (whole image when None), best first.

    ``query_scales`` (default ``search.region_query_scales``; empty: off): the query is also encoded
    enlarged around the box at these scales (:mod:`search.region_scales`), in the same encoder call."""
    patch_index = engine.patch_index()
    scales = engine.config.search.region_query_scales if query_scales is None else tuple(query_scales)
    if scales:
        encoded = encode_with_views(engine, image, box, scales)
        grid, size, views = encoded.grid, (encoded.width, encoded.height), encoded.views
    else:
        query = engine.encode_query(image)
        if query.patches is None:  # pragma: no cover - patch_index() already refused
            raise QueryError("the query has no patch grid")
        grid, size, views = query.patches, (query.width, query.height), []
    return match_region(
        engine.catalog,
        patch_index,
        engine.config.patches,
        grid,
        size,
        box,
        k or engine.config.search.default_k,
        views=views,
    )


def match_region(
    catalog: Catalog,
    patch_index: faiss.Index,
    settings: PatchConfig,
    query_grid: Grid,
    query_size: tuple[int, int],
    box: Box | None,
    k: int,
    timings: dict[str, float] | None = None,
    *,
    one_by_one: bool = False,
    verify: bool = True,
    views: Sequence[EncodedView] = (),
) -> RegionResults:
    """Region search from an encoded query's patch grid (``[g, g, dim]``, the query ``width x height``
    pixels): candidates from the patch index, re-ranked from their stored grids in one batch
    (:mod:`search.region_batch`). ``timings``, when given, receives each stage's seconds.
    ``one_by_one``: the per-candidate path the batches replaced (the reference the benchmark's "before"
    figure and the tests compare against; slower, same results to float tolerance). ``verify``: add the
    spatial-consistency bonus (:mod:`search.region_verify`; off gives the scores before it). ``views``: the
    query encoded again at other scales (:mod:`search.region_scales`), re-ranked with windows near one
    photo cell per query cell; each candidate keeps its best standardised score over the query and its
    views (:mod:`search.region_fusion`)."""
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    query_w, query_h = query_size
    grid, dim = int(query_grid.shape[0]), int(query_grid.shape[-1])
    block = cells_under_box(box, query_w, query_h, grid)
    cells = np.ascontiguousarray(
        query_grid[block.top : block.bottom, block.left : block.right].reshape(-1, dim), dtype=np.float32
    )
    neighbours = min(settings.cell_neighbours, int(patch_index.ntotal))
    scores, vector_ids = patch_index.search(cells, neighbours)
    lap("patch index search")
    photo_ids, _ = decode_cell_ids(np.where(vector_ids >= 0, vector_ids, 0))
    if one_by_one:
        ranked = _rank_candidates_loop(scores, photo_ids, vector_ids >= 0, settings.candidates)
    else:
        ranked = rank_candidates(scores, photo_ids, vector_ids >= 0, settings.candidates)
    lap("candidate ranking")

    photos = catalog.photos(ranked)
    present: list[int] = []
    stored: list[StoredGrid] = []
    for chunk_ids, chunk in catalog.stored_grids(ranked):
        for photo_id, stored_grid in zip(chunk_ids.tolist(), chunk, strict=True):
            if photo_id in photos:
                present.append(photo_id)
                stored.append(stored_grid)
    lap("grid fetch")
    # Compared in the grid codes' rotated space: one rotation of the query instead of one per photo cell.
    query_cells = rotate(cells).reshape(block.rows, block.cols, dim)
    coverage = cell_coverage(box, block, query_w, query_h)
    everyone = list(range(len(present)))
    heights = np.array([max(photos[i].height, 1) for i in present], dtype=np.float64)
    widths = np.array([max(photos[i].width, 1) for i in present], dtype=np.float64)
    sizes = (query_h / heights, query_w / widths)
    blocks = [BlockQuery(query_cells, coverage, *sizes, SCALES)]
    encodings = [Encoding(box, block, query_size)]
    for view in views:
        view_w, view_h = view.size
        view_block = cells_under_box(view.box, view_w, view_h, grid)
        view_cells = view.grid[view_block.top : view_block.bottom, view_block.left : view_block.right]
        rows_scale, cols_scale = view_h / heights, view_w / widths
        # Centre each candidate's few scales on one photo cell per query cell, within the copy scales.
        native = np.clip(1.0 / np.sqrt(rows_scale * cols_scale), SCALES[0], SCALES[-1])
        rotated = rotate(np.ascontiguousarray(view_cells.reshape(-1, dim), dtype=np.float32))
        blocks.append(
            BlockQuery(
                rotated.reshape(view_block.rows, view_block.cols, dim),
                cell_coverage(view.box, view_block, view_w, view_h),
                rows_scale * native,
                cols_scale * native,
                NATIVE_SCALES,
            )
        )
        encodings.append(Encoding(view.box, view_block, view.size))
    # The codes are decoded once and meet the cells of the query and of all its views in one product.
    if one_by_one:
        reranked = [_rerank_one_by_one(query_cells, coverage, stored, present, *sizes, dim, SCALES, verify=verify)]
        reranked += rerank_all(blocks[1:], stored, present, dim, verify=verify) if views else []
    else:
        reranked = rerank_all(blocks, stored, present, dim, verify=verify)
    fused = fuse([(used, everyone, found) for used, found in zip(encodings, reranked, strict=True)], len(present))
    best = sorted(fused, key=lambda match: (-match.score, match.found.photo_id))[:k]
    lap("re-ranking")
    query_box = block_to_box(block.top, block.left, block.rows, block.cols, grid, query_w, query_h)
    return RegionResults(
        query_box=query_box,
        query_width=query_w,
        query_height=query_h,
        matches=[
            RegionMatch(
                rank=rank,
                id=match.found.photo_id,
                path=photos[match.found.photo_id].path,
                score=match.score,
                similarity=match.similarity,
                # Boxes only for the matches returned: each averages the boxes of every encoding.
                box=fused_box(match, (photos[match.found.photo_id].width, photos[match.found.photo_id].height), grid),
                width=photos[match.found.photo_id].width,
                height=photos[match.found.photo_id].height,
                heatmap=match.found.heatmap,
            )
            for rank, match in enumerate(best, start=1)
        ],
    )


def _rank_candidates_loop(
    scores: Grid, vector_photos: npt.NDArray[np.int64], valid: npt.NDArray[np.bool_], limit: int
) -> list[int]:
    """:func:`search.region_batch.rank_candidates` hit by hit (the reference path)."""
    evidence: dict[int, Grid] = {}
    for cell, (row_photos, row_scores, row_valid) in enumerate(zip(vector_photos, scores, valid, strict=True)):
        for photo_id, score, real in zip(row_photos.tolist(), row_scores.tolist(), row_valid.tolist(), strict=True):
            if not real:
                continue
            best = evidence.setdefault(photo_id, np.zeros(len(scores), dtype=np.float32))
            best[cell] = max(best[cell], score)
    return sorted(evidence, key=lambda photo_id: -float(evidence[photo_id].sum()))[:limit]


def _rerank_one_by_one(
    query_cells: Grid,
    weights: Grid,
    stored: list[StoredGrid],
    photo_ids: list[int],
    scale_rows: npt.NDArray[np.float64],
    scale_cols: npt.NDArray[np.float64],
    dim: int,
    scales: tuple[float, ...],
    *,
    verify: bool = True,
) -> list[Reranked]:
    """:func:`search.region_batch.rerank` candidate by candidate (the reference path)."""
    found = []
    for number, (photo_id, stored_grid) in enumerate(zip(photo_ids, stored, strict=True)):
        photo_grid = stored_cells(stored_grid, dim)
        similarity = np.einsum("ijd,uvd->ijuv", query_cells, photo_grid)
        placement = best_placement(
            similarity, float(scale_rows[number]), float(scale_cols[number]), weights=weights, scales=scales
        )
        score = placement.score
        if verify:
            top, left, rows, cols = (
                np.array([value]) for value in (placement.top, placement.left, placement.rows, placement.cols)
            )
            score = float(verified_scores(np.array([score]), similarity[None], top, left, rows, cols, weights)[0])
        heatmap = similarity.reshape(-1, stored_grid.grid, stored_grid.grid).max(axis=0)
        found.append(Reranked(photo_id, score, placement.top, placement.left, placement.rows, placement.cols, heatmap))
    return found
