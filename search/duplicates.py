"""Near-duplicate groups a curator can trust: every member scores at or above the threshold against
its group's suggested original (its keeper), and no photo joins a group through a chain of others.

Each photo's ``duplicate_neighbours`` nearest neighbours come from the FAISS index, in chunks streamed
from the catalog, so the cost grows with N x k, never N x N; only the pairs at or above the threshold are
kept (as arrays, filtered with numpy, never pair by pair). :func:`search.star_groups.star_groups` then
takes the photos in keeper order (:mod:`search.keeper`: pinned keepers, then the keeper rules): each one
not yet grouped becomes its group's original and takes every photo not yet grouped that scores at or
above the threshold against it. Photos with the same bytes (sha256) always share a group. Scores shown are
recomputed from the stored vectors. Each group says which keeper rule chose its original.

Pairs the curator dismissed ("not duplicates", :mod:`core.catalog.decisions`) are dropped from the
similar pairs before grouping, so neither photo of such a pair ever joins the other's group. A group
offers its members as duplicates *of its original*, not of each other: two dismissed photos B and C may
both be in A's group when each of them scores at or above the threshold against A.

With ``flips`` (opt-in: it encodes every photo again, see :mod:`search.flipped_pairs`), a photo's mirrored
and turned versions search the index too; a pair found that way counts with its best variant score, and
the member says how it matched (``match: flipped|rotated``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from core.catalog import PhotoRecord
from core.catalog.decisions import Decisions, Pair, load_decisions
from search.engine import MatchKind, SearchEngine
from search.flipped_pairs import flipped_pairs
from search.keeper import KeeperPolicy
from search.star_groups import groups_of, star_groups

logger = logging.getLogger(__name__)

Ids = npt.NDArray[np.int64]
EMBEDDING_CHUNK = 4_096


@dataclass(frozen=True)
class DuplicateMember:
    """A photo of a group, with its similarity to the group's suggested original."""

    id: int
    path: str
    score: float
    exact: bool
    width: int
    height: int
    size_bytes: int
    mtime_ns: int
    original: bool
    capture_time: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    file_format: str | None = None
    # How the member matched the original: its stored vector (global), or a flip or rotation of one of the
    # two photos (only with ``flips``), whose score is then the one shown.
    match: MatchKind = "global"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["capture_time"] = None if self.capture_time is None else self.capture_time.isoformat()
        return data


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-identical photos, the suggested original (the keeper) first. ``keeper_rule`` names what chose
    it over the group's next photo in keeper order: ``pinned`` or a rule of :mod:`search.keeper`
    (``reference``, ``format``, ``pixels``, ``capture_date``, ``file_size``, ``path``)."""

    members: list[DuplicateMember]
    keeper_rule: str

    @property
    def original(self) -> DuplicateMember:
        return self.members[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": len(self.members),
            "keeper_rule": self.keeper_rule,
            "members": [member.to_dict() for member in self.members],
        }


def similar_pairs(
    index: faiss.Index, chunks: Iterator[tuple[Ids, npt.NDArray[np.float32]]], k: int, threshold: float
) -> tuple[Ids, Ids]:
    """The ``(first, second)`` id pairs scoring at least ``threshold`` among each vector's ``k`` nearest
    neighbours in ``index``, from ``(ids, vectors)`` chunks. Memory grows with the pairs kept, not N x k."""
    firsts: list[Ids] = []
    seconds: list[Ids] = []
    for ids, vectors in chunks:
        scores, neighbours = index.search(vectors, k)
        kept = (neighbours >= 0) & (scores >= threshold) & (neighbours != ids[:, None])
        firsts.append(np.broadcast_to(ids[:, None], neighbours.shape)[kept])
        seconds.append(neighbours[kept].astype(np.int64))
    empty = np.empty(0, dtype=np.int64)
    return (np.concatenate(firsts), np.concatenate(seconds)) if firsts else (empty, empty)


def positions_of(ordered_ids: Ids, ids: Ids) -> Ids:
    """The position of each of ``ids`` in ``ordered_ids`` (-1 where absent)."""
    order = np.argsort(ordered_ids, kind="stable")
    sorted_ids = ordered_ids[order]
    found = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
    present = sorted_ids[found] == ids if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
    return np.where(present, order[found] if len(sorted_ids) else -1, -1).astype(np.int64)


def best_copies(ordered_ids: Ids, copies: Sequence[Ids]) -> Ids:
    """For each position in ``ordered_ids``, the position of the best-placed photo with the same bytes
    (``copies``: the ids of each content held by several photos; absent ids are ignored), or its own.
    One pass over all the copies at once: a call per content would sort ``ordered_ids`` each time, which
    at 10,000 contents held twice among 200,000 photos took minutes."""
    content = np.arange(len(ordered_ids), dtype=np.int64)
    if not copies:
        return content
    label = np.repeat(np.arange(len(copies), dtype=np.int64), [len(ids) for ids in copies])
    where = positions_of(ordered_ids, np.concatenate(copies))
    found = where >= 0
    where, label = where[found], label[found]
    best = np.full(len(copies), len(ordered_ids), dtype=np.int64)
    np.minimum.at(best, label, where)
    content[where] = best[label]
    return content


def dismissed_mask(photos: Sequence[PhotoRecord], a: Ids, b: Ids, dismissed: frozenset[Pair]) -> npt.NDArray[np.bool_]:
    """Which of the position pairs ``a[i]``-``b[i]`` (into ``photos``; -1: absent) join two contents the
    curator dismissed. One pass over the photos, then whole-array work over the pairs."""
    involved = sorted({sha for pair in dismissed for sha in pair})
    if not involved or not len(a) or not photos:
        return np.zeros(len(a), dtype=bool)
    code = {sha: number for number, sha in enumerate(involved)}
    codes = np.fromiter((code.get(photo.sha256, -1) for photo in photos), dtype=np.int64, count=len(photos))
    first = np.where(a >= 0, codes[a], -1)
    second = np.where(b >= 0, codes[b], -1)
    low, high = np.minimum(first, second), np.maximum(first, second)
    # The involved contents are numbered in sha256 order, so (low, high) is the dismissed (a, b) order.
    wanted = np.asarray([code[x] * len(code) + code[y] for x, y in dismissed], dtype=np.int64)
    return (low >= 0) & np.isin(low * len(code) + high, wanted)


def find_duplicate_groups(
    engine: SearchEngine,
    threshold: float | None = None,
    *,
    reference_folders: Sequence[str | Path] | None = None,
    rules: Sequence[str] | None = None,
    decisions: Decisions | None = None,
    flips: bool = False,
    progress: Callable[[int], object] | None = None,
) -> list[DuplicateGroup]:
    """Groups of near-identical photos, largest first: every member scores at least ``threshold``
    (default: the near-duplicate threshold) against its group's suggested original, which comes first,
    or has the original's very bytes; a photo is in at most one group.

    The original is chosen by the keeper rules (:class:`search.keeper.KeeperPolicy`): ``rules`` and
    ``reference_folders`` default to ``search.keeper_rules`` and ``search.reference_folders``;
    ``decisions`` (default: the catalog's) pin keepers and dismiss pairs. ``flips``: also match mirrored
    and rotated copies (every photo is read and encoded again; ``progress`` is called with photo counts)."""
    threshold = engine.near_duplicate_threshold().threshold if threshold is None else threshold
    decisions = load_decisions(engine.catalog) if decisions is None else decisions
    policy = KeeperPolicy.from_settings(engine.config.search, decisions.pinned, reference_folders, rules)
    index, _ = engine.current()
    k = min(engine.config.search.duplicate_neighbours + 1, int(index.ntotal))
    empty = np.empty(0, dtype=np.int64)
    first, second = empty, empty
    if k >= 2:
        chunks = engine.catalog.iter_embeddings(engine.dim, chunk=EMBEDDING_CHUNK)
        first, second = similar_pairs(index, chunks, k, threshold)
    variant_scores: dict[tuple[int, int], tuple[float, MatchKind]] = {}
    if flips:
        names = engine.config.search.robust.variants
        found = flipped_pairs(
            engine, threshold, names, neighbours=engine.config.search.duplicate_neighbours, progress=progress
        )
        first, second = np.concatenate([first, found.first]), np.concatenate([second, found.second])
        variant_scores = found.best()
    copies = [np.asarray(ids, dtype=np.int64) for ids in engine.catalog.same_content_ids()]
    candidates = np.unique(np.concatenate([first, second, *copies]))
    # Rows removed since the index was loaded are left out here, and their pairs below.
    photos = policy.order(engine.catalog.photos(candidates.tolist()).values())
    ordered_ids = np.asarray([photo.id for photo in photos], dtype=np.int64)

    a, b = positions_of(ordered_ids, first), positions_of(ordered_ids, second)
    present = (a >= 0) & (b >= 0) & ~dismissed_mask(photos, a, b, decisions.dismissed)
    content = best_copies(ordered_ids, copies)
    owner = star_groups(len(photos), a[present], b[present], content)
    logger.info("%d similar pairs at >= %s among %d photos", int(present.sum()), threshold, len(photos))

    grouped = np.flatnonzero(owner >= 0)
    stored = _scores(engine, ordered_ids[grouped], ordered_ids[owner[grouped]])
    scores: dict[int, tuple[float, MatchKind]] = {}
    for position, score in zip(grouped.tolist(), stored, strict=True):
        pair = (int(ordered_ids[position]), int(ordered_ids[owner[position]]))
        by_variant = variant_scores.get(pair)
        # A row removed since (NaN) stays out, whatever its variants scored.
        scores[position] = by_variant if by_variant is not None and by_variant[0] > score else (score, "global")
    groups: list[DuplicateGroup] = []
    for positions in groups_of(owner):
        group = _group(
            [photos[p] for p in positions.tolist()], [scores[p] for p in positions.tolist()], threshold, policy
        )
        if group is not None:
            groups.append(group)
    groups.sort(key=lambda group: (-len(group.members), group.original.path))
    return groups


def _scores(engine: SearchEngine, member_ids: Ids, centre_ids: Ids) -> list[float]:
    """Cosine similarity of each member to its centre, from the stored vectors (NaN for a row removed since)."""
    out = np.full(len(member_ids), np.nan, dtype=np.float32)
    for start in range(0, len(member_ids), EMBEDDING_CHUNK):
        members, centres = member_ids[start : start + EMBEDDING_CHUNK], centre_ids[start : start + EMBEDDING_CHUNK]
        vectors = engine.catalog.stored_embeddings(np.unique(np.concatenate([members, centres])).tolist(), engine.dim)
        known = np.asarray([int(m) in vectors and int(c) in vectors for m, c in zip(members, centres, strict=True)])
        if known.any():
            left = np.stack([vectors[int(m)] for m in members[known]])
            right = np.stack([vectors[int(c)] for c in centres[known]])
            out[start : start + EMBEDDING_CHUNK][known] = np.einsum("ij,ij->i", left, right)
    return [float(score) for score in out]


def _group(
    photos: list[PhotoRecord], scored: list[tuple[float, MatchKind]], threshold: float, policy: KeeperPolicy
) -> DuplicateGroup | None:
    """The group of ``photos`` (in keeper order, the suggested original first), keeping the members that
    score at least ``threshold`` against it by the stored vectors (FAISS sums in another order: a pair it
    put at the threshold may fall a rounding error short), by a flip or rotation (with ``flips``), or have
    its very bytes; None when fewer than two remain."""
    original = photos[0]
    scores = [score for score, _ in scored]
    members = [
        DuplicateMember(
            id=photo.id,
            path=photo.path,
            score=round(score, 6),
            exact=photo.sha256 == original.sha256,
            width=photo.width,
            height=photo.height,
            size_bytes=photo.size_bytes,
            mtime_ns=photo.mtime_ns,
            original=position == 0,
            capture_time=photo.capture_time,
            camera_make=photo.camera_make,
            camera_model=photo.camera_model,
            file_format=photo.file_format,
            match="global" if position == 0 else kind,
        )
        for position, (photo, (score, kind)) in enumerate(zip(photos, scored, strict=True))
    ]
    kept_at = [i for i in range(1, len(members)) if members[i].exact or scores[i] >= threshold]
    kept = [members[i] for i in kept_at]
    if len(kept) < len(members) - 1:
        logger.debug(
            "%d members of %s fall below %s by the stored vectors",
            len(members) - 1 - len(kept),
            original.path,
            threshold,
        )
    if not kept:
        return None
    return DuplicateGroup(
        members=[members[0], *sorted(kept, key=lambda m: (-m.score, m.path))],
        keeper_rule=policy.decided_by(original, photos[kept_at[0]]),  # the runner-up: next in keeper order
    )
