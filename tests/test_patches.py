"""Patch-grid pooling: block averages, unit cells, float16, the same values whatever the grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.patches import effective_grid, pool_patches


def _tokens(batch: int, side: int, dim: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(side * 100 + batch)
    return torch.randn(batch, side, side, dim, generator=generator)


def _unit(cells: np.ndarray) -> np.ndarray:
    return cells / np.linalg.norm(cells, axis=-1, keepdims=True)


def test_divisible_grid_is_the_mean_of_each_block() -> None:
    tokens = _tokens(3, 8)
    pooled = pool_patches(tokens, 4)
    blocks = tokens.numpy().reshape(3, 4, 2, 4, 2, -1).mean(axis=(2, 4))
    assert pooled.shape == (3, 4, 4, 24) and pooled.dtype == np.float16
    np.testing.assert_allclose(pooled.astype(np.float32), _unit(blocks), atol=1e-3)


def test_grid_of_the_model_only_normalises_each_cell() -> None:
    tokens = _tokens(2, 5)
    pooled = pool_patches(tokens, 5)
    np.testing.assert_allclose(pooled.astype(np.float32), _unit(tokens.numpy()), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(pooled.astype(np.float32), axis=-1), 1.0, atol=2e-3)


def test_uneven_grid_averages_overlapping_windows_like_adaptive_pooling() -> None:
    tokens = _tokens(1, 5)
    pooled = pool_patches(tokens, 2)[0].astype(np.float32)
    # adaptive pooling of 5 cells into 2: windows [0, 3) and [2, 5) on each axis.
    cells = tokens[0].numpy()
    expected = np.stack([np.stack([cells[r : r + 3, c : c + 3].mean(axis=(0, 1)) for c in (0, 2)]) for r in (0, 2)])
    np.testing.assert_allclose(pooled, _unit(expected), atol=1e-3)


def test_pooled_cells_do_not_depend_on_batch_mates() -> None:
    tokens = _tokens(4, 32)
    together = pool_patches(tokens, 16)
    for i in range(4):
        np.testing.assert_array_equal(pool_patches(tokens[i : i + 1], 16)[0], together[i])


@pytest.mark.parametrize(("model_grid", "wanted", "expected"), [(32, 16, 16), (14, 16, 14), (8, 0, 1)])
def test_effective_grid_is_never_finer_than_the_model(model_grid: int, wanted: int, expected: int) -> None:
    assert effective_grid(model_grid, wanted) == expected
