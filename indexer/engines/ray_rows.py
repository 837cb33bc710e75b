"""The Ray engine's rows: read results and model outputs as Arrow-friendly numpy columns, and back.

Columns travel as Arrow: optional strings as "" and optional sizes as -1, pixels and vectors as raw
bytes (b"" where there are none), so a known or failed file costs a few bytes, not an empty image.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.photo_metadata import PhotoMetadata
from core.reader import ReadResult, WorkItem
from indexer.committer import ModelOutput

Batch = dict[str, npt.NDArray[Any]]


def text_column(values: Sequence[str | None]) -> npt.NDArray[Any]:
    return np.array([v or "" for v in values], dtype=object)


def blob_column(values: Sequence[bytes]) -> npt.NDArray[Any]:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def results_to_batch(results: Sequence[ReadResult]) -> Batch:
    """Decode-stage output: one row per result, pixels as raw uint8 bytes."""
    return {
        "path": text_column([r.item.path for r in results]),
        "size_bytes": np.array([r.item.size_bytes for r in results], dtype=np.int64),
        "mtime_ns": np.array([r.item.mtime_ns for r in results], dtype=np.int64),
        "sha256": text_column([r.sha256 for r in results]),
        "width": np.array([-1 if r.width is None else r.width for r in results], dtype=np.int64),
        "height": np.array([-1 if r.height is None else r.height for r in results], dtype=np.int64),
        "known": np.array([r.known for r in results], dtype=bool),
        "error_reason": text_column([r.error_reason for r in results]),
        "error_message": text_column([r.error_message for r in results]),
        "pixels": blob_column([b"" if r.pixels is None else r.pixels.numpy().tobytes() for r in results]),
        **_metadata_columns([r.metadata for r in results]),
    }


def _metadata_columns(metadata: Sequence[PhotoMetadata | None]) -> Batch:
    """The header facts as columns ("" for none; ``metadata_read`` False where the header was not read)."""
    known = [m or PhotoMetadata() for m in metadata]
    return {
        "metadata_read": np.array([m is not None for m in metadata], dtype=bool),
        "file_format": text_column([m.file_format for m in known]),
        "capture_time": text_column([None if m.capture_time is None else m.capture_time.isoformat() for m in known]),
        "camera_make": text_column([m.camera_make for m in known]),
        "camera_model": text_column([m.camera_model for m in known]),
    }


def _metadata_of_row(batch: Batch, i: int) -> PhotoMetadata | None:
    if not bool(batch["metadata_read"][i]):
        return None
    capture = str(batch["capture_time"][i])
    return PhotoMetadata(
        file_format=str(batch["file_format"][i]) or None,
        capture_time=datetime.fromisoformat(capture) if capture else None,
        camera_make=str(batch["camera_make"][i]) or None,
        camera_model=str(batch["camera_model"][i]) or None,
    )


def batch_to_results(batch: Batch, image_size: int | None = None) -> list[ReadResult]:
    """The results of a batch; with ``image_size``, decoded rows get their pixels back as tensors."""
    results: list[ReadResult] = []
    pixel_column = batch.get("pixels")
    for i in range(len(batch["path"])):
        pixels = None
        if image_size is not None and pixel_column is not None and len(pixel_column[i]):
            flat = np.frombuffer(pixel_column[i], dtype=np.uint8)
            pixels = torch.from_numpy(flat.reshape(3, image_size, image_size).copy())
        results.append(
            ReadResult(
                item=WorkItem(
                    path=str(batch["path"][i]),
                    size_bytes=int(batch["size_bytes"][i]),
                    mtime_ns=int(batch["mtime_ns"][i]),
                ),
                sha256=str(batch["sha256"][i]) or None,
                width=None if batch["width"][i] < 0 else int(batch["width"][i]),
                height=None if batch["height"][i] < 0 else int(batch["height"][i]),
                pixels=pixels,
                known=bool(batch["known"][i]),
                error_reason=str(batch["error_reason"][i]) or None,
                error_message=str(batch["error_message"][i]) or None,
                metadata=_metadata_of_row(batch, i),
            )
        )
    return results


def batch_outputs(batch: Batch, dim: int, patch_grid: int) -> dict[str, ModelOutput]:
    """The model outputs an embed-stage batch carries, by content hash."""
    outputs: dict[str, ModelOutput] = {}
    for sha256, embedding, patches in zip(batch["sha256"], batch["embedding"], batch["patches"], strict=True):
        if not len(embedding) or sha256 in outputs:
            continue
        grid = None
        if patch_grid:
            grid = np.frombuffer(patches, dtype=np.float16).reshape(patch_grid, patch_grid, dim).copy()
        outputs[str(sha256)] = ModelOutput(embedding=np.frombuffer(embedding, dtype=np.float32).copy(), patches=grid)
    return outputs
