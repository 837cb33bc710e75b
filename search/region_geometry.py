"""Region search's geometry: which query cells a box covers, how much of each, and where a box lands
in a photo once its block of cells is placed there (:mod:`search.region`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from search.engine import QueryError

Box = tuple[int, int, int, int]
Grid = npt.NDArray[np.float32]
MIN_COVER = 0.25


@dataclass(frozen=True)
class CellBlock:
    """The query cells a box covers: rows ``top..bottom-1``, columns ``left..right-1`` of a ``grid``."""

    top: int
    left: int
    bottom: int
    right: int
    grid: int

    @property
    def rows(self) -> int:
        return self.bottom - self.top

    @property
    def cols(self) -> int:
        return self.right - self.left


@dataclass(frozen=True)
class Placement:
    """Where a query block matched in a photo's grid, in cells."""

    score: float
    top: int
    left: int
    rows: int
    cols: int


def cells_under_box(box: Box | None, width: int, height: int, grid: int) -> CellBlock:
    """The block of grid cells covered by ``box`` (pixel coordinates of a ``width x height`` image).

    A row (column) of cells counts when the box spans at least a quarter of its height (width); a box
    smaller than that still gets the cell under its centre. ``None`` means the whole image.
    """
    if box is None:
        return CellBlock(0, 0, grid, grid, grid)
    x0, y0, x1, y1 = box
    x0, x1 = max(0, min(x0, x1)), min(width, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(height, max(y0, y1))
    if x1 <= x0 or y1 <= y0:
        raise QueryError(f"box {box} does not overlap the {width}x{height} image")
    cell_w, cell_h = width / grid, height / grid

    def covered(start: float, end: float, size: float) -> list[int]:
        return [i for i in range(grid) if min(end, (i + 1) * size) - max(start, i * size) >= MIN_COVER * size]

    cols, rows = covered(x0, x1, cell_w), covered(y0, y1, cell_h)
    if not cols:
        cols = [min(grid - 1, int((x0 + x1) / 2 / cell_w))]
    if not rows:
        rows = [min(grid - 1, int((y0 + y1) / 2 / cell_h))]
    return CellBlock(rows[0], cols[0], rows[-1] + 1, cols[-1] + 1, grid)


def block_to_box(top: int, left: int, rows: int, cols: int, grid: int, width: int, height: int) -> Box:
    """Pixel box of a block of cells in a ``width x height`` image squashed onto a ``grid``."""
    return (
        round(left * width / grid),
        round(top * height / grid),
        round((left + cols) * width / grid),
        round((top + rows) * height / grid),
    )


def cell_coverage(box: Box | None, block: CellBlock, width: int, height: int) -> Grid:
    """How much of each cell of ``block`` the box covers (0..1), ``[rows, cols]``."""
    if box is None:
        return np.ones((block.rows, block.cols), dtype=np.float32)
    x0, y0, x1, y1 = box
    cell_w, cell_h = width / block.grid, height / block.grid

    def overlap(start: float, end: float, size: float, first: int, count: int) -> npt.NDArray[np.float32]:
        edges = (np.arange(first, first + count) * size).astype(np.float32)
        return np.clip(np.minimum(end, edges + size) - np.maximum(start, edges), 0, size) / size

    rows = overlap(min(y0, y1), max(y0, y1), cell_h, block.top, block.rows)
    cols = overlap(min(x0, x1), max(x0, x1), cell_w, block.left, block.cols)
    return np.maximum(np.outer(rows, cols), 1e-3).astype(np.float32)


def matched_box(
    box: Box | None,
    block: CellBlock,
    placement: Placement,
    query_size: tuple[int, int],
    photo_size: tuple[int, int],
    photo_grid: int,
) -> Box:
    """The query box carried through the placement (in cells of a ``photo_grid``) into the photo's
    pixels, sub-cell precise: the box's fractional position inside its block of cells is kept."""
    query_w, query_h = query_size
    photo_w, photo_h = photo_size
    grid = block.grid
    if box is None:
        box = (0, 0, query_w, query_h)
    x0, y0, x1, y1 = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))

    def carry(value: float, size: int, first: int, count: int, start: int, span: int, photo_extent: int) -> int:
        in_block = value / size * grid - first  # query cells from the block's edge
        in_photo = start + in_block * span / count  # photo cells
        return round(float(np.clip(in_photo / photo_grid * photo_extent, 0, photo_extent)))

    return (
        carry(x0, query_w, block.left, block.cols, placement.left, placement.cols, photo_w),
        carry(y0, query_h, block.top, block.rows, placement.top, placement.rows, photo_h),
        carry(x1, query_w, block.left, block.cols, placement.left, placement.cols, photo_w),
        carry(y1, query_h, block.top, block.rows, placement.top, placement.rows, photo_h),
    )
