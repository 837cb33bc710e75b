"""The batched candidate stages against the per-candidate path they replace (kept here as the reference)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from core.catalog import StoredGrid
from core.grid_codes import encode_grid, rotate
from search.region import SCALES, CellBlock, best_placement, cell_coverage, stored_cells
from search.region_batch import BlockQuery, decode_grids, rank_candidates, rerank, rerank_all
from search.region_verify import verified_scores

DIM = 48
GRID = 8


def _unit(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (values / np.linalg.norm(values, axis=-1, keepdims=True)).astype(np.float32)


def _reference_ranking(scores: npt.NDArray[np.float32], photos: npt.NDArray[np.int64], limit: int) -> list[int]:
    """The loop search_region ran before the batching."""
    evidence: dict[int, npt.NDArray[np.float32]] = {}
    for cell, (row_photos, row_scores) in enumerate(zip(photos, scores, strict=True)):
        for photo_id, score in zip(row_photos.tolist(), row_scores.tolist(), strict=True):
            if photo_id < 0:
                continue
            best = evidence.setdefault(photo_id, np.zeros(len(scores), dtype=np.float32))
            best[cell] = max(best[cell], score)
    return sorted(evidence, key=lambda photo_id: -float(evidence[photo_id].sum()))[:limit]


def test_rank_candidates_matches_the_loop() -> None:
    rng = np.random.default_rng(3)
    for cells, neighbours in ((4, 30), (36, 64), (1, 5)):
        photos = rng.integers(0, 40, size=(cells, neighbours))
        photos[rng.random(photos.shape) < 0.05] = -1  # FAISS's padding
        scores = rng.uniform(-0.2, 1.0, size=(cells, neighbours)).astype(np.float32)
        expected = _reference_ranking(scores, photos, 15)
        assert rank_candidates(scores, np.where(photos >= 0, photos, 0), photos >= 0, 15) == expected


@pytest.mark.parametrize(
    ("top", "left", "bottom", "right"), [(2, 3, 5, 6), (0, 0, GRID, GRID), (4, 4, 5, 5), (1, 0, 3, 7)]
)
def test_rerank_matches_best_placement_per_candidate(top: int, left: int, bottom: int, right: int) -> None:
    rng = np.random.default_rng(top * 100 + right)
    query_grid = _unit(rng.normal(size=(GRID, GRID, DIM)))
    block = CellBlock(top, left, bottom, right, GRID)
    box = (left * 40 + 7, top * 30 + 5, right * 40 - 9, bottom * 30 - 4)
    query_size = (GRID * 40, GRID * 30)
    photos = []
    for number in range(24):
        grid = _unit(rng.normal(size=(GRID, GRID, DIM)))
        if number % 3 == 0:  # the region planted somewhere, so that some placements stand out
            rows, cols = bottom - top, right - left
            at_row, at_col = rng.integers(0, GRID - rows + 1), rng.integers(0, GRID - cols + 1)
            grid[at_row : at_row + rows, at_col : at_col + cols] = query_grid[top:bottom, left:right]
        photos.append((StoredGrid(GRID, encode_grid(grid)), int(rng.integers(100, 900)), int(rng.integers(100, 900))))
    cells = query_grid[top:bottom, left:right].reshape(-1, DIM)
    query_cells = rotate(cells).reshape(block.rows, block.cols, DIM)
    coverage = cell_coverage(box, block, *query_size)
    scale_rows = np.array([query_size[1] / height for _, _, height in photos])
    scale_cols = np.array([query_size[0] / width for _, width, _ in photos])

    stored_grids, ids = [p[0] for p in photos], list(range(len(photos)))
    batched = rerank(query_cells, coverage, stored_grids, ids, scale_rows, scale_cols, DIM, SCALES, verify=False)
    verified = rerank(query_cells, coverage, stored_grids, ids, scale_rows, scale_cols, DIM, SCALES)
    for number, ((stored, _, _), found) in enumerate(zip(photos, batched, strict=True)):
        similarity = np.einsum("ijd,uvd->ijuv", query_cells, stored_cells(stored, DIM))
        expected = best_placement(similarity, scale_rows[number], scale_cols[number], weights=coverage)
        assert found.photo_id == number
        assert found.score == pytest.approx(expected.score, abs=1e-5)
        sides = [np.array([value]) for value in (expected.top, expected.left, expected.rows, expected.cols)]
        bonus = verified_scores(np.array([expected.score]), similarity[None], *sides, coverage)[0]
        assert verified[number].score == pytest.approx(float(bonus), abs=1e-5)
        assert (found.top, found.left, found.rows, found.cols) == (
            expected.top,
            expected.left,
            expected.rows,
            expected.cols,
        )
        np.testing.assert_allclose(found.heatmap, similarity.reshape(-1, GRID, GRID).max(axis=0), atol=1e-5)


def test_rerank_all_equals_one_rerank_per_encoding() -> None:
    """The query and its views in one product over codes decoded once give each encoding's own results,
    with a photo of another grid size among the candidates (re-ranked in a group of its own)."""
    rng = np.random.default_rng(7)
    stored = [StoredGrid(GRID, encode_grid(_unit(rng.normal(size=(GRID, GRID, DIM))))) for _ in range(9)]
    stored.insert(4, StoredGrid(GRID // 2, encode_grid(_unit(rng.normal(size=(GRID // 2, GRID // 2, DIM))))))
    ids = [100 + number for number in range(len(stored))]
    blocks = []
    for rows, cols, scales in ((3, 4, SCALES), (5, 5, SCALES[2:5]), (2, 2, SCALES[:1])):
        cells = rotate(_unit(rng.normal(size=(rows * cols, DIM)))).reshape(rows, cols, DIM)
        weights = rng.uniform(0.3, 1.0, size=(rows, cols)).astype(np.float32)
        blocks.append(
            BlockQuery(cells, weights, rng.uniform(0.5, 2, len(stored)), rng.uniform(0.5, 2, len(stored)), scales)
        )
    together = rerank_all(blocks, decode_grids(stored, DIM), ids, DIM)
    assert len(together) == len(blocks)
    for block, found in zip(blocks, together, strict=True):
        alone = rerank(block.cells, block.weights, stored, ids, block.scale_rows, block.scale_cols, DIM, block.scales)
        assert [match.photo_id for match in found] == ids
        for a, b in zip(found, alone, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert (a.top, a.left, a.rows, a.cols) == (b.top, b.left, b.rows, b.cols)
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
    assert together[0][4].heatmap.shape == (GRID // 2, GRID // 2)
