"""On-disk IVF indexes: shards merged into one memory-mapped lists file, searched like the in-RAM index."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from core.catalog import Catalog, IndexedFile, Provenance
from core.config import IndexConfig, LoupeConfig
from core.errors import IndexFileError
from core.index import ondisk
from core.index.build import trained_index
from core.index.files import META_FILE, ON_DISK_READ_FLAGS, index_dir, index_ids, lists_of, load_index
from core.index.ondisk import _empty_copy, merge_shards, write_shards
from core.index.policy import IndexSpec, choose_index_spec, needs_rebuild, set_nprobe
from core.index.source import GlobalVectors, PatchVectors, decode_cell_ids
from core.index.sync import current_index, rebuild_index, sync_index
from core.index.verify import check_index
from core.report import collection_status, storage_line
from search.engine import SearchEngine
from tests.test_vector_index import DIM, _add, _catalog, _clustered, _recall_at_10

# IVF-PQ on disk from 1,000 vectors on; small enough to train in a second.
ON_DISK_PQ = IndexConfig(exact_below=1_000, compress_above=1_000, pq_bytes=4, nprobe=8, on_disk_above=1_000)
ON_DISK_FLAT = IndexConfig(exact_below=1_000, nprobe=8, on_disk_above=1_000)


@pytest.fixture(autouse=True)
def _small_shards(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # About 700 vectors per shard at 4-byte codes, so that a few thousand vectors make several shards.
    monkeypatch.setattr(ondisk, "SHARD_BYTES", 700 * 12)
    # One thread: on a busy machine OpenMP's spinning threads make these small k-means runs 4x slower.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def _index_files(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in index_dir(tmp_path).iterdir())


def test_on_disk_threshold_chooses_storage() -> None:
    config = IndexConfig(on_disk_above=10_000_000)
    assert not choose_index_spec(9_999_999, 384, config).on_disk
    spec = choose_index_spec(10_000_000, 384, config)
    assert spec.on_disk and spec.kind == "ivf_pq"
    assert not choose_index_spec(10_000_000, 384, IndexConfig(on_disk_above=0)).on_disk
    # Exact indexes have no lists to put on disk.
    assert not choose_index_spec(100, 384, IndexConfig(on_disk_above=1)).on_disk
    # Moving the lists to disk (or back) is a rebuild; the lists' shape alone decides nothing else.
    in_ram = IndexSpec(kind="ivf_pq", nlist=100, pq_bytes=8)
    assert needs_rebuild(in_ram, IndexSpec(kind="ivf_pq", nlist=100, pq_bytes=8, on_disk=True), 2.0)
    assert not needs_rebuild(in_ram, IndexSpec(kind="ivf_pq", nlist=120, pq_bytes=8), 2.0)


def test_merged_shards_search_exactly_like_the_in_ram_index(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(3_000, seed=0))
    source = GlobalVectors(catalog, DIM)
    spec = choose_index_spec(3_000, DIM, ON_DISK_PQ)
    trained, _ = trained_index(source, ON_DISK_PQ, spec)
    template = faiss.serialize_index(trained)
    in_ram = faiss.deserialize_index(template)
    for ids, vectors in source.iter_vectors():
        in_ram.add_with_ids(vectors, ids)

    shards = write_shards(template, source.iter_vectors(), tmp_path / "shards", per_shard=700)
    assert len(shards) == 5  # 4 x 700 + 200
    on_disk = faiss.deserialize_index(template)
    merge_shards(on_disk, shards, tmp_path / "lists.ivfdata")
    faiss.write_index(on_disk, str(tmp_path / "header.faiss"))
    mapped = faiss.read_index(str(tmp_path / "header.faiss"), ON_DISK_READ_FLAGS)

    queries = _clustered(100, seed=1)
    for index in (in_ram, mapped):
        faiss.extract_index_ivf(index).nprobe = 8
    expected_scores, expected_ids = in_ram.search(queries, 10)
    scores, ids = mapped.search(queries, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    assert mapped.ntotal == 3_000


def test_synced_on_disk_index_equals_in_ram_lists_of_the_same_quantizer(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(3_000, seed=2))
    report = sync_index(catalog, tmp_path, ON_DISK_PQ)
    assert report.rebuilt and report.spec.on_disk and report.spec.kind == "ivf_pq"
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None and loaded.meta.on_disk
    lists = faiss.downcast_InvertedLists(lists_of(loaded.index))
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    assert Path(lists.filename) == index_dir(tmp_path) / loaded.meta.lists_file

    # The same trained quantizer and codec, lists in RAM, filled in catalog order.
    in_ram = _empty_copy(index_dir(tmp_path), loaded.meta)
    for ids, vectors in GlobalVectors(catalog, DIM).iter_vectors():
        in_ram.add_with_ids(vectors, ids)
    set_nprobe(in_ram, loaded.meta.nprobe)
    queries = _clustered(100, seed=3)
    expected_scores, expected_ids = in_ram.search(queries, 10)
    scores, ids = loaded.index.search(queries, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    assert check_index(catalog, tmp_path) == []


def test_on_disk_recall_against_exact_search(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(4_000, seed=4)
    _add(catalog, xb)
    report = sync_index(catalog, tmp_path, ON_DISK_FLAT)
    assert report.spec.on_disk and report.spec.kind == "ivf_flat"
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    assert loaded.meta.recall_at_10 is not None and loaded.meta.recall_at_10 >= 0.95
    ids, _ = catalog.indexed_ids()
    assert _recall_at_10(loaded.index, xb, ids, _clustered(200, seed=5)) >= 0.93


@pytest.mark.parametrize("config", [ON_DISK_FLAT, ON_DISK_PQ], ids=["flat", "pq"])
def test_updates_copy_the_lists_and_replace_them_atomically(tmp_path: Path, config: IndexConfig) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(2_000, seed=6))
    sync_index(catalog, tmp_path, config)
    first = load_index(index_dir(tmp_path))
    assert first is not None
    before = _index_files(tmp_path)
    assert len(before) == 3 and META_FILE in before  # pointer, header, lists

    catalog.remove_paths([f"/photos/{i:06d}.jpg" for i in range(10)])
    changed = _clustered(1, seed=99)[0]
    catalog.commit_outcomes([IndexedFile("/photos/000050.jpg", 2, 2, "f" * 64, 8, 8, changed)])
    _add(catalog, _clustered(30, seed=7), start=2_000)
    report = sync_index(catalog, tmp_path, config)
    assert (report.removed, report.added, report.rebuilt) == (11, 31, False)
    assert check_index(catalog, tmp_path) == []

    after = _index_files(tmp_path)
    assert len(after) == 3 and not set(after) & (set(before) - {META_FILE})
    assert not any(name.endswith(".tmp") or name.startswith(".") for name in after)
    second = load_index(index_dir(tmp_path))
    assert second is not None and second.meta.on_disk and second.index.ntotal == 2_020
    # The reader that mapped the old lists keeps its answers after their file was deleted.
    assert first.index.ntotal == 2_000
    _, found = first.index.search(_clustered(5, seed=0), 1)
    assert (found >= 0).all()


def test_a_build_killed_before_publishing_leaves_the_old_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(1_500, seed=8))
    sync_index(catalog, tmp_path, ON_DISK_FLAT)
    published = _index_files(tmp_path)

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ondisk, "merge_shards", killed)
    with pytest.raises(KeyboardInterrupt):
        rebuild_index(catalog, tmp_path, ON_DISK_FLAT)
    assert _index_files(tmp_path) == published  # shards cleaned up, pointer untouched
    assert check_index(catalog, tmp_path) == []
    monkeypatch.undo()
    rebuild_index(catalog, tmp_path, ON_DISK_FLAT)
    assert check_index(catalog, tmp_path) == [] and len(_index_files(tmp_path)) == 3


def test_crossing_the_threshold_moves_the_lists_to_disk_and_back(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    config = IndexConfig(exact_below=500, nprobe=8, on_disk_above=1_500)
    _add(catalog, _clustered(1_000, seed=9))
    assert not sync_index(catalog, tmp_path, config).spec.on_disk
    _add(catalog, _clustered(600, seed=10), start=1_000)
    report = sync_index(catalog, tmp_path, config)
    assert report.rebuilt and report.spec.on_disk and check_index(catalog, tmp_path) == []
    catalog.remove_paths([f"/photos/{i:06d}.jpg" for i in range(300)])
    report = sync_index(catalog, tmp_path, IndexConfig(exact_below=500, nprobe=8, on_disk_above=0))
    assert report.rebuilt and not report.spec.on_disk
    assert not any(name.endswith(".ivfdata") for name in _index_files(tmp_path))
    assert check_index(catalog, tmp_path) == []


def test_readers_serve_the_written_index_and_never_write(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    with pytest.raises(IndexFileError, match="built on disk"):
        _add(catalog, _clustered(1_200, seed=11))
        current_index(catalog, tmp_path, ON_DISK_FLAT)
    sync_index(catalog, tmp_path, ON_DISK_FLAT)
    written = _index_files(tmp_path)
    _add(catalog, _clustered(50, seed=12), start=1_200)
    index, meta = current_index(catalog, tmp_path, ON_DISK_FLAT)
    assert index.ntotal == 1_200 and meta.revision < catalog.revision()
    assert _index_files(tmp_path) == written


def test_engine_reopens_the_index_a_build_publishes(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(1_200, seed=13)
    _add(catalog, xb)
    sync_index(catalog, tmp_path, ON_DISK_FLAT)
    engine = SearchEngine.open(LoupeConfig(data_dir=tmp_path, index=ON_DISK_FLAT))
    try:
        assert engine.ntotal == 1_200 and engine.search_vector(xb[7], k=1)[0].path == "/photos/000007.jpg"
        extra = _clustered(20, seed=14)
        _add(catalog, extra, start=1_200)
        assert engine.ntotal == 1_200  # the build has not published yet: the last index serves
        sync_index(catalog, tmp_path, ON_DISK_FLAT)
        assert engine.ntotal == 1_220
        assert engine.search_vector(extra[3], k=1)[0].path == "/photos/001203.jpg"
    finally:
        engine.close()


def test_status_shows_the_lists_on_disk(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(1_200, seed=15))
    sync_index(catalog, tmp_path, ON_DISK_FLAT)
    catalog.close()
    status = collection_status(LoupeConfig(data_dir=tmp_path, index=ON_DISK_FLAT))
    # 1,200 full 32-d vectors and their ids: 1,200 x (128 + 8) bytes, plus slack between lists.
    assert status["index_on_disk"] and status["index_lists_bytes"] >= 1_200 * 136
    assert storage_line(status).startswith("on disk, 0.00 GB lists")


def test_ids_survive_the_merge(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    _add(catalog, _clustered(1_700, seed=16))
    sync_index(catalog, tmp_path, ON_DISK_PQ)
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None
    assert sorted(index_ids(loaded.index).tolist()) == catalog.indexed_ids()[0].tolist()


RSS_PROBE = textwrap.dedent(
    """
    import sys, faiss, numpy as np

    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    path, flags = sys.argv[1], int(sys.argv[2])
    before = rss()
    index = faiss.read_index(path, flags)
    faiss.extract_index_ivf(index).nprobe = 1
    index.search(np.ones((1, index.d), dtype="float32"), 10)
    print(rss() - before)
    """
)


@pytest.mark.slow
def test_searching_maps_the_lists_instead_of_loading_them(tmp_path: Path) -> None:
    # 300,000 64-d vectors in 64 lists: about 80 MB of lists, of which a one-list search touches ~1/64.
    rng = np.random.default_rng(17)
    xb = rng.standard_normal((300_000, 64), dtype=np.float32)
    trained = faiss.index_factory(64, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    trained.train(xb[:10_000])
    template = faiss.serialize_index(trained)
    in_ram = faiss.deserialize_index(template)
    in_ram.add_with_ids(xb, np.arange(len(xb), dtype=np.int64))
    faiss.write_index(in_ram, str(tmp_path / "ram.faiss"))
    chunks = [(np.arange(len(xb), dtype=np.int64), xb)]
    shards = write_shards(template, chunks, tmp_path / "shards", per_shard=100_000)
    on_disk = faiss.deserialize_index(template)
    merge_shards(on_disk, shards, tmp_path / "disk.ivfdata")
    faiss.write_index(on_disk, str(tmp_path / "disk.faiss"))
    lists_bytes = (tmp_path / "disk.ivfdata").stat().st_size

    def growth(name: str, flags: int) -> int:
        probe = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, str(tmp_path / name), str(flags)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(probe.stdout.split()[-1])  # faiss prints what it maps before

    assert growth("ram.faiss", 0) >= 0.9 * lists_bytes  # the control: loading reads every list
    assert growth("disk.faiss", ON_DISK_READ_FLAGS) < 0.2 * lists_bytes


def test_nprobe_stops_growing_when_the_codes_limit_recall(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    xb = _clustered(3_000, seed=18, centers=16)
    _add(catalog, xb)
    # 2-byte codes of 32-d vectors cannot reach 0.99 recall@10 however many lists are visited.
    config = IndexConfig(exact_below=1_000, compress_above=1_000, pq_bytes=2, nprobe=1, target_recall=0.99)
    sync_index(catalog, tmp_path, config)
    loaded = load_index(index_dir(tmp_path))
    assert loaded is not None and loaded.meta.recall_at_10 is not None
    ivf = faiss.extract_index_ivf(loaded.index)
    # Measured by ids, not by the codes' approximate scores (which overshoot and once read as 0.9998).
    assert loaded.meta.recall_at_10 < 0.5 and loaded.meta.nprobe < ivf.nlist
    ids, _ = catalog.indexed_ids()
    queries = _clustered(300, seed=19, centers=16)
    at_tuned = _recall_at_10(loaded.index, xb, ids, queries)
    set_nprobe(loaded.index, ivf.nlist)
    # Visiting every list buys (almost) nothing over the tuned nprobe.
    assert _recall_at_10(loaded.index, xb, ids, queries) - at_tuned < 0.05


def test_stdout_stays_clean_and_a_moved_data_dir_still_opens(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "here").mkdir()
    catalog = _catalog(tmp_path / "here")
    _add(catalog, _clustered(1_200, seed=20))
    sync_index(catalog, tmp_path / "here", ON_DISK_FLAT)
    assert load_index(index_dir(tmp_path / "here")) is not None
    # faiss reports merges and relocations with printf; a CLI's --json output must not get them.
    assert capfd.readouterr().out == ""
    catalog.close()
    (tmp_path / "here").rename(tmp_path / "there")
    loaded = load_index(index_dir(tmp_path / "there"))
    assert loaded is not None and loaded.index.ntotal == 1_200
    assert "updating ondisk filename" in capfd.readouterr().err
    _, found = loaded.index.search(_clustered(3, seed=20), 1)
    assert (found >= 0).all()


def test_the_patch_index_goes_on_disk_through_the_same_code(tmp_path: Path) -> None:
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
            patch_grid=2,
        )
    )
    cells = _clustered(1_600, seed=21).reshape(400, 2, 2, DIM)
    catalog.commit_outcomes(
        [
            IndexedFile(f"/p/{i:04d}.jpg", 1, 1, f"{i:064x}", 8, 8, cells[i, 0, 0], cells[i].astype(np.float16))
            for i in range(400)
        ]
    )
    patches = PatchVectors(catalog, DIM, 2)
    report = sync_index(catalog, tmp_path, ON_DISK_FLAT, patches)
    assert report.spec.on_disk and report.ntotal == 1_600
    assert check_index(catalog, tmp_path, source=patches) == []
    loaded = load_index(index_dir(tmp_path), name="patches")
    assert loaded is not None and loaded.meta.lists_file.startswith("patches-r")
    _, found = loaded.index.search(cells[7].reshape(4, DIM).astype(np.float16).astype(np.float32), 1)
    # Every cell of the eighth photo finds a cell of that photo (catalog ids, in insertion order).
    assert (decode_cell_ids(found[:, 0])[0] == catalog.indexed_ids()[0][7]).all()
