"""Calibration of the near-duplicate threshold: the maths on crafted scores, the catalog rows, and a
build that calibrates a small real collection (random weights at 64 px) which labels then follow."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.catalog import Catalog
from core.catalog.calibrations import (
    Calibration,
    calibration_due,
    current_calibration,
    describe_threshold,
    save_calibration,
)
from core.encoder import Encoder
from core.model import LoadedModel
from core.report import collection_status
from indexer.calibrate import calibrate_if_due, embed_with, measure_scores
from indexer.calibration import fit_threshold, precision_at
from indexer.pipeline import run_build
from indexer.summary import status_lines
from loupe.cli import main as loupe_main
from search.engine import SearchEngine
from tests.conftest import PHOTOS, call_in_process, open_app, small_config

# The maths -------------------------------------------------------------------------------------


def test_threshold_is_the_lowest_positive_score_at_the_target_precision() -> None:
    fit = fit_threshold([0.99, 0.98, 0.97, 0.90], ["resize", "crop", "crop", "rotate90"], [0.95, 0.80], 0.99)
    # Two negatives stand for four queries' best non-matches (weight 2): at 0.90 one of them is above,
    # precision 4 / (4 + 2); at 0.97 none is.
    assert fit.threshold == 0.97
    assert (fit.precision, fit.recall) == (1.0, 0.75)
    assert fit.per_edit == {"resize": 1.0, "crop": 1.0, "rotate90": 0.0}
    assert fit_threshold([0.99, 0.98, 0.97, 0.90], ["a"] * 4, [0.95, 0.80], 0.6).threshold == 0.90


def test_negatives_count_as_one_best_non_match_per_query() -> None:
    positives = np.full(100, 0.9)
    many = np.concatenate([np.full(5, 0.95), np.full(995, 0.5)])  # 0.5% of the non-matches above 0.9
    assert precision_at(positives, many, np.array([0.9]))[0] == pytest.approx(100 / (100 + 0.5))
    assert precision_at(positives, many, np.array([0.99]))[0] == 1.0  # nothing labelled, nothing wrong


def test_without_any_good_threshold_it_goes_above_every_non_match() -> None:
    fit = fit_threshold([0.5, 0.6], ["blur", "blur"], [0.9, 0.7], 0.99)
    assert 0.9 < fit.threshold < 0.9 + 1e-9
    assert (fit.recall, fit.per_edit) == (0.0, {"blur": 0.0})
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        fit_threshold([0.5], ["blur"], [], 0.99)


def _calibration(**changes: object) -> Calibration:
    made = Calibration(
        weights_sha256="a" * 64,
        image_size=64,
        sample=20,
        edits=20,
        seed=0,
        collection_size=100,
        threshold=0.97,
        target_precision=0.99,
        precision=0.995,
        recall=0.93,
        per_edit={"crop": 0.9, "blur": 1.0},
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def test_recalibration_is_due_after_growing_or_shrinking_2x() -> None:
    assert calibration_due(None, 100, 2.0) == "not calibrated yet for these weights and image size"
    assert calibration_due(_calibration(), 150, 2.0) is None
    assert calibration_due(_calibration(), 51, 2.0) is None
    assert "from 100 to 200 photos" in str(calibration_due(_calibration(), 200, 2.0))
    assert "from 100 to 50 photos" in str(calibration_due(_calibration(), 50, 2.0))


def test_threshold_in_words() -> None:
    assert describe_threshold(0.97, _calibration()) == (
        "near-duplicate: score ≥ 0.970, right 100 times in 100 and finds 93% of edited copies in this collection"
    )
    assert "not calibrated" in describe_threshold(0.95, None)


# A small real collection -----------------------------------------------------------------------


def _synthetic_photos(folder: Path, count: int) -> None:
    """Seeded photo-like JPEGs of varied shapes: coarse colour fields with a bright block and noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    for number in range(count):
        width, height = int(rng.integers(64, 97)), int(rng.integers(64, 97))
        coarse = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((width, height))
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-10, 11, (height, width, 3))
        top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        pixels[top : top + height // 3, left : left + width // 3] = rng.integers(0, 256, 3)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"synthetic-{number:02d}.jpg")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic photos, the 12 test photos, an exact copy of one of them and a PNG of the pixels of
    another: 38 files, built with the build's own calibration (all of them sampled, default settings)."""
    root = tmp_path_factory.mktemp("calibrated")
    _synthetic_photos(root / "photos" / "synthetic", 24)
    shutil.copytree(PHOTOS, root / "photos" / "test")
    first = sorted((root / "photos" / "test").iterdir())[0]
    shutil.copy(first, root / "photos" / f"copy-of-{first.name}")
    # The same pixels in other bytes: a real duplicate that no sha256 reveals.
    with Image.open(root / "photos" / "synthetic" / "synthetic-00.jpg") as synthetic:
        synthetic.save(root / "photos" / "synthetic-00-resaved.png")
    summary = run_build(small_config(root / "data"), [root / "photos"], show_progress=False)
    assert summary.calibration is not None and summary.calibration.status == "calibrated"
    return root


def test_build_calibrates_and_everything_uses_it(collection: Path) -> None:
    config = small_config(collection / "data")
    engine = SearchEngine.open(config)
    try:
        threshold, calibration = engine.near_duplicate_threshold()
        assert calibration is not None and threshold == calibration.threshold
        assert (calibration.sample, calibration.edits, calibration.collection_size) == (38, 76, 38)
        assert calibration.precision >= 0.99 or calibration.recall == 0.0
        assert set(calibration.per_edit) <= set(json.loads(json.dumps(calibration.per_edit)))
        assert len(calibration.per_edit) == 13  # 76 edits take every family in turn
        # Labels follow the calibrated threshold, not the config's 0.95.
        for result in engine.search_similar(engine.photo(1).path, 10):
            expected = "near-duplicate" if result.score >= threshold else "similar"
            assert result.label in (expected, "exact")
    finally:
        engine.close()
    status = collection_status(config)
    assert status["calibration"]["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert {"precision", "recall", "per_edit"} <= set(status["calibration"])
    assert status["calibration"]["due"] is None
    assert any(line.startswith("near-dups    score >= ") for line in status_lines(status))

    # A build of the same collection keeps it; other weights never use it.
    again = run_build(config, [collection / "photos"], show_progress=False)
    assert again.calibration is not None and again.calibration.status == "current"
    catalog = Catalog.open(config.resolved_db_url, create=False)
    try:
        provenance = catalog.provenance()
        assert provenance is not None
        assert current_calibration(catalog, replace(provenance, weights_sha256="0" * 64)) is None
        assert current_calibration(catalog, replace(provenance, image_size=128)) is None
    finally:
        catalog.close()


def test_negatives_leave_out_exact_copies(collection: Path, random_model: LoadedModel) -> None:
    config = small_config(collection / "data")
    encoder = Encoder(random_model, torch.device("cpu"), "fp32")  # the collection's model (seed 0, 64 px)
    embed = embed_with(lambda pixels: encoder.encode(pixels).embeddings, 64, one_thread=True)
    engine = SearchEngine.open(config)
    try:
        assert random_model.weights.sha256 == engine.provenance.weights_sha256
        scores = measure_scores(
            engine.catalog,
            engine.current()[0],
            engine.provenance,
            embed,
            config.search.calibration,
            engine.photo_limits,
        )
    finally:
        engine.close()
    # The test photo and its copy have the same bytes (cosine 1): neither is the other's non-match. The
    # JPEG and the PNG of the same pixels are each other's nearest photo, above every mild edit: left out.
    assert max(scores.negative_scores) < 0.99999
    assert scores.left_out == 2
    assert len(scores.negative_scores) == 38
    assert len(scores.positive_scores) == 76 and all(-1.0 <= s <= 1.0001 for s in scores.positive_scores)


def test_calibrate_command_and_its_json(collection: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(collection / "data")
    args = ["calibrate", "--data-dir", data, "--sample", "20", "--seed", "3", "--precision", "0.95", "--json"]
    result = call_in_process(loupe_main, capsys, args, collection)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["sample"], document["seed"], document["target_precision"]) == (20, 3, 0.95)
    assert document["precision"] >= 0.95 or document["recall"] == 0.0
    status = call_in_process(loupe_main, capsys, ["status", "--json", "--data-dir", data], collection)
    assert json.loads(status.stdout)["calibration"]["threshold"] == document["threshold"]  # the latest wins
    refused = call_in_process(loupe_main, capsys, ["calibrate", "--data-dir", data, "--precision", "1.5"], collection)
    assert refused.returncode == 2 and "below 1" in refused.stderr


def test_a_small_collection_keeps_the_config_default(photo_dir: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    summary = run_build(config, [photo_dir], show_progress=False)
    assert summary.calibration is not None and summary.calibration.status == "too-small"
    assert "12 indexed photos, calibration needs 20" in summary.calibration.message
    status = collection_status(config)["calibration"]
    assert (status["calibrated"], status["threshold"], status["precision"]) == (False, 0.95, None)
    engine = SearchEngine.open(config)
    try:
        assert engine.near_duplicate_threshold() == (0.95, None)
        off = replace(config.search.calibration, on_build=False)
        unused = lambda: pytest.fail("no index is opened when calibration is off")  # noqa: E731
        outcome = calibrate_if_due(engine.catalog, unused, engine.provenance, unused, off, engine.photo_limits)
        assert outcome.status == "off" and outcome.calibration is None
    finally:
        engine.close()


def test_saved_calibrations_latest_first(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    try:
        from core.catalog import Provenance

        provenance = Provenance("net", "random", "a" * 64, "random", 64, 384, "squash")
        assert current_calibration(catalog, provenance) is None
        save_calibration(catalog, _calibration(threshold=0.96))
        save_calibration(catalog, _calibration(threshold=0.98, collection_size=300))
        latest = current_calibration(catalog, provenance)
        assert latest is not None and (latest.threshold, latest.collection_size) == (0.98, 300)
        assert latest.per_edit == {"crop": 0.9, "blur": 1.0}
    finally:
        catalog.close()


def test_the_ui_says_the_threshold_in_words(collection: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = SearchEngine.open(small_config(collection / "data"))
    try:
        threshold, calibration = engine.near_duplicate_threshold()
    finally:
        engine.close()
    assert calibration is not None
    app = open_app(collection / "data", monkeypatch)
    words = describe_threshold(threshold, calibration)
    assert words.startswith("near-duplicate: score ≥ ") and "times in 100 and finds" in words
    assert words in [caption.value for caption in app.caption]
    app.switch_page("views/duplicates.py").run()
    assert words in [caption.value for caption in app.caption]
    assert app.slider(key="duplicates-threshold").value == pytest.approx(threshold)


def test_a_sample_that_cannot_be_read_back_does_not_fail_the_build(
    collection: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import indexer.calibrate
    from core.errors import DecodeError

    def unreadable(path: Path, *args: object, **kwargs: object) -> None:
        raise DecodeError("truncated", f"{path} was cut short")

    monkeypatch.setattr(indexer.calibrate, "load_image", unreadable)
    config = small_config(collection / "data")
    engine = SearchEngine.open(config)
    try:
        other_weights = replace(engine.provenance, weights_sha256="0" * 64)  # no calibration yet: one is due
        outcome = calibrate_if_due(
            engine.catalog,
            lambda: engine.current()[0],
            other_weights,
            lambda images: pytest.fail("nothing to embed"),
            config.search.calibration,
            engine.photo_limits,
        )
    finally:
        engine.close()
    assert outcome.status == "failed" and outcome.calibration is None
    assert "none of the 38 sampled photos could be read back" in outcome.message
