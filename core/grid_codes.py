"""Patch grids as the catalog stores them: ternary codes of a fixed rotation, 1.6 bits per value.

A 16x16x384 grid in float16 is 196 KB, 10 GB of catalog per 50,000 photos. Each unit cell vector is
rotated (random signs, a permutation and block Walsh-Hadamard transforms, twice: an orthogonal map that
spreads any dominant coordinates over all of them, so every coordinate looks alike), then every
coordinate becomes -1, 0 or +1: 0 where it is within ``THRESHOLD`` times the cell's RMS, the
mean-squared-error optimum for Gaussian coordinates. Five of these trits pack into a byte (3^5 = 243),
so a 384-d cell takes 77 bytes, plus one byte for its cosine to the original (about 0.90): 78 bytes, and
20.0 KB for a 16x16 grid. A decoded cell is the unit vector of its trits, rotated back and divided by
that cosine, so that its inner product with any query estimates the original's without bias (the
RaBitQ estimator): a photo matched against itself still scores 1, and local scores stay comparable with
global ones. Region recall and box IoU stay where float16 grids had them (docs/region-search.md has the
measurements and the options weighed).

The codes need no training and no per-collection state: any process (a Ray actor, a migration) encodes
the same grid to the same bytes, and reused content carries its bytes unchanged. The rotation is derived
from SHA-256, not from a random generator or LAPACK, so it cannot differ between machines or versions;
changing anything here changes stored data and needs a migration (``CODEC`` names this one).
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import numpy.typing as npt

CODEC = "ternary-hadamard-1"
THRESHOLD = 0.612
TRITS_PER_BYTE = 5
ROUNDS = 2
# The cosine byte: 0.5 + byte / 510, a cosine in [0.5, 1] to within 0.001.
COSINE_FLOOR = 0.5
COSINE_STEPS = 510

Cells = npt.NDArray[np.float32]
Codes = npt.NDArray[np.uint8]

# Trit values of each byte: byte = sum(trit_j * 3**j), trit 0 -> 0, 1 -> +1, 2 -> -1.
_POWERS = 3 ** np.arange(TRITS_PER_BYTE, dtype=np.int64)
_TRIT_VALUES = np.array([0.0, 1.0, -1.0], dtype=np.float32)
_BYTE_VALUES = _TRIT_VALUES[(np.arange(3**TRITS_PER_BYTE)[:, None] // _POWERS[None, :]) % 3]  # [243, 5]
# The same table for readers that take the trits as they are (search.region_batch); read-only.
BYTE_TRITS = _BYTE_VALUES
BYTE_TRITS.setflags(write=False)


def code_bytes(dim: int) -> int:
    """Bytes per cell: the cosine byte, then the packed trits."""
    return 1 + math.ceil(dim / TRITS_PER_BYTE)


def grid_bytes(grid: int, dim: int) -> int:
    """Bytes per stored ``grid x grid`` grid."""
    return grid * grid * code_bytes(dim)


def _hash_ints(label: str, count: int) -> npt.NDArray[np.uint64]:
    """``count`` pseudo-random 64-bit integers from SHA-256 of ``label`` (stable everywhere, forever)."""
    out = bytearray()
    block = 0
    while len(out) < 8 * count:
        out += hashlib.sha256(f"{CODEC}:{label}:{block}".encode()).digest()
        block += 1
    return np.frombuffer(bytes(out[: 8 * count]), dtype="<u8").copy()


@functools.lru_cache(maxsize=8)
def _rotation(dim: int) -> tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]], ...]:
    """Per round: the signs and the permutation applied before the block Hadamard transform."""
    rounds = []
    for number in range(ROUNDS):
        signs = np.where(_hash_ints(f"signs:{dim}:{number}", dim) & 1, -1.0, 1.0).astype(np.float32)
        permutation = np.argsort(_hash_ints(f"order:{dim}:{number}", dim), kind="stable")
        rounds.append((signs, permutation))
    return tuple(rounds)


def _block(dim: int) -> int:
    """The Hadamard block: the largest power of two dividing ``dim`` (128 for 384)."""
    return dim & -dim


def _hadamard(values: Cells, block: int) -> Cells:
    """Orthonormal Walsh-Hadamard transform of each ``block`` of the last axis (its own inverse)."""
    rows = values.reshape(-1, block)
    half = 1
    while half < block:
        pairs = rows.reshape(-1, block // (2 * half), 2, half)
        rows = np.stack((pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]), axis=2).reshape(-1, block)
        half *= 2
    return (rows / np.float32(math.sqrt(block))).reshape(values.shape)


def _rotate_structured(cells: Cells) -> Cells:
    dim = cells.shape[1]
    out = np.asarray(cells, dtype=np.float32)
    for signs, permutation in _rotation(dim):
        out = _hadamard((out * signs)[:, permutation], _block(dim))
    return out


@functools.lru_cache(maxsize=8)
def rotation_matrix(dim: int) -> Cells:
    """The rotation as a ``[dim, dim]`` orthogonal matrix: ``rotate(x) = x @ M``. One matrix product
    encodes or decodes a batch of cells many times faster than the transforms it is made of."""
    matrix = _rotate_structured(np.eye(dim, dtype=np.float32))
    matrix.setflags(write=False)
    return matrix


def rotate(cells: Cells) -> Cells:
    """The codec's orthogonal rotation of ``[n, dim]`` vectors."""
    values = np.asarray(cells, dtype=np.float32)
    return values @ rotation_matrix(values.shape[1])


def unrotate(rotated: Cells) -> Cells:
    """The inverse of :func:`rotate`."""
    values = np.asarray(rotated, dtype=np.float32)
    return values @ rotation_matrix(values.shape[1]).T


def rotated_cells(codes: Codes, dim: int) -> Cells:
    """Decoded cells still in the rotated space: inner products with a :func:`rotate`-d query equal those
    of the decoded cells with the query, without unrotating every cell (what region search does)."""
    count = codes.shape[0]
    cosines = COSINE_FLOOR + codes[:, :1].astype(np.float32) / COSINE_STEPS
    rotated = _BYTE_VALUES[codes[:, 1:]].reshape(count, -1)[:, :dim]
    norms = np.linalg.norm(rotated, axis=1, keepdims=True)
    return rotated / (np.maximum(norms, np.float32(1e-12)) * cosines)


def encode_cells(cells: npt.NDArray[np.floating]) -> Codes:
    """``[n, dim]`` unit vectors -> ``[n, code_bytes(dim)]`` codes."""
    values = np.asarray(cells, dtype=np.float32)
    count, dim = values.shape
    rotated = rotate(values)
    rms = np.linalg.norm(rotated, axis=1, keepdims=True) / np.float32(math.sqrt(dim))
    trits = np.zeros((count, (code_bytes(dim) - 1) * TRITS_PER_BYTE), dtype=np.int64)
    signs = np.where(rotated > THRESHOLD * rms, 1, np.where(rotated < -THRESHOLD * rms, -1, 0))
    trits[:, :dim] = np.where(signs < 0, 2, signs)
    kept = np.linalg.norm(signs, axis=1) * np.linalg.norm(rotated, axis=1)
    cosines = (signs * rotated).sum(axis=1) / np.maximum(kept, 1e-12)
    codes = np.empty((count, code_bytes(dim)), dtype=np.uint8)
    codes[:, 0] = np.clip(np.round((cosines - COSINE_FLOOR) * COSINE_STEPS), 0, 255)
    codes[:, 1:] = trits.reshape(count, -1, TRITS_PER_BYTE) @ _POWERS
    return codes


def decode_cells(codes: Codes, dim: int) -> Cells:
    """``[n, code_bytes(dim)]`` codes -> ``[n, dim]`` cells (length 1 / their cosine, about 1.1)."""
    return unrotate(rotated_cells(codes, dim))


def encode_grid(grid: npt.NDArray[np.floating]) -> bytes:
    """A ``[g, g, dim]`` grid of unit cells as stored bytes."""
    return encode_cells(np.asarray(grid).reshape(-1, grid.shape[-1])).tobytes()


def grid_codes(data: bytes, grid: int, dim: int) -> Codes:
    """Stored bytes as ``[grid * grid, code_bytes(dim)]`` codes.

    Raises ValueError when ``data`` is not the size such a grid's codes have."""
    if len(data) != grid_bytes(grid, dim):
        raise ValueError(
            f"stored patch grid has {len(data)} bytes, expected {grid_bytes(grid, dim)} for {grid}x{grid}x{dim}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(grid * grid, code_bytes(dim))


def decode_grid(data: bytes, grid: int, dim: int) -> Cells:
    """Stored bytes -> a ``[grid, grid, dim]`` float32 grid (see :func:`decode_cells`)."""
    return decode_cells(grid_codes(data, grid, dim), dim).reshape(grid, grid, dim)
