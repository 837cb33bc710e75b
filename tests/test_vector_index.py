from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from core.catalog import Catalog, IndexedFile, Provenance
from core.config import IndexConfig
from core.index.files import META_FILE, index_dir, index_ids, load_index
from core.index.policy import IndexSpec, choose_index_spec, needs_rebuild, set_nprobe
from core.index.source import GlobalVectors
from core.index.sync import current_index, rebuild_index, sync_index
from core.index.tuning import recall_at_k, recall_sample
from core.index.verify import check_index

DIM = 32


def _clustered(n: int, seed: int, centers: int = 64) -> npt.NDArray[np.float32]:
    """Unit vectors around fixed cluster centres (the same for every seed, so queries drawn with another
    seed come from the collection's distribution)."""
    middle = np.random.default_rng(12345 + centers).standard_normal((centers, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    points = middle[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    catalog.ensure_provenance(
        Provenance(
            model="m",
            weights_kind="random",
            weights_sha256="0" * 64,
            weights_source="t",
            image_size=64,
            dim=DIM,
            preprocessing="p",
        )
    )
    return catalog


def _add(catalog: Catalog, vectors: npt.NDArray[np.float32], start: int = 0) -> None:
    outcomes = [
        IndexedFile(
            path=f"/photos/{start + i:06d}.jpg",
            size_bytes=1,
            mtime_ns=1,
            sha256=f"{start + i:064x}",
            width=8,
            height=8,
            embedding=v,
        )
        for i, v in enumerate(vectors)
    ]
    for begin in range(0, len(outcomes), 1000):
        catalog.commit_outcomes(outcomes[begin : begin + 1000])


def _recall_at_10(
    index: faiss.Index, xb: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], xq: npt.NDArray[np.float32]
) -> float:
    exact = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    exact.add_with_ids(xb, ids)
    _, truth = exact.search(xq, 10)
    _, found = index.search(xq, 10)
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth, found, strict=True))
    return hits / truth.size


@pytest.mark.parametrize(
    ("n", "kind", "nlist"),
    [
        (0, "flat", 0),
        (4_999, "flat", 0),
        (5_000, "ivf_flat", 128),
        (1_000_000, "ivf_flat", 4000),
        (2_000_000, "ivf_pq", 5657),
    ],
)
def test_index_choice_follows_collection_size(n: int, kind: str, nlist: int) -> None:
    spec = choose_index_spec(n, 384, IndexConfig())
    assert (spec.kind, spec.nlist) == (kind, nlist)
    if kind == "ivf_pq":
        assert spec.pq_bytes == 48 and spec.factory_string == "IVF5657,PQ48np"


def test_pq_bytes_always_divide_the_dimension() -> None:
    spec = choose_index_spec(3_000_000, 100, IndexConfig(pq_bytes=48))
    assert 100 % spec.pq_bytes == 0 and spec.pq_bytes == 25


def test_retrain_only_when_lists_drift_by_the_growth_factor() -> None:
    trained = IndexSpec(kind="ivf_flat", nlist=100)
    assert not needs_rebuild(trained, IndexSpec(kind="ivf_flat", nlist=150), 2.0)
    assert needs_rebuild(trained, IndexSpec(kind="ivf_flat", nlist=200), 2.0)
    assert needs_rebuild(trained, IndexSpec(kind="ivf_flat", nlist=50), 2.0)
    assert needs_rebuild(trained, IndexSpec(kind="ivf_pq", nlist=100, pq_bytes=8), 2.0)
    assert not needs_rebuild(IndexSpec(kind="flat"), IndexSpec(kind="flat"), 2.0)


def test_ivf_recall_against_exact_search(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(4_000, seed=0)
    _add(catalog, xb)
    config = IndexConfig(exact_below=1_000, nprobe=16)
    report = sync_index(catalog, tmp_path, config)
    assert report.spec.kind == "ivf_flat" and report.ntotal == 4_000
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    ids, _ = catalog.indexed_ids()
    recall = _recall_at_10(loaded.index, xb, ids, _clustered(200, seed=1))
    assert recall >= 0.95, recall


def test_ivf_pq_recall_against_exact_search(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(4_000, seed=0)
    _add(catalog, xb)
    report = sync_index(catalog, tmp_path, IndexConfig(exact_below=1_000, compress_above=2_000, pq_bytes=16, nprobe=16))
    assert report.spec.kind == "ivf_pq"
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    ids, _ = catalog.indexed_ids()
    assert _recall_at_10(loaded.index, xb, ids, _clustered(200, seed=1)) >= 0.6
    assert check_index(catalog, tmp_path) == []


def test_vector_ids_are_catalog_ids(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(300, seed=3)
    _add(catalog, xb)
    sync_index(catalog, tmp_path, IndexConfig())
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    ids, _ = catalog.indexed_ids()
    assert sorted(index_ids(loaded.index).tolist()) == ids.tolist()
    paths = catalog.path_of(ids[:5].tolist())
    _, found = loaded.index.search(xb[:5], 1)
    # Each vector's nearest neighbour is itself, and its id names its own catalog row.
    assert [paths[int(i)] for i in found[:, 0]] == [f"/photos/{i:06d}.jpg" for i in range(5)]


def test_sync_follows_removals_and_changes(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(200, seed=4))
    config = IndexConfig()
    sync_index(catalog, tmp_path, config)
    catalog.remove_paths([f"/photos/{i:06d}.jpg" for i in range(10)])
    changed = _clustered(1, seed=99)[0]
    catalog.commit_outcomes([IndexedFile("/photos/000050.jpg", 2, 2, "f" * 64, 8, 8, changed)])
    assert check_index(catalog, tmp_path) != []
    report = sync_index(catalog, tmp_path, config)
    assert (report.removed, report.added, report.rebuilt) == (11, 1, False)
    assert check_index(catalog, tmp_path) == []
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None and loaded.index.ntotal == 190
    changed_id = next(
        i for i, p in catalog.path_of(catalog.indexed_ids()[0].tolist()).items() if p.endswith("000050.jpg")
    )
    np.testing.assert_allclose(loaded.index.reconstruct(changed_id), changed, atol=1e-6)
    assert sync_index(catalog, tmp_path, config).wrote is False


def test_growth_past_exact_search_switches_to_ivf(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    config = IndexConfig(exact_below=500)
    _add(catalog, _clustered(300, seed=5))
    assert sync_index(catalog, tmp_path, config).spec.kind == "flat"
    _add(catalog, _clustered(900, seed=6), start=300)
    report = sync_index(catalog, tmp_path, config)
    assert report.rebuilt and report.spec.kind == "ivf_flat" and report.ntotal == 1_200
    assert check_index(catalog, tmp_path) == []


def test_writes_are_atomic_and_leave_no_debris(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(50, seed=7))
    sync_index(catalog, tmp_path, IndexConfig())
    _add(catalog, _clustered(5, seed=8), start=50)
    sync_index(catalog, tmp_path, IndexConfig())
    files = sorted(p.name for p in index_dir(tmp_path).iterdir())
    assert len(files) == 2 and META_FILE in files and not any(name.endswith(".tmp") for name in files)


def test_damaged_pointer_is_rebuilt_and_reported(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(50, seed=9))
    sync_index(catalog, tmp_path, IndexConfig())
    (index_dir(tmp_path) / META_FILE).write_text("{not json")
    assert any("unreadable" in problem for problem in check_index(catalog, tmp_path))
    assert sync_index(catalog, tmp_path, IndexConfig()).rebuilt
    assert check_index(catalog, tmp_path) == []


def test_check_finds_extra_and_wrong_vectors(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(40, seed=10))
    sync_index(catalog, tmp_path, IndexConfig())
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    from core.index.files import write_index

    loaded.index.add_with_ids(_clustered(1, seed=11), np.array([9_999], dtype=np.int64))
    write_index(index_dir(tmp_path), loaded.index, loaded.meta)
    problems = check_index(catalog, tmp_path)
    assert any("no indexed photo" in p for p in problems)
    assert any("holds 41 vectors" in p for p in problems)

    rebuild_index(catalog, tmp_path, IndexConfig())
    assert check_index(catalog, tmp_path) == []


def test_nprobe_is_tuned_until_recall_reaches_the_target(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(4_000, seed=12, centers=16)
    _add(catalog, xb)
    sync_index(catalog, tmp_path, IndexConfig(exact_below=1_000, nprobe=1, target_recall=0.95))
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    meta = loaded.meta
    assert meta.nprobe_floor == 1 and meta.nprobe > 1
    assert meta.recall_at_10 is not None and meta.recall_at_10 >= 0.95 and meta.recall_ntotal == 4_000
    ids, _ = catalog.indexed_ids()
    # An independent measurement on other queries agrees.
    assert _recall_at_10(loaded.index, xb, ids, _clustered(300, seed=13, centers=16)) >= 0.93


def test_tuned_nprobe_is_the_smallest_that_meets_target_plus_margin(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(4_000, seed=14, centers=16))
    config = IndexConfig(exact_below=1_000, nprobe=1, target_recall=0.9, recall_margin=0.05)
    sync_index(catalog, tmp_path, config)
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None and loaded.meta.kind == "ivf_flat"
    nprobe = loaded.meta.nprobe
    sample = recall_sample(GlobalVectors(catalog, DIM))

    def recall(lists: int) -> float:
        set_nprobe(loaded.index, lists)
        return recall_at_k(loaded.index, sample.queries, sample.exact_scores)

    assert 1 < nprobe < loaded.meta.nlist
    assert recall(nprobe) >= 0.95 and loaded.meta.recall_at_10 == round(recall(nprobe), 4)
    assert recall(nprobe - 1) < 0.95  # one list fewer misses target + margin
    # The floor stays a floor: tuning never goes below it even when fewer lists would do.
    config = IndexConfig(exact_below=1_000, nprobe=nprobe + 3, target_recall=0.9, recall_margin=0.05)
    sync_index(catalog, tmp_path, config)
    floored = load_index(index_dir(tmp_path))
    assert floored is not None and floored.meta.nprobe == nprobe + 3 and floored.meta.nprobe_floor == nprobe + 3


def test_flat_index_reports_the_recall_it_has(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(100, seed=14)
    _add(catalog, xb)
    sync_index(catalog, tmp_path, IndexConfig())
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None and loaded.meta.kind == "flat"
    # Exact search by hand (the ten highest inner products), on queries from the collection's distribution.
    ids, _ = catalog.indexed_ids()
    xq = _clustered(200, seed=17)
    truth = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :10]]
    _, found = loaded.index.search(xq, 10)
    measured = sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist(), strict=True)) / truth.size
    assert measured == 1.0
    assert loaded.meta.recall_at_10 == measured


def test_readers_see_committed_vectors_before_the_files_are_written(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(100, seed=15))
    sync_index(catalog, tmp_path, IndexConfig())
    written = sorted(p.name for p in index_dir(tmp_path).iterdir())
    _add(catalog, _clustered(7, seed=16), start=100)
    catalog.remove_paths(["/photos/000000.jpg"])
    index, meta = current_index(catalog, tmp_path, IndexConfig())
    assert index.ntotal == 106 and meta.revision == catalog.revision()
    assert sorted(index_ids(index).tolist()) == catalog.indexed_ids()[0].tolist()
    assert sorted(p.name for p in index_dir(tmp_path).iterdir()) == written  # nothing written
