"""``indexer build``: wire scan -> plan -> read/decode workers -> encoder -> catalog -> FAISS files.

Only the wiring lives here; each stage has its own module. The local engine (the default) decodes in
DataLoader workers and runs the model in this process; ``runtime.engine: ray`` hands decoding and the
model to a Ray cluster (:mod:`indexer.ray_engine`). Both commit through the same
:class:`~indexer.committer.BatchCommitter`. Work is committed batch by batch while the
model computes the next batch, so a kill loses at most those two batches and the next run starts where
this one stopped: files already in the catalog with the same size and mtime are skipped unopened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from core.catalog import STATUS_FAILED, Catalog, FileState, Provenance, url_without_password
from core.catalog.metadata import backfill_metadata
from core.config import RESOLVED_CONFIG_FILE, LoupeConfig, dump_config
from core.decode import DecodeLimits, supported_extensions
from core.device_decode import GPU_JPEG_MIN_PIXELS
from core.encoder import (
    Encoder,
    LoadedModel,
    load_model,
    resolve_batch_size,
    resolve_device,
    should_compile,
)
from core.image_threads import one_intra_op_thread
from core.index.source import PatchVectors
from core.index.sync import SyncReport, current_index, sync_index
from core.lock import exclusive_writer
from core.patches import effective_grid
from core.reader import PhotoDataset, ReadBatch, WorkItem, finish_on_device, make_loader, resolve_workers
from core.scan import ExcludeGlobs, ScannedFile, resolve_roots, scan
from core.vector_makers import current_maker, describe_device, record_maker
from core.weights import weights_kind
from indexer.calibrate import CalibrationOutcome, calibrate_if_due, embed_with
from indexer.committer import BatchCommitter, PendingBatch

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

    @property
    def processed(self) -> int:
        return self.new + self.changed + self.moved + self.copied + self.touched + self.regridded + self.failed

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


def plan_work(
    scanned: Sequence[ScannedFile], states: dict[str, FileState], reread: frozenset[str] = frozenset()
) -> tuple[list[WorkItem], int]:
    """Files to read (new, size/mtime changed, or in ``reread``) and how many are unchanged. Unchanged
    failures are not retried: the same bytes would fail the same way."""
    todo: list[WorkItem] = []
    unchanged = 0
    for file in scanned:
        key = str(file.path)
        state = states.get(key)
        if (
            state is not None
            and state.size_bytes == file.size
            and state.mtime_ns == file.mtime_ns
            and file.size >= 0
            and key not in reread
        ):
            unchanged += 1
            continue
        todo.append(WorkItem(path=key, size_bytes=file.size, mtime_ns=file.mtime_ns))
    return todo, unchanged


def run_build(config: LoupeConfig, roots: Sequence[Path], *, show_progress: bool = True) -> BuildSummary:
    """Index every photo under ``roots`` into the catalog and FAISS files of ``config.data_dir``."""
    started = time.perf_counter()
    summary = BuildSummary()
    resolved_roots = resolve_roots(roots)
    if config.runtime.engine == "ray":
        from indexer.ray_engine import require_ray

        require_ray()
        # Under Ray the model runs in the actors; the driver's copy, on its CPU, records the provenance and
        # re-embeds the rare content whose catalog row vanished during the build.
        device = torch.device("cpu")
    else:
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
        globs = ExcludeGlobs(config.scan.exclude)

        scanned = list(
            tqdm(
                scan(
                    resolved_roots,
                    supported_extensions(),
                    follow_symlinks=config.decode.follow_symlinks,
                    exclude=[config.data_dir],
                    globs=globs,
                ),
                desc="scanning",
                unit="file",
                disable=not show_progress,
                leave=False,
            )
        )
        summary.scanned = len(scanned)
        states = catalog.file_states()
        # Indexed photos whose patch grid is gone (a crash of an older version, a bug, a hand-edited catalog):
        # read again, and their content is not "known" to the readers, so the model remakes their grids.
        without_grid = catalog.photos_without_grid() if patch_grid else []
        regrid = frozenset(photo.path for photo in without_grid)
        todo, summary.unchanged = plan_work(scanned, states, regrid)
        to_read = {item.path for item in todo}
        summary.unchanged_failed = sum(
            1 for file in scanned if str(file.path) not in to_read and states[str(file.path)].status == STATUS_FAILED
        )
        logger.info("%d files found, %d unchanged, %d to read", len(scanned), summary.unchanged, len(todo))

        summary.batch_size = resolve_batch_size(config.runtime.batch_size, model, device)
        local = config.runtime.engine != "ray"
        summary.compiled = local and bool(todo) and should_compile(config.runtime.compile, device, len(todo))
        limits = DecodeLimits(max_pixels=config.decode.max_pixels, max_file_bytes=config.decode.max_file_bytes)
        known_hashes = frozenset(catalog.indexed_hashes() - {p.sha256 for p in without_grid}) if todo else frozenset()
        device_jpegs = device.type == "cuda" and config.runtime.gpu_jpeg == "auto"
        batches: Iterator[ReadBatch] = iter(())
        if todo and local:
            dataset = PhotoDataset(
                todo, model.image_size, limits, known_hashes, GPU_JPEG_MIN_PIXELS if device_jpegs else None
            )
            workers = resolve_workers(config.runtime.workers, device)
            # Not stacked here: the committer hands the photos to image threads one by one, or stacks them
            # straight into pinned memory for a GPU.
            loader = make_loader(dataset, summary.batch_size, workers, stack_pixels=False)
            # Started before the network is prepared, so the workers decode the first batches while the
            # encoder quantises the network and starts its image threads (0.2 s of a 13 s build of 178
            # photos at 224 px on the development machine was the model waiting for its first batch).
            batches = iter(loader)
        try:
            # Preparing the network (int8 quantisation) counts as model loading, not as processing.
            encoder = Encoder(
                model,
                device,
                config.runtime.precision,
                config.runtime.min_cosine,
                compile=summary.compiled,
                parallel_images=config.runtime.parallel_images,
            )
        except BaseException:
            batches = iter(())  # the last reference to the loader's iterator: its workers stop
            raise
        processing_started = time.perf_counter()
        committer = BatchCommitter(catalog, encoder, states, summary, patch_grid, limits, regrid)
        if todo:
            with tqdm(total=len(todo), desc="indexing", unit="img", disable=not show_progress, smoothing=0.1) as bar:
                if not local:
                    from indexer.ray_engine import embed_with_ray

                    embed_with_ray(config, todo, known_hashes, model, patch_grid, committer, bar.update)
                else:
                    # The model computes one batch while the previous one is committed: a kill loses at
                    # most these two batches, and the next run embeds them again.
                    in_flight: deque[PendingBatch] = deque()
                    with one_intra_op_thread() if encoder.parallel_images else contextlib.nullcontext():
                        for batch in batches:
                            if device_jpegs:
                                batch = finish_on_device(batch, model.image_size, limits, device, stack_pixels=False)
                            in_flight.append(committer.submit(batch.results))
                            if len(in_flight) > 1:
                                bar.update(committer.finish(in_flight.popleft()))
                        while in_flight:
                            bar.update(committer.finish(in_flight.popleft()))

        # Which torch, birder, precision and device made the vectors committed by this run (status shows it).
        maker_device = describe_device(device) if local else "ray actors"
        record_maker(catalog, current_maker(encoder.precision, maker_device), summary.embedded)

        seen = {str(file.path) for file in scanned}
        gone = [path for path in states if path not in seen and _under(path, resolved_roots)]
        # Files now excluded leave the catalog like deleted ones (a search must not return what the curator
        # left out), counted apart so the summary says why.
        excluded = [path for path in gone if globs.excludes_indexed(Path(path), resolved_roots)]
        summary.excluded = catalog.remove_paths(excluded)
        excluded_set = set(excluded)
        summary.removed = catalog.remove_paths([path for path in gone if path not in excluded_set])
        gone_set = set(gone)
        summary.moved = sum(1 for source in committer.reused_from if source in gone_set)
        summary.copied = len(committer.reused_from) - summary.moved
        summary.processing_s = time.perf_counter() - processing_started
        # Rows from before schema 5 (or an older metadata reader): their headers, not their pixels. Outside
        # processing_s, which measures the files this build indexed.
        summary.metadata_read = backfill_metadata(catalog, show_progress=show_progress).read
        summary.failures_by_reason = dict(committer.reasons)
        summary.precision = encoder.precision
        summary.parallel_images = encoder.parallel_images
        summary.checked_cosine = encoder.checked_cosine

        summary.index = sync_index(catalog, config.data_dir, config.index)
        if patch_grid:
            patches = PatchVectors(catalog, model.dim, patch_grid)
            summary.patch_index = sync_index(catalog, config.data_dir, config.patches.index, patches)

        # After the index sync: calibration searches the collection as queries will.
        provenance = catalog.provenance()
        if provenance is not None:
            summary.calibration = calibrate_if_due(
                catalog,
                lambda: current_index(catalog, config.data_dir, config.index)[0],
                provenance,
                embed_with(
                    lambda pixels: encoder.encode(pixels).embeddings,
                    model.image_size,
                    one_thread=bool(encoder.parallel_images),
                ),
                config.search.calibration,
                limits,
                show_progress=show_progress,
            )
    finally:
        catalog.close()
