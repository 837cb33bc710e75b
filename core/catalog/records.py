"""What the catalog hands out and takes in: plain record types, apart from the ORM rows, and the mapping
of a photo row to them.

:class:`Provenance` says how vectors were made; :class:`IndexedFile` and :class:`FailedFile` are a build's
outcomes for one file; :class:`FileState`, :class:`KnownContent` and :class:`PhotoRecord` are what reads
return; :class:`StoredGrid` is a patch grid as stored, carried over without decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from core.catalog.tables import SCHEMA_VERSION, ImageRecord
from core.photo_metadata import METADATA_VERSION, PhotoMetadata

logger = logging.getLogger(__name__)

Embeddings = npt.NDArray[np.float32]
# A grid of unit cell vectors: float16 as the model's pooling makes it, float32 as the catalog decodes it.
PatchGrid = npt.NDArray[np.float16] | npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Provenance:
    """What must be equal for two vectors to be comparable."""

    model: str
    weights_kind: str
    weights_sha256: str
    weights_source: str
    image_size: int
    dim: int
    preprocessing: str
    patch_grid: int = 0
    schema_version: int = SCHEMA_VERSION
    catalog_id: str = ""

    def differences(self, other: Provenance) -> list[str]:
        """Human-readable list of the settings that differ (the source path may differ freely)."""
        problems = []
        for name in (
            "model",
            "weights_kind",
            "weights_sha256",
            "image_size",
            "dim",
            "preprocessing",
            "patch_grid",
            "schema_version",
        ):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                problems.append(f"{name}: index has {mine!r}, this run has {theirs!r}")
        return problems


@dataclass(frozen=True)
class FileState:
    """What the catalog knows of a path, enough to decide whether it must be read again."""

    id: int
    size_bytes: int
    mtime_ns: int
    status: str
    sha256: str | None


@dataclass(frozen=True)
class StoredGrid:
    """A patch grid as the catalog stores it: ``grid`` cells per side, ``data`` its stored bytes. Reused
    content carries these bytes to its new row as they are, never decoded and encoded again."""

    grid: int
    data: bytes


@dataclass(frozen=True)
class IndexedFile:
    """A file that was embedded (or whose content's embedding was reused). ``patches``: a fresh grid, or
    a stored one carried over from a row with the same content."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    embedding: Embeddings
    patches: PatchGrid | StoredGrid | None = None
    # None: not read (the next build reads it from the header).
    metadata: PhotoMetadata | None = None


@dataclass(frozen=True)
class FailedFile:
    """A file that could not be indexed, and why."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None
    reason: str
    message: str


FileOutcome = IndexedFile | FailedFile


@dataclass(frozen=True)
class KnownContent:
    """An indexed file whose content (sha256) matched: its embedding and stored patch grid (None: the
    catalog has none for this content) can be reused."""

    id: int
    path: str
    width: int
    height: int
    embedding: Embeddings
    patches: StoredGrid | None = None
    metadata: PhotoMetadata | None = None


@dataclass(frozen=True)
class PhotoRecord:
    """What search results show of an indexed photo. ``capture_time`` (EXIF, camera wall-clock time, no
    zone), ``camera_make``, ``camera_model`` and ``file_format`` (:class:`PhotoMetadata`) are None where
    the file does not say, or its header was not read yet."""

    id: int
    path: str
    width: int
    height: int
    sha256: str
    size_bytes: int
    mtime_ns: int
    capture_time: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    file_format: str | None = None


def photo_record(row: ImageRecord) -> PhotoRecord:
    """The :class:`PhotoRecord` of an ``images`` row."""
    return PhotoRecord(
        id=row.id,
        path=row.path,
        width=row.width or 0,
        height=row.height or 0,
        sha256=row.sha256 or "",
        size_bytes=row.size_bytes,
        mtime_ns=row.mtime_ns,
        capture_time=row.capture_time,
        camera_make=row.camera_make,
        camera_model=row.camera_model,
        file_format=row.file_format,
    )


def metadata_values(metadata: PhotoMetadata | None) -> dict[str, Any]:
    """The ``images`` columns that hold ``metadata`` (None: not read)."""
    known = metadata or PhotoMetadata()
    return {
        "capture_time": known.capture_time,
        "camera_make": known.camera_make,
        "camera_model": known.camera_model,
        "file_format": known.file_format,
        "metadata_version": 0 if metadata is None else METADATA_VERSION,
    }


def stored_metadata(row: ImageRecord) -> PhotoMetadata | None:
    """The header facts an ``images`` row holds; None when they were read by an older Loupe, or never."""
    if row.metadata_version < METADATA_VERSION:
        return None
    return PhotoMetadata(row.file_format, row.capture_time, row.camera_make, row.camera_model)
