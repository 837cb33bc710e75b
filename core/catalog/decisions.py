"""The curator's decisions about duplicates, kept in the catalog (table ``duplicate_decisions``, schema 5).

Decisions are keyed by content (sha256), never by path or id, so they survive rebuilds, moves and renames,
and apply to every copy of the same bytes:

- **dismiss** a pair ("not duplicates, keep both"): :func:`search.duplicates.find_duplicate_groups` drops
  the pair from the similar pairs before grouping, so neither photo joins the other's group, until the
  pair is undismissed. Two photos with the same bytes cannot be dismissed: the same bytes are always
  duplicates (:class:`SameContentError`).
- **keep** a photo (pin it as its group's keeper): it comes before every keeper rule
  (:mod:`search.keeper`); among pinned photos the most recently pinned comes first.

Recording a decision is a small write that needs no writer lock: it touches no row a build writes, and
the database serialises it with a running build (SQLite's busy timeout, PostgreSQL's row locks).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import CheckConstraint, String, delete, func, select, tuple_
from sqlalchemy.orm import Mapped, mapped_column

from core.catalog.records import PhotoRecord
from core.catalog.store import Catalog
from core.catalog.tables import STATUS_INDEXED, Base, ImageRecord
from core.errors import LoupeError

logger = logging.getLogger(__name__)

DISMISS = "dismiss"
KEEP = "keep"
# sha256_b of a "keep" decision: part of the primary key, which cannot hold NULL.
NO_SECOND = ""

Pair = tuple[str, str]


class DuplicateDecisionRecord(Base):
    """One decision: a dismissed pair of contents (``sha256_a`` < ``sha256_b``) or a pinned keeper."""

    __tablename__ = "duplicate_decisions"
    __table_args__ = (CheckConstraint("kind IN ('dismiss', 'keep')", name="ck_duplicate_decision_kind"),)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256_a: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256_b: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]


class DecisionError(LoupeError):
    """A decision about duplicates cannot be recorded as asked."""


class NotInCatalogError(DecisionError):
    """A path named in a decision is not an indexed photo of the collection."""


class SameContentError(DecisionError):
    """Two photos to dismiss as "not duplicates" have the very same bytes."""


@dataclass(frozen=True)
class Decisions:
    """Every decision in force. ``dismissed``: pairs of contents, each ``(smaller sha256, larger)``;
    ``pinned``: pinned keepers' contents, the most recently pinned first."""

    dismissed: frozenset[Pair] = field(default_factory=frozenset)
    pinned: tuple[str, ...] = ()

    def is_dismissed(self, sha256_a: str, sha256_b: str) -> bool:
        return content_pair(sha256_a, sha256_b) in self.dismissed


@dataclass(frozen=True)
class Decision:
    """One stored decision, as ``list`` shows it (``sha256_b`` None for a pinned keeper)."""

    kind: str
    sha256_a: str
    sha256_b: str | None
    created_at: datetime


def content_pair(sha256_a: str, sha256_b: str) -> Pair:
    """The key of a pair of contents: the smaller sha256 first."""
    return (sha256_a, sha256_b) if sha256_a <= sha256_b else (sha256_b, sha256_a)


def photos_at(catalog: Catalog, paths: Iterable[str | Path]) -> list[PhotoRecord]:
    """The indexed photos at ``paths`` (resolved as the indexer stores them), in order, each once.
    Raises :class:`NotInCatalogError` naming every path that is not an indexed photo."""
    photos: dict[int, PhotoRecord] = {}
    missing: list[str] = []
    for path in paths:
        resolved = str(Path(path).expanduser().resolve())
        photo = catalog.photo_by_path(resolved)
        if photo is None:
            missing.append(resolved)
        else:
            photos.setdefault(photo.id, photo)
    if missing:
        raise NotInCatalogError(
            f"not an indexed photo of this collection: {', '.join(missing)} (build the folder first, or check the path)"
        )
    return list(photos.values())


def _now() -> datetime:
    return datetime.now(UTC)


def dismissed_pairs_among(photos: Sequence[PhotoRecord]) -> list[Pair]:
    """The content pairs of every two of ``photos``; raises :class:`SameContentError` for two with the
    same bytes (exact copies are always duplicates: nothing is stored)."""
    pairs: dict[Pair, None] = {}
    for first, second in itertools.combinations(photos, 2):
        if first.sha256 == second.sha256:
            raise SameContentError(
                f"{first.path} and {second.path} have the same bytes (sha256 {first.sha256[:12]}...): exact copies "
                "are always duplicates and cannot be dismissed; nothing was stored"
            )
        pairs.setdefault(content_pair(first.sha256, second.sha256))
    return list(pairs)


def dismiss(catalog: Catalog, photos: Sequence[PhotoRecord]) -> tuple[list[Pair], list[Pair]]:
    """Record every two of ``photos`` as "not duplicates" (at least two photos). Returns the pairs stored
    now and those that were already stored; raises :class:`SameContentError` (nothing stored) when two
    have the same bytes."""
    if len(photos) < 2:
        raise DecisionError("dismissing needs at least two different photos")
    pairs = dismissed_pairs_among(photos)
    now = _now()
    with catalog.session() as session, session.begin():
        existing = {
            (str(a), str(b))
            for a, b in session.execute(
                select(DuplicateDecisionRecord.sha256_a, DuplicateDecisionRecord.sha256_b).where(
                    DuplicateDecisionRecord.kind == DISMISS,
                    tuple_(DuplicateDecisionRecord.sha256_a, DuplicateDecisionRecord.sha256_b).in_(pairs),
                )
            )
        }
        fresh = [pair for pair in pairs if pair not in existing]
        session.add_all(DuplicateDecisionRecord(kind=DISMISS, sha256_a=a, sha256_b=b, created_at=now) for a, b in fresh)
    logger.info("dismissed %d pairs (%d already)", len(fresh), len(pairs) - len(fresh))
    return fresh, [pair for pair in pairs if pair in existing]


def undismiss(catalog: Catalog, photos: Sequence[PhotoRecord]) -> int:
    """Withdraw the "not duplicates" decisions among every two of ``photos``; returns how many there were."""
    pairs = list({content_pair(a.sha256, b.sha256) for a, b in itertools.combinations(photos, 2)})
    if not pairs:
        return 0
    with catalog.session() as session, session.begin():
        result = session.execute(
            delete(DuplicateDecisionRecord).where(
                DuplicateDecisionRecord.kind == DISMISS,
                tuple_(DuplicateDecisionRecord.sha256_a, DuplicateDecisionRecord.sha256_b).in_(pairs),
            )
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def keep(catalog: Catalog, photo: PhotoRecord) -> bool:
    """Pin ``photo`` (its content) as the keeper of its group; it becomes the most recently pinned.
    Returns whether it was pinned already."""
    with catalog.session() as session, session.begin():
        row = session.get(DuplicateDecisionRecord, (KEEP, photo.sha256, NO_SECOND))
        if row is not None:
            row.created_at = _now()
            return True
        session.add(DuplicateDecisionRecord(kind=KEEP, sha256_a=photo.sha256, sha256_b=NO_SECOND, created_at=_now()))
    return False


def unkeep(catalog: Catalog, photo: PhotoRecord) -> bool:
    """Unpin ``photo``'s content; returns whether it was pinned."""
    with catalog.session() as session, session.begin():
        result = session.execute(
            delete(DuplicateDecisionRecord).where(
                DuplicateDecisionRecord.kind == KEEP, DuplicateDecisionRecord.sha256_a == photo.sha256
            )
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def load_decisions(catalog: Catalog) -> Decisions:
    """Every decision in force (a few rows: one per decision the curator made)."""
    query = select(DuplicateDecisionRecord).order_by(
        DuplicateDecisionRecord.created_at.desc(), DuplicateDecisionRecord.sha256_a
    )
    dismissed: set[Pair] = set()
    pinned: list[str] = []
    with catalog.session() as session:
        for row in session.scalars(query):
            if row.kind == DISMISS:
                dismissed.add((row.sha256_a, row.sha256_b))
            elif row.kind == KEEP:
                pinned.append(row.sha256_a)
    return Decisions(dismissed=frozenset(dismissed), pinned=tuple(pinned))


def list_decisions(catalog: Catalog) -> list[Decision]:
    """Every stored decision, the newest first."""
    query = select(DuplicateDecisionRecord).order_by(
        DuplicateDecisionRecord.created_at.desc(), DuplicateDecisionRecord.kind, DuplicateDecisionRecord.sha256_a
    )
    with catalog.session() as session:
        return [
            Decision(row.kind, row.sha256_a, row.sha256_b or None, row.created_at) for row in session.scalars(query)
        ]


def paths_by_content(catalog: Catalog, sha256s: Iterable[str]) -> dict[str, list[str]]:
    """The paths of the indexed photos holding each content, by path (contents no longer indexed are absent)."""
    wanted = sorted(set(sha256s))
    found: dict[str, list[str]] = {}
    for start in range(0, len(wanted), 500):
        query = (
            select(ImageRecord.sha256, ImageRecord.path)
            .where(ImageRecord.sha256.in_(wanted[start : start + 500]), ImageRecord.status == STATUS_INDEXED)
            .order_by(ImageRecord.path)
        )
        with catalog.session() as session:
            for sha256, path in session.execute(query):
                found.setdefault(str(sha256), []).append(path)
    return found


def decision_counts(catalog: Catalog) -> dict[str, int]:
    """How many pairs are dismissed and how many keepers pinned (``status``)."""
    query = select(DuplicateDecisionRecord.kind, func.count()).group_by(DuplicateDecisionRecord.kind)
    with catalog.session() as session:
        by_kind = {str(kind): int(count) for kind, count in session.execute(query)}
    return {"dismissed_pairs": by_kind.get(DISMISS, 0), "pinned_keepers": by_kind.get(KEEP, 0)}
