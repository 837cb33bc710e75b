"""The catalog records which torch, birder, precision and device made its vectors, and status shows it."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest
import torch

from core.catalog import Catalog
from core.vector_makers import current_maker, describe_device, makers_of, record_maker
from indexer.cli import main as indexer_main
from indexer.pipeline import run_build
from tests.conftest import call_in_process, small_config


def _makers(data_dir: Path) -> list[tuple[str, str, str, str, int]]:
    catalog = Catalog.open(small_config(data_dir).resolved_db_url, create=False)
    try:
        return [(m.torch_version, m.birder_version, m.precision, m.device, m.images) for m in makers_of(catalog)]
    finally:
        catalog.close()


def test_builds_add_their_photos_to_their_maker(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    photos = sorted(photo_dir.glob("*.jpg"))
    held_back = tmp_path / "later"
    held_back.mkdir()
    for photo in photos[:3]:
        shutil.move(photo, held_back / photo.name)
    config = small_config(data, **{"runtime.precision": "fp32"})
    run_build(config, [photo_dir], show_progress=False)
    cpu = describe_device(torch.device("cpu"))
    versions = (torch.__version__, importlib.metadata.version("birder"))
    assert _makers(data) == [(*versions, "fp32", cpu, len(photos) - 3)]

    run_build(config, [photo_dir], show_progress=False)  # nothing new: nothing recorded
    for photo in held_back.iterdir():
        shutil.move(photo, photo_dir / photo.name)
    run_build(small_config(data, **{"runtime.precision": "int8"}), [photo_dir], show_progress=False)
    assert _makers(data) == [(*versions, "fp32", cpu, len(photos) - 3), (*versions, "int8", cpu, 3)]

    status = call_in_process(indexer_main, capsys, ["status", "--data-dir", str(data)], tmp_path)
    made_by = [line for line in status.stdout.splitlines() if "birder" in line]
    assert made_by[0].startswith("made by") and f"fp32 on {cpu}: {len(photos) - 3} photos" in made_by[0]
    assert f"int8 on {cpu}: 3 photos" in made_by[1]


def test_a_maker_row_is_shared_and_counts_add_up(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    try:
        maker = current_maker("bf16", "cuda (Some GPU)")
        for images in (5, 0, 7):
            record_maker(catalog, maker, images)
        record_maker(catalog, current_maker("bf16", "cpu (AVX512, amx)"), 20)
        assert [(m.device, m.images) for m in makers_of(catalog)] == [
            ("cpu (AVX512, amx)", 20),
            ("cuda (Some GPU)", 12),
        ]
    finally:
        catalog.close()


def test_the_cpu_is_described_by_its_vector_isa() -> None:
    description = describe_device(torch.device("cpu"))
    assert description.startswith(f"cpu ({torch.backends.cpu.get_cpu_capability()}")
