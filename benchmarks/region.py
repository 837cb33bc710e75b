"""Region-search benchmark: find the photos a region was pasted into, and where.

Seeded and rerunnable. From real photos it cuts a region out of each of a few "source" photos and pastes
it, rescaled by 0.5x to 2x and at a random place, into several "target" photos; other photos are added
unchanged as distractors. The targets and distractors are indexed (the sources are not), then each
source region is queried two ways:

- region search: ``search_region(source photo, box of the region)``;
- baseline: whole-image search with the cut-out region as the query image.

It prints recall@1 (the top result contains the region), recall@10 (share of the region's targets in
the top 10) and the mean IoU between returned and true boxes over the targets found (the baseline's box
is the whole photo).

    python benchmarks/region.py ../shared/photos --image-size 128
    python benchmarks/region.py ../shared/photos --image-size 512 --json

``--scale N`` measures query latency instead, over a catalog of N photos' synthetic grids and the patch
index the indexer would choose for them (``benchmarks/region_scale.py`` says what is synthetic):

    python benchmarks/region.py --scale 100000 --per-candidate
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import region_scale  # noqa: E402
from core.config import LoupeConfig, with_overrides  # noqa: E402
from core.settings import resolve_settings  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.region import Box, search_region  # noqa: E402

Truth = dict[str, Box]  # target file name -> pasted box


@dataclass(frozen=True)
class PlantedRegion:
    source: Path
    box: Box
    targets: Truth


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def make_collection(
    photos: list[Path], out: Path, objects: int, targets_per_object: int, distractors: int, seed: int
) -> list[PlantedRegion]:
    """Write targets (with pasted regions) and distractors into ``out``; return the ground truth."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    needed = objects * (1 + targets_per_object) + distractors
    if len(photos) < needed:
        raise SystemExit(f"need {needed} photos, found {len(photos)}")
    picked = [photos[i] for i in order[:needed]]
    sources, rest = picked[:objects], picked[objects:]
    target_pool, distractor_photos = rest[: objects * targets_per_object], rest[objects * targets_per_object :]
    out.mkdir(parents=True)
    planted: list[PlantedRegion] = []
    for number, source in enumerate(sources):
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        side = min(image.size)
        width = int(side * rng.uniform(0.3, 0.45))
        height = int(width * rng.uniform(0.75, 1.33))
        x0 = int(rng.integers(0, image.width - width + 1))
        y0 = int(rng.integers(0, image.height - height + 1))
        box: Box = (x0, y0, x0 + width, y0 + height)
        region = image.crop(box)
        truth: Truth = {}
        for t in range(targets_per_object):
            with Image.open(target_pool[number * targets_per_object + t]) as opened:
                target = opened.convert("RGB")
            scale = float(rng.uniform(0.5, 2.0))
            # Keep the pasted region inside the target and at most 60% of its smaller side.
            scale = min(scale, 0.6 * min(target.size) / max(region.size))
            pasted = region.resize(
                (max(8, int(region.width * scale)), max(8, int(region.height * scale))), Image.Resampling.BICUBIC
            )
            px = int(rng.integers(0, target.width - pasted.width + 1))
            py = int(rng.integers(0, target.height - pasted.height + 1))
            target.paste(pasted, (px, py))
            name = f"object{number:02d}-target{t}.jpg"
            target.save(out / name, quality=90)
            truth[name] = (px, py, px + pasted.width, py + pasted.height)
        planted.append(PlantedRegion(source=source, box=box, targets=truth))
    for photo in distractor_photos:
        shutil.copy(photo, out / f"distractor-{photo.name}")
    return planted


def evaluate(engine: SearchEngine, planted: list[PlantedRegion], k: int = 10) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, list[float]]] = {
        "region search": {"r1": [], "r10": [], "iou": []},
        "whole-image baseline": {"r1": [], "r10": [], "iou": []},
    }
    for region in planted:
        found = search_region(engine, region.source, region.box, k)
        names = [Path(m.path).name for m in found.matches]
        rows["region search"]["r1"].append(float(bool(names) and names[0] in region.targets))
        rows["region search"]["r10"].append(sum(n in region.targets for n in names) / len(region.targets))
        for match in found.matches:
            name = Path(match.path).name
            if name in region.targets:
                rows["region search"]["iou"].append(iou(match.box, region.targets[name]))

        with Image.open(region.source) as opened:
            crop = opened.convert("RGB").crop(region.box)
        baseline = engine.search_image(crop, k)
        names = [Path(r.path).name for r in baseline]
        rows["whole-image baseline"]["r1"].append(float(bool(names) and names[0] in region.targets))
        rows["whole-image baseline"]["r10"].append(sum(n in region.targets for n in names) / len(region.targets))
        for result in baseline:
            name = Path(result.path).name
            if name in region.targets:
                rows["whole-image baseline"]["iou"].append(
                    iou((0, 0, result.width, result.height), region.targets[name])
                )
    return {
        method: {
            "recall@1": float(np.mean(values["r1"])),
            "recall@10": float(np.mean(values["r10"])),
            "mean_iou": float(np.mean(values["iou"])) if values["iou"] else 0.0,
            "boxes": float(len(values["iou"])),
        }
        for method, values in rows.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="?", help="folder of real photos (e.g. ../shared/photos)")
    parser.add_argument("--scale", type=int, metavar="N", help="latency over N photos' synthetic grids instead")
    parser.add_argument("--queries", type=int, default=50, help="region queries with --scale (default 50)")
    parser.add_argument(
        "--per-candidate", action="store_true", help="with --scale, also time the per-candidate re-ranking (before)"
    )
    parser.add_argument("--no-forward", action="store_true", help="with --scale, skip timing the forward pass")
    parser.add_argument("--image-size", type=int, default=128, help="model input size (default 128)")
    parser.add_argument("--objects", type=int, default=12, help="regions cut and pasted (default 12)")
    parser.add_argument("--targets", type=int, default=3, help="photos each region is pasted into (default 3)")
    parser.add_argument("--distractors", type=int, default=40, help="unchanged photos added (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="random", help="random (default), pretrained or a .pt path")
    parser.add_argument("--workdir", type=Path, help="keep the generated collection and index here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.scale:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loupe-region-scale-"))
        shutil.rmtree(workdir / "data", ignore_errors=True)
        scale_report = region_scale.run_scale(
            args.scale, workdir, args.queries, args.seed, args.per_candidate, not args.no_forward
        )
        if args.json:
            print(json.dumps(scale_report, indent=2))
        else:
            region_scale.print_report(scale_report)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    if args.photos is None:
        parser.error("give a folder of photos, or --scale N")

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loupe-region-"))
    collection, data = workdir / "collection", workdir / "data"
    shutil.rmtree(collection, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    planted = make_collection(photos, collection, args.objects, args.targets, args.distractors, args.seed)
    config: LoupeConfig = with_overrides(
        resolve_settings().config,  # the user's settings (config file, models dir), as every command
        {"data_dir": data, "model.weights": args.weights, "model.image_size": args.image_size, "runtime.device": "cpu"},
    )
    started = time.perf_counter()
    summary = run_build(config, [collection], show_progress=False)
    build_s = time.perf_counter() - started
    engine = SearchEngine.open(config)
    started = time.perf_counter()
    results = evaluate(engine, planted)
    query_s = (time.perf_counter() - started) / max(1, 2 * len(planted))
    report: dict[str, Any] = {
        "image_size": args.image_size,
        "weights": args.weights,
        "patch_grid": engine.patch_grid,
        "objects": args.objects,
        "targets_per_object": args.targets,
        "indexed_photos": summary.new,
        "build_s": round(build_s, 1),
        "seconds_per_query": round(query_s, 3),
        "results": results,
    }
    engine.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"region benchmark: {args.objects} regions x {args.targets} targets + {args.distractors} distractors "
        f"({summary.new} photos), {args.weights} weights at {args.image_size} px, patch grid {engine.patch_grid}, "
        f"seed {args.seed}"
    )
    print(f"{'method':<22} {'recall@1':>9} {'recall@10':>10} {'mean IoU':>9}")
    for method, row in results.items():
        print(f"{method:<22} {row['recall@1']:>9.3f} {row['recall@10']:>10.3f} {row['mean_iou']:>9.3f}")
    print(f"build {build_s:.1f} s, {query_s * 1000:.0f} ms per query; collection in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
