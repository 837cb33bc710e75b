"""Calibrate a collection's near-duplicate threshold: wire sample -> edits -> model -> index -> maths.

A seeded sample of the indexed photos is read back and edited in memory (:mod:`indexer.edits`, the
families taken in turn); the edited copies go through the collection's own model and preprocessing
(the caller passes them in, checked against the catalog's provenance). Then:

- positives: each edited copy's cosine similarity to its source photo's stored vector;
- negatives: each sampled photo's best score against another photo of the collection (FAISS candidates,
  re-scored exactly with the stored vectors).

A collection may hold real duplicates, which are no false matches. A candidate pair is left out of the
negatives when the two photos have the same content (sha256), or when they are each other's nearest
photo *and* score at least the median of the mild edits (resize, JPEG) of the sample: they look more
alike than a downscaled or re-compressed copy of a photo typically looks like it. This is a simple
stand-in for local verification, and the count of pairs left out is kept with the calibration. The
threshold and recall come from :func:`indexer.calibration.fit_threshold`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from PIL import Image
from tqdm import tqdm

from core.catalog import Catalog, PhotoRecord, Provenance
from core.catalog.calibrations import Calibration, calibration_due, current_calibration, save_calibration
from core.config import CalibrationConfig
from core.decode import DecodeLimits, load_image
from core.errors import DecodeError, LoupeError
from indexer.calibration import fit_threshold
from indexer.edits import EDIT_FAMILIES, make_edit

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]
# Embeds RGB images with the collection's model and preprocessing: unit vectors, one row per image.
Embed = Callable[[Sequence[Image.Image]], Embeddings]

MILD_FAMILIES = ("resize", "jpeg")
# FAISS candidates per sampled photo for its best non-match (some are itself, copies, or duplicates).
CANDIDATES = 16
# Edited copies embedded per call of ``embed``.
EMBED_BATCH = 16


class CalibrationError(LoupeError):
    """The collection cannot be calibrated (too few photos, no readable sample)."""


class CollectionTooSmallError(CalibrationError):
    """Fewer indexed photos than calibration needs."""

    def __init__(self, indexed: int, minimum: int) -> None:
        super().__init__(
            f"too small to calibrate: {indexed} indexed photos, calibration needs {minimum} "
            "(search.calibration.min_photos); the near-duplicate threshold stays the configured default"
        )
        self.indexed = indexed
        self.minimum = minimum


@dataclass(frozen=True)
class CalibrationOutcome:
    """What a build did about calibration, for its summary."""

    status: Literal["calibrated", "current", "too-small", "off", "failed"]
    message: str
    calibration: Calibration | None = None


@dataclass(frozen=True)
class _Positive:
    photo_id: int
    family: str
    score: float


def _sample_ids(ids: npt.NDArray[np.int64], size: int, rng: np.random.Generator) -> list[int]:
    chosen = rng.choice(ids, size=min(size, len(ids)), replace=False)
    return sorted(int(i) for i in chosen)


def _positives(
    photos: Sequence[PhotoRecord],
    vectors: dict[int, Embeddings],
    embed: Embed,
    settings: CalibrationConfig,
    seed: int,
    limits: DecodeLimits,
    image_size: int,
    show_progress: bool,
) -> list[_Positive]:
    """Edited copies of ``photos`` scored against their sources; unreadable photos are skipped."""
    start = int(np.random.default_rng(seed).integers(len(EDIT_FAMILIES)))
    positives: list[_Positive] = []
    pending: list[tuple[int, str, Image.Image]] = []

    def flush() -> None:
        embeddings = embed([image for _, _, image in pending])
        for (photo_id, family, _), vector in zip(pending, embeddings, strict=True):
            positives.append(_Positive(photo_id, family, float(np.dot(vector, vectors[photo_id]))))
        pending.clear()

    turn = start
    for photo in tqdm(photos, desc="calibrating", unit="img", disable=not show_progress, leave=False):
        try:
            decoded, _ = load_image(Path(photo.path), limits, min_side=image_size)
        except (DecodeError, OSError) as error:
            logger.info("calibration skips %s: %s", photo.path, error)
            continue
        # Each photo's edits depend on the seed and the photo only, not on what else was sampled.
        rng = np.random.default_rng([seed, photo.id])
        for _ in range(settings.edits_per_photo):
            family = EDIT_FAMILIES[turn % len(EDIT_FAMILIES)]
            turn += 1
            pending.append((photo.id, family, make_edit(decoded.image, family, rng).image))
        if len(pending) >= EMBED_BATCH:
            flush()
    if pending:
        flush()
    return positives


class _Neighbours:
    """Best other photos of stored vectors: FAISS candidates, re-scored exactly with the catalog's vectors."""

    def __init__(self, catalog: Catalog, index: faiss.Index, dim: int) -> None:
        self.catalog = catalog
        self.index = index
        self.dim = dim

    def ranked(self, vectors: Embeddings, own_ids: Sequence[int]) -> list[list[tuple[int, float]]]:
        """Per row, the candidates other than the row's own photo and its same-content copies, best first."""
        k = min(CANDIDATES, int(self.index.ntotal))
        _, candidate_ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        wanted = {int(i) for i in candidate_ids.ravel() if i >= 0} | {int(i) for i in own_ids}
        stored = self.catalog.stored_embeddings(sorted(wanted), self.dim)
        records = self.catalog.photos(wanted)
        ranked: list[list[tuple[int, float]]] = []
        for row, own in enumerate(own_ids):
            own_sha = records[own].sha256 if own in records else None
            found = [
                (int(i), float(np.dot(stored[int(i)], vectors[row])))
                for i in candidate_ids[row]
                if i >= 0 and int(i) != own and int(i) in stored and records[int(i)].sha256 != own_sha
            ]
            found.sort(key=lambda item: -item[1])
            ranked.append(found)
        return ranked


def _negatives(
    neighbours: _Neighbours, sample_ids: Sequence[int], vectors: dict[int, Embeddings], duplicate_floor: float
) -> tuple[list[float], int]:
    """Each sampled photo's best score against a photo that is not a copy of it, and how many pairs were
    left out as probable real duplicates (mutually nearest, at or above ``duplicate_floor``)."""
    ids = [i for i in sample_ids if i in vectors]
    if not ids:
        return [], 0
    ranked = neighbours.ranked(np.stack([vectors[i] for i in ids]), ids)
    negatives: list[float] = []
    left_out = 0
    for own, candidates in zip(ids, ranked, strict=True):
        for other, score in candidates:
            if score >= duplicate_floor:
                other_vector = neighbours.catalog.stored_embeddings([other], neighbours.dim)[other]
                their_best = neighbours.ranked(other_vector[None], [other])[0]
                if their_best and their_best[0][0] == own:
                    left_out += 1
                    continue
            negatives.append(score)
            break
    return negatives, left_out


@dataclass(frozen=True)
class CalibrationScores:
    """What a calibration measured: edited copies against their sources (positives, with their edit
    family), sampled photos against their best non-match (negatives)."""

    positive_scores: list[float]
    positive_families: list[str]
    negative_scores: list[float]
    sample: int
    collection_size: int
    left_out: int


def measure_scores(
    catalog: Catalog,
    index: faiss.Index,
    provenance: Provenance,
    embed: Embed,
    settings: CalibrationConfig,
    limits: DecodeLimits,
    *,
    show_progress: bool = False,
) -> CalibrationScores:
    """Edit a seeded sample of the collection and score it (see the module doc); nothing is saved."""
    ids, _ = catalog.indexed_ids()
    if len(ids) < settings.min_photos:
        raise CollectionTooSmallError(len(ids), settings.min_photos)
    sample_ids = _sample_ids(ids, settings.sample, np.random.default_rng(settings.seed))
    vectors = catalog.stored_embeddings(sample_ids, provenance.dim)
    records = catalog.photos(sample_ids)
    photos = [records[i] for i in sample_ids if i in records and i in vectors]
    positives = _positives(
        photos, vectors, embed, settings, settings.seed, limits, provenance.image_size, show_progress
    )
    if not positives:
        raise CalibrationError(f"none of the {len(photos)} sampled photos could be read back to edit")
    mild = [p.score for p in positives if p.family in MILD_FAMILIES] or [p.score for p in positives]
    duplicate_floor = float(np.median(mild))
    read_ids = sorted({p.photo_id for p in positives})
    negatives, left_out = _negatives(_Neighbours(catalog, index, provenance.dim), read_ids, vectors, duplicate_floor)
    if not negatives:
        raise CalibrationError("no photo has a non-matching neighbour to compare with")
    return CalibrationScores(
        positive_scores=[p.score for p in positives],
        positive_families=[p.family for p in positives],
        negative_scores=negatives,
        sample=len(read_ids),
        collection_size=len(ids),
        left_out=left_out,
    )


def calibrate_collection(
    catalog: Catalog,
    index: faiss.Index,
    provenance: Provenance,
    embed: Embed,
    settings: CalibrationConfig,
    limits: DecodeLimits,
    *,
    show_progress: bool = False,
) -> Calibration:
    """Measure the near-duplicate threshold of the collection in ``catalog`` (searched through ``index``)
    at ``settings.precision`` and save it. ``embed`` must be the collection's model (see module doc)."""
    started = time.perf_counter()
    scores = measure_scores(catalog, index, provenance, embed, settings, limits, show_progress=show_progress)
    fit = fit_threshold(scores.positive_scores, scores.positive_families, scores.negative_scores, settings.precision)
    calibration = Calibration(
        weights_sha256=provenance.weights_sha256,
        image_size=provenance.image_size,
        sample=scores.sample,
        edits=len(scores.positive_scores),
        seed=settings.seed,
        collection_size=scores.collection_size,
        threshold=fit.threshold,
        target_precision=settings.precision,
        precision=fit.precision,
        recall=fit.recall,
        per_edit=fit.per_edit,
        left_out=scores.left_out,
        seconds=time.perf_counter() - started,
    )
    save_calibration(catalog, calibration)
    logger.info(
        "calibrated on %d photos (%d edits) in %.1f s: threshold %.4f, precision %.3f, recall %.3f",
        calibration.sample,
        calibration.edits,
        calibration.seconds,
        calibration.threshold,
        calibration.precision,
        calibration.recall,
    )
    return calibration


def embed_with(encode_pixels: Callable[[torch.Tensor], Embeddings], image_size: int, *, one_thread: bool) -> Embed:
    """An :data:`Embed` from a function of ``[B, 3, S, S]`` uint8 pixels (the build's encoder, or the
    collection's, :func:`core.encoder.open_collection_encoder`) with the indexer's preprocessing; ``one_thread``:
    the encoder runs photos on image threads, so the calling thread keeps to one (as builds do)."""
    import torch

    from core.image_threads import one_intra_op_thread
    from core.preprocess import model_pixels

    def embed(images: Sequence[Image.Image]) -> Embeddings:
        pixels = torch.stack([model_pixels(image, image_size) for image in images])
        context: Any = one_intra_op_thread() if one_thread else contextlib.nullcontext()
        with context:
            return encode_pixels(pixels)

    return embed


def calibrate_if_due(
    catalog: Catalog,
    open_index: Callable[[], faiss.Index],
    provenance: Provenance,
    embed: Embed,
    settings: CalibrationConfig,
    limits: DecodeLimits,
    *,
    show_progress: bool = False,
) -> CalibrationOutcome:
    """What a build does: calibrate when there is no calibration for these weights and size, or the
    collection has grown or shrunk by ``settings.growth`` since; say so when it is too small.
    ``open_index`` is called only when a calibration runs."""
    if not settings.on_build:
        return CalibrationOutcome("off", "calibration off (--no-calibrate or search.calibration.on_build)")
    indexed = len(catalog.indexed_ids()[0])
    if indexed < settings.min_photos:
        return CalibrationOutcome("too-small", str(CollectionTooSmallError(indexed, settings.min_photos)))
    existing = current_calibration(catalog, provenance)
    reason = calibration_due(existing, indexed, settings.growth)
    if reason is None and existing is not None:
        return CalibrationOutcome(
            "current", f"calibration current (made at {existing.collection_size} photos)", existing
        )
    try:
        calibration = calibrate_collection(
            catalog, open_index(), provenance, embed, settings, limits, show_progress=show_progress
        )
    except CalibrationError as error:
        # The photos are indexed and committed: a sample that cannot be read back must not fail the build.
        logger.warning("%s", error)
        return CalibrationOutcome("failed", f"not calibrated: {error}", existing)
    return CalibrationOutcome("calibrated", f"calibrated ({reason})", calibration)
