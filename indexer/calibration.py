"""The maths of calibration: from scores of edited copies and of non-matches to a near-duplicate
threshold at a target precision, with the recall it keeps per edit family.

Positives are edited copies scored against their source photo; negatives are photos scored against the
best *other* photo of the collection (real duplicates left out by the caller, :mod:`indexer.calibrate`).

The prior: a query (an edited copy of a photo of the collection) sees one true source and, beside it,
its best non-match. So the negatives are weighted to count as many as the positives, whatever their
number: precision(t) = P(t) / (P(t) + w N(t)), with P and N the positives and negatives scoring at or
above t and w = positives / negatives. The threshold is the lowest positive score whose precision
reaches the target; when none does, it is set just above the highest negative (precision 1 on the
sample) and recall says what that costs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Scores = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ThresholdFit:
    """A threshold and what it does on the sample it was fitted on."""

    threshold: float
    precision: float
    recall: float
    per_edit: dict[str, float]
    positives: int
    negatives: int


def _at_or_above(sorted_scores: Scores, thresholds: Scores) -> Scores:
    """How many of ``sorted_scores`` (ascending) are >= each threshold."""
    return (len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="left")).astype(np.float64)


def precision_at(positives: Scores, negatives: Scores, thresholds: Scores) -> Scores:
    """Precision at each threshold under the one-best-non-match-per-query prior (1.0 where nothing is
    above: no label is given, so none is wrong)."""
    weight = len(positives) / len(negatives)
    above_pos = _at_or_above(np.sort(positives), thresholds)
    above_neg = _at_or_above(np.sort(negatives), thresholds) * weight
    total = above_pos + above_neg
    return np.divide(above_pos, total, out=np.ones_like(total), where=total > 0)


def evaluate_threshold(
    positive_scores: Sequence[float],
    positive_families: Sequence[str],
    negative_scores: Sequence[float],
    threshold: float,
) -> ThresholdFit:
    """What ``threshold`` does on these scores (for a threshold fitted on other photos)."""
    if len(positive_scores) != len(positive_families):
        raise ValueError("every positive score needs its edit family")
    if not positive_scores or not negative_scores:
        raise ValueError("calibration needs at least one positive and one negative score")
    positives = np.asarray(positive_scores, dtype=np.float64)
    negatives = np.asarray(negative_scores, dtype=np.float64)
    families = np.asarray(positive_families)
    return ThresholdFit(
        threshold=threshold,
        precision=float(precision_at(positives, negatives, np.array([threshold]))[0]),
        recall=float(np.mean(positives >= threshold)),
        per_edit={
            str(family): float(np.mean(positives[families == family] >= threshold))
            for family in dict.fromkeys(positive_families)
        },
        positives=len(positives),
        negatives=len(negatives),
    )


def fit_threshold(
    positive_scores: Sequence[float],
    positive_families: Sequence[str],
    negative_scores: Sequence[float],
    target_precision: float,
) -> ThresholdFit:
    """The lowest threshold whose precision reaches ``target_precision``, its recall overall and per
    edit family. Raises ``ValueError`` without positives or negatives."""
    if not positive_scores or not negative_scores:
        raise ValueError("calibration needs at least one positive and one negative score")
    positives = np.asarray(positive_scores, dtype=np.float64)
    negatives = np.asarray(negative_scores, dtype=np.float64)
    candidates = np.unique(positives)
    reached = candidates[precision_at(positives, negatives, candidates) >= target_precision]
    if len(reached):
        threshold = float(reached.min())
    else:
        # Nothing reaches the target: the smallest score above every non-match.
        threshold = float(np.nextafter(negatives.max(), np.inf))
        logger.info(
            "no positive score reaches precision %.3f: threshold just above the best non-match", target_precision
        )
    return evaluate_threshold(positive_scores, positive_families, negative_scores, threshold)
