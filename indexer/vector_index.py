"""The FAISS files: derived from the catalog, shaped by the collection size, written atomically.

Vector ids are catalog primary keys (``add_with_ids``), never array positions. ``global.json`` points at
the current ``.faiss`` file and records the catalog revision it reflects; writing a new file and then
renaming the pointer over the old one is the commit, so a kill at any moment leaves either the old or
the new index, never half of one. :func:`sync_index` brings the files up to the catalog (adding,
removing, retraining) and is safe to run after any crash.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from faiss.contrib.inspect_tools import get_invlist

from indexer.catalog import Catalog, Provenance
from indexer.config import IndexConfig
from indexer.errors import IndexFileError

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf_flat", "ivf_pq"]
Ids = npt.NDArray[np.int64]
META_FILE = "global.json"
TRAIN_SEED = 1234


@dataclass(frozen=True)
class IndexSpec:
    """The shape of a FAISS index: exact, IVF over full vectors, or IVF over product-quantised codes."""

    kind: IndexKind
    nlist: int = 0
    pq_bytes: int = 0

    @property
    def factory_string(self) -> str:
        if self.kind == "flat":
            return "IDMap2,Flat"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        # "np": no polysemous training, which only serves Hamming-filtered search and costs minutes.
        return f"IVF{self.nlist},PQ{self.pq_bytes}np"

    @property
    def is_ivf(self) -> bool:
        return self.kind != "flat"


def _largest_divisor_at_most(dim: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(dim, limit)) + 1) if dim % d == 0)


def choose_index_spec(n_vectors: int, dim: int, config: IndexConfig) -> IndexSpec:
    """Pick the index for a collection of ``n_vectors`` (the autofaiss rule of thumb).

    Exact search below ``exact_below``; IVF with about ``lists_per_sqrt * sqrt(N)`` lists beyond, never so
    many that a list gets fewer than ``min_points_per_list`` training points (k-means needs them);
    product-quantised codes from ``compress_above`` on, where full vectors would crowd out RAM.
    """
    if n_vectors < max(config.exact_below, 2 * config.min_points_per_list):
        return IndexSpec(kind="flat")
    ideal = round(config.lists_per_sqrt * math.sqrt(n_vectors))
    nlist = max(1, min(ideal, n_vectors // config.min_points_per_list))
    if n_vectors >= config.compress_above:
        return IndexSpec(kind="ivf_pq", nlist=nlist, pq_bytes=_largest_divisor_at_most(dim, config.pq_bytes))
    return IndexSpec(kind="ivf_flat", nlist=nlist)


def needs_rebuild(current: IndexSpec, desired: IndexSpec, growth: float) -> bool:
    """Whether the trained index no longer suits the collection (other kind, or lists off by ``growth``)."""
    if current.kind != desired.kind or current.pq_bytes != desired.pq_bytes:
        return True
    if not current.is_ivf:
        return False
    return desired.nlist >= growth * current.nlist or desired.nlist * growth <= current.nlist


@dataclass(frozen=True)
class IndexMeta:
    """Contents of ``global.json``."""

    file: str
    catalog_id: str
    revision: int
    ntotal: int
    dim: int
    kind: IndexKind
    nlist: int
    pq_bytes: int
    trained_on: int
    nprobe: int
    written_at: str
    # nprobe from the config, the floor that tuning starts from; ``nprobe`` is what recall tuning chose.
    nprobe_floor: int = 0
    # recall@10 against exact search on a seeded sample, and the collection size it was measured at.
    recall_at_10: float | None = None
    recall_ntotal: int = 0

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(kind=self.kind, nlist=self.nlist, pq_bytes=self.pq_bytes)


@dataclass
class LoadedIndex:
    index: faiss.Index
    meta: IndexMeta


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_index` did."""

    added: int
    removed: int
    rebuilt: bool
    ntotal: int
    spec: IndexSpec
    wrote: bool


def index_dir(data_dir: Path) -> Path:
    return data_dir / "index"


def read_meta(directory: Path) -> IndexMeta | None:
    """The pointer file, or None when no index has been written yet."""
    path = directory / META_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise IndexFileError(f"{path} is unreadable: {error}") from error
    try:
        return IndexMeta(**data)
    except TypeError as error:
        raise IndexFileError(f"{path} is not a Loupe index pointer: {error}") from error


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Set the lists visited per query (a no-op for exact indexes)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.nprobe = min(nprobe, ivf.nlist)


def load_index(directory: Path, nprobe: int | None = None) -> LoadedIndex | None:
    """Read the current index, or None when none was written yet."""
    meta = read_meta(directory)
    if meta is None:
        return None
    path = directory / meta.file
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexFileError(f"cannot read {path}: {error}") from error
    set_nprobe(index, nprobe if nprobe is not None else meta.nprobe)
    return LoadedIndex(index=index, meta=meta)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes_atomically(path: Path, write: Callable[[Path], None]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        with temporary.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_index(directory: Path, index: faiss.Index, meta: IndexMeta) -> IndexMeta:
    """Write ``index`` under a fresh name, then atomically repoint ``global.json`` to it."""
    directory.mkdir(parents=True, exist_ok=True)
    file_name = f"global-r{meta.revision}-{uuid.uuid4().hex[:8]}.faiss"
    _write_bytes_atomically(directory / file_name, lambda path: faiss.write_index(index, str(path)))
    final = IndexMeta(**{**asdict(meta), "file": file_name, "ntotal": int(index.ntotal)})
    text = json.dumps(asdict(final), indent=2)

    def write_meta(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    _write_bytes_atomically(directory / META_FILE, write_meta)
    _fsync_dir(directory)
    for old in directory.glob("global-*.faiss"):
        if old.name != file_name:
            old.unlink(missing_ok=True)
    return final


def index_ids(index: faiss.Index) -> Ids:
    """Every id stored in ``index`` (flat-with-id-map or IVF)."""
    if index.ntotal == 0:
        return np.empty(0, dtype=np.int64)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        id_map: Any = faiss.downcast_index(index)
        return faiss.vector_to_array(id_map.id_map).astype(np.int64)
    invlists = ivf.invlists
    if invlists is None:
        raise IndexFileError("IVF index has no inverted lists")
    parts = [get_invlist(invlists, list_no)[0] for list_no in range(ivf.nlist) if invlists.list_size(list_no) > 0]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def _train(index: faiss.Index, training: npt.NDArray[np.float32], use_gpu: bool) -> None:
    if use_gpu and faiss.get_num_gpus() > 0:
        # k-means on the GPU: faiss trains IVF coarse quantizers with whatever index is set here.
        ivf = faiss.extract_index_ivf(index)
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
        logger.info("training %d lists on %d GPU(s)", ivf.nlist, faiss.get_num_gpus())
    index.train(training)
    if use_gpu and faiss.get_num_gpus() > 0:
        # Drop the GPU index so the trained CPU index holds no GPU resources.
        faiss.extract_index_ivf(index).clustering_index = None  # type: ignore[assignment]


def build_index(
    catalog: Catalog, provenance: Provenance, config: IndexConfig, spec: IndexSpec
) -> tuple[faiss.Index, int]:
    """A new index of the given shape holding every indexed vector of the catalog; also returns the
    number of vectors it was trained on."""
    dim = provenance.dim
    index = faiss.index_factory(dim, spec.factory_string, faiss.METRIC_INNER_PRODUCT)
    trained_on = 0
    if spec.is_ivf:
        ids, _ = catalog.indexed_ids()
        rng = np.random.default_rng(TRAIN_SEED)
        sample_size = min(len(ids), config.max_train_points)
        sample = np.sort(rng.choice(ids, size=sample_size, replace=False))
        training = np.concatenate([vectors for _, vectors in catalog.embeddings_for(sample, dim)])
        _train(index, training, config.use_gpu)
        trained_on = sample_size
    for ids, vectors in catalog.iter_embeddings(dim):
        index.add_with_ids(vectors, ids)
    set_nprobe(index, config.nprobe)
    return index, trained_on


def _caught_up(
    catalog: Catalog, provenance: Provenance, loaded: LoadedIndex | None, config: IndexConfig
) -> tuple[faiss.Index, IndexMeta, SyncReport]:
    """``loaded`` brought up to the catalog in memory (or a fresh index when none fits)."""
    revision = catalog.revision()
    ids, vector_revisions = catalog.indexed_ids()
    desired = choose_index_spec(len(ids), provenance.dim, config)
    if (
        loaded is None
        or loaded.meta.catalog_id != provenance.catalog_id
        or loaded.meta.dim != provenance.dim
        or needs_rebuild(loaded.meta.spec, desired, config.retrain_growth)
    ):
        index, trained_on = build_index(catalog, provenance, config, desired)
        meta = _new_meta(provenance, revision, desired, trained_on, config.nprobe)
        report = SyncReport(int(index.ntotal), 0, rebuilt=True, ntotal=int(index.ntotal), spec=desired, wrote=True)
        return index, meta, report

    index, meta = loaded.index, loaded.meta
    present = index_ids(index)
    stale = ids[vector_revisions > meta.revision]
    to_remove = np.union1d(np.setdiff1d(present, ids), np.intersect1d(stale, present))
    to_add = np.union1d(np.setdiff1d(ids, present), stale)
    changed = len(to_remove) > 0 or len(to_add) > 0 or meta.revision != revision or meta.nprobe_floor != config.nprobe
    if len(to_remove):
        index.remove_ids(faiss.IDSelectorBatch(to_remove.astype(np.int64)))
    for chunk_ids, vectors in catalog.embeddings_for(to_add, provenance.dim):
        index.add_with_ids(vectors, chunk_ids)
    if changed:
        meta = replace(meta, revision=revision, ntotal=int(index.ntotal))
        if meta.nprobe_floor != config.nprobe:
            meta = replace(meta, nprobe=config.nprobe, nprobe_floor=config.nprobe, recall_ntotal=0)
    report = SyncReport(
        len(to_add), len(to_remove), rebuilt=False, ntotal=int(index.ntotal), spec=meta.spec, wrote=changed
    )
    return index, meta, report


def current_index(catalog: Catalog, data_dir: Path, config: IndexConfig) -> tuple[faiss.Index, IndexMeta]:
    """The index as the catalog says it should be, in memory, without writing anything: what a reader
    uses while a build is running or after one was killed before it wrote the FAISS files."""
    provenance = catalog.provenance()
    if provenance is None:
        raise IndexFileError("the catalog is empty: build an index first")
    loaded = load_index(index_dir(data_dir))
    index, meta, _ = _caught_up(catalog, provenance, loaded, config)
    set_nprobe(index, meta.nprobe)
    return index, meta


def sync_index(catalog: Catalog, data_dir: Path, config: IndexConfig) -> SyncReport:
    """Bring the FAISS files up to the catalog: add new vectors, drop removed or re-embedded ones, and
    rebuild (retrain) when the collection outgrew the index's shape. Writes only when something changed;
    re-measures recall (and re-tunes nprobe) when the collection changed by 10% since it was measured."""
    provenance = catalog.provenance()
    if provenance is None:
        raise IndexFileError("the catalog is empty: build an index first")
    try:
        loaded = load_index(index_dir(data_dir))
    except IndexFileError as error:
        logger.warning("rebuilding the index: %s", error)
        loaded = None
    index, meta, report = _caught_up(catalog, provenance, loaded, config)
    if not report.wrote:
        return report
    if meta.recall_at_10 is None or abs(meta.ntotal - meta.recall_ntotal) >= 0.1 * max(meta.recall_ntotal, 1):
        meta = tune_nprobe(index, meta, catalog, provenance.dim, config.target_recall)
    write_index(index_dir(data_dir), index, meta)
    return report


def rebuild_index(catalog: Catalog, data_dir: Path, config: IndexConfig) -> SyncReport:
    """Throw the FAISS files away and rebuild them from the catalog (``indexer reindex``)."""
    provenance = catalog.provenance()
    if provenance is None:
        raise IndexFileError("the catalog is empty: build an index first")
    index, meta, report = _caught_up(catalog, provenance, None, config)
    meta = tune_nprobe(index, meta, catalog, provenance.dim, config.target_recall)
    write_index(index_dir(data_dir), index, meta)
    return report


RECALL_QUERIES = 500
RECALL_K = 10


def exact_top_k(
    catalog: Catalog, dim: int, queries: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], Ids]:
    """Exact inner-product top-k over every catalog vector, streamed in chunks (on GPUs when present)."""
    from faiss.contrib.exhaustive_search import knn_ground_truth

    chunk_ids: list[Ids] = []

    def blocks() -> Iterator[npt.NDArray[np.float32]]:
        for ids, vectors in catalog.iter_embeddings(dim, chunk=20_000):
            chunk_ids.append(ids)
            yield vectors

    scores, positions = knn_ground_truth(queries, blocks(), k, metric_type=faiss.METRIC_INNER_PRODUCT)
    all_ids = np.concatenate(chunk_ids) if chunk_ids else np.empty(0, dtype=np.int64)
    return scores, np.where(positions >= 0, all_ids[np.clip(positions, 0, None)], -1)


def recall_at_k(index: faiss.Index, queries: npt.NDArray[np.float32], exact_scores: npt.NDArray[np.float32]) -> float:
    """Share of the exact top-k that ``index`` returns. Ties count: exact copies have equal scores, and
    any of them is a right answer, so a result counts when it scores at least the exact k-th score."""
    k = exact_scores.shape[1]
    scores, _ = index.search(queries, k)
    kth = exact_scores[:, -1:] - 1e-5
    return float(np.minimum((scores >= kth).sum(axis=1), k).sum() / exact_scores.size)


def tune_nprobe(index: faiss.Index, meta: IndexMeta, catalog: Catalog, dim: int, target: float) -> IndexMeta:
    """Measure recall@10 on a seeded sample of the collection against exact search and, for IVF, double
    nprobe from the configured floor until the recall reaches ``target`` (or every list is visited)."""
    ids, _ = catalog.indexed_ids()
    if meta.kind == "flat" or len(ids) <= RECALL_K:
        return replace(meta, recall_at_10=1.0, recall_ntotal=int(index.ntotal))
    rng = np.random.default_rng(TRAIN_SEED + 1)
    sample = np.sort(rng.choice(ids, size=min(RECALL_QUERIES, len(ids)), replace=False))
    queries = np.concatenate([vectors for _, vectors in catalog.embeddings_for(sample, dim)])
    exact_scores, _ = exact_top_k(catalog, dim, queries, RECALL_K)
    ivf = faiss.extract_index_ivf(index)
    nprobe = min(max(meta.nprobe_floor, 1), ivf.nlist)
    while True:
        ivf.nprobe = nprobe
        recall = recall_at_k(index, queries, exact_scores)
        if recall >= target or nprobe >= ivf.nlist:
            break
        nprobe = min(ivf.nlist, nprobe * 2)
    logger.info("recall@10 %.3f at nprobe %d of %d lists", recall, nprobe, ivf.nlist)
    return replace(meta, nprobe=nprobe, recall_at_10=round(recall, 4), recall_ntotal=int(index.ntotal))


def _new_meta(provenance: Provenance, revision: int, spec: IndexSpec, trained_on: int, nprobe: int) -> IndexMeta:
    return IndexMeta(
        nprobe_floor=nprobe,
        file="",
        catalog_id=provenance.catalog_id,
        revision=revision,
        ntotal=0,
        dim=provenance.dim,
        kind=spec.kind,
        nlist=spec.nlist,
        pq_bytes=spec.pq_bytes,
        trained_on=trained_on,
        nprobe=nprobe,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def check_index(catalog: Catalog, data_dir: Path, sample: int = 200) -> list[str]:
    """Every way the FAISS files disagree with the catalog (empty when they agree)."""
    provenance = catalog.provenance()
    if provenance is None:
        return ["the catalog has no provenance: no index was ever built here"]
    directory = index_dir(data_dir)
    try:
        loaded = load_index(directory)
    except IndexFileError as error:
        return [str(error)]
    if loaded is None:
        return [f"no index files in {directory}: run `python -m indexer reindex`"]
    index, meta = loaded.index, loaded.meta
    problems: list[str] = []
    if meta.catalog_id != provenance.catalog_id:
        problems.append(f"index belongs to catalog {meta.catalog_id}, not {provenance.catalog_id}")
    if meta.dim != provenance.dim or index.d != provenance.dim:
        problems.append(f"index has dimension {index.d}, catalog vectors have {provenance.dim}")
        return problems
    revision = catalog.revision()
    if meta.revision != revision:
        problems.append(f"index reflects catalog revision {meta.revision}, catalog is at {revision}")
    ids, _ = catalog.indexed_ids()
    present = index_ids(index)
    unique, counts = np.unique(present, return_counts=True)
    if (counts > 1).any():
        problems.append(
            f"{int((counts > 1).sum())} ids stored more than once in the index (first: {int(unique[counts > 1][0])})"
        )
    missing = np.setdiff1d(ids, unique)
    extra = np.setdiff1d(unique, ids)
    if len(missing):
        problems.append(f"{len(missing)} indexed photos missing from the index (first id: {int(missing[0])})")
    if len(extra):
        problems.append(f"{len(extra)} index vectors with no indexed photo in the catalog (first id: {int(extra[0])})")
    if index.ntotal != len(ids):
        problems.append(f"index holds {index.ntotal} vectors, catalog has {len(ids)} indexed photos")
    problems.extend(_check_vectors(catalog, index, meta, np.intersect1d(ids, unique), provenance.dim, sample))
    return problems


def _check_vectors(catalog: Catalog, index: faiss.Index, meta: IndexMeta, ids: Ids, dim: int, sample: int) -> list[str]:
    """Compare a seeded sample of stored vectors with the catalog's embeddings."""
    if len(ids) == 0:
        return []
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(ids, size=min(sample, len(ids)), replace=False))
    if meta.kind != "flat":
        # reconstruct() by id needs a direct map; a hashtable one takes arbitrary (catalog) ids.
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    # Product-quantised codes only approximate the vector; full vectors must match to rounding.
    threshold = 0.9 if meta.kind == "ivf_pq" else 0.9999
    bad: list[int] = []
    for chunk_ids, vectors in catalog.embeddings_for(picked, dim):
        for id_, vector in zip(chunk_ids, vectors, strict=True):
            stored = index.reconstruct(int(id_))
            if float(np.dot(stored, vector)) < threshold:
                bad.append(int(id_))
    if bad:
        return [f"{len(bad)} of {len(picked)} sampled index vectors differ from the catalog's (first id: {bad[0]})"]
    return []
