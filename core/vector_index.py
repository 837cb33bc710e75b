"""The FAISS files: derived from the catalog, shaped by the collection size, written atomically.

Vector ids are catalog primary keys (``add_with_ids``), never array positions. ``global.json`` points at
the current ``.faiss`` file and records the catalog revision it reflects; writing a new file and then
renaming the pointer over the old one is the commit, so a kill at any moment leaves either the old or
the new index, never half of one. :func:`sync_index` brings the files up to the catalog (adding,
removing, retraining) and is safe to run after any crash.

Past ``index.on_disk_above`` vectors an IVF index is built on disk, for collections whose codes would
crowd out RAM: the quantizer is trained once, shards of the catalog are added to empty copies of it and
written out, and the shards' inverted lists are merged into one ``OnDiskInvertedLists`` file
(``<name>-r<revision>-<id>.ivfdata``) beside the ``.faiss`` header that points at it (the recipe of
faiss ``contrib/ondisk.py`` and ``demos/demo_ondisk_ivf.py``). Searches memory-map the lists read-only,
so RAM holds the quantizer and whatever pages the OS keeps cached. Updates never touch a published
lists file: they copy it (a sequential copy of the codes, no re-encoding), remove and add on the copy,
and publish it like a rebuild.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from faiss.contrib.inspect_tools import get_invlist

from core.catalog import Catalog
from core.config import IndexConfig
from core.errors import IndexFileError
from core.vector_source import GlobalVectors, VectorSource

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf_flat", "ivf_pq"]
Ids = npt.NDArray[np.int64]
META_FILE = "global.json"
TRAIN_SEED = 1234
SCALAR_TRAIN_POINTS = 20_000
# Vectors per shard of an on-disk build: a shard's codes and ids are held in RAM until it is written.
SHARD_BYTES = 256 << 20
# Open on-disk lists relative to the header's folder (the data dir may move) and never write to them.
ON_DISK_READ_FLAGS = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY


@dataclass(frozen=True)
class IndexSpec:
    """The shape of a FAISS index: exact, IVF over full vectors, or IVF over product-quantised codes."""

    kind: IndexKind
    nlist: int = 0
    pq_bytes: int = 0
    codec: str = "Flat"
    # Inverted lists in a memory-mapped file rather than in RAM (IVF only).
    on_disk: bool = False

    @property
    def factory_string(self) -> str:
        if self.kind == "flat":
            return f"IDMap2,{self.codec}"
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
    product-quantised codes from ``compress_above`` on, where full vectors would crowd out RAM; the IVF's
    lists on disk from ``on_disk_above`` on (0: never), where even the codes would.
    """
    if n_vectors < max(config.exact_below, 2 * config.min_points_per_list):
        return IndexSpec(kind="flat", codec=config.exact_codec)
    ideal = round(config.lists_per_sqrt * math.sqrt(n_vectors))
    nlist = max(1, min(ideal, n_vectors // config.min_points_per_list))
    on_disk = 0 < config.on_disk_above <= n_vectors
    if n_vectors >= config.compress_above:
        pq_bytes = _largest_divisor_at_most(dim, config.pq_bytes)
        return IndexSpec(kind="ivf_pq", nlist=nlist, pq_bytes=pq_bytes, on_disk=on_disk)
    return IndexSpec(kind="ivf_flat", nlist=nlist, on_disk=on_disk)


def needs_rebuild(current: IndexSpec, desired: IndexSpec, growth: float) -> bool:
    """Whether the trained index no longer suits the collection (other kind or storage, or lists off by
    ``growth``)."""
    if (current.kind, current.pq_bytes, current.codec, current.on_disk) != (
        desired.kind,
        desired.pq_bytes,
        desired.codec,
        desired.on_disk,
    ):
        return True
    if not current.is_ivf:
        return False
    return desired.nlist >= growth * current.nlist or desired.nlist * growth <= current.nlist


@dataclass(frozen=True)
class IndexMeta:
    """Contents of the pointer file (``global.json``, ``patches.json``)."""

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
    codec: str = "Flat"
    items: int = 0
    # The OnDiskInvertedLists file beside ``file`` ("" = the lists are inside ``file``, loaded into RAM).
    lists_file: str = ""

    @property
    def on_disk(self) -> bool:
        return bool(self.lists_file)

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(
            kind=self.kind, nlist=self.nlist, pq_bytes=self.pq_bytes, codec=self.codec, on_disk=self.on_disk
        )


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


def read_meta(directory: Path, name: str = "global") -> IndexMeta | None:
    """The pointer file, or None when no index has been written yet."""
    path = directory / f"{name}.json"
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


def load_index(directory: Path, nprobe: int | None = None, name: str = "global") -> LoadedIndex | None:
    """Read the current index, or None when none was written yet."""
    meta = read_meta(directory, name)
    if meta is None:
        return None
    index = _read_index(directory, meta)
    set_nprobe(index, nprobe if nprobe is not None else meta.nprobe)
    return LoadedIndex(index=index, meta=meta)


def _read_index(directory: Path, meta: IndexMeta) -> faiss.Index:
    """The index of ``meta``; on-disk lists are memory-mapped read-only, never loaded."""
    path = directory / meta.file
    if not meta.on_disk:
        try:
            return faiss.read_index(str(path))
        except RuntimeError as error:
            raise IndexFileError(f"cannot read {path}: {error}") from error
    lists = (directory / meta.lists_file).resolve()
    if not lists.is_file():
        raise IndexFileError(f"{path} keeps its inverted lists in {lists}, which is missing")
    try:
        # The header names its lists by the absolute path they were written at: right unless the data
        # dir moved since, in which case faiss looks beside the header instead (and says so on stdout).
        index = faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY)
        on_disk: Any = faiss.downcast_InvertedLists(_lists_of(index))
        if on_disk.filename == str(lists):
            return index
    except RuntimeError:
        pass
    try:
        with _stdout_to_stderr():
            return faiss.read_index(str(path), ON_DISK_READ_FLAGS)
    except RuntimeError as error:
        raise IndexFileError(f"cannot read {path}: {error}") from error


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what C code prints to stderr meanwhile: faiss's on-disk lists report with printf, which would
    corrupt a CLI's ``--json`` output on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers what it prints to a pipe: flush it to stderr
        os.dup2(saved, 1)
        os.close(saved)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable. Windows cannot open a folder as a file (nor fsync one); its
    NTFS journals the rename itself, so there is nothing to do there."""
    if os.name == "nt":
        return
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


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def write_index(directory: Path, index: faiss.Index, meta: IndexMeta, name: str = "global") -> IndexMeta:
    """Write ``index`` under a fresh name, then atomically repoint ``<name>.json`` to it. An on-disk index's
    lists file (``meta.lists_file``, already written beside it) is flushed first and the header named
    after it; older headers, lists files and shard folders of ``name`` are deleted once the pointer moved."""
    directory.mkdir(parents=True, exist_ok=True)
    if meta.on_disk:
        # The lists were written through a shared mapping; fsync flushes those pages too.
        _fsync_file(directory / meta.lists_file)
        file_name = f"{Path(meta.lists_file).stem}.faiss"
    else:
        file_name = f"{name}-r{meta.revision}-{uuid.uuid4().hex[:8]}.faiss"
    _write_bytes_atomically(directory / file_name, lambda path: faiss.write_index(index, str(path)))
    final = IndexMeta(**{**asdict(meta), "file": file_name, "ntotal": int(index.ntotal)})
    text = json.dumps(asdict(final), indent=2)

    def write_meta(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    _write_bytes_atomically(directory / f"{name}.json", write_meta)
    _fsync_dir(directory)
    for old in [*directory.glob(f"{name}-r*.faiss"), *directory.glob(f"{name}-r*.ivfdata")]:
        if old.name not in (file_name, final.lists_file):
            # Readers that mapped an old lists file keep reading it: Linux frees it when they unmap.
            old.unlink(missing_ok=True)
    for shards in directory.glob(f".{name}-shards-*"):
        shutil.rmtree(shards, ignore_errors=True)  # left by a build killed before it merged
    # Temporary files of a writer killed mid-write (SIGKILL skips its cleanup). Builds and reindexes hold
    # the data dir's writer lock, so no other writer's file can be in flight here.
    for stale in [*directory.glob(f".{name}-r*.faiss.*.tmp"), *directory.glob(f".{name}.json.*.tmp")]:
        stale.unlink(missing_ok=True)
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
    invlists = _lists_of(index)
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


def trained_index(source: VectorSource, config: IndexConfig, spec: IndexSpec) -> tuple[faiss.Index, int]:
    """An empty index of the given shape, trained on a seeded sample of ``source`` where the shape needs
    training (IVF, and scalar-quantised codes), and the number of vectors it was trained on."""
    index = faiss.index_factory(source.dim, spec.factory_string, faiss.METRIC_INNER_PRODUCT)
    trained_on = 0
    if not index.is_trained:
        ids, _ = source.item_ids()
        rng = np.random.default_rng(TRAIN_SEED)
        # k-means (IVF, PQ) wants up to max_train_points, and never fewer than min_points_per_list per
        # list (faiss warns below 39: 40,000 lists at 100 M photos train on 1.56 M vectors, 2.4 GB).
        # A scalar quantiser only learns each dimension's range, which a small sample gives as well,
        # without holding 300 MB of training vectors.
        if spec.is_ivf:
            wanted = max(config.max_train_points, config.min_points_per_list * spec.nlist)
        else:
            wanted = min(config.max_train_points, SCALAR_TRAIN_POINTS)
        items = min(len(ids), max(1, wanted // source.vectors_per_item))
        sample = np.sort(rng.choice(ids, size=items, replace=False))
        training = np.concatenate([vectors for _, vectors in source.vectors_for(sample)])
        _train(index, training, config.use_gpu and spec.is_ivf)
        trained_on = len(training)
    return index, trained_on


def build_index(source: VectorSource, config: IndexConfig, spec: IndexSpec) -> tuple[faiss.Index, int]:
    """A new in-RAM index of the given shape holding every vector of ``source``; also returns the number
    of vectors it was trained on."""
    index, trained_on = trained_index(source, config, spec)
    for ids, vectors in source.iter_vectors():
        index.add_with_ids(vectors, ids)
    set_nprobe(index, config.nprobe)
    return index, trained_on


def shard_vectors(index: faiss.Index) -> int:
    """Vectors per shard of an on-disk build of ``index``'s shape (``SHARD_BYTES`` of codes and ids)."""
    return max(1, SHARD_BYTES // (faiss.extract_index_ivf(index).code_size + 8))


def write_shards(
    template: npt.NDArray[np.uint8],
    chunks: Iterable[tuple[Ids, npt.NDArray[np.float32]]],
    directory: Path,
    per_shard: int,
) -> list[Path]:
    """Fill copies of the empty trained index ``template`` (``faiss.serialize_index``) with ``chunks``,
    ``per_shard`` vectors each (the last one fewer), and write each to ``directory/shard-NNNNN.faiss``.

    A shard depends only on the template and the vectors it is given, so shards of disjoint catalog ranges
    can be written on as many machines as there are, and merged where the index is served.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    shard: faiss.Index | None = None

    def flush(full: faiss.Index) -> None:
        paths.append(_write_shard(full, directory / f"shard-{len(paths):05d}.faiss"))

    for ids, vectors in chunks:
        start = 0
        while start < len(ids):
            if shard is None:
                shard = faiss.deserialize_index(template)
            stop = start + per_shard - int(shard.ntotal)
            shard.add_with_ids(vectors[start:stop], ids[start:stop])
            start = stop
            if shard.ntotal >= per_shard:
                flush(shard)
                shard = None
    if shard is not None:
        flush(shard)
    return paths


def _write_shard(shard: faiss.Index, path: Path) -> Path:
    faiss.write_index(shard, str(path))
    return path


def _disown(swig_object: Any) -> None:
    """Hand a SWIG object's C++ memory to the faiss object it was given to."""
    swig_object.this.disown()


def _lists_of(index: faiss.Index) -> faiss.InvertedLists:
    invlists = faiss.extract_index_ivf(index).invlists
    if invlists is None:
        raise IndexFileError("IVF index has no inverted lists")
    return invlists


def merge_lists(index: faiss.Index, sources: Sequence[faiss.InvertedLists], lists_path: Path) -> None:
    """Give the empty trained ``index`` the concatenation of ``sources``' inverted lists, held in a new
    ``OnDiskInvertedLists`` file at ``lists_path`` (one sequential copy of their codes and ids)."""
    ivf = faiss.extract_index_ivf(index)
    if index.ntotal != 0:
        raise IndexFileError("on-disk lists can only be merged into an empty index")
    # An absolute path: the header records it, and readers need not share the writer's working directory.
    invlists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_path.resolve()))
    pointers = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]
    for lists in sources:
        pointers.push_back(lists)
    with _stdout_to_stderr():
        ntotal = invlists.merge_from_multiple(pointers.data(), pointers.size(), False)
    ivf.replace_invlists(invlists, True)
    _disown(invlists)  # the index owns it now
    index.ntotal = ivf.ntotal = ntotal


def merge_shards(index: faiss.Index, shard_paths: Sequence[Path], lists_path: Path) -> None:
    """:func:`merge_lists` of the shard files written by :func:`write_shards`.

    faiss's ``contrib.ondisk.merge_ondisk`` does the same but leaks the shards' mapped lists (it disowns
    them to keep them alive), which holds the deleted shard files' disk space until the process exits;
    here the shard indexes stay alive until the merge is done and are then freed.
    """
    # IO_FLAG_MMAP: the shards' lists are paged in as the merge reads them, never all held at once.
    shards = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP) for path in shard_paths]
    merge_lists(index, [_lists_of(shard) for shard in shards], lists_path)
    del shards


def _lists_file_name(name: str, revision: int) -> str:
    return f"{name}-r{revision}-{uuid.uuid4().hex[:8]}.ivfdata"


def build_index_on_disk(
    source: VectorSource, config: IndexConfig, spec: IndexSpec, directory: Path, lists_name: str
) -> tuple[faiss.Index, int]:
    """A new IVF index of every vector of ``source`` whose lists are in ``directory/lists_name``: train
    once, write shards of the catalog, merge their lists on disk, delete the shards. The lists file is
    unpublished until :func:`write_index` points ``<name>.json`` at it."""
    index, trained_on = trained_index(source, config, spec)
    shard_dir = directory / f".{source.name}-shards-{uuid.uuid4().hex[:8]}"
    try:
        paths = write_shards(faiss.serialize_index(index), source.iter_vectors(), shard_dir, shard_vectors(index))
        logger.info("%s index: merging %d shards into %s", source.name, len(paths), lists_name)
        merge_shards(index, paths, directory / lists_name)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    set_nprobe(index, config.nprobe)
    return index, trained_on


def kept_shards(
    index: faiss.Index, removed: Ids, template: npt.NDArray[np.uint8], directory: Path, per_shard: int
) -> list[Path]:
    """The entries of ``index``'s lists whose ids are not in ``removed``, written list by list as shards
    of the empty trained index ``template`` (``per_shard`` entries or so each): codes are copied, never
    re-encoded, and never more than one shard is held in RAM."""
    directory.mkdir(parents=True, exist_ok=True)
    lists = _lists_of(index)
    removed = np.sort(np.asarray(removed, dtype=np.int64))
    paths: list[Path] = []
    shard: faiss.Index | None = None
    for list_no in range(lists.nlist):
        if lists.list_size(list_no) == 0:
            continue
        ids, codes = get_invlist(lists, list_no)
        keep = ~np.isin(ids, removed, assume_unique=False)
        kept_ids = np.ascontiguousarray(ids[keep], dtype=np.int64)
        if len(kept_ids) == 0:
            continue
        kept_codes = np.ascontiguousarray(codes.reshape(len(ids), -1)[keep])
        if shard is None:
            shard = faiss.deserialize_index(template)
        _lists_of(shard).add_entries(list_no, len(kept_ids), faiss.swig_ptr(kept_ids), faiss.swig_ptr(kept_codes))
        shard.ntotal += len(kept_ids)
        faiss.extract_index_ivf(shard).ntotal = shard.ntotal
        if shard.ntotal >= per_shard:
            paths.append(_write_shard(shard, directory / f"kept-{len(paths):05d}.faiss"))
            shard = None
    if shard is not None:
        paths.append(_write_shard(shard, directory / f"kept-{len(paths):05d}.faiss"))
    return paths


def _updated_on_disk(
    index: faiss.Index,
    directory: Path,
    meta: IndexMeta,
    source: VectorSource,
    to_remove: Ids,
    to_add: Ids,
    lists_name: str,
) -> faiss.Index:
    """A new on-disk index in ``directory/lists_name``: ``index``'s entries less the vectors of the photos
    ``to_remove``, plus those of the photos ``to_add``, with the same quantizer and codec.

    Published lists are never written to: readers map them, and faiss's OnDiskInvertedLists does not keep
    its free-space map after a merge, so removing from or adding to merged lists corrupts them. The kept
    entries are copied (a sequential pass over the codes, no re-encoding) into shards, the new vectors
    encoded into more, and all merged into a new file, published like a rebuild.
    """
    empty = _empty_copy(directory, meta)
    template = faiss.serialize_index(empty)
    per_shard = shard_vectors(empty)
    shard_dir = directory / f".{source.name}-shards-{uuid.uuid4().hex[:8]}"
    try:
        paths = kept_shards(index, source.vector_ids_of(to_remove), template, shard_dir / "kept", per_shard)
        paths += write_shards(template, source.vectors_for(to_add), shard_dir / "added", per_shard)
        merge_shards(empty, paths, directory / lists_name)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    set_nprobe(empty, meta.nprobe)
    return empty


def _empty_copy(directory: Path, meta: IndexMeta) -> faiss.Index:
    """The trained quantizer and codec of a written on-disk index, with empty in-RAM lists."""
    index = _read_index(directory, meta)
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)  # frees (unmaps) the read-only on-disk lists
    _disown(empty)
    index.ntotal = ivf.ntotal = 0
    return index


def _caught_up(
    source: VectorSource,
    catalog_id: str,
    revision: int,
    loaded: LoadedIndex | None,
    config: IndexConfig,
    directory: Path | None = None,
) -> tuple[faiss.Index, IndexMeta, SyncReport]:
    """``loaded`` brought up to the catalog (or a fresh index when none fits). ``directory`` is where a
    writer may put new on-disk lists; readers (None) never write, so they serve an on-disk index as the
    last build wrote it (the engine drops ids no longer in the catalog) rather than copy gigabytes."""
    ids, vector_revisions = source.item_ids()
    desired = choose_index_spec(len(ids) * source.vectors_per_item, source.dim, config)
    usable = loaded is not None and loaded.meta.catalog_id == catalog_id and loaded.meta.dim == source.dim
    rebuild = loaded is None or not usable or needs_rebuild(loaded.meta.spec, desired, config.retrain_growth)
    if rebuild and directory is None and desired.on_disk:
        if loaded is None or not usable:
            raise IndexFileError(
                f"the {source.name} index is built on disk and none matching the catalog is written yet: "
                "wait for the running build or run `python -m indexer reindex`"
            )
        logger.warning("the %s index needs a rebuild on disk; serving the last one written", source.name)
        rebuild = False
    if rebuild or loaded is None:
        lists_name = ""
        if desired.on_disk and directory is not None:  # (a reader was turned away above)
            directory.mkdir(parents=True, exist_ok=True)
            lists_name = _lists_file_name(source.name, revision)
            index, trained_on = build_index_on_disk(source, config, desired, directory, lists_name)
        else:
            index, trained_on = build_index(source, config, desired)
        meta = _new_meta(catalog_id, source.dim, revision, desired, trained_on, config.nprobe, len(ids))
        meta = replace(meta, lists_file=lists_name)
        report = SyncReport(len(ids), 0, rebuilt=True, ntotal=int(index.ntotal), spec=desired, wrote=True)
        return index, meta, report

    index, meta = loaded.index, loaded.meta
    present = np.unique(source.items_of(index_ids(index)))
    stale = ids[vector_revisions > meta.revision]
    to_remove = np.union1d(np.setdiff1d(present, ids), np.intersect1d(stale, present))
    to_add = np.union1d(np.setdiff1d(ids, present), stale)
    changed = len(to_remove) > 0 or len(to_add) > 0 or meta.revision != revision or meta.nprobe_floor != config.nprobe
    if meta.on_disk and (len(to_remove) or len(to_add)):
        if directory is None:
            logger.warning(
                "serving the on-disk %s index of catalog revision %d (catalog is at %d: %d photos to add, "
                "%d to remove) until the build writes the next one",
                source.name,
                meta.revision,
                revision,
                len(to_add),
                len(to_remove),
            )
            return index, meta, SyncReport(0, 0, rebuilt=False, ntotal=int(index.ntotal), spec=meta.spec, wrote=False)
        lists_name = _lists_file_name(source.name, revision)
        index = _updated_on_disk(index, directory, meta, source, to_remove, to_add, lists_name)
        meta = replace(meta, lists_file=lists_name)
    elif len(to_remove):
        index.remove_ids(faiss.IDSelectorBatch(source.vector_ids_of(to_remove)))
    if not meta.on_disk:
        for chunk_ids, vectors in source.vectors_for(to_add):
            index.add_with_ids(vectors, chunk_ids)
    if changed:
        meta = replace(meta, revision=revision, ntotal=int(index.ntotal), items=len(ids))
        if meta.nprobe_floor != config.nprobe:
            meta = replace(meta, nprobe=config.nprobe, nprobe_floor=config.nprobe, recall_ntotal=0)
    report = SyncReport(
        len(to_add), len(to_remove), rebuilt=False, ntotal=int(index.ntotal), spec=meta.spec, wrote=changed
    )
    return index, meta, report


def _source(catalog: Catalog, source: VectorSource | None) -> tuple[VectorSource, str]:
    provenance = catalog.provenance()
    if provenance is None:
        raise IndexFileError("the catalog is empty: build an index first")
    return (source if source is not None else GlobalVectors(catalog, provenance.dim)), provenance.catalog_id


def current_index(
    catalog: Catalog, data_dir: Path, config: IndexConfig, source: VectorSource | None = None
) -> tuple[faiss.Index, IndexMeta]:
    """The index as the catalog says it should be, in memory, without writing anything: what a reader
    uses while a build is running or after one was killed before it wrote the FAISS files."""
    source, catalog_id = _source(catalog, source)
    loaded = load_index(index_dir(data_dir), name=source.name)
    index, meta, _ = _caught_up(source, catalog_id, catalog.revision(), loaded, config)
    set_nprobe(index, meta.nprobe)
    return index, meta


def sync_index(catalog: Catalog, data_dir: Path, config: IndexConfig, source: VectorSource | None = None) -> SyncReport:
    """Bring the FAISS files up to the catalog: add new vectors, drop removed or re-embedded ones, and
    rebuild (retrain) when the collection outgrew the index's shape. Writes only when something changed;
    re-measures recall (and re-tunes nprobe) when the collection changed by 10% since it was measured."""
    source, catalog_id = _source(catalog, source)
    try:
        loaded = load_index(index_dir(data_dir), name=source.name)
    except IndexFileError as error:
        logger.warning("rebuilding the %s index: %s", source.name, error)
        loaded = None
    directory = index_dir(data_dir)
    index, meta, report = _caught_up(source, catalog_id, catalog.revision(), loaded, config, directory)
    if not report.wrote:
        return report
    if meta.recall_at_10 is None or abs(meta.ntotal - meta.recall_ntotal) >= 0.1 * max(meta.recall_ntotal, 1):
        meta = tune_nprobe(index, meta, source, config.target_recall, config.recall_margin)
    write_index(index_dir(data_dir), index, meta, source.name)
    return report


def rebuild_index(
    catalog: Catalog, data_dir: Path, config: IndexConfig, source: VectorSource | None = None
) -> SyncReport:
    """Throw the FAISS files away and rebuild them from the catalog (``indexer reindex``)."""
    source, catalog_id = _source(catalog, source)
    index, meta, report = _caught_up(source, catalog_id, catalog.revision(), None, config, index_dir(data_dir))
    meta = tune_nprobe(index, meta, source, config.target_recall, config.recall_margin)
    write_index(index_dir(data_dir), index, meta, source.name)
    return report


RECALL_QUERIES = 500
RECALL_K = 10
# Stop doubling nprobe of an IVF-PQ index when recall@10 gains less than this.
RECALL_PLATEAU = 0.005


def exact_top_k(source: VectorSource, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], Ids]:
    """Exact inner-product top-k over every vector of ``source``, streamed in chunks (on GPUs when present)."""
    from faiss.contrib.exhaustive_search import knn_ground_truth

    chunk_ids: list[Ids] = []

    def blocks() -> Iterator[npt.NDArray[np.float32]]:
        for ids, vectors in source.iter_vectors():
            chunk_ids.append(ids)
            yield vectors

    scores, positions = knn_ground_truth(queries, blocks(), k, metric_type=faiss.METRIC_INNER_PRODUCT)
    all_ids = np.concatenate(chunk_ids) if chunk_ids else np.empty(0, dtype=np.int64)
    return scores, np.where(positions >= 0, all_ids[np.clip(positions, 0, None)], -1)


def recall_at_k(
    index: faiss.Index,
    queries: npt.NDArray[np.float32],
    exact_scores: npt.NDArray[np.float32],
    exact_ids: Ids | None = None,
) -> float:
    """Share of the exact top-k that ``index`` returns. Ties count: exact copies have equal scores, and
    any of them is a right answer, so a result counts when it scores at least the exact k-th score.
    Compressed codes only approximate the scores (often above the exact ones), so they cannot vouch for a
    tie: with ``exact_ids`` given, a result counts only when it is one of the exact top k."""
    k = exact_scores.shape[1]
    scores, ids = index.search(queries, k)
    if exact_ids is not None:
        hits = sum(len(set(found.tolist()) & set(truth.tolist())) for found, truth in zip(ids, exact_ids, strict=True))
        return hits / exact_scores.size
    kth = exact_scores[:, -1:] - 1e-5
    return float(np.minimum((scores >= kth).sum(axis=1), k).sum() / exact_scores.size)


@dataclass(frozen=True)
class RecallSample:
    """Seeded queries drawn from the collection and their exact top-``RECALL_K`` (scores and ids)."""

    queries: npt.NDArray[np.float32]
    exact_scores: npt.NDArray[np.float32]
    exact_ids: Ids


def recall_sample(source: VectorSource) -> RecallSample:
    """``RECALL_QUERIES`` seeded vectors of the collection and their exact top-k, which tuning measures on."""
    ids, _ = source.item_ids()
    rng = np.random.default_rng(TRAIN_SEED + 1)
    items = np.sort(rng.choice(ids, size=min(len(ids), RECALL_QUERIES), replace=False))
    candidates = np.concatenate([vectors for _, vectors in source.vectors_for(items)])
    queries = candidates[np.sort(rng.choice(len(candidates), size=min(RECALL_QUERIES, len(candidates)), replace=False))]
    exact_scores, exact_ids = exact_top_k(source, queries, RECALL_K)
    return RecallSample(queries, exact_scores, exact_ids)


def tune_nprobe(
    index: faiss.Index, meta: IndexMeta, source: VectorSource, target: float, margin: float = 0.0
) -> IndexMeta:
    """Measure recall@10 on a seeded sample of the collection against exact search and, for IVF, find
    the smallest nprobe at or above the configured floor whose recall reaches ``target + margin`` (the
    margin covers the sample's error): double from the floor until it does (or every list is visited, or,
    for product-quantised codes, another doubling gains less than ``RECALL_PLATEAU``), then bisect the
    last doubling (recall never falls as more lists are visited).
    Exact indexes of full vectors have recall 1 by construction; compressed ones are measured too."""
    ntotal = int(index.ntotal)
    if ntotal <= RECALL_K or (meta.kind == "flat" and meta.codec == "Flat"):
        return replace(meta, recall_at_10=1.0, recall_ntotal=ntotal)
    sample = recall_sample(source)
    compressed = meta.kind == "ivf_pq" or meta.codec != "Flat"

    def recall_now() -> float:
        return recall_at_k(index, sample.queries, sample.exact_scores, sample.exact_ids if compressed else None)

    if meta.kind == "flat":
        recall = recall_now()
        return replace(meta, recall_at_10=round(recall, 4), recall_ntotal=ntotal)
    ivf = faiss.extract_index_ivf(index)
    required = min(1.0, target + margin)
    measured: dict[int, float] = {}

    def recall_at(nprobe: int) -> float:
        if nprobe not in measured:
            ivf.nprobe = nprobe
            measured[nprobe] = recall_now()
        return measured[nprobe]

    nprobe = min(max(meta.nprobe_floor, 1), ivf.nlist)
    previous = 0
    while True:
        recall = recall_at(nprobe)
        if meta.kind == "ivf_pq" and previous and recall < measured[previous] + RECALL_PLATEAU:
            # Visiting more lists no longer helps: the product codes limit recall, and doubling on to
            # every list would make each query a scan of the whole collection.
            nprobe = previous
            break
        if recall >= required:
            failing = previous  # 0: the floor itself is enough
            while nprobe - failing > 1 and failing:
                middle = (failing + nprobe) // 2
                failing, nprobe = (failing, middle) if recall_at(middle) >= required else (middle, nprobe)
            break
        if nprobe >= ivf.nlist:
            break
        previous, nprobe = nprobe, min(ivf.nlist, nprobe * 2)
    ivf.nprobe = nprobe
    recall = measured[nprobe]
    logger.info(
        "%s index: recall@10 %.3f at nprobe %d of %d lists (wanted %.3f)",
        source.name,
        recall,
        nprobe,
        ivf.nlist,
        required,
    )
    return replace(meta, nprobe=nprobe, recall_at_10=round(recall, 4), recall_ntotal=ntotal)


def _new_meta(
    catalog_id: str, dim: int, revision: int, spec: IndexSpec, trained_on: int, nprobe: int, items: int
) -> IndexMeta:
    return IndexMeta(
        file="",
        catalog_id=catalog_id,
        revision=revision,
        ntotal=0,
        dim=dim,
        kind=spec.kind,
        nlist=spec.nlist,
        pq_bytes=spec.pq_bytes,
        codec=spec.codec,
        trained_on=trained_on,
        nprobe=nprobe,
        nprobe_floor=nprobe,
        items=items,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def check_index(catalog: Catalog, data_dir: Path, sample: int = 200, source: VectorSource | None = None) -> list[str]:
    """Every way the FAISS files disagree with the catalog (empty when they agree)."""
    provenance = catalog.provenance()
    if provenance is None:
        return ["the catalog has no provenance: no index was ever built here"]
    if source is None:
        source = GlobalVectors(catalog, provenance.dim)
    name = source.name
    directory = index_dir(data_dir)
    try:
        loaded = load_index(directory, name=name)
    except IndexFileError as error:
        return [str(error)]
    if loaded is None:
        return [f"no {name} index files in {directory}: run `python -m indexer reindex`"]
    index, meta = loaded.index, loaded.meta
    problems: list[str] = []
    if meta.catalog_id != provenance.catalog_id:
        problems.append(f"{name} index belongs to catalog {meta.catalog_id}, not {provenance.catalog_id}")
    if meta.dim != source.dim or index.d != source.dim:
        problems.append(f"{name} index has dimension {index.d}, catalog vectors have {source.dim}")
        return problems
    revision = catalog.revision()
    if meta.revision != revision:
        problems.append(f"{name} index reflects catalog revision {meta.revision}, catalog is at {revision}")
    items, _ = source.item_ids()
    expected = source.vector_ids_of(items)
    present = index_ids(index)
    unique, counts = np.unique(present, return_counts=True)
    if (counts > 1).any():
        first_repeat = int(unique[counts > 1][0])
        problems.append(
            f"{int((counts > 1).sum())} ids stored more than once in the {name} index (first: {first_repeat})"
        )
    missing = np.setdiff1d(expected, unique)
    extra = np.setdiff1d(unique, expected)
    if len(missing):
        first = int(source.items_of(missing[:1])[0])
        problems.append(
            f"{len(missing)} vectors of indexed photos missing from the {name} index (first photo id: {first})"
        )
    if len(extra):
        first = int(source.items_of(extra[:1])[0])
        problems.append(
            f"{len(extra)} {name} index vectors with no indexed photo in the catalog (first photo id: {first})"
        )
    if index.ntotal != len(expected):
        problems.append(f"{name} index holds {index.ntotal} vectors, the catalog has {len(expected)}")
    # Only photos with every vector present: reconstructing a missing one would raise, not report.
    present_items = np.setdiff1d(np.intersect1d(items, np.unique(source.items_of(unique))), source.items_of(missing))
    problems.extend(_check_vectors(source, index, meta, present_items, sample))
    return problems


def _check_vectors(source: VectorSource, index: faiss.Index, meta: IndexMeta, items: Ids, sample: int) -> list[str]:
    """Compare the stored vectors of a seeded sample of photos with the catalog's."""
    if len(items) == 0:
        return []
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(items, size=min(max(1, sample // source.vectors_per_item), len(items)), replace=False))
    if meta.kind != "flat":
        # reconstruct() by id needs a direct map; a hashtable one takes arbitrary (catalog) ids.
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    # Compressed codes only approximate a vector; full vectors must match to rounding.
    threshold = 0.9999 if meta.codec == "Flat" and meta.kind != "ivf_pq" else 0.8
    bad: list[int] = []
    for chunk_ids, vectors in source.vectors_for(picked):
        for vector_id, vector in zip(chunk_ids, vectors, strict=True):
            if float(np.dot(index.reconstruct(int(vector_id)), vector)) < threshold:
                bad.append(int(vector_id))
    if bad:
        first = int(source.items_of(np.asarray(bad[:1]))[0])
        return [f"{len(bad)} sampled {source.name} index vectors differ from the catalog's (first photo id: {first})"]
    return []
