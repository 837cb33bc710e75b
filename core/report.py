"""``indexer status`` and ``indexer verify``: what the collection holds, and whether its parts agree."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.catalog import STATUS_INDEXED, Catalog, redact_url
from core.catalog.calibrations import Calibration, calibration_due, current_calibration
from core.catalog.decisions import decision_counts
from core.catalog.metadata import metadata_counts
from core.config import LoupeConfig
from core.errors import CatalogError, IndexFileError
from core.grid_audit import audit_grids
from core.index.files import IndexMeta, index_dir, read_meta
from core.index.source import patch_vectors_of
from core.index.verify import check_index
from core.settings import Origins, origins_to_dict
from core.vector_makers import makers_of

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = "built with RANDOM weights: similarity results are not semantic (tests and benchmarks only)"


def collection_status(
    config: LoupeConfig, *, with_failures: bool = False, origins: Origins | None = None
) -> dict[str, Any]:
    """The collection at a glance, as plain data (the ``status --json`` document); ``with_failures``
    adds every failed file with its reason and message; ``origins`` adds the models dir, the config file
    and where each location came from (see :mod:`core.settings`)."""
    catalog = Catalog.open(config.resolved_db_url, create=False)
    try:
        provenance = catalog.provenance()
        if provenance is None:
            raise CatalogError(f"the catalog at {redact_url(config.resolved_db_url)} is empty: build an index first")
        counts = catalog.counts()
        revision = catalog.revision()
        failures = catalog.failures_by_reason()
        failed_files = catalog.failures() if with_failures else []
        makers = makers_of(catalog)
        calibration = current_calibration(catalog, provenance)
        metadata = metadata_counts(catalog)
        decisions = decision_counts(catalog)
        grid_count, grid_bytes = catalog.patch_bytes()
    finally:
        catalog.close()
    try:
        meta = read_meta(index_dir(config.data_dir))
        patch_meta = read_meta(index_dir(config.data_dir), "patches") if provenance.patch_grid else None
    except IndexFileError as error:
        logger.warning("%s", error)
        meta = patch_meta = None
    status: dict[str, Any] = {
        "data_dir": str(config.data_dir.resolve()),
        "catalog": redact_url(config.resolved_db_url),
        "images": counts["images"],
        "indexed": counts[STATUS_INDEXED],
        "failed": counts["failed"],
        "failures_by_reason": failures,
        "vectors": meta.ntotal if meta is not None else 0,
        "model": provenance.model,
        "weights": provenance.weights_kind,
        "weights_sha256": provenance.weights_sha256,
        "weights_source": provenance.weights_source,
        "random_weights": provenance.weights_kind == "random",
        "image_size": provenance.image_size,
        "dim": provenance.dim,
        "vector_makers": [dataclasses.asdict(maker) for maker in makers],
        "index_type": meta.spec.factory_string if meta is not None else None,
        "nlist": meta.nlist if meta is not None else 0,
        "nprobe": meta.nprobe if meta is not None else 0,
        "recall_at_10": meta.recall_at_10 if meta is not None else None,
        "catalog_revision": revision,
        "index_revision": meta.revision if meta is not None else None,
        "index_current": meta is not None and meta.revision == revision,
        "index_written_at": meta.written_at if meta is not None else None,
        "index_on_disk": meta is not None and meta.on_disk,
        "index_lists_bytes": _lists_bytes(config, meta),
    }
    if origins is not None:
        status.update(origins_to_dict(config, origins))
    status["patches"] = _patch_status(config, provenance.patch_grid, patch_meta, grid_count, grid_bytes)
    status["calibration"] = _calibration_status(config, calibration, counts[STATUS_INDEXED])
    status["photo_metadata"] = metadata
    status["duplicate_decisions"] = decisions
    if with_failures:
        status["failures"] = [
            {"path": path, "reason": reason, "message": message} for path, reason, message in failed_files
        ]
    if status["random_weights"]:
        status["warning"] = RANDOM_WEIGHTS_WARNING
    return status


def _calibration_status(config: LoupeConfig, calibration: Calibration | None, indexed: int) -> dict[str, Any]:
    """The near-duplicate threshold in use and how it was calibrated (or why it is not)."""
    settings = config.search.calibration
    if calibration is not None:
        return {**calibration.to_dict(), "due": calibration_due(calibration, indexed, settings.growth)}
    reason = (
        f"{indexed} indexed photos, calibration needs {settings.min_photos}"
        if indexed < settings.min_photos
        else "not calibrated yet: `loupe calibrate` (or the next build) does it"
    )
    return {
        "calibrated": False,
        "threshold": config.search.near_duplicate_threshold,
        "precision": None,
        "recall": None,
        "per_edit": {},
        "reason": reason,
    }


def _lists_bytes(config: LoupeConfig, meta: IndexMeta | None) -> int:
    """Size of an on-disk index's inverted-lists file (0 for an in-RAM index)."""
    if meta is None or not meta.on_disk:
        return 0
    try:
        return (index_dir(config.data_dir) / meta.lists_file).stat().st_size
    except OSError:
        return 0


def storage_line(status: dict[str, Any]) -> str:
    """How the index is held: ``in RAM`` or ``on disk, X GB lists`` (memory-mapped by searches)."""
    if not status.get("index_on_disk"):
        return "in RAM"
    return f"on disk, {status['index_lists_bytes'] / 1e9:.2f} GB lists (memory-mapped)"


def _patch_status(
    config: LoupeConfig, grid: int, meta: IndexMeta | None, grid_count: int, grid_bytes: int
) -> dict[str, Any]:
    """Patch vectors at a glance. ``bytes_per_image`` is the index files' size over its photos, which is
    what the index costs in memory once loaded (in page cache, for lists on disk);
    ``catalog_bytes_per_image`` is what the stored grids take in the catalog (their codes, without the
    database's own few percent of row and page overhead)."""
    if grid == 0:
        return {"enabled": False}
    index_bytes = (index_dir(config.data_dir) / meta.file).stat().st_size if meta is not None else 0
    lists_bytes = _lists_bytes(config, meta)
    index_bytes += lists_bytes
    items = meta.items if meta is not None else 0
    return {
        "enabled": True,
        "grid": grid,
        "vectors": meta.ntotal if meta is not None else 0,
        "images": items,
        "index_type": meta.spec.factory_string if meta is not None else None,
        "index_bytes": index_bytes,
        "bytes_per_image": round(index_bytes / items) if items else 0,
        "catalog_bytes": grid_bytes,
        "catalog_bytes_per_image": round(grid_bytes / grid_count) if grid_count else 0,
        "nprobe": meta.nprobe if meta is not None else 0,
        "recall_at_10": meta.recall_at_10 if meta is not None else None,
        "index_on_disk": meta is not None and meta.on_disk,
        "index_lists_bytes": lists_bytes,
    }


@dataclass(frozen=True)
class VerifyResult:
    problems: list[str]
    checked_rows: int
    checked_vectors: int
    # What repairs the problems, beyond ``reindex`` rebuilding the index files.
    repairs: list[str] = field(default_factory=list)


def _check_rows(catalog: Catalog, dim: int) -> list[str]:
    problems: list[str] = []
    for ids, vectors in catalog.iter_embeddings(dim):
        norms = np.linalg.norm(vectors, axis=1)
        bad = ids[np.abs(norms - 1.0) > 1e-3]
        if len(bad):
            problems.append(f"{len(bad)} stored embeddings are not unit length (first id: {int(bad[0])})")
    return problems


def verify_collection(config: LoupeConfig) -> VerifyResult:
    """Check the catalog rows, that the FAISS files hold exactly the catalog's vectors and, with patches,
    that every indexed photo has its patch grid and its cells in the patch index."""
    catalog = Catalog.open(config.resolved_db_url, create=False)
    try:
        provenance = catalog.provenance()
        if provenance is None:
            return VerifyResult(["the catalog has no provenance: no index was ever built here"], 0, 0)
        try:
            problems = _check_rows(catalog, provenance.dim)
        except CatalogError as error:
            problems = [str(error)]
        problems.extend(check_index(catalog, config.data_dir))
        patches = patch_vectors_of(catalog)
        if patches is not None:
            problems.extend(check_index(catalog, config.data_dir, source=patches))
        audit = audit_grids(catalog, config.data_dir)
        if audit is not None:
            problems.extend(audit.problems())
        counts = catalog.counts()
    finally:
        catalog.close()
    return VerifyResult(
        problems=problems,
        checked_rows=counts["images"],
        checked_vectors=counts[STATUS_INDEXED],
        repairs=[] if audit is None else audit.repairs(),
    )
