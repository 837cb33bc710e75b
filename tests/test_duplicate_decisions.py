"""Decisions about duplicates: stored by content on SQLite and PostgreSQL, and obeyed by the grouping
(on a real catalog and index of crafted vectors, no model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic_catalog import fill_catalog, synthetic_config
from core.catalog import Catalog, IndexedFile, PhotoRecord, Provenance
from core.catalog.decisions import (
    DecisionError,
    Decisions,
    NotInCatalogError,
    SameContentError,
    content_pair,
    decision_counts,
    dismiss,
    keep,
    list_decisions,
    load_decisions,
    paths_by_content,
    photos_at,
    undismiss,
    unkeep,
)
from search.duplicates import DuplicateGroup, dismissed_mask, find_duplicate_groups, positions_of
from search.engine import SearchEngine

THRESHOLD = 0.95
DIM = 8


def _catalog(tmp_path: Path, db_url: str | None) -> Catalog:
    catalog = Catalog.open(db_url or f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    catalog.ensure_provenance(Provenance("m", "random", "0" * 64, "test", image_size=64, dim=DIM, preprocessing="test"))
    rng = np.random.default_rng(0)
    catalog.commit_outcomes(
        [
            IndexedFile(
                path=path,
                size_bytes=100,
                mtime_ns=1,
                sha256=sha * 64,
                width=10,
                height=10,
                embedding=rng.standard_normal(DIM).astype(np.float32),
            )
            for path, sha in [("/p/a.jpg", "a"), ("/p/b.jpg", "b"), ("/p/c.jpg", "c"), ("/p/a2.jpg", "a")]
        ]
    )
    return catalog


def test_decisions_are_stored_by_content(tmp_path: Path, db_url: str | None) -> None:
    catalog = _catalog(tmp_path, db_url)
    a, b, c, a2 = photos_at(catalog, ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg", "/p/a2.jpg"])
    assert load_decisions(catalog) == Decisions()

    stored, already = dismiss(catalog, [c, a, b])
    assert sorted(stored) == [("a" * 64, "b" * 64), ("a" * 64, "c" * 64), ("b" * 64, "c" * 64)] and not already
    stored, already = dismiss(catalog, [b, a])
    assert not stored and already == [("a" * 64, "b" * 64)]
    decisions = load_decisions(catalog)
    assert decisions.is_dismissed("b" * 64, "a" * 64) and decisions.is_dismissed("c" * 64, "b" * 64)
    # The copy of a (same bytes) is covered by a's decisions.
    assert decisions.is_dismissed(a2.sha256, b.sha256)

    assert undismiss(catalog, [a, c]) == 1 and undismiss(catalog, [a, c]) == 0
    assert load_decisions(catalog).dismissed == frozenset({content_pair("a" * 64, "b" * 64), ("b" * 64, "c" * 64)})

    assert keep(catalog, b) is False and keep(catalog, c) is False
    assert load_decisions(catalog).pinned == ("c" * 64, "b" * 64)  # the latest pin first
    assert keep(catalog, b) is True  # pinned again: now the latest
    assert load_decisions(catalog).pinned == ("b" * 64, "c" * 64)
    assert unkeep(catalog, c) is True and unkeep(catalog, c) is False
    assert load_decisions(catalog).pinned == ("b" * 64,)
    assert decision_counts(catalog) == {"dismissed_pairs": 2, "pinned_keepers": 1}
    kinds = [(d.kind, d.sha256_a[0], d.sha256_b and d.sha256_b[0]) for d in list_decisions(catalog)]
    assert sorted(kinds) == [("dismiss", "a", "b"), ("dismiss", "b", "c"), ("keep", "b", None)]
    assert paths_by_content(catalog, ["a" * 64, "f" * 64]) == {"a" * 64: ["/p/a.jpg", "/p/a2.jpg"]}
    catalog.close()


def test_bad_decisions_are_refused_and_store_nothing(tmp_path: Path, db_url: str | None) -> None:
    catalog = _catalog(tmp_path, db_url)
    with pytest.raises(NotInCatalogError, match=r"/p/nowhere\.jpg"):
        photos_at(catalog, ["/p/a.jpg", "/p/nowhere.jpg"])
    a, b, a2 = photos_at(catalog, ["/p/a.jpg", "/p/b.jpg", "/p/a2.jpg"])
    with pytest.raises(SameContentError, match="same bytes"):
        dismiss(catalog, [b, a, a2])
    with pytest.raises(DecisionError, match="at least two"):
        dismiss(catalog, [a])
    assert load_decisions(catalog) == Decisions()
    assert photos_at(catalog, ["/p/a.jpg", "/p/a.jpg"]) == [a]  # a path named twice is one photo
    catalog.close()


# Grouping ---------------------------------------------------------------------------------------------


def _vectors() -> np.ndarray:
    """A (row 0) with B and C each at 0.98 from it and 0.9604 from each other, D far from all, and E, row 4,
    with A's very bytes (and vector)."""
    cos, sin = 0.98, float(np.sqrt(1 - 0.98**2))
    rows = np.zeros((5, DIM), dtype=np.float32)
    rows[0, 0] = 1.0
    rows[1, [0, 1]] = cos, sin
    rows[2, [0, 2]] = cos, sin
    rows[3, 3] = 1.0
    rows[4] = rows[0]
    return rows


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[SearchEngine]:
    config = synthetic_config(tmp_path / "data")
    config.data_dir.mkdir()
    fill_catalog(config, _vectors(), np.array([0, 1, 2, 3, 0])).close()
    engine = SearchEngine.open(config)
    yield engine
    engine.close()


def _named(groups: list[DuplicateGroup]) -> list[tuple[list[str], str]]:
    """Groups as member letters (the keeper first) and the keeper rule. Rows are /synthetic/0000/0000000N.jpg."""
    letters = "ABCDE"
    return [([letters[int(Path(m.path).stem)] for m in g.members], g.keeper_rule) for g in groups]


def _photo(engine: SearchEngine, letter: str) -> PhotoRecord:
    return engine.photo("ABCDE".index(letter) + 1)


def test_grouping_obeys_dismissals_and_pins(engine: SearchEngine) -> None:
    def groups() -> list[tuple[list[str], str]]:
        return _named(find_duplicate_groups(engine, THRESHOLD, rules=["path"]))

    # By path A keeps E (its exact copy, listed first as it scores 1.0), B and C.
    assert groups() == [(["A", "E", "B", "C"], "path")]

    # B and C are not duplicates of each other, but each is one of A: both stay in A's group (a group
    # offers its members as duplicates of its original, not of each other).
    dismiss(engine.catalog, [_photo(engine, "B"), _photo(engine, "C")])
    assert groups() == [(["A", "E", "B", "C"], "path")]

    # A and B are not duplicates: B leaves A's group. B's other neighbour, C, is A's, so B is in no group.
    dismiss(engine.catalog, [_photo(engine, "A"), _photo(engine, "B")])
    assert groups() == [(["A", "E", "C"], "path")]
    undismiss(engine.catalog, [_photo(engine, "A"), _photo(engine, "B")])
    assert groups() == [(["A", "E", "B", "C"], "path")]

    # Pinned, C becomes the keeper and takes A and its copy E; B, dismissed with C, is left out.
    keep(engine.catalog, _photo(engine, "C"))
    assert groups() == [(["C", "A", "E"], "pinned")]
    undismiss(engine.catalog, [_photo(engine, "B"), _photo(engine, "C")])
    assert groups() == [(["C", "A", "E", "B"], "pinned")]  # by score: A and E at 0.98, B at 0.96
    unkeep(engine.catalog, _photo(engine, "C"))
    assert groups() == [(["A", "E", "B", "C"], "path")]


def test_decisions_given_by_the_caller_replace_the_stored_ones(engine: SearchEngine) -> None:
    a, c = _photo(engine, "A"), _photo(engine, "C")
    pinned = find_duplicate_groups(engine, THRESHOLD, rules=["path"], decisions=Decisions(pinned=(c.sha256,)))
    assert _named(pinned) == [(["C", "A", "E", "B"], "pinned")]
    apart = Decisions(dismissed=frozenset({content_pair(a.sha256, c.sha256)}))
    assert _named(find_duplicate_groups(engine, THRESHOLD, rules=["path"], decisions=apart)) == [
        (["A", "E", "B"], "path")
    ]


def test_dismissed_pairs_are_masked_in_both_directions() -> None:
    photos = [
        PhotoRecord(id=i + 1, path=f"/p/{i}.jpg", width=1, height=1, sha256=sha * 64, size_bytes=1, mtime_ns=1)
        for i, sha in enumerate("abca")
    ]
    a = np.array([0, 1, 1, 3, 2, -1, 0])
    b = np.array([1, 0, 2, 1, 3, 1, 3])
    dismissed = frozenset({content_pair("a" * 64, "b" * 64)})
    # 0-1 and 1-0 (a-b), 3-1 (a's copy with b) are dismissed; b-c, c-a, an absent photo and a-a are not.
    assert dismissed_mask(photos, a, b, dismissed).tolist() == [True, True, False, True, False, False, False]
    assert not dismissed_mask(photos, a, b, frozenset()).any()
    assert not dismissed_mask([], np.array([-1]), np.array([-1]), dismissed).any()  # rows gone meanwhile
    assert positions_of(np.array([5, 3]), np.array([3])).tolist() == [1]
