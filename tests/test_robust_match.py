"""Matching that survives edits (search.robust): flipped, rotated and cropped copies of indexed photos,
with random weights at small sizes, seeded; and the copy-detection benchmark end to end."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from core.config import config_from_mapping
from core.errors import ConfigError
from indexer.pipeline import run_build
from search.engine import SearchEngine
from search.robust import search_image_robust
from tests.conftest import PHOTOS, TEST_IMAGE_SIZE, call_in_process, small_config

# 256 px, a 16x16 patch grid, as the region tests: coarser grids place a crop too roughly.
SIZE = 256
INDEXED = [
    "gcompris-qt-data__explore_monuments-usa-cabrillo.jpg",
    "scikit-image__astronaut.jpg",
    "scikit-image__coffee.jpg",
    "scikit-image__moon.jpg",
    "scikit-image__rocket.jpg",
    "scikit-learn__flower.jpg",
]
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "copy_detection.py"


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchEngine]:
    root = tmp_path_factory.mktemp("robust")
    (root / "photos").mkdir()
    for name in INDEXED:
        shutil.copy(PHOTOS / name, root / "photos" / name)
    config = small_config(root / "data", **{"model.image_size": SIZE})
    run_build(config, [root / "photos"], show_progress=False)
    opened = SearchEngine.open(config)
    yield opened
    opened.close()


def _plain(engine: SearchEngine) -> object:
    return replace(engine.config.search.robust, flips_and_rotations=False, local_verification=False)


def _photo(name: str) -> Image.Image:
    with Image.open(PHOTOS / name) as opened:
        return opened.convert("RGB")


@pytest.mark.parametrize(
    ("name", "turn", "match"),
    [
        ("scikit-image__astronaut.jpg", Image.Transpose.FLIP_LEFT_RIGHT, "flipped"),
        ("scikit-image__astronaut.jpg", Image.Transpose.ROTATE_90, "rotated"),
        ("gcompris-qt-data__explore_monuments-usa-cabrillo.jpg", Image.Transpose.ROTATE_180, "rotated"),
    ],
)
def test_a_mirrored_or_turned_copy_is_found_first_and_says_how(
    engine: SearchEngine, name: str, turn: Image.Transpose, match: str
) -> None:
    copy = _photo(name).transpose(turn)
    found = search_image_robust(engine, copy, 3)
    plain = search_image_robust(engine, copy, 3, _plain(engine))  # type: ignore[arg-type]
    assert Path(found[0].path).name == name and found[0].match == match and found[0].box is None
    # The variant gives the copy the score of the photo itself (pixels turned back), well above the plain one.
    assert found[0].score >= 0.999
    plain_score = next(r.score for r in plain if Path(r.path).name == name) if plain else 0.0
    assert found[0].score > plain_score + 0.01
    assert found[0].label == "near-duplicate"


def test_a_crop_is_verified_locally_with_its_box(engine: SearchEngine) -> None:
    name = "gcompris-qt-data__explore_monuments-usa-cabrillo.jpg"
    photo = _photo(name)
    box = (0, 0, photo.width // 2, photo.height // 2)
    found = search_image_robust(engine, photo.crop(box), 3)
    plain = search_image_robust(engine, photo.crop(box), 3, _plain(engine))  # type: ignore[arg-type]
    assert Path(found[0].path).name == name and found[0].match == "local"
    # The box overlaps the crop well (IoU 0.57): with random weights the crop's full placement and a
    # smaller one score 0.970 and 0.971, a near-tie that the stored grids' 1.6-bit codes decide (float16
    # grids gave IoU 0.99; over 24 crops the mean IoU moves by 0.017, docs/region-search.md).
    assert found[0].box is not None and _iou(found[0].box, box) >= 0.5
    assert found[0].score > next(r.score for r in plain if Path(r.path).name == name) + 0.05
    assert found[0].to_dict()["box"] == list(found[0].box) and found[0].to_dict()["match"] == "local"


def test_an_unedited_photo_stays_a_global_exact_match(engine: SearchEngine) -> None:
    for name in INDEXED[:3]:
        first = search_image_robust(engine, PHOTOS / name, 2)[0]
        assert Path(first.path).name == name and first.label == "exact" and first.match == "global"
        assert first.score >= 0.999 and first.box is None


def test_options_off_reproduce_the_plain_search_exactly(engine: SearchEngine) -> None:
    copy = _photo("scikit-image__coffee.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for query in (PHOTOS / "scikit-image__rocket.jpg", copy):
        off = search_image_robust(engine, query, 4, _plain(engine))  # type: ignore[arg-type]
        assert off == engine.search_image(query, 4)
        assert all(r.match == "global" and r.box is None for r in off)


def test_robust_settings_load_and_are_checked() -> None:
    config = config_from_mapping({"search": {"robust": {"variants": ["mirror"], "local_candidates": 5}}})
    assert config.search.robust.variants == ("mirror",) and config.search.robust.local_candidates == 5
    assert config.search.robust.flips_and_rotations and config.search.robust.local_verification
    with pytest.raises(ConfigError, match=r"search\.robust\.variants"):
        config_from_mapping({"search": {"robust": {"variants": ["upside-down"]}}})
    with pytest.raises(ConfigError, match=r"search\.robust\.local_candidates"):
        config_from_mapping({"search": {"robust": {"local_candidates": 0}}})


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("copy_detection_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_micro_average_precision_pools_every_query() -> None:
    bench = _benchmark()
    answers = [
        bench.Answer("crop", True, 0.9, True, "global"),
        bench.Answer("crop", False, 0.8, False, "global"),  # a non-copy scoring above a found copy
        bench.Answer("crop", True, 0.7, True, "local"),
        bench.Answer("crop", True, 0.95, False, "global"),  # a copy whose best answer is wrong
    ]
    # Ranked 0.95 (wrong), 0.9 (right: 1/2), 0.8 (wrong), 0.7 (right: 2/4); 3 positives.
    assert bench.micro_average_precision(answers) == pytest.approx((1 / 2 + 2 / 4) / 3)
    summary = bench.summarise(answers, 0.85)
    assert summary["recall@1"] == pytest.approx(2 / 3)
    assert summary["precision@threshold"] == pytest.approx(1 / 2) and summary["recall@threshold"] == pytest.approx(
        1 / 3
    )


def test_the_copy_detection_benchmark_runs_both_modes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = [str(PHOTOS), "--image-size", str(TEST_IMAGE_SIZE), "--photos", "4", "--families", "mirror", "crop"]
    assert _benchmark().main([*argv, "--max-side", "256", "--workers", "0", "--workdir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["indexed_photos"] == 2 and report["left_out_photos"] == 2 and report["queries"] == 8
    assert report["time_ratio"] > 0
    for mode in ("plain", "robust"):
        for family in ("mirror", "crop"):
            row = report["modes"][mode]["families"][family]
            assert row["queries"] == 4 and row["positives"] == 2
            assert 0.0 <= row["uap"] <= row["recall@1"] + 1e-9 <= 1.0 + 1e-9
    assert report["modes"]["plain"]["all"]["local_share"] == 0.0


def test_the_query_command_shows_how_each_photo_matched(
    engine: SearchEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.cli import main

    mirrored = tmp_path / "mirrored.png"
    _photo("scikit-image__astronaut.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    data = str(engine.config.data_dir)
    found = call_in_process(main, capsys, ["query", str(mirrored), "-k", "2", "--data-dir", data, "--json"], tmp_path)
    assert found.returncode == 0, found.stderr
    first = json.loads(found.stdout)["results"][0]
    assert first["path"].endswith("astronaut.jpg") and first["match"] == "flipped" and first["box"] is None
    plain = call_in_process(
        main, capsys, ["query", str(mirrored), "-k", "2", "--no-flips", "--no-local", "--data-dir", data], tmp_path
    )
    assert plain.returncode == 0, plain.stderr
    header, row = plain.stdout.splitlines()[1:3]
    assert header.split()[3] == "match" and row.split()[3] == "global"
