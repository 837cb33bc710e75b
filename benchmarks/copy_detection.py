"""Copy-detection benchmark: do edited copies of indexed photos find their source, and nothing else?

Seeded and rerunnable. The photos of FOLDER, shrunk to ``--max-side`` pixels (web-sized copies; queries
then cost what the model costs, not what resizing a 24-megapixel photo costs), are split (seeded) into an
indexed half and a left-out half; the indexed half is built into a fresh index. Every photo of both
halves is then edited once per edit family (:mod:`indexer.edits`, seeded): an edit of an indexed photo
is a positive query (its source is the right answer), an edit of a left-out photo a non-copy (any answer
is wrong). Each query is answered
twice, by the plain search and by the robust one (:mod:`search.robust`: flips and rotations, local
verification), and per edit family the benchmark prints:

- recall@1: share of positives whose best result is their source;
- μAP, as in the DISC21 copy-detection benchmark: the best result of every query (positives and
  non-copies) pooled, ranked by score, and the average precision of that one list against all
  positives, so a score must mean the same whatever the query for μAP to be high;
- precision and recall at the near-duplicate threshold in use (a result at or above it is a "copy").

It also reports the mean time per query of each mode and their ratio.

    python benchmarks/copy_detection.py ../shared/photos --image-size 224
    python benchmarks/copy_detection.py ../shared/photos --image-size 512 --photos 40 --json
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import VARIANT_NAMES, LoupeConfig, RobustConfig, with_overrides  # noqa: E402
from core.settings import resolve_settings  # noqa: E402
from indexer.edits import EDIT_FAMILIES, make_edits  # noqa: E402
from indexer.pipeline import run_build  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.robust import search_image_robust  # noqa: E402

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
MODES = ("plain", "robust")


@dataclass(frozen=True)
class Query:
    family: str
    image: Image.Image
    source: str | None  # file name of the indexed source; None for an edit of a left-out photo


@dataclass(frozen=True)
class Answer:
    """A query's best result: its score, whether it is the query's source, how it was matched."""

    family: str
    positive: bool
    score: float
    correct: bool
    match: str


def micro_average_precision(answers: Sequence[Answer]) -> float:
    """μAP: the answers ranked by score, the average precision of that list over all positives."""
    positives = sum(answer.positive for answer in answers)
    if positives == 0:
        return 0.0
    ranked = sorted(answers, key=lambda answer: -answer.score)
    correct = np.cumsum([answer.correct for answer in ranked])
    precision = correct / np.arange(1, len(ranked) + 1)
    return float(sum(p for p, answer in zip(precision, ranked, strict=True) if answer.correct) / positives)


def summarise(answers: Sequence[Answer], threshold: float) -> dict[str, float]:
    """recall@1, μAP, and precision/recall of "score >= threshold means a copy of the answer"."""
    positives = [answer for answer in answers if answer.positive]
    flagged = [answer for answer in answers if answer.score >= threshold]
    hits = sum(answer.correct for answer in flagged)
    return {
        "queries": len(answers),
        "positives": len(positives),
        "recall@1": float(np.mean([a.correct for a in positives])) if positives else 0.0,
        "uap": micro_average_precision(answers),
        "precision@threshold": hits / len(flagged) if flagged else 1.0,
        "recall@threshold": hits / len(positives) if positives else 0.0,
        "local_share": float(np.mean([a.match == "local" for a in answers])) if answers else 0.0,
    }


def split_photos(photos: Sequence[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded half of the photos to index, and the rest to leave out."""
    order = np.random.default_rng(seed).permutation(len(photos))
    half = (len(photos) + 1) // 2
    return [photos[i] for i in sorted(order[:half])], [photos[i] for i in sorted(order[half:])]


def _reduced(photo: Path, max_side: int) -> Image.Image:
    """The photo in RGB, shrunk to at most ``max_side`` pixels on its longer side."""
    with Image.open(photo) as opened:
        image = opened.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def make_queries(
    indexed: Sequence[Path], left_out: Sequence[Path], families: Sequence[str], seed: int, max_side: int
) -> list[Query]:
    rng = np.random.default_rng(seed + 1)
    queries: list[Query] = []
    for photo in [*indexed, *left_out]:
        image = _reduced(photo, max_side)
        source = photo.name if photo in indexed else None
        queries += [Query(edit.family, edit.image, source) for edit in make_edits(image, rng, families)]
    return queries


def _answer(engine: SearchEngine, query: Query, settings: RobustConfig) -> Answer:
    best = search_image_robust(engine, query.image, 1, settings)[0]
    correct = query.source is not None and Path(best.path).name == query.source
    return Answer(query.family, query.source is not None, best.score, correct, best.match)


def answer_all(
    engine: SearchEngine, queries: Sequence[Query], settings: dict[str, RobustConfig]
) -> tuple[dict[str, list[Answer]], dict[str, float]]:
    """Each query's best result in every mode, and each mode's mean seconds per query. The modes take
    turns query by query, so a machine shared with other work slows them alike."""
    answers: dict[str, list[Answer]] = {mode: [] for mode in settings}
    seconds = dict.fromkeys(settings, 0.0)
    for query in queries:
        for mode, mode_settings in settings.items():
            started = time.perf_counter()
            answers[mode].append(_answer(engine, query, mode_settings))
            seconds[mode] += time.perf_counter() - started
    return answers, {mode: total / max(1, len(queries)) for mode, total in seconds.items()}


def run(
    folder: Path,
    image_size: int,
    seed: int,
    *,
    photos_limit: int | None = None,
    families: Sequence[str] = EDIT_FAMILIES,
    weights: str = "random",
    workdir: Path | None = None,
    max_side: int = 1024,
    variants: Sequence[str] | None = None,
    workers: int = -1,
) -> dict[str, Any]:
    """Build the index, answer every query in both modes, and return the report."""
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if photos_limit is not None:
        photos = [photos[i] for i in sorted(np.random.default_rng(seed).permutation(len(photos))[:photos_limit])]
    if len(photos) < 2:
        raise ValueError(f"{folder}: need at least 2 photos, found {len(photos)}")
    indexed, left_out = split_photos(photos, seed)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="loupe-copies-"))
    collection, data = workdir / "collection", workdir / "data"
    shutil.rmtree(collection, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    collection.mkdir(parents=True)
    for photo in indexed:
        _reduced(photo, max_side).save(collection / photo.name, quality=95)
    config: LoupeConfig = with_overrides(
        resolve_settings().config,  # the user's settings (config file, models dir), as every command
        {
            "data_dir": data,
            "model.weights": weights,
            "model.image_size": image_size,
            "runtime.device": "cpu",
            "runtime.workers": workers,
        },
    )
    started = time.perf_counter()
    run_build(config, [collection], show_progress=False)
    build_s = time.perf_counter() - started
    queries = make_queries(indexed, left_out, families, seed, max_side)
    robust = config.search.robust
    if variants is not None:
        robust = replace(robust, variants=tuple(variants), flips_and_rotations=bool(variants))
    settings = {"plain": replace(robust, flips_and_rotations=False, local_verification=False), "robust": robust}
    engine = SearchEngine.open(config)
    try:
        engine.load_model()
        search_image_robust(engine, queries[0].image, 1, robust)  # warm-up: first-call costs out of the timings
        threshold = engine.near_duplicate_threshold().threshold
        answers, seconds = answer_all(engine, queries, settings)
        modes: dict[str, Any] = {
            mode: {
                "seconds_per_query": seconds[mode],
                "all": summarise(answers[mode], threshold),
                "families": {
                    family: summarise([a for a in answers[mode] if a.family == family], threshold)
                    for family in families
                },
            }
            for mode in MODES
        }
    finally:
        engine.close()
    return {
        "image_size": image_size,
        "weights": weights,
        "seed": seed,
        "indexed_photos": len(indexed),
        "left_out_photos": len(left_out),
        "queries": len(queries),
        "threshold": threshold,
        "robust_settings": {
            "variants": list(robust.variants) if robust.flips_and_rotations else [],
            "local_verification": robust.local_verification,
            "local_candidates": robust.local_candidates,
        },
        "build_s": build_s,
        "time_ratio": modes["robust"]["seconds_per_query"] / modes["plain"]["seconds_per_query"],
        "modes": modes,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"copy detection: {report['indexed_photos']} indexed + {report['left_out_photos']} left-out photos, "
        f"{report['queries']} queries, {report['weights']} weights at {report['image_size']} px, "
        f"seed {report['seed']}, threshold {report['threshold']}"
    )
    print(f"{'family':<15} {'mode':<7} {'recall@1':>8} {'μAP':>6} {'P@thr':>6} {'R@thr':>6} {'local':>6}")
    families = list(report["modes"]["plain"]["families"])
    for family in [*families, "all"]:
        for mode in MODES:
            data = report["modes"][mode]
            row = data["all"] if family == "all" else data["families"][family]
            print(
                f"{family:<15} {mode:<7} {row['recall@1']:>8.3f} {row['uap']:>6.3f} {row['precision@threshold']:>6.3f} "
                f"{row['recall@threshold']:>6.3f} {row['local_share']:>6.2f}"
            )
    plain, robust = (report["modes"][mode]["seconds_per_query"] * 1000 for mode in MODES)
    ratio, build = report["time_ratio"], report["build_s"]
    print(f"per query: plain {plain:.0f} ms, robust {robust:.0f} ms ({ratio:.2f}x); build {build:.1f} s")


def _family(text: str) -> str:
    if text not in EDIT_FAMILIES:
        raise argparse.ArgumentTypeError(f"unknown edit family {text!r} (known: {', '.join(EDIT_FAMILIES)})")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of real photos (e.g. ../shared/photos)")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (default 224)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos", type=int, help="use a seeded sample of this many photos (default: all)")
    parser.add_argument("--families", type=_family, nargs="+", default=list(EDIT_FAMILIES), help="edit families")
    parser.add_argument(
        "--max-side", type=int, default=1024, help="photos are shrunk to this longer side first (default 1024)"
    )
    parser.add_argument(
        "--variants", nargs="*", choices=VARIANT_NAMES, help="flips and rotations tried (default: config's)"
    )
    parser.add_argument("--workers", type=int, default=-1, help="decode worker processes (-1: automatic)")
    parser.add_argument("--weights", default="random", help="random (default), pretrained or a .pt path")
    parser.add_argument("--workdir", type=Path, help="keep the collection and index here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(
        args.folder,
        args.image_size,
        args.seed,
        photos_limit=args.photos,
        families=args.families,
        weights=args.weights,
        workdir=args.workdir,
        max_side=args.max_side,
        variants=args.variants,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
