"""Copy matching that survives common edits: flips, rotations, crops, borders and overlays.

A global embedding finds resized, re-encoded or blurred copies, but not a mirrored or rotated one (the
model is not invariant to either), nor a crop, a bordered copy or one with a caption bar (the mean of
the patch tokens moves with what was added or cut). Two steps on top of the plain search:

1. Flips and rotations: the query's model pixels are also mirrored and rotated (``search.robust.variants``;
   the pixels are square, so a 90° turn of them is the turn of the photo squashed) and all are encoded in
   one encoder call. Every variant searches the index; each photo keeps its best score and says which
   variant gave it (``match: flipped|rotated``), a variant counting only where it beats the query as it
   is by :data:`VARIANT_MARGIN` (else ``global``, with the plain score).
2. Local verification: the best ``local_candidates`` photos are re-scored from their stored patch grids.
   The query's whole grid is slid over the photo's at several scales (a crop lies inside the photo) and
   the photo's grid over the query's (a bordered copy holds the photo), with region search's placement
   code (:func:`search.region.best_placement`). A placement scores the mean cosine of the best
   ``LOCAL_KEEP`` share of the cells it aligns, so cells under a caption or a logo do not count.

How the scores combine: a photo's score is the larger of its global score and its local score. Both are
cosine similarities of unit vectors (a global one of pooled vectors, a local one averaged over aligned
cells), and a cell-level cosine is lower than a pooled one between photos that merely look alike; so a
local score only wins where most cells of one photo find themselves, in place, in the other, and the
near-duplicate threshold keeps its meaning. When the local score wins, ``match`` is ``local`` and ``box``
is where the query lies in the photo, in its pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from core.config import RobustConfig
from core.grid_codes import rotate
from search.engine import Box, MatchKind, QueryImage, SearchEngine, SearchResult, match_label
from search.region import CellBlock, best_placement, matched_box, stored_cells

logger = logging.getLogger(__name__)

Grid = npt.NDArray[np.float32]
PixelTransform = Callable[[torch.Tensor], torch.Tensor]

# Share of the aligned cells that score a local placement (the best ones): a caption bar or a logo over
# up to a quarter of the photo does not pull the score down.
LOCAL_KEEP = 0.75
# A local score replaces a global one only when higher by more than this: an exact copy's stored cells
# estimate their similarity to the query's to about 1e-3 (core.grid_codes), and it stays ``global``.
LOCAL_MARGIN = 1e-3
# A flip or rotation replaces the query as it is only when it scores this much higher: every variant of
# a query nudges every photo's score a little (random weights: by up to ~0.01), a real mirrored or turned
# copy jumps (0.94 -> 0.9997), and an unedited query's results should keep saying ``global``.
VARIANT_MARGIN = 0.01


@dataclass(frozen=True)
class Variant:
    """A flip or rotation of the query's ``[..., 3, S, S]`` model pixels."""

    kind: MatchKind
    transform: PixelTransform
    swaps_sides: bool


VARIANTS: dict[str, Variant] = {
    "mirror": Variant("flipped", lambda pixels: pixels.flip(-1), False),
    "flip": Variant("flipped", lambda pixels: pixels.flip(-2), False),
    "rotate90": Variant("rotated", lambda pixels: pixels.rot90(1, (-2, -1)), True),
    "rotate180": Variant("rotated", lambda pixels: pixels.rot90(2, (-2, -1)), False),
    "rotate270": Variant("rotated", lambda pixels: pixels.rot90(3, (-2, -1)), True),
    "transpose": Variant("flipped", lambda pixels: pixels.transpose(-2, -1), True),
    "transverse": Variant("flipped", lambda pixels: pixels.rot90(2, (-2, -1)).transpose(-2, -1), True),
}


@dataclass(frozen=True)
class EncodedQuery:
    """A query as it is (first) and its variants, each with the kind of match it stands for."""

    images: list[QueryImage]
    kinds: list[MatchKind]


@dataclass(frozen=True)
class LocalMatch:
    """A photo's best local placement: its score and where the query lies in the photo (pixels)."""

    score: float
    box: Box


def variant_names(settings: RobustConfig) -> tuple[str, ...]:
    """The variants a query is also encoded as under ``settings`` (none with flips and rotations off)."""
    return settings.variants if settings.flips_and_rotations else ()


def encode_variants(
    engine: SearchEngine,
    pixels: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    sha256s: Sequence[str | None],
    names: Sequence[str],
) -> list[EncodedQuery]:
    """Encode ``[B, 3, S, S]`` query pixels (full sizes ``sizes``) and their ``names`` variants in one
    encoder call."""
    batch = torch.cat([pixels, *(VARIANTS[name].transform(pixels) for name in names)])
    vectors, grids = engine.encode_model_pixels(batch.contiguous())
    count = len(pixels)
    encoded: list[EncodedQuery] = []
    for position, ((width, height), sha256) in enumerate(zip(sizes, sha256s, strict=True)):
        images: list[QueryImage] = []
        kinds: list[MatchKind] = []
        for step, name in enumerate(("", *names)):
            row = step * count + position
            variant = VARIANTS.get(name)
            swapped = variant is not None and variant.swaps_sides
            images.append(
                QueryImage(
                    vectors[row],
                    sha256,
                    height if swapped else width,
                    width if swapped else height,
                    None if grids is None else grids[row],
                )
            )
            kinds.append("global" if variant is None else variant.kind)
        encoded.append(EncodedQuery(images, kinds))
    return encoded


def local_match(query: QueryImage, photo_grid: Grid, photo_size: tuple[int, int]) -> LocalMatch:
    """The best placement of the query's grid inside the photo's (a crop) or of the photo's inside the
    query's (a border around the photo), scored on the best :data:`LOCAL_KEEP` of aligned cells."""
    if query.patches is None:
        raise ValueError("the query has no patch grid")
    grid = query.patches.shape[0]
    photo_w, photo_h = photo_size
    similarity = np.einsum("ijd,uvd->ijuv", query.patches, photo_grid)
    inside = best_placement(similarity, query.height / max(photo_h, 1), query.width / max(photo_w, 1), keep=LOCAL_KEEP)
    around = best_placement(
        similarity.transpose(2, 3, 0, 1), photo_h / max(query.height, 1), photo_w / max(query.width, 1), keep=LOCAL_KEEP
    )
    if inside.score >= around.score:
        whole = CellBlock(0, 0, grid, grid, grid)
        box = matched_box(None, whole, inside, (query.width, query.height), photo_size, grid)
        return LocalMatch(inside.score, box)

    # The photo lies in the query's cells ``around``: the query's edges carried into the photo's pixels,
    # clipped to the photo (the part of it the query shows).
    def edge(query_cell: int, first: int, span: int, extent: int) -> int:
        return round(float(np.clip((query_cell - first) / span * extent, 0, extent)))

    box = (
        edge(0, around.left, around.cols, photo_w),
        edge(0, around.top, around.rows, photo_h),
        edge(grid, around.left, around.cols, photo_w),
        edge(grid, around.top, around.rows, photo_h),
    )
    return LocalMatch(around.score, box)


def robust_results(
    engine: SearchEngine,
    query: EncodedQuery,
    k: int,
    settings: RobustConfig,
    *,
    min_score: float | None = None,
    query_path: str | None = None,
    **filters: Any,
) -> list[SearchResult]:
    """The ``k`` best photos for an encoded query and its variants, locally verified, best first."""
    local = settings.local_verification and engine.patch_grid > 0 and query.images[0].patches is not None
    depth = max(k, settings.local_candidates) if local else k
    best: dict[int, SearchResult] = {}
    for image, kind in zip(query.images, query.kinds, strict=True):
        margin = 0.0 if kind == "global" else VARIANT_MARGIN
        for result in engine.search_vector(
            image.vector, depth, query_sha256=image.sha256, query_path=query_path, **filters
        ):
            known = best.get(result.id)
            if known is None or result.score > known.score + margin:
                best[result.id] = replace(result, match=kind)
    candidates = sorted(best.values(), key=lambda r: (-r.score, r.id))
    if local:
        verified = candidates[: settings.local_candidates]
        matches = _local_matches(engine, query.images[0], verified)
        for position, result in enumerate(verified):
            found = matches.get(result.id)
            if found is not None and found.score > result.score + LOCAL_MARGIN:
                candidates[position] = replace(result, score=found.score, match="local", box=found.box)
    if min_score is not None:
        candidates = [r for r in candidates if r.score >= min_score]
    candidates.sort(key=lambda r: (-round(r.score, 5), r.path != query_path, r.id))
    threshold = engine.near_duplicate_threshold().threshold
    return [
        replace(r, rank=rank, label=match_label(r.score, r.label == "exact", threshold))
        for rank, r in enumerate(candidates[:k], start=1)
    ]


def _local_matches(engine: SearchEngine, query: QueryImage, results: Sequence[SearchResult]) -> dict[int, LocalMatch]:
    sizes = {r.id: (r.width, r.height) for r in results}
    found: dict[int, LocalMatch] = {}
    if query.patches is None:
        return found
    # Compared in the grid codes' rotated space: one rotation of the query instead of one per photo cell.
    shape = query.patches.shape
    rotated = replace(query, patches=rotate(query.patches.reshape(-1, shape[-1])).reshape(shape))
    for chunk_ids, stored in engine.catalog.stored_grids(list(sizes)):
        for photo_id, stored_grid in zip(chunk_ids.tolist(), stored, strict=True):
            found[photo_id] = local_match(rotated, stored_cells(stored_grid, engine.dim), sizes[photo_id])
    return found


def search_image_robust(
    engine: SearchEngine,
    image: Image.Image | bytes | Path,
    k: int | None = None,
    settings: RobustConfig | None = None,
    **filters: Any,
) -> list[SearchResult]:
    """Neighbours of an image (file path, bytes or PIL image), robust to the edits ``settings`` (default:
    the engine's ``search.robust``) allow for. With both options off, exactly :meth:`SearchEngine.search_image`."""
    settings = settings or engine.config.search.robust
    k = k or engine.config.search.default_k
    if not settings.flips_and_rotations and not settings.local_verification:
        return engine.search_image(image, k, **filters)
    from core.preprocess import model_pixels

    decoded = engine.decode_query(image)
    pixels = model_pixels(decoded.image, engine.provenance.image_size).unsqueeze(0)
    encoded = encode_variants(
        engine, pixels, [(decoded.width, decoded.height)], [decoded.sha256], variant_names(settings)
    )[0]
    query_path = str(image.expanduser().resolve()) if isinstance(image, Path) else None
    return robust_results(engine, encoded, k, settings, query_path=query_path, **filters)
