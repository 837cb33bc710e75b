"""What a build did (:class:`BuildSummary`, summed from the committer's per-batch counts), and the
human-readable and JSON renderings of it and of the collection status."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.report import RANDOM_WEIGHTS_WARNING, storage_line

if TYPE_CHECKING:  # status and verify must not pay for importing torch
    from core.index.sync import SyncReport
    from indexer.calibrate import CalibrationOutcome
    from indexer.committer import BatchCounts


@dataclass
class BuildSummary:
    """What one build did. ``embedded`` counts images that went through the model."""

    scanned: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    copied: int = 0
    touched: int = 0
    # Unchanged photos read again because their patch grid was missing from the catalog.
    regridded: int = 0
    removed: int = 0
    # Catalog rows dropped because an exclude pattern (--exclude, scan.exclude) now matches their file.
    excluded: int = 0
    failed: int = 0
    # Scanned files that failed in an earlier build and were not read again (unchanged since).
    unchanged_failed: int = 0
    embedded: int = 0
    model_batches: int = 0
    elapsed_s: float = 0.0
    processing_s: float = 0.0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    index: SyncReport | None = None
    patch_index: SyncReport | None = None
    weights_kind: str = ""
    image_size: int = 0
    precision: str = ""
    checked_cosine: float | None = None
    batch_size: int = 0
    # Photos the CPU model ran at once, one thread each (0: whole batches).
    parallel_images: int = 0
    compiled: bool = False
    # What the build did about the near-duplicate threshold's calibration (None: not asked).
    calibration: CalibrationOutcome | None = None
    # Photos indexed before their metadata was kept whose headers this build read (no model pass).
    metadata_read: int = 0
    # Catalog paths whose content new paths reused: moved or copied, told apart by :meth:`count_reuses`.
    reused_from: list[str] = field(default_factory=list, repr=False)

    @property
    def processed(self) -> int:
        return self.new + self.changed + self.moved + self.copied + self.touched + self.regridded + self.failed

    @property
    def images_per_s(self) -> float:
        """Files processed per second of processing (model loading and the final index write excluded)."""
        return self.processed / self.processing_s if self.processing_s > 0 else 0.0

    def add(self, counts: BatchCounts) -> None:
        """Count one committed batch in."""
        self.new += counts.new
        self.changed += counts.changed
        self.touched += counts.touched
        self.regridded += counts.regridded
        self.failed += counts.failed
        self.embedded += counts.embedded
        self.model_batches += counts.model_batches
        for reason, count in counts.reasons.items():
            self.failures_by_reason[reason] = self.failures_by_reason.get(reason, 0) + count
        self.reused_from.extend(counts.reused_from)

    def count_reuses(self, gone: Collection[str]) -> None:
        """Moved (the reused path is ``gone`` from the scan) or copied (it is still there)."""
        self.moved = sum(1 for source in self.reused_from if source in gone)
        self.copied = len(self.reused_from) - self.moved


def summary_to_dict(summary: BuildSummary) -> dict[str, Any]:
    """The ``build --json`` document."""
    index = summary.index
    data: dict[str, Any] = {
        "scanned": summary.scanned,
        "unchanged": summary.unchanged,
        "new": summary.new,
        "changed": summary.changed,
        "moved": summary.moved,
        "copied": summary.copied,
        "touched": summary.touched,
        "regridded": summary.regridded,
        "removed": summary.removed,
        "excluded": summary.excluded,
        "failed": summary.failed,
        "unchanged_failed": summary.unchanged_failed,
        "failures_by_reason": summary.failures_by_reason,
        "embedded": summary.embedded,
        "model_batches": summary.model_batches,
        "elapsed_s": round(summary.elapsed_s, 3),
        "processing_s": round(summary.processing_s, 3),
        "images_per_s": round(summary.images_per_s, 3),
        "weights": summary.weights_kind,
        "image_size": summary.image_size,
        "precision": summary.precision,
        "cosine_to_fp32": summary.checked_cosine,
        "batch_size": summary.batch_size,
        "parallel_images": summary.parallel_images,
        "compiled": summary.compiled,
        "metadata_read": summary.metadata_read,
        "index": None
        if index is None
        else {
            "type": index.spec.factory_string,
            "vectors": index.ntotal,
            "added": index.added,
            "removed": index.removed,
            "rebuilt": index.rebuilt,
        },
        "patch_index": None
        if summary.patch_index is None
        else {"type": summary.patch_index.spec.factory_string, "vectors": summary.patch_index.ntotal},
    }
    outcome = summary.calibration
    data["calibration"] = (
        None
        if outcome is None
        else {
            "status": outcome.status,
            "message": outcome.message,
            **({"result": outcome.calibration.to_dict()} if outcome.calibration is not None else {}),
        }
    )
    if summary.weights_kind == "random":
        data["warning"] = RANDOM_WEIGHTS_WARNING
    return data


def build_summary_lines(summary: BuildSummary) -> list[str]:
    """The closing summary of ``indexer build``."""
    lines = [
        f"scanned {summary.scanned} files in {summary.elapsed_s:.1f} s "
        f"({summary.processed} processed at {summary.images_per_s:.2f} images/s, {summary.embedded} through the model)",
        f"  new {summary.new}  changed {summary.changed}  moved {summary.moved}  copied {summary.copied}  "
        f"touched {summary.touched}  removed {summary.removed}  unchanged {summary.unchanged}  failed {summary.failed}"
        + (f"  excluded {summary.excluded} (left the catalog)" if summary.excluded else "")
        + (f"  regridded {summary.regridded} (patch grid was missing)" if summary.regridded else ""),
    ]
    if summary.embedded:
        checked = summary.checked_cosine
        lines.append(
            f"  {summary.precision} inference, batch {summary.batch_size}"
            + (f", {summary.parallel_images} photos at once" if summary.parallel_images else "")
            + (", compiled" if summary.compiled else "")
            + (f" (embeddings at cosine >= {checked:.4f} to fp32 on the first photos)" if checked is not None else "")
        )
    if summary.metadata_read:
        lines.append(
            f"  metadata (format, capture date, camera) read from the headers of {summary.metadata_read} photos "
            "indexed before it was kept (no model pass)"
        )
    if summary.unchanged_failed:
        lines.append(f"  {summary.unchanged_failed} unchanged files are still failed from earlier builds")
    if summary.failures_by_reason:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.failures_by_reason.items()))
        lines.append(f"  failures by reason: {reasons} (python -m indexer status --failures lists them)")
    if summary.index is not None:
        index = summary.index
        action = "rebuilt" if index.rebuilt else ("updated" if index.wrote else "unchanged")
        lines.append(f"  index {index.spec.factory_string}: {index.ntotal} vectors ({action})")
    if summary.patch_index is not None:
        patches = summary.patch_index
        action = "rebuilt" if patches.rebuilt else ("updated" if patches.wrote else "unchanged")
        lines.append(f"  patch index {patches.spec.factory_string}: {patches.ntotal} vectors ({action})")
    outcome = summary.calibration
    if outcome is not None:
        lines.append(f"  near-duplicates: {outcome.message}")
        if outcome.status == "calibrated" and outcome.calibration is not None:
            lines.append(f"    {calibration_line(outcome.calibration.to_dict())}")
    if summary.weights_kind == "random":
        lines.append(f"WARNING: {RANDOM_WEIGHTS_WARNING}")
    return lines


def calibration_line(calibration: dict[str, Any]) -> str:
    """A calibration (its ``to_dict``) in one line: threshold, precision, recall, sample, worst edits."""
    worst = sorted(calibration["per_edit"].items(), key=lambda item: item[1])[:3]
    return (
        f"score >= {calibration['threshold']:.4f}: precision {calibration['precision']:.3f} "
        f"(target {calibration['target_precision']}), recall {calibration['recall']:.3f} of "
        f"{calibration['edits']} edited copies of {calibration['sample']} photos"
        + (f"; hardest: {', '.join(f'{family} {value:.2f}' for family, value in worst)}" if worst else "")
    )


def maker_line(maker: dict[str, Any]) -> str:
    """One software/precision/device combination that made vectors, with its photo count."""
    return (
        f"torch {maker['torch_version']}, birder {maker['birder_version']}, {maker['precision']} on "
        f"{maker['device']}: {maker['images']} photos"
    )


def _from(status: dict[str, Any], key: str) -> str:
    """`` (from SOURCE)`` when the status says where a location came from."""
    source = status.get(key)
    if source is None or source == "default":
        return ""
    return f" (from {source})" if source in ("flag", "environment", "config file") else f" ({source})"


def status_lines(status: dict[str, Any]) -> list[str]:
    """``indexer status`` for people."""
    lines = [
        f"data dir     {status['data_dir']}" + _from(status, "data_dir_source"),
        f"catalog      {status['catalog']}" + _from(status, "catalog_source"),
    ]
    if "models_dir" in status:
        lines.append(f"models dir   {status['models_dir']}" + _from(status, "models_dir_source"))
    if "config_file_source" in status:
        lines.append(
            f"config file  {status['config_file'] or 'none (built-in defaults)'}" + _from(status, "config_file_source")
        )
    lines += [
        f"images       {status['images']} ({status['indexed']} indexed, {status['failed']} failed)",
        f"vectors      {status['vectors']} in {status['index_type'] or 'no index yet'}"
        + (f" (nlist {status['nlist']}, nprobe {status['nprobe']})" if status["nlist"] else "")
        + (f", recall@10 {status['recall_at_10']:.3f} vs exact" if status["recall_at_10"] is not None else "")
        + (f", {storage_line(status)}" if status.get("index_on_disk") else ""),
        f"model        {status['model']} at {status['image_size']} px, {status['dim']}-d",
        f"weights      {status['weights']} (sha256 {status['weights_sha256'][:16]}...)",
        *(
            f"{'made by' if i == 0 else '':<12} {maker_line(maker)}"
            for i, maker in enumerate(status.get("vector_makers", []))
        ),
        f"index state  {'current' if status['index_current'] else 'BEHIND the catalog: run python -m indexer reindex'}"
        f" (catalog revision {status['catalog_revision']})",
    ]
    patches = status["patches"]
    if patches["enabled"]:
        lines.append(
            f"patches      {patches['vectors']} vectors ({patches['grid']}x{patches['grid']} per photo) in "
            f"{patches['index_type']}, {patches['bytes_per_image'] / 1024:.1f} KB per photo "
            f"(+ {patches['catalog_bytes_per_image'] / 1024:.1f} KB of grid codes in the catalog)"
            + (f", {storage_line(patches)}" if patches.get("index_on_disk") else "")
        )
    else:
        lines.append("patches      off (built with --no-patches: no region search)")
    if status["failures_by_reason"]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(status["failures_by_reason"].items()))
        lines.append(f"failures     {reasons}")
    for failure in status.get("failures", []):
        lines.append(f"  {failure['path']}: {failure['message']}")
    calibration = status.get("calibration")
    if calibration is not None:
        if calibration["calibrated"]:
            lines.append(
                f"near-dups    {calibration_line(calibration)}; calibrated {calibration['calibrated_at'][:10]} "
                f"at {calibration['collection_size']} photos"
            )
        else:
            lines.append(
                f"near-dups    score >= {calibration['threshold']:.4f} (config default, uncalibrated: "
                f"{calibration['reason']})"
            )
    metadata = status.get("photo_metadata")
    if metadata is not None:
        lines.append(f"metadata     {metadata_line(metadata)}")
    decisions = status.get("duplicate_decisions")
    if decisions is not None and (decisions["dismissed_pairs"] or decisions["pinned_keepers"]):
        lines.append(
            f"decisions    {decisions['dismissed_pairs']} dismissed pair(s) of not-duplicates, "
            f"{decisions['pinned_keepers']} pinned keeper(s) (python -m search duplicates --decisions lists them)"
        )
    if status["random_weights"]:
        lines.append(f"WARNING: {RANDOM_WEIGHTS_WARNING}")
    return lines


def metadata_line(metadata: dict[str, Any]) -> str:
    """What the indexed photos' headers said (``status``'s ``photo_metadata``), in one line."""
    formats = ", ".join(f"{name} {count}" for name, count in metadata["formats"].items()) or "none"
    return (
        f"{metadata['with_capture_time']} of {metadata['read']} photos with an EXIF capture date, "
        f"{metadata['with_camera']} with a camera; formats: {formats}"
        + (f"; {metadata['pending']} not read yet (the next build reads their headers)" if metadata["pending"] else "")
    )
