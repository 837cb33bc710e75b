"""The catalog's preprocessing descriptor is made from the preprocessing code's own rules, and it is the
string earlier versions wrote by hand: catalogs they built are still accepted, mixed ones still refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from core.catalog import Catalog
from core.errors import ProvenanceMismatchError
from core.image_threads import one_intra_op_thread
from core.model import LoadedModel, provenance_of
from core.patches import effective_grid
from core.preprocess import preprocessing_descriptor, resize_transform
from indexer.pipeline import run_build
from tests.conftest import OTHER_MEAN, OTHER_STD, PHOTOS, small_config

# What Loupe stored before the descriptor was made from code (indexer/pipeline.py wrote it by hand).
STORED_BEFORE = "squash-bicubic-antialias;mean=0.5,0.5,0.5;std=0.5,0.5,0.5;mean-of-patch-tokens;l2"


def test_the_descriptor_is_the_string_stored_before() -> None:
    assert preprocessing_descriptor((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) == STORED_BEFORE
    assert preprocessing_descriptor(OTHER_MEAN, OTHER_STD) == (
        "squash-bicubic-antialias;mean=0.3,0.45,0.6;std=0.2,0.25,0.3;mean-of-patch-tokens;l2"
    )


def test_the_provenance_of_the_model_carries_it(random_model: LoadedModel) -> None:
    assert provenance_of(random_model, 2).preprocessing == STORED_BEFORE


def test_the_rule_it_names_is_the_rule_both_resize_paths_follow() -> None:
    (resize, _) = resize_transform(32).transforms
    assert isinstance(resize, v2.Resize)
    assert (resize.interpolation, resize.antialias) == (v2.InterpolationMode.BICUBIC, True)
    assert preprocessing_descriptor((0.5,) * 3, (0.5,) * 3).startswith("squash-bicubic-antialias;")
    # The device path (core.device_decode) goes through core.preprocess.resize_pixels: same size, uint8.
    from core.preprocess import resize_pixels

    assert resize_pixels(torch.zeros((3, 50, 70), dtype=torch.uint8), 32).shape == (3, 32, 32)


@pytest.mark.parametrize("gpu_jpeg", ["never", "auto"])
def test_a_catalog_written_before_is_accepted(tmp_path: Path, random_model: LoadedModel, gpu_jpeg: str) -> None:
    config = small_config(tmp_path / "data", **{"runtime.gpu_jpeg": gpu_jpeg})
    grid = effective_grid(random_model.grid_size, config.patches.grid)
    before = replace(provenance_of(random_model, grid), preprocessing=STORED_BEFORE)
    config.data_dir.mkdir()
    catalog = Catalog.open(config.resolved_db_url)
    catalog.ensure_provenance(before)
    catalog.close()
    photos = tmp_path / "photos"
    photos.mkdir()
    name = sorted(path.name for path in PHOTOS.iterdir())[0]
    (photos / name).write_bytes((PHOTOS / name).read_bytes())
    with one_intra_op_thread():
        summary = run_build(config, [photos], show_progress=False)
    assert summary.new == 1

    other = small_config(tmp_path / "other", **{"runtime.gpu_jpeg": gpu_jpeg})
    other.data_dir.mkdir()
    catalog = Catalog.open(other.resolved_db_url)
    catalog.ensure_provenance(replace(before, preprocessing=STORED_BEFORE.replace("bicubic", "bilinear")))
    catalog.close()
    with pytest.raises(ProvenanceMismatchError, match="preprocessing"), one_intra_op_thread():
        run_build(other, [photos], show_progress=False)
