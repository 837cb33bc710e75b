"""Decode large JPEGs on the model's GPU with nvJPEG instead of in the CPU decode workers.

A 12-megapixel JPEG costs a CPU core about 1/15 s even with Pillow's reduced-size ``draft`` decoding,
so on a GPU machine the decode workers, not the model, set the pace. nvJPEG (through torchvision's
``decode_jpeg(device="cuda")``) decodes hundreds of such photos per second. The split of the work:

- a decode worker reads and hashes the file as usual, and for a plain RGB or grayscale JPEG of at
  least ``min_pixels`` it only parses the header (size, EXIF orientation) and hands the compressed
  bytes on (:func:`jpeg_for_device`);
- the main process decodes the batch's JPEGs together on the device, applies the orientation, resizes
  like the CPU path (:func:`core.preprocess.resize_pixels`) and hands uint8 pixels to the encoder
  (:func:`decode_on_device`). A JPEG the device decoder rejects goes through the CPU path instead,
  which records why it failed if it fails there too.

Everything here also runs with ``device="cpu"`` (libjpeg-turbo), which is how the tests check it.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from core.decode import DecodeLimits, exif_orientation
from core.preprocess import resize_pixels

logger = logging.getLogger(__name__)

# Below this many pixels a CPU worker decodes a JPEG (with draft) faster than the round trip costs.
GPU_JPEG_MIN_PIXELS = 2_000_000
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class DeviceJpeg:
    """A JPEG left compressed for the device decoder: its bytes, EXIF orientation and oriented size."""

    data: torch.Tensor
    orientation: int
    width: int
    height: int


def jpeg_for_device(data: bytes, limits: DecodeLimits, min_pixels: int) -> DeviceJpeg | None:
    """The JPEG to decode on the device, or None when the CPU path should decode this file.

    Only baseline/progressive RGB or grayscale JPEGs within ``limits`` qualify: CMYK, YCCK and anything
    odd stay on the CPU path, which handles (or records) them.
    """
    if not data.startswith(_JPEG_SIGNATURE):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=("JPEG",)) as opened:
                width, height = opened.size
                if opened.mode not in ("RGB", "L") or width * height < min_pixels:
                    return None
                if width * height > limits.max_pixels:
                    return None  # the CPU path records the too-many-pixels failure
                orientation = exif_orientation(opened)
    except MemoryError:
        raise
    except Exception:  # anything unusual is left to the CPU path, which records it
        return None
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return DeviceJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation, width, height)


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """``[C, H, W]`` pixels transposed by an EXIF orientation (1-8), as Pillow's ``transpose`` does."""
    height_width = (1, 2)
    if orientation == 2:
        return pixels.flip(2)
    if orientation == 3:
        return pixels.flip(1, 2)
    if orientation == 4:
        return pixels.flip(1)
    if orientation == 5:
        return pixels.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(pixels, k=-1, dims=height_width)
    if orientation == 7:
        return pixels.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return torch.rot90(pixels, k=1, dims=height_width)
    return pixels


def decode_on_device(jpegs: Sequence[DeviceJpeg], size: int, device: torch.device) -> list[torch.Tensor | None]:
    """``[3, size, size]`` uint8 pixels on ``device`` for each JPEG; None where the device decoder failed."""
    if not jpegs:
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a dependency
        # here; torchvision's decode_jpeg is what this module is written and tested against.
        warnings.filterwarnings("ignore", message=".*TorchCodec.*", category=DeprecationWarning)
        decoded = _decode_all(jpegs, device)
    return [
        None if pixels is None else resize_pixels(orient(pixels, jpeg.orientation), size)
        for pixels, jpeg in zip(decoded, jpegs, strict=True)
    ]


def _decode_all(jpegs: Sequence[DeviceJpeg], device: torch.device) -> list[torch.Tensor | None]:
    try:
        return list(decode_jpeg([jpeg.data for jpeg in jpegs], mode=ImageReadMode.RGB, device=device))
    except RuntimeError as error:
        # One bad file fails the whole batched call: retry one by one to find it.
        logger.debug("batched device decode failed (%s); decoding one by one", error)
    decoded: list[torch.Tensor | None] = []
    for jpeg in jpegs:
        try:
            decoded.append(decode_jpeg(jpeg.data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as single_error:
            logger.debug("device decoder rejected a JPEG: %s", single_error)
            decoded.append(None)
    return decoded
