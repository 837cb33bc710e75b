"""``indexer build``: plan the work and wire scan -> engine -> committer -> catalog -> FAISS files.

Only the planning and the wiring live here: the settings are resolved once, here, and each stage gets the
slice it needs (model settings, decode limits, index settings). The engine reads, decodes and embeds
(:mod:`indexer.engines.local` by default, :mod:`indexer.engines.ray` with ``runtime.engine: ray``); both
commit through the same :class:`~indexer.committer.BatchCommitter`, whose per-batch counts add up to the
:class:`~indexer.summary.BuildSummary`. Work is committed batch by batch while the model computes the next
batch, so a kill loses at most those two batches and the next run starts where this one stopped: files
already in the catalog with the same size and mtime are skipped unopened.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from core.catalog import STATUS_FAILED, Catalog, FileState, url_without_password
from core.catalog.metadata import backfill_metadata
from core.config import RESOLVED_CONFIG_FILE, LoupeConfig, dump_config
from core.decode import DecodeLimits, supported_extensions
from core.encoder import Encoder, resolve_batch_size, should_compile
from core.index.source import PatchVectors
from core.index.sync import current_index, sync_index
from core.lock import exclusive_writer
from core.model import LoadedModel, load_model, provenance_of, resolve_device
from core.patches import effective_grid
from core.reader import WorkItem
from core.scan import ExcludeGlobs, ScannedFile, resolve_roots, scan
from core.vector_makers import current_maker, record_maker
from core.weights import resolved_model_config
from indexer.calibrate import calibrate_if_due, embed_with
from indexer.committer import BatchCommitter, BatchCounts
from indexer.engines.base import BuildEngine
from indexer.engines.local import LocalEngine
from indexer.engines.ray import RayEngine, require_ray
from indexer.summary import BuildSummary

logger = logging.getLogger(__name__)


def _write_resolved_config(config: LoupeConfig) -> None:
    """Save the settings beside the index, with absolute paths so readers anywhere can reuse them."""
    db_url = None if config.db_url is None else url_without_password(config.db_url)
    resolved = replace(
        config, data_dir=config.data_dir.resolve(), model=resolved_model_config(config.model), db_url=db_url
    )
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


def _engine_for(
    config: LoupeConfig,
    model: LoadedModel,
    device: torch.device,
    patch_grid: int,
    limits: DecodeLimits,
    batch_size: int,
) -> BuildEngine:
    """The engine ``runtime.engine`` names, given the settings it needs."""
    runtime = config.runtime
    if runtime.engine == "ray":
        return RayEngine(runtime, resolved_model_config(config.model), model, patch_grid, limits)
    device_jpegs = device.type == "cuda" and runtime.gpu_jpeg == "auto"
    return LocalEngine(device, model.image_size, limits, batch_size, runtime.workers, device_jpegs=device_jpegs)


def run_build(config: LoupeConfig, roots: Sequence[Path], *, show_progress: bool = True) -> BuildSummary:
    """Index every photo under ``roots`` into the catalog and FAISS files of ``config.data_dir``."""
    started = time.perf_counter()
    summary = BuildSummary()
    resolved_roots = resolve_roots(roots)
    if config.runtime.engine == "ray":
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
        limits = DecodeLimits.of(config.decode)
        engine = _engine_for(config, model, device, patch_grid, limits, summary.batch_size)
        summary.compiled = (
            engine.runs_model_here and bool(todo) and should_compile(config.runtime.compile, device, len(todo))
        )
        known_hashes = frozenset(catalog.indexed_hashes() - {p.sha256 for p in without_grid}) if todo else frozenset()
        if todo:
            engine.start(todo, known_hashes)
        try:
            # Preparing the network (int8 quantisation) counts as model loading, not as processing.
            encoder = Encoder(
                model,
                device,
                config.runtime.precision,
                config.runtime.min_cosine,
                compile=summary.compiled,
                parallel_images=config.runtime.parallel_images,
                patch_grid=patch_grid,
            )
        except BaseException:
            engine.stop()
            raise
        processing_started = time.perf_counter()
        committer = BatchCommitter(catalog, encoder, states, limits, regrid)
        if todo:
            with tqdm(total=len(todo), desc="indexing", unit="img", disable=not show_progress, smoothing=0.1) as bar:

                def on_batch(counts: BatchCounts) -> None:
                    summary.add(counts)
                    bar.update(counts.results)

                engine.run(committer, on_batch)

        # Which torch, birder, precision and device made the vectors committed by this run (status shows it).
        record_maker(catalog, current_maker(encoder.precision, engine.maker_device), summary.embedded)

        seen = {str(file.path) for file in scanned}
        gone = [path for path in states if path not in seen and _under(path, resolved_roots)]
        # Files now excluded leave the catalog like deleted ones (a search must not return what the curator
        # left out), counted apart so the summary says why.
        excluded = [path for path in gone if globs.excludes_indexed(Path(path), resolved_roots)]
        summary.excluded = catalog.remove_paths(excluded)
        excluded_set = set(excluded)
        summary.removed = catalog.remove_paths([path for path in gone if path not in excluded_set])
        summary.count_reuses(set(gone))
        summary.processing_s = time.perf_counter() - processing_started
        # Rows from before schema 5 (or an older metadata reader): their headers, not their pixels. Outside
        # processing_s, which measures the files this build indexed.
        summary.metadata_read = backfill_metadata(catalog, show_progress=show_progress).read
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
