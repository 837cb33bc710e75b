"""Star grouping: no chains, every member at or above the threshold against its original, deterministic."""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from search.duplicates import best_copies, positions_of, similar_pairs
from search.star_groups import groups_of, star_groups

THRESHOLD = 0.95


def _unit(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _pairs(vectors: npt.NDArray[np.float32], k: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Similar pairs by position, through the same kNN filter the engine uses (exact index, ids = positions)."""
    index = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    ids = np.arange(len(vectors), dtype=np.int64)
    index.add_with_ids(vectors, ids)
    return similar_pairs(index, iter([(ids, vectors)]), min(k, len(vectors)), threshold)


def _sequential(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The rule spelt out one photo at a time: the reference the vectorised rounds must equal."""
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    owner = np.full(n, -1, dtype=np.int64)
    for centre in range(n):
        if owner[centre] >= 0:
            continue
        taken = [other for other in sorted(neighbours[centre]) if owner[other] < 0]
        if taken:
            owner[centre] = centre
            owner[taken] = centre
    return owner


def test_a_chain_does_not_join_its_ends() -> None:
    # A~B at 0.97, B~C at 0.97, A~C at 0.88: C is linked to A only through B.
    angle = np.arccos(0.97)
    a, b, c = (_unit(np.array([[np.cos(t), np.sin(t), 0.0]]))[0] for t in (0.0, angle, 2 * angle))
    vectors = np.stack([a, b, c])
    assert float(a @ c) < THRESHOLD <= float(a @ b)
    first, second = _pairs(vectors, 3, THRESHOLD)
    owner = star_groups(3, first, second)
    assert owner.tolist() == [0, 0, -1]  # A (the best original) takes B; C is left alone
    assert [g.tolist() for g in groups_of(owner)] == [[0, 1]]


def test_the_best_original_takes_its_duplicates_first() -> None:
    # B is close to A and to C; A is preferred, so A centres {A, B} and C, left alone, is in no group.
    first, second = np.array([0, 1]), np.array([1, 2])
    assert star_groups(3, first, second).tolist() == [0, 0, -1]
    # A fourth photo next to C only: C centres it.
    first, second = np.array([0, 1, 2]), np.array([1, 2, 3])
    assert star_groups(4, first, second).tolist() == [0, 0, 2, 2]


def test_exact_copies_stay_together() -> None:
    # 0~1 similar; 2 and 3 are copies of 1 (same bytes); 5 is a copy of 4, which has no near-duplicate.
    first, second = np.array([0, 2]), np.array([1, 0])
    content = np.array([0, 1, 1, 1, 4, 4, 6])
    owner = star_groups(7, first, second, content)
    assert owner.tolist() == [0, 0, 0, 0, 4, 4, -1]
    assert [g.tolist() for g in groups_of(owner)] == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustered_groups_hold_the_promise(seed: int) -> None:
    """Tight seeded clusters strung into chains: every member >= threshold against its centre (the
    most-preferred photo of its group), each photo in one group, the same result whatever the pair order,
    and the same groups as the one-photo-at-a-time rule."""
    rng = np.random.default_rng(seed)
    walks = rng.standard_normal((40, 1, 64)) + np.cumsum(rng.standard_normal((40, 6, 64)) * 0.15, axis=1)
    vectors = _unit((walks[:, :, None, :] + rng.standard_normal((40, 6, 3, 64)) * 0.03).reshape(-1, 64))
    n = len(vectors)
    first, second = _pairs(vectors, 24, THRESHOLD)
    owner = star_groups(n, first, second)

    np.testing.assert_array_equal(owner, _sequential(n, first, second))
    grouped = np.flatnonzero(owner >= 0)
    scores = np.einsum("ij,ij->i", vectors[grouped], vectors[owner[grouped]])
    assert (scores >= THRESHOLD - 1e-6).all()
    groups = groups_of(owner)
    assert sum(len(g) for g in groups) == len(grouped) and len(np.unique(np.concatenate(groups))) == len(grouped)
    assert all(g[0] == g.min() == owner[g[0]] for g in groups)
    # The data holds chains: connected components (the old grouping) with members below the threshold
    # against their component's best photo.
    component = np.arange(n)
    while True:
        joined = component.copy()
        np.minimum.at(joined, first, component[second])
        np.minimum.at(joined, second, component[first])
        joined = joined[joined]
        if (joined == component).all():
            break
        component = joined
    chained = np.einsum("ij,ij->i", vectors, vectors[component]) < THRESHOLD
    assert chained.sum() >= 5
    shuffle = rng.permutation(len(first))
    np.testing.assert_array_equal(star_groups(n, second[shuffle], first[shuffle]), owner)


def test_positions_of() -> None:
    ordered = np.array([30, 10, 20], dtype=np.int64)
    assert positions_of(ordered, np.array([10, 20, 30, 40], dtype=np.int64)).tolist() == [1, 2, 0, -1]
    assert positions_of(np.empty(0, dtype=np.int64), np.array([1], dtype=np.int64)).tolist() == [-1]


def test_best_copies_points_each_photo_at_its_best_placed_copy() -> None:
    ordered = np.array([5, 3, 9, 7, 1, 8], dtype=np.int64)
    copies = [np.array(ids, dtype=np.int64) for ids in ([9, 3], [7, 42], [8, 1, 5])]
    # 9 and 3: the copy at position 1; 7's copy 42 is not among the photos; 8, 1 and 5: the one at position 0.
    assert best_copies(ordered, copies).tolist() == [0, 1, 1, 3, 0, 0]
    assert best_copies(ordered, []).tolist() == [0, 1, 2, 3, 4, 5]
