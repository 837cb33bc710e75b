"""Read, hash and decode photos in DataLoader worker processes, overlapping the model.

Each work item becomes a :class:`ReadResult`: uint8 model pixels, or "content already known" (its sha256
is in the catalog, so the model need not see it and decoding is skipped), or a recorded failure. Nothing
here raises for a bad file: clip-retrieval's reader drops such files; this one says why.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from indexer.decode import DecodeLimits, decode_image, read_image_bytes
from indexer.errors import DecodeError
from indexer.preprocess import model_pixels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    """A file the build must look at, with the size and mtime the scan saw."""

    path: str
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class ReadResult:
    """What a worker made of one file. Exactly one of ``pixels``, ``known`` or ``error_reason`` says so."""

    item: WorkItem
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: torch.Tensor | None = None
    known: bool = False
    error_reason: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ReadBatch:
    """A batch of results plus the decoded ones' pixels stacked for one forward pass."""

    results: list[ReadResult]
    pixels: torch.Tensor | None
    decoded_positions: list[int]


def read_one(item: WorkItem, image_size: int, limits: DecodeLimits, known_hashes: Container[str]) -> ReadResult:
    """Read, hash and (unless its content is known) decode one file."""
    sha256: str | None = None
    try:
        data = read_image_bytes(Path(item.path), limits)
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in known_hashes:
            return ReadResult(item=item, sha256=sha256, known=True)
        decoded = decode_image(data, limits, min_side=image_size)
        pixels = model_pixels(decoded.image, image_size)
    except DecodeError as error:
        return ReadResult(item=item, sha256=sha256, error_reason=error.reason, error_message=str(error.args[0]))
    return ReadResult(item=item, sha256=sha256, width=decoded.width, height=decoded.height, pixels=pixels)


class PhotoDataset(Dataset[ReadResult]):
    """Map-style dataset over the files of one build."""

    def __init__(
        self, items: Sequence[WorkItem], image_size: int, limits: DecodeLimits, known_hashes: frozenset[str]
    ) -> None:
        self.items = items
        self.image_size = image_size
        self.limits = limits
        self.known_hashes = known_hashes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ReadResult:
        return read_one(self.items[index], self.image_size, self.limits, self.known_hashes)


def collate(results: list[ReadResult]) -> ReadBatch:
    """Stack the decoded pixels; keep every result, failures included, in order."""
    positions = [i for i, result in enumerate(results) if result.pixels is not None]
    pixels = torch.stack([results[i].pixels for i in positions]) if positions else None  # type: ignore[misc]
    return ReadBatch(results=results, pixels=pixels, decoded_positions=positions)


def make_loader(dataset: PhotoDataset, batch_size: int, workers: int, pin_memory: bool) -> Iterable[ReadBatch]:
    """A DataLoader whose ``workers`` processes decode ahead while the model runs."""
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    return loader
