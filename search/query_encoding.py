"""Query images into vectors: decode under the query limits, then the collection's own model.

The model is the one the collection was built with, opened through :func:`core.encoder.open_collection_encoder`
(the build's saved settings, checked against the catalog's provenance), and it loads lazily: queries by
id, path or vector never need it. The encoder is shared by every thread of a server (Streamlit serves
sessions from threads): a forward pass in inference mode changes no module state.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from core.catalog import Provenance
from core.config import LoupeConfig
from core.decode import DecodeLimits, decode_image, read_image_bytes
from core.errors import DecodeError, LoupeError

if TYPE_CHECKING:
    from core.encoder import Encoder

Vector = npt.NDArray[np.float32]


class QueryError(LoupeError):
    """A query cannot be answered as asked (unknown photo, unreadable image, bad vector)."""


@dataclass(frozen=True)
class DecodedQuery:
    """A query image decoded (EXIF orientation applied, possibly reduced by draft decoding), its full
    size in pixels and, when it came from bytes, their sha256."""

    image: Image.Image
    sha256: str | None
    width: int
    height: int


@dataclass(frozen=True)
class QueryImage:
    """An encoded query: its vector, its pooled patch grid (when the index has patches), its size in
    pixels (after EXIF orientation) and, when it came from bytes, their sha256 (for the exact label)."""

    vector: Vector
    sha256: str | None
    width: int
    height: int
    patches: npt.NDArray[np.float32] | None = None


class QueryEncoder:
    """Encodes query images for the collection of ``config`` whose catalog records ``provenance``."""

    def __init__(self, config: LoupeConfig, provenance: Provenance, query_limits: DecodeLimits) -> None:
        self.config = config
        self.provenance = provenance
        self.query_limits = query_limits
        self._lock = threading.Lock()
        self._encoder: Encoder | None = None

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded."""
        return self._encoder is not None

    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use."""
        with self._lock:
            if self._encoder is None:
                from core.encoder import open_collection_encoder

                self._encoder = open_collection_encoder(
                    self.config.data_dir, self.config.model, self.config.runtime, self.provenance
                )
            return self._encoder

    def batch_size(self) -> int:
        """Photos per forward pass for batched queries (``runtime.batch_size``, 0 = automatic)."""
        from core.encoder import resolve_batch_size

        encoder = self.encoder()
        return resolve_batch_size(self.config.runtime.batch_size, encoder.model, encoder.device)

    def decode_workers(self) -> int:
        """Decode worker processes for batched queries (``runtime.workers``, -1 = automatic)."""
        from core.reader import resolve_workers

        return resolve_workers(self.config.runtime.workers, self.encoder().device)

    def encode_pixels(self, pixels: Any) -> Vector:
        """Embed a ``[B, 3, S, S]`` uint8 batch (from :func:`core.preprocess.model_pixels`)."""
        embeddings: Vector = self.encoder().encode(pixels).embeddings
        return embeddings

    def encode_model_pixels(self, pixels: Any) -> tuple[Vector, npt.NDArray[np.float32] | None]:
        """Unit vectors ``[B, D]`` and pooled patch grids ``[B, g, g, D]`` (None when the index has no
        patches) of a ``[B, 3, S, S]`` uint8 batch, in one encoder call: one image as a fast query pass
        (:meth:`Encoder.encode_query`), several (a query's flips and rotations) as one batch."""
        encoder = self.encoder()
        encoded = encoder.encode_query(pixels) if len(pixels) == 1 else encoder.encode(pixels)
        grids = None if encoded.grids is None else encoded.grids.astype(np.float32)
        return encoded.embeddings, grids

    def encode_image(self, image: Image.Image, sha256: str | None = None) -> QueryImage:
        """Encode an RGB-convertible PIL image with the indexer's preprocessing and model (patch grid
        included when the index has patches), as one fast query pass (:meth:`Encoder.encode_query`)."""
        from core.preprocess import model_pixels

        pixels = model_pixels(image.convert("RGB"), self.provenance.image_size).unsqueeze(0)
        vectors, grids = self.encode_model_pixels(pixels)
        return QueryImage(vectors[0], sha256, image.width, image.height, None if grids is None else grids[0])

    def decode_query(self, image: Image.Image | bytes | Path) -> DecodedQuery:
        """A query given as a file path, bytes or a PIL image, decoded under the query limits."""
        if isinstance(image, Image.Image):
            return DecodedQuery(image.convert("RGB"), None, image.width, image.height)
        if isinstance(image, Path):
            try:
                data = read_image_bytes(image, self.query_limits)
            except DecodeError as error:
                raise QueryError(f"{image}: {error}") from error
        else:
            data = bytes(image)
        try:
            decoded = decode_image(data, self.query_limits, min_side=self.provenance.image_size)
        except DecodeError as error:
            raise QueryError(f"cannot use this image: {error}") from error
        return DecodedQuery(decoded.image, hashlib.sha256(data).hexdigest(), decoded.width, decoded.height)

    def encode_decoded(self, decoded: DecodedQuery) -> QueryImage:
        """Encode a decoded query, with its full size (not the decoded one) and sha256."""
        query = self.encode_image(decoded.image, decoded.sha256)
        return replace(query, width=decoded.width, height=decoded.height)

    def encode_query(self, image: Image.Image | bytes | Path) -> QueryImage:
        """Encode a query given as a file path, bytes or a PIL image."""
        if isinstance(image, Path | bytes | bytearray):
            return self.encode_decoded(self.decode_query(image if isinstance(image, Path) else bytes(image)))
        return self.encode_image(image)
