"""What a photo's header says about it: file format, EXIF capture date and time, camera make and model.

These facts choose the keeper of a duplicate group (:mod:`search.keeper`) and are shown beside results.
They come from the header only (Pillow opens a file lazily; EXIF sits before the pixel data in JPEG,
TIFF, WebP and HEIF files), so reading them for a catalog built before they were kept costs no decoding
and no model pass (:mod:`core.catalog.metadata`). This module imports only the standard library and
Pillow: it runs in the build's decode workers.

A broken or absent EXIF block is common in camera and editor output and says nothing about the pixels:
it gives ``None`` fields, never an error.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

logger = logging.getLogger(__name__)

# Bumped when this module reads more (or reads better): rows read by an older version are read again from
# their header by the next build. 0 = never read (rows from before schema 5).
METADATA_VERSION = 1
# Longest make or model kept (the catalog column's size); EXIF allows any length, cameras write < 40.
MAX_TEXT = 128
# Lossless WebP (a VP8L bitstream) is a better original than lossy WebP; Pillow names both "WEBP".
WEBP_LOSSLESS = "WEBP-LOSSLESS"
# How far into a WebP file its first image chunk is looked for (ICC profiles come before it).
WEBP_HEAD_BYTES = 1 << 16

_EXIF_DATE = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


@dataclass(frozen=True)
class PhotoMetadata:
    """A photo's file format (Pillow's name, e.g. ``JPEG``, ``PNG``, ``TIFF``, ``WEBP``; ``WEBP-LOSSLESS``
    for lossless WebP), its EXIF capture time (camera wall-clock time, no time zone: EXIF rarely records
    one), camera make and model; ``None`` where the file does not say."""

    file_format: str | None = None
    capture_time: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None


def parse_exif_datetime(value: Any, subseconds: Any = None) -> datetime | None:
    """An EXIF date-time (``"YYYY:MM:DD HH:MM:SS"``, some writers use ``-`` or ``T``) as a naive datetime,
    with ``subseconds`` (SubSecTime*, digits of a fraction) when given; None for a blank or impossible
    value such as ``"0000:00:00 00:00:00"``."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    match = _EXIF_DATE.search(value)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    if isinstance(subseconds, bytes):
        subseconds = subseconds.decode("ascii", "replace")
    digits = re.match(r"\s*(\d+)", subseconds) if isinstance(subseconds, str) else None
    if digits is not None:
        moment = moment.replace(microsecond=int(digits.group(1)[:6].ljust(6, "0")))
    return moment


def _text(value: Any) -> str | None:
    """An EXIF ASCII field as storable text: no NULs or control characters, no lone surrogates, trimmed."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable()).encode("utf-8", "replace").decode("utf-8").strip()
    return cleaned[:MAX_TEXT] or None


def webp_is_lossless(head: bytes) -> bool:
    """Whether a WebP file, from its first bytes, holds a lossless (VP8L) image rather than a lossy one."""
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    position = 12
    while position + 8 <= len(head):
        chunk, size = head[position : position + 4], int.from_bytes(head[position + 4 : position + 8], "little")
        if chunk == b"VP8L":
            return True
        if chunk == b"VP8 ":
            return False
        position += 8 + size + (size & 1)  # chunks are padded to an even size
    return False


def metadata_of(image: Image.Image, head: bytes = b"") -> PhotoMetadata:
    """The metadata of an opened image (its pixels need not be loaded). ``head``: the file's first bytes,
    which tell lossless WebP apart (:data:`WEBP_HEAD_BYTES` of them suffice)."""
    file_format = image.format
    if file_format == "WEBP" and webp_is_lossless(head):
        file_format = WEBP_LOSSLESS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The base class's getexif reads what the header gave (or a TIFF's IFD); PNG's own would load the
            # pixels to look for an eXIf chunk after them.
            exif = Image.Image.getexif(image)
            details = exif.get_ifd(ExifTags.IFD.Exif)
    except MemoryError:
        raise
    except Exception as exc:
        logger.debug("ignoring unreadable EXIF: %s: %s", type(exc).__name__, exc)
        return PhotoMetadata(file_format=file_format)
    base = ExifTags.Base
    capture = (
        parse_exif_datetime(details.get(base.DateTimeOriginal), details.get(base.SubsecTimeOriginal))
        or parse_exif_datetime(details.get(base.DateTimeDigitized), details.get(base.SubsecTimeDigitized))
        or parse_exif_datetime(exif.get(base.DateTime), details.get(base.SubsecTime))
    )
    return PhotoMetadata(
        file_format=file_format,
        capture_time=capture,
        camera_make=_text(exif.get(base.Make)),
        camera_model=_text(exif.get(base.Model)),
    )


def metadata_from_bytes(data: bytes, formats: tuple[str, ...]) -> PhotoMetadata | None:
    """The metadata of a whole file's bytes, opened as one of ``formats``; None when Pillow cannot
    identify it (the decoder records why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=formats) as opened:
                return metadata_of(opened, data)
    except MemoryError:
        raise
    except Exception as exc:
        logger.debug("no metadata: %s: %s", type(exc).__name__, exc)
        return None


def read_metadata(path: Path, formats: tuple[str, ...]) -> PhotoMetadata | None:
    """The metadata of a photo file, from its header only (no pixel data is decoded); None when Pillow
    cannot make it out as one of ``formats``. Raises :class:`OSError` when the file cannot be opened or read."""
    with path.open("rb") as file:
        head = file.read(WEBP_HEAD_BYTES)
        file.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(file, formats=formats) as opened:
                    return metadata_of(opened, head)
        except MemoryError:
            raise
        except Exception as exc:  # Pillow's parsers raise many kinds on a damaged header
            logger.debug("no metadata in %s: %s: %s", path, type(exc).__name__, exc)
            return None
