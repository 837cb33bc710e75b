"""Read, hash and decode photos in DataLoader worker processes, overlapping the model.

Each work item becomes a :class:`ReadResult`: uint8 model pixels, or "content already known" (its sha256
is in the catalog, so the model need not see it and decoding is skipped), or a recorded failure. Nothing
here raises for a bad file: clip-retrieval's reader drops such files; this one says why.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from core.decode import DecodeLimits, decode_image, read_image_bytes, supported_formats
from core.device_decode import DeviceJpeg, decode_on_device, jpeg_for_device
from core.errors import DecodeError
from core.photo_metadata import PhotoMetadata, metadata_from_bytes
from core.preprocess import model_pixels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    """A file the build must look at, with the size and mtime the scan saw."""

    path: str
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class ReadResult:
    """What a worker made of one file. Exactly one of ``pixels``, ``jpeg`` (left for the device decoder),
    ``known`` or ``error_reason`` says so."""

    item: WorkItem
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: torch.Tensor | None = None
    jpeg: DeviceJpeg | None = None
    known: bool = False
    error_reason: str | None = None
    error_message: str | None = None
    # What the header says, for decoded files (and device JPEGs).
    metadata: PhotoMetadata | None = None


@dataclass(frozen=True)
class ReadBatch:
    """A batch of results plus the decoded ones' pixels stacked for one forward pass."""

    results: list[ReadResult]
    pixels: torch.Tensor | None
    decoded_positions: list[int]


def read_one(
    item: WorkItem,
    image_size: int,
    limits: DecodeLimits,
    known_hashes: Container[str],
    device_jpeg_min_pixels: int | None = None,
) -> ReadResult:
    """Read, hash and (unless its content is known) decode one file.

    With ``device_jpeg_min_pixels``, plain JPEGs of at least that many pixels are left compressed for
    :func:`decode_on_device` (see :mod:`core.device_decode`)."""
    sha256: str | None = None
    try:
        data = read_image_bytes(Path(item.path), limits)
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in known_hashes:
            return ReadResult(item=item, sha256=sha256, known=True)
        if device_jpeg_min_pixels is not None:
            jpeg = jpeg_for_device(data, limits, device_jpeg_min_pixels)
            if jpeg is not None:
                metadata = metadata_from_bytes(data, supported_formats())
                return ReadResult(
                    item=item, sha256=sha256, width=jpeg.width, height=jpeg.height, jpeg=jpeg, metadata=metadata
                )
        decoded = decode_image(data, limits, min_side=image_size)
        pixels = model_pixels(decoded.image, image_size)
    except DecodeError as error:
        return ReadResult(item=item, sha256=sha256, error_reason=error.reason, error_message=str(error.args[0]))
    return ReadResult(
        item=item, sha256=sha256, width=decoded.width, height=decoded.height, pixels=pixels, metadata=decoded.metadata
    )


def finish_on_device(
    batch: ReadBatch, image_size: int, limits: DecodeLimits, device: torch.device, *, stack_pixels: bool = True
) -> ReadBatch:
    """Decode the batch's device JPEGs on ``device``; a JPEG the device rejects is read again on the CPU
    path, which decodes it or records why not."""
    waiting = [i for i, result in enumerate(batch.results) if result.jpeg is not None]
    if not waiting:
        return batch
    results = list(batch.results)
    decoded = decode_on_device([results[i].jpeg for i in waiting], image_size, device)  # type: ignore[misc]
    for position, pixels in zip(waiting, decoded, strict=True):
        result = results[position]
        if pixels is None:
            results[position] = read_one(result.item, image_size, limits, frozenset())
        else:
            results[position] = replace(result, pixels=pixels, jpeg=None)
    # One batch, one device: the CPU-decoded photos join the device-decoded ones.
    for position, result in enumerate(results):
        if result.pixels is not None and result.pixels.device != device:
            results[position] = replace(result, pixels=result.pixels.to(device, non_blocking=True))
    return collate(results, stack_pixels)


class PhotoDataset(Dataset[ReadResult]):
    """Map-style dataset over the files of one build."""

    def __init__(
        self,
        items: Sequence[WorkItem],
        image_size: int,
        limits: DecodeLimits,
        known_hashes: frozenset[str],
        device_jpeg_min_pixels: int | None = None,
    ) -> None:
        self.items = items
        self.image_size = image_size
        self.limits = limits
        self.known_hashes = known_hashes
        self.device_jpeg_min_pixels = device_jpeg_min_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ReadResult:
        return read_one(self.items[index], self.image_size, self.limits, self.known_hashes, self.device_jpeg_min_pixels)


def collate(results: list[ReadResult], stack_pixels: bool = True) -> ReadBatch:
    """Keep every result, failures included, in order; with ``stack_pixels`` also stack the decoded
    pixels for one forward pass (a build hands the model the photos one by one and skips the copy)."""
    positions = [i for i, result in enumerate(results) if result.pixels is not None]
    stacked = stack_pixels and positions
    pixels = torch.stack([results[i].pixels for i in positions]) if stacked else None  # type: ignore[misc]
    return ReadBatch(results=results, pixels=pixels, decoded_positions=positions)


def resolve_workers(workers: int, device: torch.device) -> int:
    """``runtime.workers``: -1 picks the decode worker count for the device the model runs on."""
    if workers >= 0:
        return workers
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, cores - 1)
    return min(2, cores)


def make_loader(dataset: PhotoDataset, batch_size: int, workers: int, *, stack_pixels: bool) -> Iterable[ReadBatch]:
    """A DataLoader whose ``workers`` processes decode ahead while the model runs (see :func:`collate`)."""
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate if stack_pixels else functools.partial(collate, stack_pixels=False),
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    return loader
