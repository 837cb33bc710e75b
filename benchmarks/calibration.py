"""Calibration benchmark: how long calibrating takes, and whether its threshold holds on other photos.

The photos (sorted by name) are split: the first ``--tune`` are indexed as one collection and calibrated
(``loupe calibrate``'s code, timed); the rest are indexed as another collection and scored the same way,
and the tuned threshold is evaluated there: precision and recall per edit family on photos it never saw.
Random weights unless ``--weights`` says otherwise (the figures then say nothing about the real model).

    python benchmarks/calibration.py ../shared/photos --image-size 224 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import LoupeConfig, with_overrides  # noqa: E402
from core.decode import supported_extensions  # noqa: E402
from indexer.calibrate import calibrate_collection, embed_with, measure_scores  # noqa: E402
from indexer.calibration import evaluate_threshold, fit_threshold  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402
from search.engine import SearchEngine  # noqa: E402


def _collection(photos: list[Path], folder: Path, config: LoupeConfig) -> LoupeConfig:
    (folder / "photos").mkdir(parents=True)
    for photo in photos:
        shutil.copy(photo, folder / "photos" / photo.name)
    config = with_overrides(config, {"data_dir": folder / "data", "search.calibration.on_build": False})
    run_build(config, [folder / "photos"], show_progress=False)
    return config


def run(photo_dir: Path, tune: int, image_size: int, weights: str, sample: int) -> dict[str, Any]:
    extensions = supported_extensions()
    photos = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in extensions)
    base = with_overrides(
        LoupeConfig(),
        {"model.weights": weights, "model.image_size": image_size, "search.calibration.sample": sample},
    )
    with tempfile.TemporaryDirectory(prefix="loupe-calibration-") as scratch:
        tuned_config = _collection(photos[:tune], Path(scratch) / "tune", base)
        held_config = _collection(photos[tune:], Path(scratch) / "held", base)
        settings = replace(tuned_config.search.calibration, min_photos=2)
        engine = SearchEngine.open(tuned_config)
        try:
            engine.load_model()
            embed = embed_with(engine.encode_pixels, image_size, one_thread=True)
            started = time.perf_counter()
            calibration = calibrate_collection(
                engine.catalog, engine.current()[0], engine.provenance, embed, settings, engine.photo_limits
            )
            seconds = time.perf_counter() - started
        finally:
            engine.close()
        engine = SearchEngine.open(held_config)
        try:
            embed = embed_with(engine.encode_pixels, image_size, one_thread=True)
            scores = measure_scores(
                engine.catalog, engine.current()[0], engine.provenance, embed, settings, engine.photo_limits
            )
        finally:
            engine.close()
    held = evaluate_threshold(
        scores.positive_scores, scores.positive_families, scores.negative_scores, calibration.threshold
    )
    refit = fit_threshold(scores.positive_scores, scores.positive_families, scores.negative_scores, settings.precision)
    return {
        "image_size": image_size,
        "weights": weights,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "tuned": {**calibration.to_dict(), "wall_s": round(seconds, 2)},
        "held_out": {**asdict(held), "photos": scores.sample, "left_out": scores.left_out},
        "held_out_own_fit": asdict(refit),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--tune", type=int, default=120, help="photos of the calibrated collection")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.photos, args.tune, args.image_size, args.weights, args.sample)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    tuned, held = result["tuned"], result["held_out"]
    print(
        f"{args.image_size} px: threshold {tuned['threshold']:.4f} on {tuned['sample']} photos in "
        f"{tuned['wall_s']:.1f} s (precision {tuned['precision']:.3f}, recall {tuned['recall']:.3f}); "
        f"held out ({held['photos']} photos): precision {held['precision']:.3f}, recall {held['recall']:.3f}"
    )
    for family, value in tuned["per_edit"].items():
        print(f"  {family:<15} tuned {value:.2f}  held out {held['per_edit'].get(family, float('nan')):.2f}")


if __name__ == "__main__":
    main()
