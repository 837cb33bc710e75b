"""Does duplicate detection pay for flips and rotations? (``duplicates --flips``)

Seeded and rerunnable. A seeded sample of FOLDER's photos (shrunk to ``--max-side``) goes into a fresh
collection; half of them (seeded) also get a planted copy there: mirrored, turned 90°, 180° or 270° in
turn, and a resized copy of every fourth as a control the stored vectors find anyway. The collection is
built (and calibrated, as a user's would be), then duplicate groups are found twice, without and with
``flips``, and the benchmark prints per planted family how many copies ended in their source's group,
how many members joined a group that is not their planted pair (with random weights: unrelated photos
above the threshold), and the time of each mode against the build's.

    python benchmarks/flipped_duplicates.py ../shared/photos --image-size 224 --photos 60
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import with_overrides  # noqa: E402
from core.settings import resolve_settings  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402
from search.duplicates import DuplicateGroup, find_duplicate_groups  # noqa: E402
from search.engine import SearchEngine  # noqa: E402

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
TURNS: dict[str, Image.Transpose] = {
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "rotate90": Image.Transpose.ROTATE_90,
    "rotate180": Image.Transpose.ROTATE_180,
    "rotate270": Image.Transpose.ROTATE_270,
}
CONTROL = "resize"


def _reduced(photo: Path, max_side: int) -> Image.Image:
    with Image.open(photo) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def plant(photos: Sequence[Path], collection: Path, seed: int, max_side: int) -> dict[str, tuple[str, str]]:
    """Write the photos and their planted copies into ``collection``; return copy name -> (source, family)."""
    order = np.random.default_rng(seed).permutation(len(photos))
    with_copy = {int(i) for i in order[: len(photos) // 2]}
    planted: dict[str, tuple[str, str]] = {}
    families = list(TURNS)
    turned = 0
    for position, photo in enumerate(photos):
        image = _reduced(photo, max_side)
        image.save(collection / f"{photo.stem}.jpg", quality=95)
        if position not in with_copy:
            continue
        family = families[turned % len(families)]
        turned += 1
        name = f"{photo.stem}--{family}.jpg"
        image.transpose(TURNS[family]).save(collection / name, quality=95)
        planted[name] = (f"{photo.stem}.jpg", family)
        if position % 4 == 0:
            control = f"{photo.stem}--{CONTROL}.jpg"
            image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4))).save(
                collection / control, quality=95
            )
            planted[control] = (f"{photo.stem}.jpg", CONTROL)
    return planted


def score_groups(groups: Sequence[DuplicateGroup], planted: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Per family: planted copies in the same group as their source; and members whose group's original
    is neither their source, their copy nor another copy of their source."""

    def root(name: str) -> str:
        return planted[name][0] if name in planted else name

    group_of: dict[str, int] = {}
    wrong = 0
    for number, group in enumerate(groups):
        names = [Path(m.path).name for m in group.members]
        group_of.update(dict.fromkeys(names, number))
        wrong += sum(root(name) != root(names[0]) for name in names[1:])
    families: dict[str, dict[str, int]] = {}
    for copy, (source, family) in planted.items():
        row = families.setdefault(family, {"planted": 0, "grouped": 0})
        row["planted"] += 1
        row["grouped"] += copy in group_of and group_of[copy] == group_of.get(source)
    return {"families": families, "wrong_members": wrong, "groups": len(groups)}


def run(
    folder: Path, image_size: int, photos_limit: int, seed: int, max_side: int, workdir: Path | None
) -> dict[str, Any]:
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    photos = [photos[i] for i in sorted(np.random.default_rng(seed).permutation(len(photos))[:photos_limit])]
    workdir = workdir or Path(tempfile.mkdtemp(prefix="loupe-flips-"))
    collection, data = workdir / "collection", workdir / "data"
    shutil.rmtree(collection, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    collection.mkdir(parents=True)
    planted = plant(photos, collection, seed, max_side)
    config = with_overrides(
        resolve_settings().config,
        {"data_dir": data, "model.weights": "random", "model.image_size": image_size, "runtime.device": "cpu"},
    )
    started = time.perf_counter()
    run_build(config, [collection], show_progress=False)
    build_s = time.perf_counter() - started
    engine = SearchEngine.open(config)
    try:
        engine.load_model()
        threshold = engine.near_duplicate_threshold()
        modes: dict[str, Any] = {}
        for mode, flips in (("plain", False), ("flips", True)):
            started = time.perf_counter()
            groups = find_duplicate_groups(engine, threshold.threshold, flips=flips)
            seconds = time.perf_counter() - started
            modes[mode] = {**score_groups(groups, planted), "seconds": round(seconds, 2)}
        indexed = engine.catalog.counts()["indexed"]
    finally:
        engine.close()
    return {
        "photos": indexed,
        "planted": len(planted),
        "image_size": image_size,
        "seed": seed,
        "threshold": round(threshold.threshold, 6),
        "threshold_source": "calibrated" if threshold.calibration is not None else "config",
        "build_s": round(build_s, 1),
        "modes": modes,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"flipped duplicates: {report['photos']} photos ({report['planted']} planted copies), random weights at "
        f"{report['image_size']} px, seed {report['seed']}, threshold {report['threshold']} "
        f"({report['threshold_source']})"
    )
    print(f"{'family':<10} {'planted':>7} {'plain':>6} {'flips':>6}")
    for family, row in report["modes"]["plain"]["families"].items():
        flipped = report["modes"]["flips"]["families"][family]["grouped"]
        print(f"{family:<10} {row['planted']:>7} {row['grouped']:>6} {flipped:>6}")
    plain, flips = report["modes"]["plain"], report["modes"]["flips"]
    print(f"members in a wrong group: plain {plain['wrong_members']}, flips {flips['wrong_members']}")
    print(
        f"time: plain {plain['seconds']:.2f} s, flips {flips['seconds']:.1f} s; build (with calibration) "
        f"{report['build_s']:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of real photos (e.g. ../shared/photos)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--photos", type=int, default=60, help="seeded sample of this many photos (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, help="keep the collection and index here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args.folder, args.image_size, args.photos, args.seed, args.max_side, args.workdir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
