"""Photo metadata in the catalog: filling the rows whose header was never read, and the counts ``status``
shows.

A build writes each new or changed photo's metadata with its vector. Rows from before schema 5 (and rows
read by an older :data:`~core.photo_metadata.METADATA_VERSION`) are filled by :func:`backfill_metadata`
at the end of the next build: only their headers are read, in a few threads (the work is waiting on the
disk), never the pixels, and the model is not involved, so the vectors stay as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from tqdm import tqdm

from core.catalog.records import metadata_values
from core.catalog.store import Catalog
from core.catalog.tables import STATUS_INDEXED, ImageRecord
from core.decode import supported_formats
from core.photo_metadata import METADATA_VERSION, PhotoMetadata, read_metadata

logger = logging.getLogger(__name__)

CHUNK = 500
READER_THREADS = 8


@dataclass(frozen=True)
class UnreadPhoto:
    """An indexed row whose metadata was not read by this version, with the file facts it was indexed at."""

    id: int
    path: str
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class BackfillReport:
    """What :func:`backfill_metadata` did: headers read and stored, and rows left for a later build (the
    file changed or went since the scan, cannot be read, or Pillow cannot make out its header now)."""

    read: int = 0
    skipped: int = 0


def _stale() -> Any:
    return (ImageRecord.status == STATUS_INDEXED) & (ImageRecord.metadata_version < METADATA_VERSION)


def count_unread(catalog: Catalog) -> int:
    """Indexed rows whose metadata this version has not read."""
    with catalog.session() as session:
        return int(session.scalar(select(func.count()).select_from(ImageRecord).where(_stale())) or 0)


def unread_photos(catalog: Catalog, chunk: int = CHUNK) -> Iterator[list[UnreadPhoto]]:
    """Indexed rows whose metadata this version has not read, by id, in chunks (keyset pagination)."""
    last = 0
    while True:
        query = (
            select(ImageRecord.id, ImageRecord.path, ImageRecord.size_bytes, ImageRecord.mtime_ns)
            .where(_stale(), ImageRecord.id > last)
            .order_by(ImageRecord.id)
            .limit(chunk)
        )
        with catalog.session() as session:
            rows = [UnreadPhoto(*row) for row in session.execute(query)]
        if not rows:
            return
        yield rows
        last = rows[-1].id


def save_metadata(catalog: Catalog, found: dict[int, PhotoMetadata]) -> None:
    """Store the metadata of rows by id, in one transaction (the vectors are not touched)."""
    if not found:
        return
    with catalog.session() as session, session.begin():
        session.execute(update(ImageRecord), [{"id": id_, **metadata_values(m)} for id_, m in found.items()])


def _header(photo: UnreadPhoto, formats: tuple[str, ...]) -> PhotoMetadata | None:
    """The photo's metadata, if its file still holds what was indexed (same size and mtime, as a build's
    own change check) and its header can be read; else None."""
    path = Path(photo.path)
    try:
        info = path.stat()
        if info.st_size != photo.size_bytes or info.st_mtime_ns != photo.mtime_ns:
            return None  # changed since the scan: the next build indexes it again, metadata included
        return read_metadata(path, formats)
    except OSError as error:
        logger.debug("cannot read the header of %s: %s", photo.path, error)
        return None


def backfill_metadata(catalog: Catalog, *, show_progress: bool = False) -> BackfillReport:
    """Read the headers of the indexed photos whose metadata this version has not read, and store it."""
    total = count_unread(catalog)
    if not total:
        return BackfillReport()
    formats = supported_formats()
    read = skipped = 0
    threads = min(READER_THREADS, (os.cpu_count() or 1) * 2)
    with (
        ThreadPoolExecutor(threads, thread_name_prefix="loupe-metadata") as pool,
        tqdm(total=total, desc="reading metadata", unit="img", disable=not show_progress, leave=False) as bar,
    ):
        for photos in unread_photos(catalog):
            headers = pool.map(lambda photo: _header(photo, formats), photos)
            found = {photo.id: metadata for photo, metadata in zip(photos, headers, strict=True) if metadata}
            save_metadata(catalog, found)
            read += len(found)
            skipped += len(photos) - len(found)
            bar.update(len(photos))
    logger.info("metadata read from %d headers (%d left for a later build)", read, skipped)
    return BackfillReport(read=read, skipped=skipped)


def metadata_counts(catalog: Catalog) -> dict[str, Any]:
    """The ``status`` view of the indexed photos' metadata: how many were read, how many have an EXIF
    capture time and a camera, and the photos per file format (most first)."""
    indexed = ImageRecord.status == STATUS_INDEXED
    read = ImageRecord.metadata_version >= METADATA_VERSION
    camera = ImageRecord.camera_make.is_not(None) | ImageRecord.camera_model.is_not(None)
    with catalog.session() as session:
        counts = session.execute(
            select(
                func.count().filter(read),
                func.count().filter(~read),
                func.count(ImageRecord.capture_time),
                func.count().filter(camera),
            ).where(indexed)
        ).one()
        formats = session.execute(
            select(ImageRecord.file_format, func.count())
            .where(indexed, read, ImageRecord.file_format.is_not(None))
            .group_by(ImageRecord.file_format)
        ).all()
    return {
        "read": int(counts[0]),
        "pending": int(counts[1]),
        "with_capture_time": int(counts[2]),
        "with_camera": int(counts[3]),
        "formats": {str(name): int(n) for name, n in sorted(formats, key=lambda item: (-item[1], item[0]))},
    }
