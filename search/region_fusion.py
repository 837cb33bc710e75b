"""Fusing a region query's encodings: each candidate keeps the one where it stands out most.

The query photo as it is and its enlarged views (:mod:`search.region_scales`) each re-rank every
candidate. Their raw scores do not compare: a view's larger block of smaller cells, or plainer cells,
scores every photo higher or lower, so the best raw score over encodings favours whichever encoding
flatters all photos. Instead each encoding's scores are standardised against its own candidates (a
robust z-score: minus their median, over 1.4826 times their median absolute deviation, which for
normally spread scores is their standard deviation), and a candidate's score is its best standardised
score over the encodings; its placement comes from that encoding (its box, below, from all that agree).
The candidates are mostly photos without the region, so the median and the deviation describe "no match"
for that encoding.

On the region benchmark's tune split (three draws, 512 px, random weights, 256 patch-index neighbours a
cell) this raised recall@1 from 0.479 to 0.604, recall@10 from 0.615 to 0.672 and the mean IoU from
0.623 to 0.668 over taking the best raw score (``docs/region-search.md``).

With fewer than :data:`MIN_POOL` candidates there is no crowd to stand out from: the raw verified
scores are fused instead (each candidate's best over the encodings).

The matched box (:func:`fused_box`) is the mean of the boxes the encodings place in the photo, over
those that overlap the winning encoding's box, weighted by their standardised scores: each encoding's
placement snaps to whole cells of its own size, and their mean is finer than any one of them (tune
split: mean IoU 0.666 -> 0.699). An exact match (similarity at least :data:`EXACT_SIMILARITY`: the photo
holds the region's cells as they are, the query's own photo or a copy of it) keeps its own box: its
placement has no snapping error to average away, and the others' would only blur it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from search.region_batch import Reranked
from search.region_geometry import Box, CellBlock, Placement, matched_box

logger = logging.getLogger(__name__)

MIN_POOL = 8
# The smallest spread a z-score divides by: scores within 0.01 of each other are one crowd.
MIN_SPREAD = 0.01
MAD_TO_STD = 1.4826
# The weight of a box whose encoding scores at or below 0 when boxes are averaged (:func:`fused_box`).
MIN_BOX_WEIGHT = 1e-3
# A match this similar is exact (the query photo itself scores 1.0): its box is not averaged.
EXACT_SIMILARITY = 0.95


@dataclass(frozen=True)
class Encoding:
    """One encoding of the query: the box in its pixels, the block of cells it covers and its size."""

    box: Box | None
    block: CellBlock
    size: tuple[int, int]


@dataclass(frozen=True)
class Fused:
    """A candidate's fused match: the ``score`` it is ranked by, the winning encoding's verified
    ``similarity`` (a cosine-like value, at most 1), that encoding's placement and the encoding, and every
    encoding's (standardised score, placement, encoding) for this candidate, the winner's among them."""

    score: float
    similarity: float
    found: Reranked
    encoding: Encoding
    every: tuple[tuple[float, Reranked, Encoding], ...]


def standardised(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Robust z-scores of ``scores`` against themselves (``scores`` unchanged under :data:`MIN_POOL`)."""
    if len(scores) < MIN_POOL:
        return scores
    median = float(np.median(scores))
    spread = max(MAD_TO_STD * float(np.median(np.abs(scores - median))), MIN_SPREAD)
    return (scores - median) / spread


def fuse(encodings: Sequence[tuple[Encoding, Sequence[int], Sequence[Reranked]]], count: int) -> list[Fused]:
    """Each of ``count`` candidates' best standardised score over the ``encodings``: (encoding, the
    candidates it re-ranked, by position, and their matches). Every candidate must be re-ranked by at
    least one encoding; the first encoding wins ties."""
    best: list[Fused | None] = [None] * count
    every: list[list[tuple[float, Reranked, Encoding]]] = [[] for _ in range(count)]
    for encoding, positions, found in encodings:
        scores = standardised(np.array([match.score for match in found], dtype=np.float64))
        for position, score, match in zip(positions, scores.tolist(), found, strict=True):
            every[position].append((score, match, encoding))
            known = best[position]
            if known is None or score > known.score:
                best[position] = Fused(score, match.score, match, encoding, ())
    missing = [position for position, fused in enumerate(best) if fused is None]
    if missing:
        raise ValueError(f"candidates {missing} were re-ranked by no encoding")
    return [
        Fused(fused.score, fused.similarity, fused.found, fused.encoding, tuple(every[position]))
        for position, fused in enumerate(best)
        if fused is not None
    ]


def placed_box(found: Reranked, encoding: Encoding, photo_size: tuple[int, int], grid: int) -> Box:
    """Where ``encoding``'s box lands in a ``width x height`` photo through the placement ``found``."""
    placement = Placement(found.score, found.top, found.left, found.rows, found.cols)
    return matched_box(encoding.box, encoding.block, placement, encoding.size, photo_size, grid)


def fused_box(fused: Fused, photo_size: tuple[int, int], grid: int) -> Box:
    """The matched box in a photo of ``photo_size``: the mean of the encodings' boxes that overlap the
    winning encoding's, weighted by their standardised scores (at least :data:`MIN_BOX_WEIGHT`); an
    exact match's own box."""
    winner = placed_box(fused.found, fused.encoding, photo_size, grid)
    if fused.similarity >= EXACT_SIMILARITY:
        return winner
    boxes, weights = [], []
    for score, found, encoding in fused.every:
        box = placed_box(found, encoding, photo_size, grid)
        if _overlap(box, winner) > 0:
            boxes.append(box)
            weights.append(max(score, MIN_BOX_WEIGHT))
    if not boxes:  # a box of no area overlaps nothing, itself included
        return winner
    mean = np.average(np.array(boxes, dtype=np.float64), axis=0, weights=np.array(weights))
    x0, y0, x1, y1 = (round(float(value)) for value in mean)
    return (x0, y0, x1, y1)


def _overlap(a: Box, b: Box) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
