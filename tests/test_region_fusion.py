"""Fusing a region query's encodings (search/region_fusion.py): standardised per encoding, best kept."""

from __future__ import annotations

import numpy as np
import pytest

from search.region_batch import Reranked
from search.region_fusion import (
    EXACT_SIMILARITY,
    MIN_POOL,
    MIN_SPREAD,
    Encoding,
    Fused,
    fuse,
    fused_box,
    standardised,
)
from search.region_geometry import CellBlock

HEATMAP = np.zeros((2, 2), dtype=np.float32)


def _found(scores: list[float], top: int = 0) -> list[Reranked]:
    return [Reranked(100 + i, score, top, 0, 1, 1, HEATMAP) for i, score in enumerate(scores)]


def _encoding(size: int) -> Encoding:
    return Encoding((0, 0, size, size), CellBlock(0, 0, 1, 1, 2), (size, size))


def test_standardised_is_a_robust_z_score() -> None:
    rng = np.random.default_rng(0)
    crowd = rng.normal(0.4, 0.05, 200)
    z = standardised(np.append(crowd, 0.9))
    assert abs(float(np.median(z))) < 1e-9
    assert z[-1] == pytest.approx((0.9 - np.median(np.append(crowd, 0.9))) / 0.05, rel=0.15)
    # One outlier does not move the scale: a plain standard deviation would shrink it.
    assert z[-1] > (0.9 - crowd.mean()) / np.append(crowd, 0.9).std()


def test_small_pools_and_flat_crowds() -> None:
    few = np.array([0.3, 0.9, 0.5])
    assert len(few) < MIN_POOL
    assert np.array_equal(standardised(few), few)
    flat = np.full(MIN_POOL + 2, 0.5)
    flat[0] = 0.52
    assert standardised(flat)[0] == pytest.approx(0.02 / MIN_SPREAD)


def test_a_candidate_keeps_the_encoding_where_it_stands_out() -> None:
    count = 12
    # The query flatters every photo (raw 0.70 +- 0.01); photo 3 stands out only in the view (raw 0.60
    # in a crowd at 0.30), and photo 5 only in the query.
    query = [0.70 + 0.01 * ((i % 3) - 1) for i in range(count)]
    query[5] = 0.80
    view = [0.30 + 0.01 * ((i % 3) - 1) for i in range(count)]
    view[3] = 0.60
    fused = fuse(
        [
            (_encoding(10), list(range(count)), _found(query, top=1)),
            (_encoding(20), list(range(count)), _found(view, top=2)),
        ],
        count,
    )
    assert len(fused) == count
    assert fused[3].encoding.size == (20, 20) and fused[3].found.top == 2
    assert fused[3].similarity == pytest.approx(0.60)
    assert fused[5].encoding.size == (10, 10) and fused[5].similarity == pytest.approx(0.80)
    assert [encoding.size for _, _, encoding in fused[3].every] == [(10, 10), (20, 20)]  # both, for the box
    assert max(score for score, _, _ in fused[3].every) == fused[3].score
    order = sorted(range(count), key=lambda i: -fused[i].score)
    assert order[:2] == [3, 5]  # best raw score over encodings would put photo 3 below every photo


def test_partial_encodings_and_a_candidate_left_out() -> None:
    fused = fuse([(_encoding(10), [0, 1], _found([0.5, 0.4]))], 2)
    assert [f.score for f in fused] == [0.5, 0.4]  # a pool under MIN_POOL keeps raw scores
    with pytest.raises(ValueError, match="no encoding"):
        fuse([(_encoding(10), [0], _found([0.5]))], 2)


def _placed(score: float, top: int, left: int, size: int) -> tuple[float, Reranked, Encoding]:
    """An encoding of the whole 400x400 query (a 4x4 grid) placed at ``top, left`` over ``size`` cells
    of a 4x4 photo grid, so its box in a 400x400 photo is those cells at 100 px each."""
    whole = Encoding(None, CellBlock(0, 0, 4, 4, 4), (400, 400))
    return (score, Reranked(1, 0.5, top, left, size, size, HEATMAP), whole)


def test_the_box_is_the_weighted_mean_of_the_boxes_that_agree() -> None:
    winner = _placed(3.0, 1, 1, 2)  # box 100,100,300,300
    shifted = _placed(1.0, 1, 2, 2)  # 200,100,400,300: overlaps the winner's
    elsewhere = _placed(2.5, 3, 3, 1)  # 300,300,400,400: touches the winner's corner only
    negative = _placed(-1.0, 0, 0, 2)  # 0,0,200,200: overlaps, but stands out nowhere
    fused = Fused(3.0, 0.5, winner[1], winner[2], (winner, shifted, elsewhere, negative))
    total = 3.0 + 1.0 + 1e-3
    x0 = round((3.0 * 100 + 1.0 * 200 + 1e-3 * 0) / total)
    y0 = round((3.0 * 100 + 1.0 * 100 + 1e-3 * 0) / total)
    x1 = round((3.0 * 300 + 1.0 * 400 + 1e-3 * 200) / total)
    y1 = round((3.0 * 300 + 1.0 * 300 + 1e-3 * 200) / total)
    assert fused_box(fused, (400, 400), 4) == (x0, y0, x1, y1) == (125, 100, 325, 300)
    alone = Fused(3.0, 0.5, winner[1], winner[2], (winner, elsewhere))
    assert fused_box(alone, (400, 400), 4) == (100, 100, 300, 300)


def test_an_exact_match_keeps_its_own_box() -> None:
    """The query's own photo (similarity 1): the views' boxes, snapped to their own cells, would only blur it."""
    winner = _placed(9.0, 1, 1, 2)
    shifted = _placed(8.0, 1, 2, 2)
    assert fused_box(Fused(9.0, 1.0, winner[1], winner[2], (winner, shifted)), (400, 400), 4) == (100, 100, 300, 300)
    just_under = Fused(9.0, EXACT_SIMILARITY - 0.01, winner[1], winner[2], (winner, shifted))
    assert fused_box(just_under, (400, 400), 4) != (100, 100, 300, 300)
