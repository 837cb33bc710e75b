"""Thumbnails, cached on disk under the data dir, and the overlays drawn on them.

Only photos of the catalog are ever read, by id: the file path comes from the catalog row, never from
the browser, so no request can make the app read another file. And only the bytes that were indexed are
shown: a file whose sha256 no longer matches its row (edited since, or swapped for a symlink to some
other file) is not displayed until a build indexes the new content. A thumbnail is made once
(reduced-size JPEG decoding, EXIF orientation applied) and named by photo id and content hash, so a
changed photo gets a new one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from core.catalog import PhotoRecord
from core.decode import DecodedImage, DecodeLimits, decode_image, read_image_bytes
from core.errors import DecodeError

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256
# Threads making a page's missing thumbnails: Pillow releases the GIL while it decodes and resizes, so a
# few threads keep every core busy while others wait on the disk.
THUMBNAIL_THREADS = 4
Box = tuple[int, int, int, int]


def thumbnail_dir(data_dir: Path) -> Path:
    return data_dir / "thumbnails"


def thumbnail_path(data_dir: Path, photo: PhotoRecord, side: int = THUMBNAIL_SIDE) -> Path:
    """Where the thumbnail of ``photo`` is cached: named by id and content, so a changed photo gets a new
    one (and by its size, when it is not the usual one)."""
    size = "" if side == THUMBNAIL_SIDE else f"-{side}"
    return thumbnail_dir(data_dir) / f"{photo.id}-{photo.sha256[:12]}{size}.jpg"


def read_indexed(photo: PhotoRecord, limits: DecodeLimits, min_side: int) -> DecodedImage | None:
    """The photo's pixels if its file still holds the bytes that were indexed; None (logged) otherwise."""
    try:
        data = read_image_bytes(Path(photo.path), limits)
        if hashlib.sha256(data).hexdigest() != photo.sha256:
            logger.warning("not showing %s: its content changed since it was indexed", photo.path)
            return None
        return decode_image(data, limits, min_side=min_side)
    except DecodeError as error:
        logger.warning("cannot show %s: %s", photo.path, error)
        return None


def thumbnail(data_dir: Path, photo: PhotoRecord, limits: DecodeLimits, side: int = THUMBNAIL_SIDE) -> Path | None:
    """The cached thumbnail of an indexed photo, at most ``side`` pixels (made on first use); None if the
    file is gone, broken or no longer the indexed content."""
    target = thumbnail_path(data_dir, photo, side)
    if target.exists():
        return target
    decoded = read_indexed(photo, limits, side)
    if decoded is None:
        return None
    image = decoded.image
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    image.save(temporary, format="JPEG", quality=85)
    os.replace(temporary, target)
    return target


def thumbnails(
    data_dir: Path,
    photos: Iterable[PhotoRecord],
    limits: DecodeLimits,
    side: int = THUMBNAIL_SIDE,
    threads: int = THUMBNAIL_THREADS,
) -> dict[int, Path | None]:
    """The cached thumbnail of each of ``photos`` by id (None as for :func:`thumbnail`); the missing ones
    are made now, in ``threads`` threads. For a page of results: only the photos shown are ever read."""
    wanted = {photo.id: photo for photo in photos}
    made: dict[int, Path | None] = {}
    missing: list[PhotoRecord] = []
    for photo in wanted.values():
        cached = thumbnail_path(data_dir, photo, side)
        if cached.exists():
            made[photo.id] = cached
        else:
            missing.append(photo)
    if len(missing) > 1 and threads > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(missing)), thread_name_prefix="thumbnail") as pool:
            found = pool.map(lambda photo: thumbnail(data_dir, photo, limits, side), missing)
            made.update(zip((photo.id for photo in missing), found, strict=True))
    else:
        made.update((photo.id, thumbnail(data_dir, photo, limits, side)) for photo in missing)
    return made


def full_image(photo: PhotoRecord, limits: DecodeLimits, longest_side: int = 1600) -> Image.Image | None:
    """An indexed photo for the side-by-side view, oriented, at most ``longest_side`` pixels; None as for
    :func:`thumbnail`."""
    decoded = read_indexed(photo, limits, longest_side)
    if decoded is None:
        return None
    image = decoded.image
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    return image


def draw_box(image: Image.Image, box: Box, size: tuple[int, int], colour: str = "#ff2d55") -> Image.Image:
    """``image`` with ``box`` (given in the pixels of a ``size`` image) outlined."""
    scale_x, scale_y = image.width / size[0], image.height / size[1]
    x0, y0, x1, y1 = box
    framed = image.convert("RGB").copy()
    width = max(2, round(min(framed.size) / 80))
    ImageDraw.Draw(framed).rectangle(
        (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y), outline=colour, width=width
    )
    return framed


def overlay_heatmap(image: Image.Image, heatmap: npt.NDArray[np.float32]) -> Image.Image:
    """``image`` tinted red where the per-cell similarity is high (min-max scaled)."""
    low, high = float(heatmap.min()), float(heatmap.max())
    scaled = (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)
    alpha = Image.fromarray((scaled * 160).astype(np.uint8), mode="L").resize(image.size, Image.Resampling.BILINEAR)
    red = Image.new("RGB", image.size, (255, 0, 60))
    return Image.composite(red, image.convert("RGB"), alpha)
