"""Turn one photo file into an RGB image for the encoder.

Every way a bad file can fail becomes a ``DecodeError`` with a stable reason slug, so a build records
the file and moves on. This runs in DataLoader workers: it imports only the standard library, numpy
and Pillow.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import io
import logging
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError, features

from core.config import DecodeConfig
from core.errors import DecodeError
from core.photo_metadata import PhotoMetadata, metadata_of

logger = logging.getLogger(__name__)

_BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
# Image.open is limited to these decoders: left to itself it sniffs every registered format,
# including EPS, whose loader runs Ghostscript on whatever the file holds.
_BASE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "GIF")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})

# The table ImageOps.exif_transpose uses. We apply it ourselves because exif_transpose also
# re-serialises the EXIF block, which raises on some malformed blocks whose orientation reads fine.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

# Leading bytes of the formats we open: a file that starts like one but that Pillow cannot identify is a
# damaged photo ("corrupt": restore it from a backup), not some other kind of file ("not-an-image").
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")

# Pillow's OSError messages for pixel data that stops early.
_TRUNCATION_HINTS = ("truncated", "broken data stream")


@dataclass(frozen=True)
class DecodeLimits:
    """Refuse files before they cost memory: pixel count from the header, size on disk."""

    max_pixels: int
    max_file_bytes: int

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_file_bytes < 1:
            raise ValueError(f"decode limits must be positive, got {self}")

    @classmethod
    def of(cls, decode: DecodeConfig) -> DecodeLimits:
        """The limits of the ``decode`` settings (those photos are indexed and read back under)."""
        return cls(max_pixels=decode.max_pixels, max_file_bytes=decode.max_file_bytes)


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image with EXIF orientation applied, possibly reduced by JPEG draft decoding.

    ``width`` and ``height`` are the photo's full size after orientation, before any reduction;
    ``metadata`` what its header says (format, EXIF capture time, camera).
    """

    image: Image.Image
    width: int
    height: int
    metadata: PhotoMetadata | None = None


@dataclass(frozen=True)
class _Plugins:
    extensions: frozenset[str]
    formats: tuple[str, ...]


@functools.cache
def _plugins() -> _Plugins:
    # Cached per process and called from decode_image too: spawned workers must register the
    # optional openers themselves.
    extensions = set(_BASE_EXTENSIONS)
    formats = list(_BASE_FORMATS)
    try:
        importlib.import_module("pillow_heif").register_heif_opener()
    except ImportError:
        pass
    else:
        extensions |= {".heic", ".heif"}
        formats.append("HEIF")
    with warnings.catch_warnings():
        # Pillow < 11.3 warns that "avif" is an unknown feature.
        warnings.simplefilter("ignore")
        native_avif = bool(features.check("avif"))
    if not native_avif:
        with contextlib.suppress(ImportError):
            importlib.import_module("pillow_avif")  # registers its plugin on import
    Image.init()
    if "AVIF" in Image.OPEN:
        extensions.add(".avif")
        formats.append("AVIF")
    return _Plugins(frozenset(extensions), tuple(f for f in formats if f in Image.OPEN))


def supported_extensions() -> frozenset[str]:
    """Lower-case file suffixes, with the dot, that this module can decode.

    HEIC/HEIF are included when ``pillow_heif`` is installed, AVIF when Pillow or ``pillow_avif``
    supports it.
    """
    return _plugins().extensions


def supported_formats() -> tuple[str, ...]:
    """Pillow's names of the formats this module opens (the only decoders :func:`decode_image` lets
    Pillow try)."""
    return _plugins().formats


def read_image_bytes(path: Path, limits: DecodeLimits) -> bytes:
    """Read a whole file, refusing anything larger than ``limits.max_file_bytes`` unread.

    Raises ``DecodeError`` with reason ``missing``, ``not-a-file``, ``symlink-loop``, ``permission-denied``,
    ``file-too-large``, ``empty-file`` or ``unreadable``.
    """
    try:
        # stat first: opening a FIFO named x.jpg would block, a huge file would be read for nothing.
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError("not-a-file", f"{path} is not a regular file")
        if info.st_size > limits.max_file_bytes:
            raise DecodeError("file-too-large", _too_large(path, info.st_size, limits))
        with path.open("rb") as file:
            # One byte past the limit tells us if the file grew since stat().
            data = file.read(limits.max_file_bytes + 1)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DecodeError("missing", f"{path} no longer exists: {exc.strerror}") from exc
    except IsADirectoryError as exc:
        raise DecodeError("not-a-file", f"{path} is a directory") from exc
    except PermissionError as exc:
        raise DecodeError("permission-denied", f"cannot read {path}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # links that lead back to themselves: a fix for the curator, not a bad file
            raise DecodeError("symlink-loop", f"{path} is a symbolic link loop") from exc
        raise DecodeError("unreadable", f"cannot read {path}: {exc}") from exc
    if len(data) > limits.max_file_bytes:
        raise DecodeError("file-too-large", _too_large(path, len(data), limits))
    if not data:
        raise DecodeError("empty-file", f"{path} is empty")
    return data


def decode_image(data: bytes, limits: DecodeLimits, *, min_side: int | None = None) -> DecodedImage:
    """Decode the first frame of an image file's bytes into an RGB image.

    With ``min_side``, JPEGs are decoded at 1/2, 1/4 or 1/8 scale while both sides stay at least
    ``min_side``; other formats are decoded at full size. Transparent pixels are composited over
    white; 16-bit, 32-bit and float grayscale are scaled to 8 bits rather than clipped.

    Raises ``DecodeError`` with reason ``not-an-image``, ``too-many-pixels``, ``truncated``,
    ``corrupt`` or ``unsupported-mode``.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be positive, got {min_side}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Our own header check below enforces limits.max_pixels; Pillow's bomb *warning* (from
            # 89.5 MP) is only logged, and its hard error (from 179 MP) still applies.
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data), formats=_plugins().formats) as opened:
                full_width, full_height = opened.size
                if full_width * full_height > limits.max_pixels:
                    raise DecodeError(
                        "too-many-pixels",
                        f"{full_width}x{full_height} exceeds the limit of {limits.max_pixels} pixels",
                    )
                if min_side is not None and opened.format in _JPEG_FORMATS:
                    opened.draft("RGB", (min_side, min_side))
                opened.load()
                oriented, swapped = _apply_orientation(opened)
                metadata = metadata_of(opened, data)
                rgb = _to_rgb(oriented)
                if rgb is opened:
                    rgb = opened.copy()  # closing the file frees the pixels of `opened`
    except DecodeError:
        raise
    except UnidentifiedImageError as exc:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise DecodeError("corrupt", f"damaged header: starts like an image but cannot be read ({exc})") from exc
        raise DecodeError("not-an-image", f"not a supported image format (starts {data[:16]!r})") from exc
    except Image.DecompressionBombError as exc:
        raise DecodeError("too-many-pixels", str(exc)) from exc
    except EOFError as exc:
        raise DecodeError("truncated", f"unexpected end of data: {exc}") from exc
    except OSError as exc:
        reason = "truncated" if any(h in str(exc).lower() for h in _TRUNCATION_HINTS) else "corrupt"
        raise DecodeError(reason, str(exc)) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's decoders raise SyntaxError, ValueError, struct.error, IndexError and more on
        # malformed input; none of them may escape and kill a batch.
        raise DecodeError("corrupt", f"{type(exc).__name__}: {exc}") from exc
    for warning in caught:
        logger.debug("while decoding: %s", warning.message)
    if swapped:
        full_width, full_height = full_height, full_width
    return DecodedImage(rgb, full_width, full_height, metadata)


def load_image(path: Path, limits: DecodeLimits, *, min_side: int | None = None) -> tuple[DecodedImage, bytes]:
    """Read and decode a file; the raw bytes come back too so the caller can hash them."""
    data = read_image_bytes(path, limits)
    return decode_image(data, limits, min_side=min_side), data


def _too_large(path: Path, size: int, limits: DecodeLimits) -> str:
    return f"{path} is {size} bytes, over the limit of {limits.max_file_bytes}"


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when absent, invalid or unreadable."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except MemoryError:
        raise
    except Exception as exc:
        # A broken EXIF block is common in camera and editor output and says nothing about
        # the pixels: keep the image as stored.
        logger.debug("ignoring unreadable EXIF: %s: %s", type(exc).__name__, exc)
        return 1
    return orientation if isinstance(orientation, int) and orientation in _ORIENTATION_TRANSPOSE else 1


def _apply_orientation(image: Image.Image) -> tuple[Image.Image, bool]:
    """Transpose by the EXIF orientation; return the image and whether its sides swapped."""
    orientation = exif_orientation(image)
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    if method is None:
        return image, False
    return image.transpose(method), orientation in _SWAPS_SIDES


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _scale_to_rgb(image)
    if image.has_transparency_data:
        if mode == "La":  # Pillow has no conversion out of La; RGBa converts to RGBA
            luminance, alpha = image.split()
            image = Image.merge("RGBa", (luminance, luminance, luminance, alpha))
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        # White, not black: transparent areas of logos and scans are meant to look like paper.
        composited = Image.new("RGB", rgba.size, (255, 255, 255))
        composited.paste(rgba, mask=rgba.getchannel("A"))
        return composited
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise DecodeError("unsupported-mode", f"cannot convert mode {mode} to RGB") from exc


def _scale_to_rgb(image: Image.Image) -> Image.Image:
    """Map high-bit-depth grayscale onto 0..255 by its range; convert("RGB") would clip it."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(values, 0.0, out=values)
    peak = float(values.max(initial=0.0))
    if image.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif image.mode == "F" and peak <= 1.0:
        scale = 255.0  # float data in 0..1 is normalised
    elif image.mode == "I" and peak <= 65535.0:
        scale = 255.0 / 65535.0  # 16-bit samples widened to 32-bit by the reader
    else:
        scale = 255.0 / peak
    gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
