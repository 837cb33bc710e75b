"""Tests for core.decode: every image is generated here (in memory or tmp_path) with PIL and numpy."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps, features

from core.decode import (
    DecodeLimits,
    _to_rgb,
    decode_image,
    load_image,
    read_image_bytes,
    supported_extensions,
)
from core.errors import DecodeError

LIMITS = DecodeLimits(max_pixels=50_000_000, max_file_bytes=50 * 2**20)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _noise(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _reason(data: bytes, limits: DecodeLimits = LIMITS) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_image(data, limits)
    return caught.value.reason


def _read_reason(path: Path, limits: DecodeLimits = LIMITS) -> str:
    with pytest.raises(DecodeError) as caught:
        read_image_bytes(path, limits)
    return caught.value.reason


def _assert_pixel(image: Image.Image, xy: tuple[int, int], expected: tuple[int, ...], tol: int = 0) -> None:
    actual = image.getpixel(xy)
    assert isinstance(actual, tuple)
    assert max(abs(a - e) for a, e in zip(actual, expected, strict=True)) <= tol, f"{actual} != {expected} at {xy}"


def _png_with_declared_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims another size (with a correct CRC)."""
    data = bytearray(_encode(Image.new("RGB", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- basic decoding -------------------------------------------------------------------------


def test_rgb_jpeg_round_trip(tmp_path: Path) -> None:
    data = _encode(Image.new("RGB", (64, 48), (10, 200, 30)), "JPEG", quality=95)
    path = _write(tmp_path / "a.jpg", data)
    decoded, raw = load_image(path, LIMITS)
    assert raw == data
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.image.size == (64, 48)
    assert decoded.image.mode == "RGB"
    _assert_pixel(decoded.image, (32, 24), (10, 200, 30), tol=3)


def test_result_is_detached_from_the_file() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (8, 8), RED), "PNG"), LIMITS)
    # A plain Image (not an ImageFile) holds no reference to the BytesIO it came from.
    assert type(decoded.image) is Image.Image
    _assert_pixel(decoded.image, (0, 0), RED)


def test_misnamed_file_decodes_by_content(tmp_path: Path) -> None:
    path = _write(tmp_path / "really-a-jpeg.png", _encode(Image.new("RGB", (8, 8)), "JPEG"))
    decoded, _ = load_image(path, LIMITS)
    assert decoded.image.size == (8, 8)


def test_one_pixel() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), LIMITS)
    assert (decoded.width, decoded.height) == (1, 1)
    _assert_pixel(decoded.image, (0, 0), (10, 20, 30))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_extreme_aspect_ratio(fmt: str) -> None:
    data = _encode(Image.new("RGB", (10000, 10), GREEN), fmt)
    decoded = decode_image(data, LIMITS, min_side=224)
    assert (decoded.width, decoded.height) == (10000, 10)
    # The short side is already below min_side, so draft must not shrink it further.
    assert decoded.image.size == (10000, 10)


# --- reduced-size JPEG decoding ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_draft_reduces_jpeg_but_reports_full_size(fmt: str) -> None:
    image = Image.new("RGB", (2000, 1500), RED)
    params: dict[str, Any] = {"save_all": True, "append_images": [image]} if fmt == "MPO" else {}
    data = _encode(image, fmt, **params)
    decoded = decode_image(data, LIMITS, min_side=224)
    assert (decoded.width, decoded.height) == (2000, 1500)
    assert decoded.image.width < 2000
    assert decoded.image.height < 1500
    assert min(decoded.image.size) >= 224
    _assert_pixel(decoded.image, (10, 10), RED, tol=3)


def test_draft_with_rotation_reports_oriented_full_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.new("RGB", (2000, 1500), RED), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, LIMITS, min_side=224)
    assert (decoded.width, decoded.height) == (1500, 2000)
    assert decoded.image.width < decoded.image.height < 2000
    assert min(decoded.image.size) >= 224


def test_no_min_side_decodes_jpeg_at_full_size() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (2000, 1500)), "JPEG"), LIMITS)
    assert decoded.image.size == (2000, 1500)


def test_min_side_leaves_other_formats_alone() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (2000, 1500)), "PNG"), LIMITS, min_side=224)
    assert decoded.image.size == (2000, 1500)


# --- EXIF orientation -------------------------------------------------------------------------

# Oriented size and the corner the stored top-left (red) quadrant is displayed in.
ORIENTED = {
    1: ((40, 20), "top-left"),
    2: ((40, 20), "top-right"),
    3: ((40, 20), "bottom-right"),
    4: ((40, 20), "bottom-left"),
    5: ((20, 40), "top-left"),
    6: ((20, 40), "top-right"),  # rotate 90 degrees clockwise to display
    7: ((20, 40), "bottom-right"),
    8: ((20, 40), "bottom-left"),
}


def _quadrant_image() -> Image.Image:
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 10))
    return image


def _red_corner(image: Image.Image) -> str:
    width, height = image.size
    corners = {
        "top-left": (3, 3),
        "top-right": (width - 4, 3),
        "bottom-left": (3, height - 4),
        "bottom-right": (width - 4, height - 4),
    }
    red = []
    for name, xy in corners.items():
        pixel = image.getpixel(xy)
        assert isinstance(pixel, tuple)
        if pixel[0] > 200 and pixel[2] < 60:
            red.append(name)
    assert len(red) == 1, f"red corners: {red}"
    return red[0]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(fmt: str, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(_quadrant_image(), fmt, exif=exif.tobytes())
    decoded = decode_image(data, LIMITS)
    size, corner = ORIENTED[orientation]
    assert (decoded.width, decoded.height) == size
    assert decoded.image.size == size
    assert _red_corner(decoded.image) == corner
    if fmt == "PNG":
        reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        np.testing.assert_array_equal(np.asarray(decoded.image), np.asarray(reference))


def test_garbage_exif_keeps_the_stored_image() -> None:
    garbage = b"Exif\x00\x00MM\x00*\x00\x00\xff\xff\xff\xff garbage"
    decoded = decode_image(_encode(_quadrant_image(), "JPEG", exif=garbage), LIMITS)
    assert decoded.image.size == (40, 20)
    assert _red_corner(decoded.image) == "top-left"


def test_orientation_applies_when_another_exif_tag_is_malformed() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    # Retag the ASCII Make entry as PhotometricInterpretation, a SHORT: the orientation still
    # reads, but re-serialising the block (as ImageOps.exif_transpose does) raises struct.error.
    block = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x06\x00\x02")
    data = _encode(_quadrant_image(), "JPEG", exif=block)
    with pytest.raises(struct.error):
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    decoded = decode_image(data, LIMITS)
    assert (decoded.width, decoded.height) == (20, 40)
    assert _red_corner(decoded.image) == "top-right"


# --- colour modes -----------------------------------------------------------------------------


def _cmyk_red() -> Image.Image:
    return Image.new("CMYK", (16, 16), (0, 255, 255, 0))


def test_cmyk_jpeg() -> None:
    decoded = decode_image(_encode(_cmyk_red(), "JPEG", quality=95), LIMITS)
    _assert_pixel(decoded.image, (8, 8), RED, tol=3)


def test_cmyk_tiff() -> None:
    decoded = decode_image(_encode(_cmyk_red(), "TIFF"), LIMITS)
    _assert_pixel(decoded.image, (8, 8), RED)


def _ycck_jpeg(cmyk: tuple[int, int, int, int], size: tuple[int, int] = (16, 16)) -> bytes:
    """An Adobe YCCK JPEG (APP14 transform 2) of one flat CMYK colour.

    Pillow only writes Adobe CMYK (transform 0), so we store the YCCK components ourselves and
    flip the transform byte. Adobe stores CMYK inverted; libjpeg's YCCK encodes
    (255 - stored C, M, Y) as YCbCr and keeps stored K.
    """
    red, green, blue = (float(v) for v in cmyk[:3])
    stored = np.array(
        [
            0.299 * red + 0.587 * green + 0.114 * blue,
            -0.168736 * red - 0.331264 * green + 0.5 * blue + 128,
            0.5 * red - 0.418688 * green - 0.081312 * blue + 128,
            255 - cmyk[3],
        ]
    )
    # Pillow inverts CMYK on the way out (Adobe convention), so hand it 255 - stored.
    samples = np.clip(np.rint(255 - stored), 0, 255).astype(np.uint8)
    width, height = size
    image = Image.fromarray(np.broadcast_to(samples, (height, width, 4)).copy(), mode="CMYK")
    data = bytearray(_encode(image, "JPEG", quality=100))
    app14 = data.find(b"\xff\xee")
    length = int.from_bytes(data[app14 + 2 : app14 + 4], "big")
    assert data[app14 + 4 : app14 + 9] == b"Adobe"
    assert data[app14 + 1 + length] == 0  # the transform byte ends the segment
    data[app14 + 1 + length] = 2
    return bytes(data)


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((0, 255, 255, 0), RED),
        ((255, 0, 255, 0), GREEN),
        ((255, 255, 0, 0), BLUE),
        ((0, 0, 0, 128), (127, 127, 127)),
    ],
)
def test_ycck_jpeg(cmyk: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> None:
    data = _ycck_jpeg(cmyk)
    assert Image.open(io.BytesIO(data)).info["adobe_transform"] == 2
    _assert_pixel(decode_image(data, LIMITS).image, (8, 8), rgb, tol=3)


def test_palette_png_transparency_composites_on_white() -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (2, 0, 4, 2))
    decoded = decode_image(_encode(image, "PNG", transparency=0), LIMITS)
    _assert_pixel(decoded.image, (0, 0), WHITE)
    _assert_pixel(decoded.image, (3, 1), RED)


def test_rgb_png_with_transparent_colour_key() -> None:
    image = Image.new("RGB", (2, 1), (0, 0, 0))
    image.putpixel((1, 0), RED)
    decoded = decode_image(_encode(image, "PNG", transparency=(0, 0, 0)), LIMITS)
    _assert_pixel(decoded.image, (0, 0), WHITE)
    _assert_pixel(decoded.image, (1, 0), RED)


def test_la_png() -> None:
    image = Image.new("LA", (3, 1))
    for x, alpha in enumerate((0, 128, 255)):
        image.putpixel((x, 0), (0, alpha))
    decoded = decode_image(_encode(image, "PNG"), LIMITS)
    _assert_pixel(decoded.image, (0, 0), WHITE)
    _assert_pixel(decoded.image, (1, 0), (127, 127, 127), tol=1)
    _assert_pixel(decoded.image, (2, 0), (0, 0, 0))


def test_rgba_png() -> None:
    image = Image.new("RGBA", (3, 1))
    for x, alpha in enumerate((0, 128, 255)):
        image.putpixel((x, 0), (*RED, alpha))
    decoded = decode_image(_encode(image, "PNG"), LIMITS)
    _assert_pixel(decoded.image, (0, 0), WHITE)
    _assert_pixel(decoded.image, (1, 0), (255, 127, 127), tol=1)
    _assert_pixel(decoded.image, (2, 0), RED)


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("La", (0, 0), WHITE),
        ("La", (50, 128), (177, 177, 177)),  # premultiplied: 50 + (255 - 128)
        ("RGBa", (100, 0, 0, 128), (227, 127, 127)),
    ],
)
def test_premultiplied_modes(mode: str, pixel: tuple[int, ...], expected: tuple[int, int, int]) -> None:
    # No file format Pillow reads yields these modes, so the converter is tested directly.
    rgb = _to_rgb(Image.new(mode, (1, 1), pixel))
    assert rgb.mode == "RGB"
    _assert_pixel(rgb, (0, 0), expected, tol=2)


def test_16_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    decoded = decode_image(data, LIMITS)
    _assert_pixel(decoded.image, (0, 0), (0, 0, 0))
    _assert_pixel(decoded.image, (1, 0), (128, 128, 128), tol=1)
    _assert_pixel(decoded.image, (2, 0), WHITE)


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        (np.array([[0, 32768, 65535]], dtype=">u2"), "I;16B"),
        (np.array([[0, 32768, 65535]], dtype=np.int32), "I"),
        # Beyond 16 bits: scaled by its maximum.
        (np.array([[0, 35000, 70000]], dtype=np.int32), "I"),
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F"),
        (np.array([[0.0, 500.0, 1000.0]], dtype=np.float32), "F"),
    ],
)
def test_high_bit_depth_tiff(values: np.ndarray[Any, Any], mode: str) -> None:
    data = _encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    decoded = decode_image(data, LIMITS)
    _assert_pixel(decoded.image, (0, 0), (0, 0, 0))
    _assert_pixel(decoded.image, (1, 0), (128, 128, 128), tol=1)
    _assert_pixel(decoded.image, (2, 0), WHITE)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})],
    ids=["gif", "webp", "apng"],
)
def test_animation_gives_first_frame(fmt: str, params: dict[str, Any]) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    _assert_pixel(decode_image(data, LIMITS).image, (8, 8), RED)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow build has no AVIF codec")
def test_avif() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (32, 32), RED), "AVIF", quality=90), LIMITS)
    assert (decoded.width, decoded.height) == (32, 32)
    _assert_pixel(decoded.image, (16, 16), RED, tol=12)


# --- limits -----------------------------------------------------------------------------------


def test_declared_huge_png_is_refused_from_the_header() -> None:
    data = _png_with_declared_size(100_000, 100_000)
    start = time.perf_counter()
    assert _reason(data) == "too-many-pixels"
    # Decoding 10^10 pixels would need 30 GB; refusing from the header takes microseconds.
    assert time.perf_counter() - start < 2.0


def test_our_limit_not_pillows_warning_decides_without_global_changes() -> None:
    # 10^8 pixels is above Pillow's warning threshold but below its error threshold.
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    data = _png_with_declared_size(10_000, 10_000)
    assert _reason(data, DecodeLimits(max_pixels=10**7, max_file_bytes=2**20)) == "too-many-pixels"
    # Under a higher limit the header passes and the (absent) pixel data is what fails.
    assert _reason(data, DecodeLimits(max_pixels=10**9, max_file_bytes=2**20)) == "truncated"
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


def test_own_pixel_limit_is_checked_before_decoding() -> None:
    # The pixel data is that of a 1x1 image: decoding it would fail as truncated instead.
    data = _png_with_declared_size(5000, 5000)
    with pytest.raises(DecodeError) as caught:
        decode_image(data, DecodeLimits(max_pixels=1_000_000, max_file_bytes=2**20))
    assert caught.value.reason == "too-many-pixels"
    assert "5000x5000" in str(caught.value)


def test_small_pixel_limit_refuses_a_normal_image() -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert _reason(data, DecodeLimits(max_pixels=1000, max_file_bytes=2**20)) == "too-many-pixels"


def test_limits_and_min_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_pixels=0, max_file_bytes=1)
    with pytest.raises(ValueError, match="positive"):
        decode_image(b"x", LIMITS, min_side=0)


# --- damaged and non-image content ------------------------------------------------------------


def test_truncated_jpeg() -> None:
    data = _encode(_noise(256, 256), "JPEG", quality=90)
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_truncated_png() -> None:
    data = _encode(_noise(256, 256), "PNG")
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_corrupt_header_field() -> None:
    data = bytearray(_encode(Image.new("RGB", (8, 8)), "BMP"))
    data[28] = 7  # bits per pixel
    assert _reason(bytes(data)) == "corrupt"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.jpg", b"just some text\n"),
        ("page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
        # EPS would be decoded by running Ghostscript; it is not a format we open.
        ("drawing.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
    ],
)
def test_not_an_image(tmp_path: Path, name: str, content: bytes) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(DecodeError) as caught:
        load_image(path, LIMITS)
    assert caught.value.reason == "not-an-image"


# --- reading files ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "WEBP"])
def test_damaged_header_of_a_known_format_is_corrupt_not_foreign(fmt: str) -> None:
    data = bytearray(_encode(_noise(16, 16), fmt))
    if fmt == "PNG":
        data[29] ^= 0xFF  # IHDR's CRC
    elif fmt == "JPEG":
        data[3:] = b"\x00" * (len(data) - 3)  # no valid marker after SOI
    elif fmt == "GIF":
        data[6:] = b"\xff" * 20  # nothing after the signature
    elif fmt == "TIFF":
        data[4:8] = b"\xff\xff\xff\xff"  # first IFD far past the end
    else:
        data[12:16] = b"XXXX"  # unknown WebP chunk
    assert _reason(bytes(data)) == "corrupt"


def test_empty_file(tmp_path: Path) -> None:
    assert _read_reason(_write(tmp_path / "empty.jpg", b"")) == "empty-file"


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    assert _read_reason(tmp_path / "x.jpg") == "not-a-file"


def test_fifo_is_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    assert _read_reason(tmp_path / "pipe.jpg") == "not-a-file"


def test_missing_file(tmp_path: Path) -> None:
    assert _read_reason(tmp_path / "gone.jpg") == "missing"


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.jpg").symlink_to(tmp_path / "target.jpg")
    assert _read_reason(tmp_path / "link.jpg") == "missing"


def test_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    assert _read_reason(tmp_path / "a.jpg") == "symlink-loop"


def test_file_too_large_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "big.jpg", bytes(2000))

    def refuse_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file over the limit must not be opened")

    monkeypatch.setattr(Path, "open", refuse_open)
    assert _read_reason(path, DecodeLimits(max_pixels=1, max_file_bytes=1000)) == "file-too-large"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission-denied"),
        (OSError(errno.EIO, "Input/output error"), "unreadable"),
    ],
)
def test_open_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, reason: str) -> None:
    path = _write(tmp_path / "photo.jpg", b"data")

    def failing_open(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(Path, "open", failing_open)
    assert _read_reason(path) == reason


# --- extensions -------------------------------------------------------------------------------


def test_supported_extensions() -> None:
    extensions = supported_extensions()
    base = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
    assert base <= extensions
    assert all(ext.startswith(".") and ext == ext.lower() for ext in extensions)
    has_heif = importlib.util.find_spec("pillow_heif") is not None
    assert ({".heic", ".heif"} <= extensions) == has_heif
    if features.check("avif"):
        assert ".avif" in extensions
