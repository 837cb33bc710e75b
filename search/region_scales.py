"""Region search with the query encoded again at other scales (query side only; storage is unchanged).

A copy pasted at half or twice the size lines up with the stored grid's cells only through the placement
search's rescaled windows, where each query cell stands in for a fraction or several of a photo's cells.
Here the query photo is also encoded as :class:`QueryView` s: shrunk by ``s < 1`` onto a canvas of its
mean colour (the box covers fewer cells), or cut around the box and enlarged by ``s > 1`` (it covers
more), so that a copy at about that scale meets query cells of its own size. Each view is a window of
the query photo's pixels (``origin`` and ``size``, possibly beyond the photo) squashed onto the model's
square, so the box, mapped into the window, goes through :func:`search.region.match_region`'s geometry
unchanged, and a matched box comes back in the candidate's pixels as before.

Each extra view's placement search tries only windows near one photo cell per query cell; each
candidate is ranked by the encoding (the photo as it is, with the full scale range, or a view) where it
stands out most from the other candidates (:mod:`search.region_fusion`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageStat

from search.engine import QueryError, SearchEngine
from search.region_geometry import Box

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryView:
    """A window of the query photo's pixels (``origin`` ``x, y`` and ``size`` ``w, h``, may reach beyond
    the photo) shown squashed onto the model's square ``image``, at ``scale`` of the photo's own view."""

    scale: float
    origin: tuple[float, float]
    size: tuple[float, float]
    image: Image.Image

    def box_in_view(self, box: Box) -> Box:
        """``box`` (query photo pixels) in the view's pixels."""
        ox, oy = self.origin
        return (round(box[0] - ox), round(box[1] - oy), round(box[2] - ox), round(box[3] - oy))

    @property
    def view_size(self) -> tuple[int, int]:
        return (max(1, round(self.size[0])), max(1, round(self.size[1])))


def query_views(
    image: Image.Image, full_size: tuple[int, int], box: Box, scales: Sequence[float], side: int
) -> list[QueryView]:
    """Views of ``image`` (RGB; possibly decoded smaller than its ``full_size`` ``W x H``, in whose
    pixels ``box`` and the views' windows are) at each of ``scales`` other than 1, ``side`` px square.

    ``s < 1``: the photo squashed to ``s * side`` and centred on a ``side`` canvas of its mean colour
    (the window is ``W/s x H/s``). ``s > 1``: a ``W/s x H/s`` window around the box's centre, kept
    inside the photo; skipped when the box does not fit in it."""
    width, height = image.size
    factor = width / max(1, full_size[0])  # decoded pixels per full-size pixel
    x0, x1 = min(box[0], box[2]) * factor, max(box[0], box[2]) * factor
    y0, y1 = min(box[1], box[3]) * factor, max(box[1], box[3]) * factor
    views = []
    for scale in scales:
        if math.isclose(scale, 1.0):
            continue
        if scale < 1:
            placed = max(1, round(scale * side))
            actual = placed / side
            offset = (side - placed) // 2
            window = (width / actual, height / actual)
            origin = (-offset * window[0] / side, -offset * window[1] / side)
            mean = tuple(round(value) for value in ImageStat.Stat(image).mean[:3])
            canvas = Image.new("RGB", (side, side), mean)
            canvas.paste(image.resize((placed, placed), Image.Resampling.BICUBIC), (offset, offset))
            views.append(QueryView(actual, _full(origin, factor), _full(window, factor), canvas))
            continue
        window = (width / scale, height / scale) if math.isfinite(scale) else (x1 - x0, y1 - y0)
        if x1 - x0 > window[0] + 1e-6 or y1 - y0 > window[1] + 1e-6:
            continue
        left = round(min(max((x0 + x1) / 2 - window[0] / 2, 0.0), width - window[0]))
        top = round(min(max((y0 + y1) / 2 - window[1] / 2, 0.0), height - window[1]))
        right, bottom = min(width, round(left + window[0])), min(height, round(top + window[1]))
        crop = image.crop((left, top, right, bottom)).resize((side, side), Image.Resampling.BICUBIC)
        views.append(QueryView(scale, _full((left, top), factor), _full((right - left, bottom - top), factor), crop))
    return views


def _full(pair: tuple[float, float], factor: float) -> tuple[float, float]:
    return (pair[0] / factor, pair[1] / factor)


@dataclass(frozen=True)
class EncodedView:
    """A :class:`QueryView` encoded: its pooled grid (``[g, g, dim]``), the box in its pixels and its
    size in pixels (a window of the query's; see :func:`search.region.match_region`)."""

    grid: npt.NDArray[np.float32]
    box: Box
    size: tuple[int, int]


@dataclass(frozen=True)
class EncodedRegionQuery:
    """The query photo's own pooled grid and full size, and its extra views encoded."""

    grid: npt.NDArray[np.float32]
    width: int
    height: int
    views: list[EncodedView]


def encode_with_views(
    engine: SearchEngine, image: Image.Image | bytes | Path, box: Box | None, scales: Sequence[float]
) -> EncodedRegionQuery:
    """Decode the query, make its views at ``scales`` (:func:`query_views`) and encode the photo and all
    its views in one encoder call."""
    from core.preprocess import model_pixels

    decoded = engine.decode_query(image)
    full_box = box if box is not None else (0, 0, decoded.width, decoded.height)
    side = engine.provenance.image_size
    views = query_views(decoded.image, (decoded.width, decoded.height), full_box, scales, side)
    pixels = torch.stack([model_pixels(decoded.image, side)] + [model_pixels(view.image, side) for view in views])
    _, grids = engine.encode_model_pixels(pixels)
    if grids is None:
        raise QueryError("the query has no patch grid: the index was built without patches")
    logger.debug("query encoded with %d extra views (scales %s)", len(views), [round(v.scale, 3) for v in views])
    return EncodedRegionQuery(
        grids[0],
        decoded.width,
        decoded.height,
        [
            EncodedView(grid, view.box_in_view(full_box), view.view_size)
            for view, grid in zip(views, grids[1:], strict=True)
        ],
    )
