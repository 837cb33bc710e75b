"""Near-duplicate pairs that only a flip or a rotation reveals, for duplicate detection (opt-in).

A stored vector is the photo as it is, and the model is not invariant to a mirror or a quarter turn, so a
mirrored or turned copy can score below the near-duplicate threshold against its source. To find those
pairs every indexed photo is read again from its file, encoded as its flips and rotations
(``search.robust.variants``, the same ones a robust query uses), and each variant searches the index.

That is one more forward pass per variant and photo (four by default): about four times the encoder time
of a full build, which is why it is not on by default (``duplicates --flips``; the figures are in
``docs/duplicates-and-search.md``, measured by ``benchmarks/flipped_duplicates.py``). A photo whose file
cannot be read any more is skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from core.errors import LoupeError
from search.engine import MatchKind, SearchEngine
from search.robust import VARIANTS

logger = logging.getLogger(__name__)

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]
# Photos decoded and encoded together (times the variants: one encoder call).
PHOTOS_PER_CALL = 4


@dataclass(frozen=True)
class FlippedPairs:
    """Pairs ``(first[i], second[i])`` of catalog ids where a flip or rotation of ``first`` scores
    ``scores[i]`` (at or above the threshold) against ``second``, found by variant ``kinds[i]``."""

    first: Ids
    second: Ids
    scores: Scores
    kinds: list[MatchKind]
    photos: int
    unreadable: int

    def best(self) -> dict[tuple[int, int], tuple[float, MatchKind]]:
        """The best variant score of every pair, both ways round."""
        found: dict[tuple[int, int], tuple[float, MatchKind]] = {}
        for a, b, score, kind in zip(
            self.first.tolist(), self.second.tolist(), self.scores.tolist(), self.kinds, strict=True
        ):
            for key in ((a, b), (b, a)):
                if key not in found or score > found[key][0]:
                    found[key] = (float(score), kind)
        return found


def flipped_pairs(
    engine: SearchEngine,
    threshold: float,
    variants: Sequence[str],
    *,
    neighbours: int,
    progress: Callable[[int], object] | None = None,
) -> FlippedPairs:
    """Every pair in which one of ``variants`` of an indexed photo scores at least ``threshold`` against
    another photo among its ``neighbours`` nearest; ``progress`` is called with each chunk's photo count."""
    from core.preprocess import model_pixels

    index, _ = engine.current()
    ids, _ = engine.catalog.indexed_ids()
    paths = engine.catalog.path_of(ids.tolist())
    k = min(neighbours + 1, int(index.ntotal))
    firsts: list[Ids] = []
    seconds: list[Ids] = []
    scores: list[Scores] = []
    kinds: list[MatchKind] = []
    unreadable = 0
    for start in range(0, len(ids), PHOTOS_PER_CALL):
        chunk = [int(i) for i in ids[start : start + PHOTOS_PER_CALL] if int(i) in paths]
        pixels: list[torch.Tensor] = []
        read: list[int] = []
        for photo_id in chunk:
            try:
                decoded = engine.decode_query(Path(paths[photo_id]))
            except LoupeError as error:
                unreadable += 1
                logger.warning("skipping %s: %s", paths[photo_id], error)
                continue
            pixels.append(model_pixels(decoded.image, engine.provenance.image_size))
            read.append(photo_id)
        if pixels and k >= 2 and variants:
            batch = torch.stack(pixels)
            stacked = torch.cat([VARIANTS[name].transform(batch) for name in variants]).contiguous()
            vectors, _ = engine.encode_model_pixels(stacked)
            found_scores, found = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
            own = np.tile(np.asarray(read, dtype=np.int64), len(variants))
            kept = (found >= 0) & (found_scores >= threshold) & (found != own[:, None])
            rows = np.nonzero(kept)[0]
            firsts.append(own[rows])
            seconds.append(found[kept].astype(np.int64))
            scores.append(found_scores[kept].astype(np.float32))
            kinds += [VARIANTS[variants[row // len(read)]].kind for row in rows.tolist()]
        if progress is not None:
            progress(len(chunk))
    empty_ids = np.empty(0, dtype=np.int64)
    pairs = FlippedPairs(
        first=np.concatenate(firsts) if firsts else empty_ids,
        second=np.concatenate(seconds) if seconds else empty_ids,
        scores=np.concatenate(scores) if scores else np.empty(0, dtype=np.float32),
        kinds=kinds,
        photos=len(ids),
        unreadable=unreadable,
    )
    logger.info(
        "%d pairs at >= %s by %d flips/rotations of %d photos (%d unreadable)",
        len(pairs.first),
        threshold,
        len(variants),
        pairs.photos,
        unreadable,
    )
    return pairs
