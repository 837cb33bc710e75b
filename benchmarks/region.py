"""Region-search benchmark: find the photos a region was pasted into, and where.

Seeded and rerunnable. Regions are cut out of "source" photos, half of them textured and half plain, and
pasted at 0.5x to 2x into "target" photos reshaped to landscape, portrait, square, small and large hosts;
the photos hosts were made from are indexed unchanged as distractors (the sources are not indexed).
``benchmarks/region_collection.py`` says how regions, hosts and the tune/report split are chosen. Each
region is queried two ways:

- region search: ``search_region(source photo, box of the region)``, the query also encoded enlarged
  around the box (``search.region_query_scales``, ``search.region_scales``); the same with one encoding
  (how region search ran before those views), and with one encoding and the spatial verification off
  (``search.region_verify``; how it scored before that);
- baseline: whole-image search with the cut-out region as the query image.

Per image size it prints recall@1 (the top result holds the region), recall@10 (share of the region's
targets in the top 10), the mean IoU between returned and true boxes over the targets found, and the
share of all targets found in the top 10 with IoU >= 0.5 (the baseline's box is the whole photo), for
all regions and for textured and plain ones apart. ``--split tune`` is for trying changes; report
figures from ``--split report`` (the default), whose photos tuning never saw.

    python benchmarks/region.py ../shared/photos --image-size 256 512
    python benchmarks/region.py ../shared/photos --split tune --image-size 256 --json

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import region_scale  # noqa: E402
from benchmarks.region_collection import PlantedRegion, make_collection  # noqa: E402
from core.config import LoupeConfig, with_overrides  # noqa: E402
from core.settings import resolve_settings  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.region import Box, RegionResults, match_region  # noqa: E402
from search.region_scales import encode_with_views  # noqa: E402

RegionSearch = Callable[[SearchEngine, PlantedRegion, int, bool, tuple[float, ...] | None], RegionResults]
METHODS = ("region search", "region search, one encoding", "region search, unverified", "whole-image baseline")
# Each region-search method: spatial verification on, and the query scales (None: the config's).
MODES: dict[str, tuple[bool, tuple[float, ...] | None]] = {
    "region search": (True, None),
    "region search, one encoding": (True, ()),
    "region search, unverified": (False, ()),
}
GROUPS = ("all", "textured", "plain")


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def default_search(
    engine: SearchEngine, region: PlantedRegion, k: int, verify: bool = True, scales: tuple[float, ...] | None = None
) -> RegionResults:
    """Region search (:func:`search.region.search_region`'s steps); ``verify=False`` scores placements
    without the spatial-consistency check (:mod:`search.region_verify`); ``scales`` are the query's extra
    encodings (:mod:`search.region_scales`; None: ``search.region_query_scales``, empty: none)."""
    scales = engine.config.search.region_query_scales if scales is None else scales
    query = encode_with_views(engine, region.source, region.box, scales)
    return match_region(
        engine.catalog,
        engine.patch_index(),
        engine.config.patches,
        query.grid,
        (query.width, query.height),
        region.box,
        k,
        verify=verify,
        views=query.views,
    )


def score_region(region: PlantedRegion, found: list[tuple[str, Box]]) -> dict[str, Any]:
    """One query's figures from its ranked (file name, box) list."""
    names = [name for name, _ in found]
    ious = [iou(box, truth) for name, box in found if (truth := region.target_box(name)) is not None]
    return {
        "r1": float(bool(names) and region.target_box(names[0]) is not None),
        "r10": len(ious) / len(region.targets),
        "ious": ious,
        "located": sum(value >= 0.5 for value in ious) / len(region.targets),
    }


def summarise(scored: list[dict[str, Any]]) -> dict[str, float]:
    ious = [value for row in scored for value in row["ious"]]
    return {
        "regions": float(len(scored)),
        "recall@1": round(float(np.mean([row["r1"] for row in scored])), 3) if scored else 0.0,
        "recall@10": round(float(np.mean([row["r10"] for row in scored])), 3) if scored else 0.0,
        "mean_iou": round(float(np.mean(ious)), 3) if ious else 0.0,
        "iou>=0.5": round(float(np.mean([row["located"] for row in scored])), 3) if scored else 0.0,
    }


def evaluate(
    engine: SearchEngine, planted: list[PlantedRegion], k: int = 10, search: RegionSearch = default_search
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    """Every method's figures, for all regions and by kind (textured, plain), and its seconds per query
    (decoding and forward passes included)."""
    scored: dict[str, list[tuple[str, dict[str, Any]]]] = {method: [] for method in METHODS}
    seconds = dict.fromkeys(METHODS, 0.0)
    for region in planted:
        for method, (verify, scales) in MODES.items():
            started = time.perf_counter()
            found = search(engine, region, k, verify, scales)
            seconds[method] += time.perf_counter() - started
            pairs = [(Path(m.path).name, m.box) for m in found.matches[:k]]
            scored[method].append((region.kind, score_region(region, pairs)))
        started = time.perf_counter()
        with Image.open(region.source) as opened:
            crop = opened.convert("RGB").crop(region.box)
        baseline = engine.search_image(crop, k)
        seconds["whole-image baseline"] += time.perf_counter() - started
        pairs = [(Path(r.path).name, (0, 0, r.width, r.height)) for r in baseline]
        scored["whole-image baseline"].append((region.kind, score_region(region, pairs)))
    figures = {
        method: {group: summarise([row for kind, row in rows if group in ("all", kind)]) for group in GROUPS}
        for method, rows in scored.items()
    }
    return figures, {method: round(total / max(1, len(planted)), 3) for method, total in seconds.items()}


def build_engine(collection: Path, data: Path, image_size: int, weights: str) -> tuple[SearchEngine, int, float]:
    """Index ``collection`` into ``data`` at ``image_size``; the engine, photos indexed and seconds."""
    shutil.rmtree(data, ignore_errors=True)
    config: LoupeConfig = with_overrides(
        resolve_settings().config,  # the user's settings (config file, models dir), as every command
        {"data_dir": data, "model.weights": weights, "model.image_size": image_size, "runtime.device": "cpu"},
    )
    started = time.perf_counter()
    summary = run_build(config, [collection], show_progress=False)
    return SearchEngine.open(config), summary.new, time.perf_counter() - started


def print_report(report: dict[str, Any]) -> None:
    print(
        f"region benchmark ({report['split']} split): {report['regions']} regions x {report['targets_per_region']} "
        f"targets + {report['distractors']} distractors, {report['weights']} weights, seed {report['seed']}"
    )
    print(f"{'px':>4} {'method':<28} {'regions':<9} {'recall@1':>8} {'recall@10':>9} {'mean IoU':>8} {'IoU>=.5':>7}")
    for size, run in report["sizes"].items():
        for method, groups in run["results"].items():
            for group, row in groups.items():
                print(
                    f"{size:>4} {method:<28} {group:<9} {row['recall@1']:>8.3f} {row['recall@10']:>9.3f} "
                    f"{row['mean_iou']:>8.3f} {row['iou>=0.5']:>7.3f}"
                )
        print(
            f"{size:>4} px: {run['indexed_photos']} photos, patch grid {run['patch_grid']}, build {run['build_s']} s, "
            "s per query: " + ", ".join(f"{method} {value:.2f}" for method, value in run["seconds_per_query"].items())
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="?", help="folder of real photos (e.g. ../shared/photos)")
    parser.add_argument("--scale", type=int, metavar="N", help="latency over N photos' synthetic grids instead")
    parser.add_argument("--queries", type=int, default=50, help="region queries with --scale (default 50)")
    parser.add_argument(
        "--per-candidate", action="store_true", help="with --scale, also time the per-candidate re-ranking (before)"
    )
    parser.add_argument("--no-forward", action="store_true", help="with --scale, skip timing the forward pass")
    parser.add_argument(
        "--unverified", action="store_true", help="with --scale, also time re-ranking without the spatial check"
    )
    parser.add_argument(
        "--query-scales",
        type=float,
        nargs="*",
        default=[1.189, 1.414, 1.682],
        help="with --scale, also time re-ranking with extra views at these scales (default: the config's)",
    )
    parser.add_argument(
        "--image-size", type=int, nargs="+", default=[256, 512], help="model input sizes (default 256 512)"
    )
    parser.add_argument("--regions", type=int, default=32, help="regions cut and pasted (default 32)")
    parser.add_argument("--targets", type=int, default=2, help="hosts each region is pasted into (default 2)")
    parser.add_argument(
        "--split", choices=("tune", "report"), default="report", help="photo half to use (default report)"
    )
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
            args.scale,
            workdir,
            args.queries,
            args.seed,
            args.per_candidate,
            not args.no_forward,
            args.unverified,
            tuple(args.query_scales),
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
    collection = workdir / "collection"
    shutil.rmtree(collection, ignore_errors=True)
    try:
        planted, distractors = make_collection(photos, collection, args.regions, args.targets, args.split, args.seed)
    except ValueError as error:
        parser.error(str(error))
    report: dict[str, Any] = {
        "split": args.split,
        "weights": args.weights,
        "seed": args.seed,
        "regions": len(planted),
        "textured": sum(region.kind == "textured" for region in planted),
        "mean_edge_density": {
            kind: round(float(np.mean([r.edge_density for r in planted if r.kind == kind] or [0.0])), 2)
            for kind in GROUPS[1:]
        },
        "targets_per_region": args.targets,
        "distractors": distractors,
        "sizes": {},
    }
    for size in args.image_size:
        engine, indexed, build_s = build_engine(collection, workdir / f"data-{size}", size, args.weights)
        results, seconds = evaluate(engine, planted)
        report["sizes"][str(size)] = {
            "indexed_photos": indexed,
            "patch_grid": engine.patch_grid,
            "build_s": round(build_s, 1),
            "seconds_per_query": seconds,
            "results": results,
        }
        engine.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
        print(f"collection in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
