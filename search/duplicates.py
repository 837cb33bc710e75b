"""Near-duplicate groups: connected components of the "at least this similar" graph.

Each photo's ``duplicate_neighbours`` nearest neighbours come from the FAISS index, in chunks streamed
from the catalog, so the cost grows with N x k, never N x N (100k photos take one pass of kNN searches,
not a 10^10-cell matrix). Edges at or above the threshold, plus identical content hashes, are joined
with a union-find; every component of two or more photos is a group.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from indexer.catalog import PhotoRecord
from search.engine import SearchEngine

logger = logging.getLogger(__name__)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-identical photos, the suggested original first."""

    members: list[DuplicateMember]

    @property
    def original(self) -> DuplicateMember:
        return self.members[0]

    def to_dict(self) -> dict[str, Any]:
        return {"size": len(self.members), "members": [member.to_dict() for member in self.members]}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def components(self) -> list[list[int]]:
        groups: dict[int, list[int]] = {}
        for item in self.parent:
            groups.setdefault(self.find(item), []).append(item)
        return [members for members in groups.values() if len(members) > 1]


def suggested_original_key(photo: PhotoRecord) -> tuple[int, int, str]:
    """Sort key that puts the best copy first: most pixels, then the oldest file, then the path."""
    return (-(photo.width * photo.height), photo.mtime_ns, photo.path)


def find_duplicate_groups(engine: SearchEngine, threshold: float | None = None) -> list[DuplicateGroup]:
    """Groups of photos at cosine similarity >= ``threshold`` (default: the near-duplicate threshold),
    largest group first."""
    threshold = engine.near_duplicate_threshold().threshold if threshold is None else threshold
    index, _ = engine.current()
    k = min(engine.config.search.duplicate_neighbours + 1, int(index.ntotal))
    links = _UnionFind()
    if k >= 2:
        for ids, vectors in engine.catalog.iter_embeddings(engine.dim, chunk=4_096):
            scores, neighbours = index.search(vectors, k)
            for row, photo_id in enumerate(ids.tolist()):
                for other, score in zip(neighbours[row].tolist(), scores[row].tolist(), strict=True):
                    if other >= 0 and other != photo_id and score >= threshold:
                        links.union(photo_id, other)
    # Identical bytes are duplicates whatever the index returns (ties among many copies can hide some).
    for same_bytes in engine.catalog.same_content_ids():
        for other in same_bytes[1:]:
            links.union(same_bytes[0], other)

    groups = [_group(engine, member_ids) for member_ids in links.components()]
    groups.sort(key=lambda group: (-len(group.members), group.original.path))
    return groups


def _group(engine: SearchEngine, member_ids: list[int]) -> DuplicateGroup:
    photos = sorted(engine.catalog.photos(member_ids).values(), key=suggested_original_key)
    vectors = {
        int(i): v
        for ids, chunk in engine.catalog.embeddings_for([p.id for p in photos], engine.dim)
        for i, v in zip(ids, chunk, strict=True)
    }
    original = photos[0]
    reference = vectors[original.id]
    members = [
        DuplicateMember(
            id=photo.id,
            path=photo.path,
            score=round(float(np.dot(reference, vectors[photo.id])), 6),
            exact=photo.sha256 == original.sha256,
            width=photo.width,
            height=photo.height,
            size_bytes=photo.size_bytes,
            mtime_ns=photo.mtime_ns,
            original=photo.id == original.id,
        )
        for photo in photos
    ]
    members = [members[0], *sorted(members[1:], key=lambda m: (-m.score, m.path))]
    return DuplicateGroup(members=members)
