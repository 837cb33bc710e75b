"""What the header says: EXIF capture time, camera and file format, from files Pillow writes here."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from core.decode import DecodeLimits, decode_image, supported_formats
from core.photo_metadata import (
    WEBP_LOSSLESS,
    PhotoMetadata,
    metadata_from_bytes,
    parse_exif_datetime,
    read_metadata,
    webp_is_lossless,
)

LIMITS = DecodeLimits(max_pixels=10_000_000, max_file_bytes=1 << 24)
TAKEN = datetime(2015, 6, 1, 12, 34, 56, 250_000)


def _exif(*, original: bool = True) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon\x00"  # cameras pad with NULs
    exif[ExifTags.Base.Model] = " EOS 5D Mark IV "
    exif[ExifTags.Base.DateTime] = "2020:01:01 00:00:00"  # when it was last edited
    if original:
        details = exif.get_ifd(ExifTags.IFD.Exif)
        details[ExifTags.Base.DateTimeOriginal] = "2015:06:01 12:34:56"
        details[ExifTags.Base.SubsecTimeOriginal] = "25"
    return exif


def _encode(image_format: str, exif: Image.Exif | bytes | None = None, **options: object) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (40, 30), (180, 40, 20))
    if exif is not None:
        options["exif"] = exif
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def test_a_camera_jpeg_gives_its_capture_time_make_and_model(tmp_path: Path) -> None:
    path = tmp_path / "camera.jpg"
    path.write_bytes(_encode("JPEG", _exif()))
    expected = PhotoMetadata(file_format="JPEG", capture_time=TAKEN, camera_make="Canon", camera_model="EOS 5D Mark IV")
    assert read_metadata(path, supported_formats()) == expected  # header only, from the file
    assert decode_image(path.read_bytes(), LIMITS).metadata == expected  # and as the build decodes it


def test_without_an_original_time_the_file_time_of_the_exif_counts() -> None:
    found = metadata_from_bytes(_encode("JPEG", _exif(original=False)), supported_formats())
    assert found is not None and found.capture_time == datetime(2020, 1, 1)


@pytest.mark.parametrize(("image_format", "name"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("TIFF", "TIFF")])
def test_formats_are_told_apart(image_format: str, name: str) -> None:
    found = metadata_from_bytes(_encode(image_format), supported_formats())
    assert found == PhotoMetadata(file_format=name)


def test_tiff_and_png_carry_make_model_and_date() -> None:
    # Pillow's TIFF writer keeps the base IFD (make, model, DateTime) but not the Exif sub-IFD.
    tiff = metadata_from_bytes(_encode("TIFF", _exif()), supported_formats())
    assert tiff == PhotoMetadata("TIFF", datetime(2020, 1, 1), "Canon", "EOS 5D Mark IV")
    png = metadata_from_bytes(_encode("PNG", _exif()), supported_formats())
    assert png == PhotoMetadata("PNG", TAKEN, "Canon", "EOS 5D Mark IV")


def test_lossless_webp_is_told_from_lossy_webp() -> None:
    if "WEBP" not in supported_formats():
        pytest.skip("this Pillow has no WebP")
    lossless = _encode("WEBP", lossless=True)
    lossy = _encode("WEBP", quality=80, icc_profile=b"\x00" * 3000)  # an extended file: VP8X, ICCP, then VP8
    assert webp_is_lossless(lossless) and not webp_is_lossless(lossy)
    assert metadata_from_bytes(lossless, supported_formats()) == PhotoMetadata(file_format=WEBP_LOSSLESS)
    with_exif = metadata_from_bytes(_encode("WEBP", _exif(), quality=80), supported_formats())
    assert with_exif == PhotoMetadata("WEBP", TAKEN, "Canon", "EOS 5D Mark IV")


def test_broken_or_odd_exif_gives_none_not_an_error() -> None:
    garbage = b"Exif\x00\x00" + b"\xff" * 40
    found = metadata_from_bytes(_encode("JPEG", garbage), supported_formats())
    assert found == PhotoMetadata(file_format="JPEG")
    blank = Image.Exif()
    blank.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "0000:00:00 00:00:00"
    blank[ExifTags.Base.Make] = "\x00\x00  "
    assert metadata_from_bytes(_encode("JPEG", blank), supported_formats()) == PhotoMetadata(file_format="JPEG")
    assert metadata_from_bytes(b"<html>not an image</html>", supported_formats()) is None


def test_exif_date_times() -> None:
    assert parse_exif_datetime("2015:06:01 12:34:56") == datetime(2015, 6, 1, 12, 34, 56)
    assert parse_exif_datetime(b"2015:06:01 12:34:56\x00") == datetime(2015, 6, 1, 12, 34, 56)
    assert parse_exif_datetime("2015-06-01T12:34:56", "0071") == datetime(2015, 6, 1, 12, 34, 56, 7_100)
    assert parse_exif_datetime("2015:13:01 12:34:56") is None
    assert parse_exif_datetime("    :  :     :  :  ") is None
    assert parse_exif_datetime(None) is None and parse_exif_datetime(20150601) is None


def test_an_unreadable_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_metadata(tmp_path / "gone.jpg", supported_formats())
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    assert read_metadata(bad, supported_formats()) is None


def test_jpegs_left_for_the_gpu_decoder_carry_their_metadata_too(tmp_path: Path) -> None:
    from core.reader import WorkItem, read_one

    path = tmp_path / "camera.jpg"
    path.write_bytes(_encode("JPEG", _exif()))
    item = WorkItem(str(path), path.stat().st_size, path.stat().st_mtime_ns)
    on_device = read_one(item, 64, LIMITS, frozenset(), device_jpeg_min_pixels=1)
    assert on_device.jpeg is not None and on_device.pixels is None  # left compressed for nvJPEG
    on_cpu = read_one(item, 64, LIMITS, frozenset())
    assert on_device.metadata == on_cpu.metadata == PhotoMetadata("JPEG", TAKEN, "Canon", "EOS 5D Mark IV")
