"""Keeping the index files in step with the catalog, the source of truth.

:func:`sync_index` brings the files up to the catalog (adding, removing, retraining when the collection
outgrew the index's shape) and is safe to run after any crash; :func:`rebuild_index` throws them away
and builds them anew; :func:`current_index` is what a reader serves without writing anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from core.catalog import Catalog
from core.config import IndexConfig
from core.errors import IndexFileError
from core.index.build import build_index
from core.index.files import IndexMeta, LoadedIndex, index_dir, index_ids, load_index, write_index
from core.index.ondisk import build_index_on_disk, lists_file_name, updated_on_disk
from core.index.policy import IndexSpec, choose_index_spec, needs_rebuild, set_nprobe
from core.index.source import GlobalVectors, VectorSource
from core.index.tuning import tune_nprobe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_index` did."""

    added: int
    removed: int
    rebuilt: bool
    ntotal: int
    spec: IndexSpec
    wrote: bool


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
            lists_name = lists_file_name(source.name, revision)
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
        lists_name = lists_file_name(source.name, revision)
        index = updated_on_disk(index, directory, meta, source, to_remove, to_add, lists_name)
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
