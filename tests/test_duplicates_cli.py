"""``python -m search duplicates`` with keeper rules and decisions, end to end on a small real index (random
weights): the keeper and its rule in the table, JSON and CSV; --dismiss, --keep and their undo; decisions
that survive a move and rename of the file and a rebuild."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from indexer.pipeline import run_build
from search.cli import main as search_main
from tests.conftest import PHOTOS, call_in_process, small_config
from tests.test_metadata_backfill import TAKEN, camera_jpeg

pytestmark = pytest.mark.slow

THRESHOLD = "0.99"  # random weights at 64 px: re-encoded copies score >= 0.997, distinct photos <= 0.97


def _collection(root: Path) -> Path:
    """The test photos, one of them as a camera JPEG (EXIF) with a smaller re-encoded copy, and an exact copy
    of the moon."""
    photos = root / "photos"
    shutil.copytree(PHOTOS, photos)
    camera = camera_jpeg(photos / "camera.jpg")
    (photos / "scikit-image__rocket.jpg").unlink()  # the camera JPEG is made of it
    with Image.open(camera) as image:
        image.resize((image.width * 3 // 5, image.height * 3 // 5)).save(photos / "camera-small.jpg", quality=70)
    shutil.copy2(PHOTOS / "scikit-image__moon.jpg", photos / "moon-copy.jpg")
    return photos


def _run(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return call_in_process(search_main, capsys, ["duplicates", *args, "--data-dir", str(data)], data.parent)


def _groups(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> dict[str, Any]:
    """The groups as JSON, keyed by their original's file name."""
    result = _run(capsys, data, "--threshold", THRESHOLD, "--json", *args)
    assert result.returncode == 0, result.stderr
    return {Path(group["members"][0]["path"]).name: group for group in json.loads(result.stdout)["groups"]}


def _names(group: dict[str, Any]) -> list[str]:
    return [Path(member["path"]).name for member in group["members"]]


def test_keeper_rules_and_decisions_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = _collection(tmp_path)
    data = tmp_path / "data"
    config = small_config(data)
    run_build(config, [photos], show_progress=False)

    groups = _groups(capsys, data)
    assert set(groups) == {"camera.jpg", "moon-copy.jpg"}
    camera = groups["camera.jpg"]
    assert _names(camera) == ["camera.jpg", "camera-small.jpg"] and camera["keeper_rule"] == "pixels"
    first = camera["members"][0]
    assert (first["file_format"], first["capture_time"], first["camera_make"], first["camera_model"]) == (
        "JPEG",
        TAKEN.isoformat(),
        "FUJIFILM",
        "X-T2",
    )
    assert camera["members"][1]["capture_time"] is None  # the resized copy lost its EXIF
    # Exact copies with the same mtime tie on every rule but the path: the shorter one is kept.
    assert _names(groups["moon-copy.jpg"]) == ["moon-copy.jpg", "scikit-image__moon.jpg"]
    assert groups["moon-copy.jpg"]["keeper_rule"] == "path"

    table = _run(capsys, data, "--threshold", THRESHOLD)
    assert "original chosen by: pixels" in table.stdout and "2016-08-14 07:05" in table.stdout
    rows = list(csv.DictReader(io.StringIO(_run(capsys, data, "--threshold", THRESHOLD, "--csv").stdout)))
    camera_rows = [row for row in rows if row["path"].endswith(("camera.jpg", "camera-small.jpg"))]
    assert {row["keeper_rule"] for row in camera_rows} == {"pixels"}
    assert [row["camera_make"] for row in camera_rows] == ["FUJIFILM", ""]

    # A reference folder beats every other rule.
    reference = photos / "kept"
    reference.mkdir()
    shutil.move(photos / "camera-small.jpg", reference / "camera-small.jpg")
    run_build(config, [photos], show_progress=False)
    by_reference = _groups(capsys, data, "--reference", str(reference))
    assert by_reference["camera-small.jpg"]["keeper_rule"] == "reference"

    # Dismissed in a real process: the pair is never grouped again.
    dismissed = subprocess.run(
        [sys.executable, "-m", "search", "duplicates", "--dismiss", str(photos / "camera.jpg"),
         str(reference / "camera-small.jpg"), "--data-dir", str(data)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert dismissed.returncode == 0, dismissed.stderr
    assert dismissed.stdout.startswith("dismissed 1 pair:") and "Traceback" not in dismissed.stderr
    assert set(_groups(capsys, data)) == {"moon-copy.jpg"}

    # Moved and renamed, the photo keeps its decision: it is keyed by content.
    elsewhere = photos / "elsewhere"
    elsewhere.mkdir()
    shutil.move(reference / "camera-small.jpg", elsewhere / "renamed.jpg")
    summary = run_build(config, [photos], show_progress=False)
    assert (summary.moved, summary.embedded) == (1, 0)
    assert set(_groups(capsys, data)) == {"moon-copy.jpg"}
    listed = _run(capsys, data, "--decisions")
    assert "not duplicates: " in listed.stdout and "renamed.jpg" in listed.stdout

    undo = _run(capsys, data, "--undismiss", str(elsewhere / "renamed.jpg"), str(photos / "camera.jpg"))
    assert undo.returncode == 0 and "withdrew 1 pair among 2 photos" in undo.stdout
    assert _names(_groups(capsys, data)["camera.jpg"]) == ["camera.jpg", "renamed.jpg"]

    # A pinned keeper beats every rule, until unpinned.
    pinned = _run(capsys, data, "--keep", str(elsewhere / "renamed.jpg"), "--json")
    assert json.loads(pinned.stdout)["already"] is False
    group = _groups(capsys, data)["renamed.jpg"]
    assert _names(group) == ["renamed.jpg", "camera.jpg"] and group["keeper_rule"] == "pinned"
    assert "unpinned" in _run(capsys, data, "--unkeep", str(elsewhere / "renamed.jpg")).stdout
    assert _groups(capsys, data)["camera.jpg"]["keeper_rule"] == "pixels"


def test_decisions_that_cannot_be_taken_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy2(PHOTOS / "scikit-image__moon.jpg", photos / "moon.jpg")
    shutil.copy2(PHOTOS / "scikit-image__moon.jpg", photos / "moon-copy.jpg")
    data = tmp_path / "data"
    run_build(small_config(data), [photos], show_progress=False)

    same = _run(capsys, data, "--dismiss", str(photos / "moon.jpg"), str(photos / "moon-copy.jpg"))
    assert same.returncode == 2 and "same bytes" in same.stderr and "always duplicates" in same.stderr
    unknown = _run(capsys, data, "--keep", str(tmp_path / "not-indexed.jpg"))
    assert unknown.returncode == 2 and "not an indexed photo" in unknown.stderr
    alone = _run(capsys, data, "--dismiss", str(photos / "moon.jpg"))
    assert alone.returncode == 2 and "at least two" in alone.stderr
    both = _run(capsys, data, "--keep", str(photos / "moon.jpg"), "--unkeep", str(photos / "moon.jpg"))
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing_folder = _run(capsys, data, "--reference", str(tmp_path / "nowhere"))
    assert missing_folder.returncode == 2 and "not a folder" in missing_folder.stderr
    assert _run(capsys, data, "--decisions").stdout.strip() == "no decisions stored"
