"""On-disk IVF indexes: shards of the catalog written out and their inverted lists merged into one file.

Past ``index.on_disk_above`` vectors an IVF index is built on disk, for collections whose codes would
crowd out RAM: the quantizer is trained once, shards of the catalog are added to empty copies of it and
written out, and the shards' inverted lists are merged into one ``OnDiskInvertedLists`` file
(``<name>-r<revision>-<id>.ivfdata``) beside the ``.faiss`` header that points at it (the recipe of
faiss ``contrib/ondisk.py`` and ``demos/demo_ondisk_ivf.py``). Searches memory-map the lists read-only,
so RAM holds the quantizer and whatever pages the OS keeps cached. Updates never touch a published
lists file: they copy it (a sequential copy of the codes, no re-encoding), remove and add on the copy,
and publish it like a rebuild (:func:`core.index.files.write_index`).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from faiss.contrib.inspect_tools import get_invlist

from core.config import IndexConfig
from core.errors import IndexFileError
from core.index.build import trained_index
from core.index.files import Ids, IndexMeta, lists_of, read_index, stdout_to_stderr
from core.index.policy import IndexSpec, set_nprobe
from core.index.source import VectorSource

logger = logging.getLogger(__name__)

# Vectors per shard of an on-disk build: a shard's codes and ids are held in RAM until it is written.
SHARD_BYTES = 256 << 20


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
    with stdout_to_stderr():
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
    merge_lists(index, [lists_of(shard) for shard in shards], lists_path)
    del shards


def lists_file_name(name: str, revision: int) -> str:
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
    lists = lists_of(index)
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
        lists_of(shard).add_entries(list_no, len(kept_ids), faiss.swig_ptr(kept_ids), faiss.swig_ptr(kept_codes))
        shard.ntotal += len(kept_ids)
        faiss.extract_index_ivf(shard).ntotal = shard.ntotal
        if shard.ntotal >= per_shard:
            paths.append(_write_shard(shard, directory / f"kept-{len(paths):05d}.faiss"))
            shard = None
    if shard is not None:
        paths.append(_write_shard(shard, directory / f"kept-{len(paths):05d}.faiss"))
    return paths


def updated_on_disk(
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
    index = read_index(directory, meta)
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)  # frees (unmaps) the read-only on-disk lists
    _disown(empty)
    index.ntotal = ivf.ntotal = 0
    return index
