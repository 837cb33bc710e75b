"""The index files on disk: pointer files, atomic writes, reading the current index.

Vector ids are catalog primary keys (``add_with_ids``), never array positions. ``global.json`` (and
``patches.json``) points at the current ``.faiss`` file and records the catalog revision it reflects;
writing a new file (temporary path, fsync, rename) and then renaming the pointer over the old one is the
commit, so a kill at any moment leaves either the old or the new index, never half of one. An on-disk
index's header names its ``.ivfdata`` lists file, which readers memory-map read-only.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from faiss.contrib.inspect_tools import get_invlist

from core.durable import fsync_dir
from core.errors import IndexFileError
from core.index.policy import IndexKind, IndexSpec, set_nprobe

Ids = npt.NDArray[np.int64]
META_FILE = "global.json"
# Open on-disk lists relative to the header's folder (the data dir may move) and never write to them.
ON_DISK_READ_FLAGS = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY


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


def load_index(directory: Path, nprobe: int | None = None, name: str = "global") -> LoadedIndex | None:
    """Read the current index, or None when none was written yet."""
    meta = read_meta(directory, name)
    if meta is None:
        return None
    index = read_index(directory, meta)
    set_nprobe(index, nprobe if nprobe is not None else meta.nprobe)
    return LoadedIndex(index=index, meta=meta)


def read_index(directory: Path, meta: IndexMeta) -> faiss.Index:
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
        on_disk: Any = faiss.downcast_InvertedLists(lists_of(index))
        if on_disk.filename == str(lists):
            return index
    except RuntimeError:
        pass
    try:
        with stdout_to_stderr():
            return faiss.read_index(str(path), ON_DISK_READ_FLAGS)
    except RuntimeError as error:
        raise IndexFileError(f"cannot read {path}: {error}") from error


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
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
    fsync_dir(directory)
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
    invlists = lists_of(index)
    parts = [get_invlist(invlists, list_no)[0] for list_no in range(ivf.nlist) if invlists.list_size(list_no) > 0]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def lists_of(index: faiss.Index) -> faiss.InvertedLists:
    invlists = faiss.extract_index_ivf(index).invlists
    if invlists is None:
        raise IndexFileError("IVF index has no inverted lists")
    return invlists
