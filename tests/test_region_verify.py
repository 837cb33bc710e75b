"""Spatial verification (search/region_verify.py) prefers a consistent placement to scattered matches."""

from __future__ import annotations

import numpy as np
import pytest

from search.region_verify import VERIFIED_SCALE, consistency, verified_scores

ROWS, COLS, GRID = 5, 6, 14
TOP, LEFT = 3, 6


def _placed(rng: np.random.Generator, scattered: bool) -> np.ndarray:
    """``[rows, cols, g, g]`` similarities of a query block whose cells match a photo's at 0.8 where a
    placement at (TOP, LEFT), scale 1, puts them, or (``scattered``) at random places instead, over
    a background of 0.6 (a plain photo's cells all look alike)."""
    similarity = np.full((ROWS, COLS, GRID, GRID), 0.6, dtype=np.float32)
    similarity += rng.uniform(-0.01, 0.01, size=similarity.shape).astype(np.float32)
    for row in range(ROWS):
        for col in range(COLS):
            if scattered:
                at_row, at_col = rng.integers(0, GRID, size=2)
            else:
                at_row, at_col = TOP + row, LEFT + col
            similarity[row, col, at_row, at_col] = 0.8
    return similarity


def _sides(count: int) -> list[np.ndarray]:
    return [np.full(count, value) for value in (TOP, LEFT, ROWS, COLS)]


def test_a_consistent_placement_gets_the_full_bonus_and_scattered_matches_little() -> None:
    rng = np.random.default_rng(0)
    similarity = np.stack([_placed(rng, scattered=False), _placed(rng, scattered=True)])
    bonus = consistency(similarity, *_sides(2), np.ones((ROWS, COLS), dtype=np.float32))
    assert bonus[0] == pytest.approx(VERIFIED_SCALE - 1.0)
    assert bonus[1] < 0.4 * bonus[0]  # chance agreement within a cell of slack: mostly mutual


def test_verification_reorders_a_plain_photo_below_the_true_copy() -> None:
    rng = np.random.default_rng(1)
    similarity = np.stack([_placed(rng, scattered=False), _placed(rng, scattered=True)])
    # The scattered photo's placement scores a little higher (its plain cells are all fairly similar)...
    placement_scores = np.array([0.62, 0.64], dtype=np.float32)
    scores = verified_scores(placement_scores, similarity, *_sides(2), np.ones((ROWS, COLS), dtype=np.float32))
    # ...but the verified score ranks the consistent one first, and stays at most 1.
    assert scores[0] > scores[1]
    assert scores.max() <= 1.0


def test_coverage_weights_count_the_cells_the_box_covers_most() -> None:
    rng = np.random.default_rng(2)
    similarity = _placed(rng, scattered=False)[None]
    # Break the left column's matches: they move far away from where the placement puts them.
    similarity[0, :, 0] = 0.6
    similarity[0, :, 0, 0, 0] = 0.9
    weights = np.ones((ROWS, COLS), dtype=np.float32)
    even = consistency(similarity, *_sides(1), weights)[0]
    weights[:, 0] = 0.01  # the box barely covers that column
    assert consistency(similarity, *_sides(1), weights)[0] > even


def test_weights_of_the_wrong_shape_are_refused() -> None:
    similarity = np.zeros((1, ROWS, COLS, GRID, GRID), dtype=np.float32)
    with pytest.raises(ValueError, match="weights"):
        consistency(similarity, *_sides(1), np.ones((COLS, ROWS), dtype=np.float32))
