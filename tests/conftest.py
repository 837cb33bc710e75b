"""Shared fixtures: a few real photos, a small test config, the real network with random weights."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from indexer.config import LoupeConfig, with_overrides
from indexer.encoder import LoadedModel, load_model

DATA = Path(__file__).parent / "data"
PHOTOS = DATA / "photos"
TEST_IMAGE_SIZE = 64


def small_config(data_dir: Path, **overrides: Any) -> LoupeConfig:
    """The real model with random weights at a small input size, in-process decoding, on the CPU."""
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "model.weights": "random",
        "model.image_size": TEST_IMAGE_SIZE,
        "runtime.device": "cpu",
        "runtime.batch_size": 4,
        "runtime.workers": 0,
    }
    settings.update(overrides)
    return with_overrides(LoupeConfig(), settings)


@pytest.fixture()
def photo_dir(tmp_path: Path) -> Path:
    """A private copy of the test photos, safe to move, touch and delete."""
    target = tmp_path / "photos"
    shutil.copytree(PHOTOS, target)
    return target


@pytest.fixture(scope="session")
def random_model() -> LoadedModel:
    config = small_config(Path("unused"))
    return load_model(config.model, torch.device("cpu"))
