"""Duplicate detection with flips and rotations (``duplicates --flips``): a mirrored and a turned copy
that the stored vectors leave below the threshold are grouped with their source, and say how."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import run_build
from search.cli import main
from search.duplicates import DuplicateGroup, find_duplicate_groups
from search.engine import SearchEngine
from tests.conftest import PHOTOS, call_in_process, small_config

SIZE = 128
THRESHOLD = 0.999
SOURCES = {
    "scikit-image__astronaut.jpg": ("mirrored.png", Image.Transpose.FLIP_LEFT_RIGHT, "flipped"),
    "gcompris-qt-data__explore_monuments-usa-cabrillo.jpg": ("turned.png", Image.Transpose.ROTATE_90, "rotated"),
}
OTHERS = ["scikit-image__coffee.jpg", "scikit-image__rocket.jpg", "scikit-learn__flower.jpg"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SearchEngine]]:
    root = tmp_path_factory.mktemp("flips")
    photos = root / "photos"
    photos.mkdir()
    for name in [*SOURCES, *OTHERS]:
        shutil.copy(PHOTOS / name, photos / name)
    for name, (copy_name, turn, _) in SOURCES.items():
        with Image.open(PHOTOS / name) as opened:
            opened.convert("RGB").transpose(turn).save(photos / copy_name)
    overrides: dict[str, Any] = {"model.image_size": SIZE}
    config = small_config(root / "data", **overrides)
    run_build(config, [photos], show_progress=False)
    engine = SearchEngine.open(config)
    yield root, engine
    engine.close()


def _pairs(groups: list[DuplicateGroup]) -> dict[str, tuple[str, float, str]]:
    """Each non-original member's file name -> (its original's name, score, match)."""
    return {
        Path(m.path).name: (Path(g.original.path).name, m.score, m.match)
        for g in groups
        for m in g.members
        if not m.original
    }


def test_flips_group_mirrored_and_turned_copies_the_stored_vectors_miss(
    collection: tuple[Path, SearchEngine],
) -> None:
    _, engine = collection
    by_name = {Path(p.path).name: p for p in engine.catalog.photos(range(1, 100)).values()}
    for name, (copy_name, _, _) in SOURCES.items():
        vectors = engine.catalog.stored_embeddings([by_name[name].id, by_name[copy_name].id], engine.dim)
        plain = float(np.dot(vectors[by_name[name].id], vectors[by_name[copy_name].id]))
        assert plain < THRESHOLD  # the premise: the stored vectors alone do not pair them

    assert _pairs(find_duplicate_groups(engine, THRESHOLD)) == {}
    found = _pairs(find_duplicate_groups(engine, THRESHOLD, flips=True))
    expected_members = {frozenset((name, copy_name)) for name, (copy_name, _, _) in SOURCES.items()}
    assert {frozenset((member, original)) for member, (original, _, _) in found.items()} == expected_members
    kinds = {copy_name: kind for copy_name, _, kind in SOURCES.values()}
    for member, (original, score, match) in found.items():
        copy_name = member if member in kinds else original
        assert score >= THRESHOLD  # the promise holds with the variant's score
        assert match == kinds[copy_name]


def test_the_cli_flag_reports_how_members_matched(
    collection: tuple[Path, SearchEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = collection
    args = ["duplicates", "--flips", "--threshold", str(THRESHOLD), "--json", "--data-dir", str(root / "data")]
    done = call_in_process(main, capsys, args, root)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    matches = sorted(m["match"] for g in report["groups"] for m in g["members"] if not m["original"])
    assert report["threshold"] == THRESHOLD and matches == ["flipped", "rotated"]
