"""``indexer build``: wire scan -> plan -> read/decode workers -> encoder -> catalog -> FAISS files.

Only the wiring lives here; each stage has its own module. Work is committed batch by batch, so a kill
loses at most the batch in flight and the next run starts where this one stopped: files already in the
catalog with the same size and mtime are skipped without being opened.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from indexer.catalog import (
    Catalog,
    FailedFile,
    FileOutcome,
    FileState,
    IndexedFile,
    Provenance,
    url_without_password,
)
from indexer.config import RESOLVED_CONFIG_FILE, LoupeConfig, dump_config
from indexer.decode import DecodeLimits, supported_extensions
from indexer.encoder import Encoder, LoadedModel, load_model, resolve_device
from indexer.lock import exclusive_writer
from indexer.patches import effective_grid, pool_patches
from indexer.reader import PhotoDataset, ReadBatch, ReadResult, WorkItem, make_loader, read_one
from indexer.scan import ScannedFile, resolve_roots, scan
from indexer.vector_index import SyncReport, sync_index
from indexer.vector_source import PatchVectors
from indexer.weights import weights_kind

logger = logging.getLogger(__name__)


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
    removed: int = 0
    failed: int = 0
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
    int8_cosine: float | None = None

    @property
    def processed(self) -> int:
        return self.new + self.changed + self.moved + self.copied + self.touched + self.failed

    @property
    def images_per_s(self) -> float:
        """Files processed per second of processing (model loading and the final index write excluded)."""
        return self.processed / self.processing_s if self.processing_s > 0 else 0.0


def provenance_of(model: LoadedModel, patch_grid: int = 0) -> Provenance:
    """The catalog record of how this model makes vectors (``patch_grid`` 0: no patch vectors)."""
    mean = ",".join(f"{v:g}" for v in model.rgb_mean)
    std = ",".join(f"{v:g}" for v in model.rgb_std)
    return Provenance(
        model=model.network,
        weights_kind=model.weights.kind,
        weights_sha256=model.weights.sha256,
        weights_source=model.weights.source,
        image_size=model.image_size,
        dim=model.dim,
        preprocessing=f"squash-bicubic-antialias;mean={mean};std={std};mean-of-patch-tokens;l2",
        patch_grid=patch_grid,
    )


def _write_resolved_config(config: LoupeConfig) -> None:
    """Save the settings beside the index, with absolute paths so readers anywhere can reuse them."""
    model = replace(config.model, models_dir=config.model.models_dir.expanduser().resolve())
    if weights_kind(model.weights) == "file":
        model = replace(model, weights=str(Path(model.weights).expanduser().resolve()))
    db_url = None if config.db_url is None else url_without_password(config.db_url)
    resolved = replace(config, data_dir=config.data_dir.resolve(), model=model, db_url=db_url)
    target = config.data_dir / RESOLVED_CONFIG_FILE
    temporary = target.with_suffix(".tmp")
    temporary.write_text(dump_config(resolved), encoding="utf-8")
    os.replace(temporary, target)


def _under(path: str, roots: Sequence[Path]) -> bool:
    return any(path == str(root) or path.startswith(str(root).rstrip(os.sep) + os.sep) for root in roots)


def plan_work(scanned: Sequence[ScannedFile], states: dict[str, FileState]) -> tuple[list[WorkItem], int]:
    """Files to read (new, or size/mtime changed) and how many are unchanged. Unchanged failures are not
    retried: the same bytes would fail the same way."""
    todo: list[WorkItem] = []
    unchanged = 0
    for file in scanned:
        key = str(file.path)
        state = states.get(key)
        if state is not None and state.size_bytes == file.size and state.mtime_ns == file.mtime_ns and file.size >= 0:
            unchanged += 1
            continue
        todo.append(WorkItem(path=key, size_bytes=file.size, mtime_ns=file.mtime_ns))
    return todo, unchanged


class _BatchCommitter:
    """Turns read results into catalog rows: reuses known embeddings, runs the model once on the rest."""

    def __init__(
        self, catalog: Catalog, encoder: Encoder, states: dict[str, FileState], summary: BuildSummary, patch_grid: int
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.patch_grid = patch_grid
        self.states = states
        self.summary = summary
        self.dim = encoder.model.dim
        self.reused_from: list[str] = []
        self.reasons: Counter[str] = Counter()
        # Hashes committed by this run: workers only know the hashes the catalog had at the start.
        self.run_hashes: set[str] = set()

    def _count_indexed(self, item: WorkItem) -> None:
        if item.path in self.states:
            self.summary.changed += 1
        else:
            self.summary.new += 1

    def _reuse(self, result: ReadResult) -> IndexedFile | bool:
        """The reused row for known content; True when only the file's mtime changed (recorded here);
        False when the content's row vanished since the build started."""
        assert result.sha256 is not None  # known results always carry their hash
        known = self.catalog.known_content(result.sha256, self.dim)
        if known is None:
            return False
        item = result.item
        if known.path == item.path:
            # Same bytes under the same path: only the mtime moved (a touch, a copy-back).
            self.catalog.touch(item.path, item.size_bytes, item.mtime_ns)
            self.summary.touched += 1
            return True
        if item.path in self.states:
            self.summary.changed += 1  # new bytes at a known path, but bytes seen before elsewhere
        else:
            self.reused_from.append(known.path)
        return IndexedFile(
            path=item.path,
            size_bytes=item.size_bytes,
            mtime_ns=item.mtime_ns,
            sha256=result.sha256,
            width=known.width,
            height=known.height,
            embedding=known.embedding,
            patches=known.patches,
        )

    def commit(self, batch: ReadBatch, image_size: int, limits: DecodeLimits) -> None:
        outcomes: list[FileOutcome] = []
        to_encode: list[ReadResult] = []
        for result in batch.results:
            if result.known or (result.pixels is not None and result.sha256 in self.run_hashes):
                reused = self._reuse(result)
                if isinstance(reused, IndexedFile):
                    outcomes.append(reused)
                elif reused is False:
                    to_encode.append(read_one(result.item, image_size, limits, frozenset()))
                continue
            to_encode.append(result)
        outcomes.extend(self._encode(to_encode))
        if outcomes:
            self.catalog.commit_outcomes(outcomes)
            self.run_hashes.update(o.sha256 for o in outcomes if isinstance(o, IndexedFile))

    def _failed(self, result: ReadResult) -> FailedFile:
        reason = result.error_reason or "unreadable"
        self.summary.failed += 1
        self.reasons[reason] += 1
        item = result.item
        return FailedFile(
            item.path, item.size_bytes, item.mtime_ns, result.sha256, reason, result.error_message or reason
        )

    def _encode(self, results: list[ReadResult]) -> list[FileOutcome]:
        """Failures become failure rows; decoded photos go through the model in one forward pass."""
        outcomes: list[FileOutcome] = [self._failed(r) for r in results if r.pixels is None]
        decoded = [r for r in results if r.pixels is not None]
        if not decoded:
            return outcomes
        # Identical bytes twice in one batch go through the model once.
        first_of: dict[str, int] = {}
        unique: list[ReadResult] = []
        for result in decoded:
            assert result.sha256 is not None
            if result.sha256 not in first_of:
                first_of[result.sha256] = len(unique)
                unique.append(result)
        pixels = torch.stack([r.pixels for r in unique])  # type: ignore[misc]
        encoded = self.encoder.encode(pixels)
        embeddings = encoded.embeddings
        grids = pool_patches(encoded.patches, self.patch_grid) if self.patch_grid else None
        self.summary.embedded += len(unique)
        self.summary.model_batches += 1
        for result in decoded:
            assert result.sha256 is not None and result.width is not None and result.height is not None
            self._count_indexed(result.item)
            outcomes.append(
                IndexedFile(
                    path=result.item.path,
                    size_bytes=result.item.size_bytes,
                    mtime_ns=result.item.mtime_ns,
                    sha256=result.sha256,
                    width=result.width,
                    height=result.height,
                    embedding=np.asarray(embeddings[first_of[result.sha256]], dtype=np.float32),
                    patches=None if grids is None else grids[first_of[result.sha256]],
                )
            )
        return outcomes


def run_build(config: LoupeConfig, roots: Sequence[Path], *, show_progress: bool = True) -> BuildSummary:
    """Index every photo under ``roots`` into the catalog and FAISS files of ``config.data_dir``."""
    started = time.perf_counter()
    summary = BuildSummary()
    resolved_roots = resolve_roots(roots)
    device = resolve_device(config.runtime.device)
    model = load_model(config.model, device)
    summary.weights_kind = model.weights.kind
    summary.image_size = model.image_size
    with exclusive_writer(config.data_dir, "indexer build", config.resolved_db_url):
        _build_locked(config, resolved_roots, model, device, summary, show_progress)
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _build_locked(
    config: LoupeConfig,
    resolved_roots: list[Path],
    model: LoadedModel,
    device: torch.device,
    summary: BuildSummary,
    show_progress: bool,
) -> None:
    catalog = Catalog.open(config.resolved_db_url)
    try:
        patch_grid = effective_grid(model.grid_size, config.patches.grid) if config.patches.enabled else 0
        catalog.ensure_provenance(provenance_of(model, patch_grid))
        _write_resolved_config(config)

        scanned = list(
            tqdm(
                scan(
                    resolved_roots,
                    supported_extensions(),
                    follow_symlinks=config.decode.follow_symlinks,
                    exclude=[config.data_dir],
                ),
                desc="scanning",
                unit="file",
                disable=not show_progress,
                leave=False,
            )
        )
        summary.scanned = len(scanned)
        states = catalog.file_states()
        todo, summary.unchanged = plan_work(scanned, states)
        logger.info("%d files found, %d unchanged, %d to read", len(scanned), summary.unchanged, len(todo))

        processing_started = time.perf_counter()
        encoder = Encoder(model, device, config.runtime.precision, config.runtime.min_cosine)
        committer = _BatchCommitter(catalog, encoder, states, summary, patch_grid)
        if todo:
            limits = DecodeLimits(max_pixels=config.decode.max_pixels, max_file_bytes=config.decode.max_file_bytes)
            dataset = PhotoDataset(todo, model.image_size, limits, frozenset(catalog.indexed_hashes()))
            loader = make_loader(
                dataset, config.runtime.batch_size, config.runtime.workers, pin_memory=device.type == "cuda"
            )
            with tqdm(total=len(todo), desc="indexing", unit="img", disable=not show_progress, smoothing=0.1) as bar:
                for batch in loader:
                    committer.commit(batch, model.image_size, limits)
                    bar.update(len(batch.results))

        seen = {str(file.path) for file in scanned}
        gone = [path for path in states if path not in seen and _under(path, resolved_roots)]
        summary.removed = catalog.remove_paths(gone)
        gone_set = set(gone)
        summary.moved = sum(1 for source in committer.reused_from if source in gone_set)
        summary.copied = len(committer.reused_from) - summary.moved
        summary.processing_s = time.perf_counter() - processing_started
        summary.failures_by_reason = dict(committer.reasons)
        summary.precision = encoder.precision
        summary.int8_cosine = encoder.checked_cosine

        summary.index = sync_index(catalog, config.data_dir, config.index)
        if patch_grid:
            patches = PatchVectors(catalog, model.dim, patch_grid)
            summary.patch_index = sync_index(catalog, config.data_dir, config.patches.index, patches)
    finally:
        catalog.close()
