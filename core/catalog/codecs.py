"""Vectors and patch grids as the bytes the catalog stores.

An embedding is stored as little-endian float32; a patch grid as :mod:`core.grid_codes` codes. A stored
value that does not decode to the expected shape is a :class:`CatalogError`.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from core import grid_codes
from core.catalog.records import Embeddings, PatchGrid
from core.errors import CatalogError

logger = logging.getLogger(__name__)


def vector_to_bytes(vector: Embeddings) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def grid_to_bytes(grid: PatchGrid) -> bytes:
    return grid_codes.encode_grid(grid)


def bytes_to_grid(data: bytes, grid: int, dim: int) -> npt.NDArray[np.float32]:
    try:
        return grid_codes.decode_grid(data, grid, dim)
    except ValueError as error:
        raise CatalogError(str(error)) from error


def bytes_to_vector(data: bytes, dim: int) -> Embeddings:
    vector = np.frombuffer(data, dtype="<f4")
    if vector.shape[0] != dim:
        raise CatalogError(f"stored embedding has {vector.shape[0]} values, expected {dim}")
    return vector.astype(np.float32)
