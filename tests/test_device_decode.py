"""The GPU JPEG path (nvJPEG on CUDA), run here on the CPU through the same torchvision calls."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.decode import _ORIENTATION_TRANSPOSE, DecodeLimits
from core.device_decode import decode_on_device, jpeg_for_device, orient
from core.encoder import Encoder
from core.model import LoadedModel
from core.reader import ReadResult, WorkItem, collate, finish_on_device, read_one
from tests.conftest import TEST_IMAGE_SIZE

LIMITS = DecodeLimits(max_pixels=50_000_000, max_file_bytes=1 << 30)
CPU = torch.device("cpu")


def _photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients plus mild noise) that JPEG keeps faithfully."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        128 + 100 * np.sin(xs / (17 + 5 * c) + c) * np.cos(ys / (23 + 3 * c)) + rng.normal(0, 4, (height, width))
        for c in range(3)
    ]
    return Image.fromarray(np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, orientation: int = 1, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.convert(mode).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _write(folder: Path, name: str, data: bytes) -> WorkItem:
    path = folder / name
    path.write_bytes(data)
    stat = path.stat()
    return WorkItem(path=str(path), size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)


@pytest.mark.parametrize("orientation", sorted(_ORIENTATION_TRANSPOSE))
def test_orientation_matches_pillow(orientation: int) -> None:
    array = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(array).transpose(_ORIENTATION_TRANSPOSE[orientation]))
    got = orient(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)


def test_only_plain_jpegs_above_the_threshold_go_to_the_device() -> None:
    photo = _photo()
    assert jpeg_for_device(_jpeg(photo), LIMITS, min_pixels=photo.width * photo.height) is not None
    assert jpeg_for_device(_jpeg(photo), LIMITS, min_pixels=photo.width * photo.height + 1) is None
    assert jpeg_for_device(_jpeg(photo, mode="CMYK"), LIMITS, min_pixels=1) is None
    png = io.BytesIO()
    photo.save(png, "PNG")
    assert jpeg_for_device(png.getvalue(), LIMITS, min_pixels=1) is None
    assert jpeg_for_device(_jpeg(photo), DecodeLimits(max_pixels=1000, max_file_bytes=1 << 30), min_pixels=1) is None
    rotated = jpeg_for_device(_jpeg(photo, orientation=6), LIMITS, min_pixels=1)
    assert rotated is not None and (rotated.width, rotated.height) == (240, 320) and rotated.orientation == 6


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_device_pixels_match_the_cpu_path(tmp_path: Path, orientation: int) -> None:
    """Same photo, same model input within JPEG-decoder rounding: the CPU path decodes with Pillow
    (draft) and resizes with Pillow; the device path decodes with libjpeg-turbo/nvJPEG and resizes
    with torch."""
    item = _write(tmp_path, "photo.jpg", _jpeg(_photo(), orientation))
    cpu = read_one(item, TEST_IMAGE_SIZE, LIMITS, frozenset())
    deferred = read_one(item, TEST_IMAGE_SIZE, LIMITS, frozenset(), device_jpeg_min_pixels=1)
    assert cpu.pixels is not None and deferred.jpeg is not None and deferred.pixels is None
    assert (deferred.width, deferred.height, deferred.sha256) == (cpu.width, cpu.height, cpu.sha256)
    [pixels] = decode_on_device([deferred.jpeg], TEST_IMAGE_SIZE, CPU)
    assert pixels is not None and pixels.dtype == torch.uint8 and pixels.shape == cpu.pixels.shape
    difference = (pixels.int() - cpu.pixels.int()).abs().float()
    assert difference.mean() < 2.0, f"mean difference {difference.mean():.2f} levels"


def test_device_batch_embeds_like_the_cpu_path(tmp_path: Path, random_model: LoadedModel) -> None:
    items = [_write(tmp_path, f"p{i}.jpg", _jpeg(_photo(seed=i), orientation=1 + 2 * i)) for i in range(3)]
    cpu_batch = collate([read_one(item, TEST_IMAGE_SIZE, LIMITS, frozenset()) for item in items])
    deferred = collate([read_one(item, TEST_IMAGE_SIZE, LIMITS, frozenset(), 1) for item in items])
    assert deferred.pixels is None
    device_batch = finish_on_device(deferred, TEST_IMAGE_SIZE, LIMITS, CPU)
    assert device_batch.decoded_positions == [0, 1, 2] and device_batch.pixels is not None
    encoder = Encoder(random_model, CPU, "fp32")
    assert cpu_batch.pixels is not None
    cosines = (encoder.encode(cpu_batch.pixels).embeddings * encoder.encode(device_batch.pixels).embeddings).sum(1)
    assert cosines.min() > 0.999


def test_a_jpeg_the_device_rejects_goes_through_the_cpu_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.reader

    good = _jpeg(_photo())
    # A valid header whose entropy-coded data is cut short: the header parses, the pixels do not.
    truncated = good[: len(good) // 3]
    items = [_write(tmp_path, "good.jpg", good), _write(tmp_path, "cut.jpg", truncated)]
    deferred = collate([read_one(item, TEST_IMAGE_SIZE, LIMITS, frozenset(), 1) for item in items])
    assert all(result.jpeg is not None for result in deferred.results)
    # The premise: the device decoder takes the good file and rejects the cut one.
    device = decode_on_device([result.jpeg for result in deferred.results], TEST_IMAGE_SIZE, CPU)  # type: ignore[misc]
    assert device[0] is not None and device[1] is None

    cpu_reads: list[str] = []

    def recorded_read_one(item: WorkItem, *args: Any, **kwargs: Any) -> ReadResult:
        cpu_reads.append(Path(item.path).name)
        return read_one(item, *args, **kwargs)

    monkeypatch.setattr(core.reader, "read_one", recorded_read_one)
    finished = finish_on_device(deferred, TEST_IMAGE_SIZE, LIMITS, CPU)
    assert cpu_reads == ["cut.jpg"]  # the fallback ran, for the rejected file only
    good_result, cut_result = finished.results
    assert good_result.pixels is not None and good_result.jpeg is None
    assert good_result.pixels.equal(device[0])
    # The cut file's result is the CPU path's own: here Pillow records it as truncated.
    on_cpu = read_one(items[1], TEST_IMAGE_SIZE, LIMITS, frozenset())
    assert on_cpu.error_reason == "truncated" and on_cpu.pixels is None
    assert cut_result.jpeg is None and cut_result.pixels is None
    assert (cut_result.sha256, cut_result.error_reason, cut_result.error_message) == (
        on_cpu.sha256,
        on_cpu.error_reason,
        on_cpu.error_message,
    )
    assert finished.decoded_positions == [0]
