"""Calibrations kept in the catalog (table ``calibrations``, schema 4), and which one applies.

A calibration is only valid for the vectors it measured: one made with other weights or at another image
size is never used (:func:`current_calibration` filters on both). Every calibration is kept as a row, so
the history shows how the threshold moved as the collection grew.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from core.catalog.records import Provenance
from core.catalog.store import Catalog
from core.catalog.tables import Base

logger = logging.getLogger(__name__)


class CalibrationRecord(Base):
    """One calibration of the near-duplicate threshold."""

    __tablename__ = "calibrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    image_size: Mapped[int] = mapped_column(Integer)
    sample: Mapped[int] = mapped_column(Integer)
    edits: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    calibrated_at: Mapped[datetime]
    collection_size: Mapped[int] = mapped_column(BigInteger)
    threshold: Mapped[float] = mapped_column(Float)
    target_precision: Mapped[float] = mapped_column(Float)
    precision: Mapped[float] = mapped_column(Float)
    recall: Mapped[float] = mapped_column(Float)
    per_edit: Mapped[str] = mapped_column(Text)
    left_out: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class Calibration:
    """A calibrated near-duplicate threshold and how it was measured.

    ``sample`` photos of a collection of ``collection_size`` were edited into ``edits`` copies; at
    ``threshold`` a near-duplicate label is right ``precision`` of the time (target ``target_precision``)
    and finds ``recall`` of the edited copies (``per_edit``: per edit family). ``left_out``: non-matching
    pairs left out as probable real duplicates.
    """

    weights_sha256: str
    image_size: int
    sample: int
    edits: int
    seed: int
    collection_size: int
    threshold: float
    target_precision: float
    precision: float
    recall: float
    per_edit: dict[str, float] = field(default_factory=dict)
    left_out: int = 0
    seconds: float = 0.0
    calibrated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        """The ``status --json`` / ``calibrate --json`` document."""
        return {
            "calibrated": True,
            "threshold": round(self.threshold, 6),
            "target_precision": self.target_precision,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "per_edit": {family: round(value, 4) for family, value in self.per_edit.items()},
            "sample": self.sample,
            "edits": self.edits,
            "seed": self.seed,
            "collection_size": self.collection_size,
            "left_out": self.left_out,
            "seconds": round(self.seconds, 2),
            "calibrated_at": self.calibrated_at.isoformat(),
            "weights_sha256": self.weights_sha256,
            "image_size": self.image_size,
        }


def save_calibration(catalog: Catalog, calibration: Calibration) -> None:
    """Add ``calibration`` to the catalog (it becomes the current one for its weights and size)."""
    with catalog.session() as session, session.begin():
        session.add(
            CalibrationRecord(
                weights_sha256=calibration.weights_sha256,
                image_size=calibration.image_size,
                sample=calibration.sample,
                edits=calibration.edits,
                seed=calibration.seed,
                calibrated_at=calibration.calibrated_at,
                collection_size=calibration.collection_size,
                threshold=calibration.threshold,
                target_precision=calibration.target_precision,
                precision=calibration.precision,
                recall=calibration.recall,
                per_edit=json.dumps(calibration.per_edit, sort_keys=False),
                left_out=calibration.left_out,
                seconds=calibration.seconds,
            )
        )
    logger.info("calibrated near-duplicate threshold %.4f saved", calibration.threshold)


def current_calibration(catalog: Catalog, provenance: Provenance) -> Calibration | None:
    """The latest calibration made with ``provenance``'s weights and image size, if any."""
    query = (
        select(CalibrationRecord)
        .where(
            CalibrationRecord.weights_sha256 == provenance.weights_sha256,
            CalibrationRecord.image_size == provenance.image_size,
        )
        .order_by(CalibrationRecord.id.desc())
        .limit(1)
    )
    with catalog.session() as session:
        row = session.scalars(query).one_or_none()
        if row is None:
            return None
        return Calibration(
            weights_sha256=row.weights_sha256,
            image_size=row.image_size,
            sample=row.sample,
            edits=row.edits,
            seed=row.seed,
            collection_size=row.collection_size,
            threshold=row.threshold,
            target_precision=row.target_precision,
            precision=row.precision,
            recall=row.recall,
            per_edit={str(k): float(v) for k, v in json.loads(row.per_edit).items()},
            left_out=row.left_out,
            seconds=row.seconds,
            calibrated_at=row.calibrated_at,
        )


def calibration_due(calibration: Calibration | None, indexed: int, growth: float) -> str | None:
    """Why a build should calibrate again (None: the calibration still holds). ``calibration`` is the
    current one for the catalog's weights and size (:func:`current_calibration`), so other weights
    read as none."""
    if calibration is None:
        return "not calibrated yet for these weights and image size"
    before = max(1, calibration.collection_size)
    if indexed >= before * growth or indexed * growth <= before:
        return f"the collection went from {before} to {indexed} photos since the last calibration"
    return None


def describe_threshold(threshold: float, calibration: Calibration | None) -> str:
    """The near-duplicate rule in words, for people (UI, status)."""
    if calibration is None:
        return (
            f"near-duplicate: score ≥ {threshold:.3f}, the configured default "
            "(search.near_duplicate_threshold), not calibrated for this collection"
        )
    right = round(calibration.precision * 100)
    return (
        f"near-duplicate: score ≥ {threshold:.3f}, right {right} times in 100 and finds "
        f"{calibration.recall:.0%} of edited copies in this collection"
    )
