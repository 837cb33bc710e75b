"""``python -m search``: query, similar, region, duplicates (and acting on them), lookup, undo.

Tables for people, ``--json`` (and ``--csv`` where rows make sense) for scripts. Errors are one line on
stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from core.command_line import (
    EXIT_OK,
    Command,
    add_collection_arguments,
    command_parser,
    positive_int,
    resolve_command_settings,
    run_handler,
)
from core.config import LoupeConfig, RobustConfig
from core.errors import LoupeError
from core.report import RANDOM_WEIGHTS_WARNING
from search.apply_cli import add_apply_arguments, apply_duplicates, main_undo, setup_undo
from search.decisions_cli import add_decision_arguments, run_decision, wants_decision

logger = logging.getLogger(__name__)


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from error
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine similarity lies in [-1, 1], got {value}")
    return value


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=positive_int, help="number of results (config: search.default_k)")
    parser.add_argument("--min-score", type=_score, help="drop matches below this cosine similarity")
    parser.add_argument("--under", type=Path, metavar="FOLDER", help="only photos below this folder")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _add_robust_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-flips",
        action="store_true",
        help="do not also search the query mirrored and rotated (config: search.robust.flips_and_rotations)",
    )
    parser.add_argument(
        "--no-local",
        action="store_true",
        help="do not re-rank by patch-grid placement, for crops and borders (config: search.robust.local_verification)",
    )


def _robust(args: argparse.Namespace, config: LoupeConfig) -> RobustConfig:
    robust = config.search.robust
    return replace(
        robust,
        flips_and_rotations=robust.flips_and_rotations and not args.no_flips,
        local_verification=robust.local_verification and not args.no_local,
    )


def _config(args: argparse.Namespace) -> LoupeConfig:
    return resolve_command_settings(args, {}).config


def _open(args: argparse.Namespace) -> Any:
    from search.engine import SearchEngine

    engine = SearchEngine.open(_config(args))
    if engine.random_weights:
        print(f"WARNING: this index was {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    return engine


def _print_results(query: str, results: Sequence[Any], as_json: bool, out: IO[str]) -> None:
    if as_json:
        print(json.dumps({"query": query, "results": [r.to_dict() for r in results]}, indent=2), file=out)
        return
    print(f"query: {query}", file=out)
    if not results:
        print("  no matches", file=out)
        return
    print(f"{'rank':>4}  {'score':>7}  {'label':<14}  {'match':<8}  {'size':>11}  path", file=out)
    for r in results:
        size = f"{r.width}x{r.height}"
        where = "" if r.box is None else f"  (query at {','.join(str(v) for v in r.box)})"
        print(f"{r.rank:>4}  {r.score:>7.4f}  {r.label:<14}  {r.match:<8}  {size:>11}  {r.path}{where}", file=out)


# query / similar ---------------------------------------------------------------------------------


def setup_query(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, metavar="IMAGE", help="query image file")
    _add_filters(parser)
    _add_robust_flags(parser)
    add_collection_arguments(parser)


def main_query(args: argparse.Namespace) -> int:
    from search.robust import search_image_robust

    engine = _open(args)
    try:
        results = search_image_robust(
            engine, args.image, args.k, _robust(args, engine.config), min_score=args.min_score, under=args.under
        )
    finally:
        engine.close()
    _print_results(str(args.image.resolve()), results, args.json, sys.stdout)
    return EXIT_OK


def setup_similar(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo", metavar="PATH_OR_ID", help="an indexed photo: its path or catalog id")
    parser.add_argument("--include-self", action="store_true", help="keep the photo itself in the results")
    _add_filters(parser)
    add_collection_arguments(parser)


def main_similar(args: argparse.Namespace) -> int:
    engine = _open(args)
    try:
        photo = engine.photo(args.photo)
        results = engine.search_similar(
            photo.id, args.k, include_self=args.include_self, min_score=args.min_score, under=args.under
        )
    finally:
        engine.close()
    _print_results(photo.path, results, args.json, sys.stdout)
    return EXIT_OK


# region ------------------------------------------------------------------------------------------


def _box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        x0, y0, x1, y1 = (round(float(part)) for part in parts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 in pixels, got {text!r}") from error
    if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
        raise argparse.ArgumentTypeError(f"a box needs 0 <= x0 < x1 and 0 <= y0 < y1, got {text!r}")
    return (x0, y0, x1, y1)


def setup_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, metavar="IMAGE", help="query image file")
    parser.add_argument(
        "--box", type=_box, metavar="x0,y0,x1,y1", help="the region, in the image's pixels (default: whole image)"
    )
    parser.add_argument("-k", type=positive_int, help="number of results (config: search.default_k)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--heatmaps", action="store_true", help="with --json: add each result's per-cell heatmap")
    parser.add_argument(
        "--no-query-scales",
        action="store_true",
        help="encode the query once, not also enlarged around the box (config: search.region_query_scales)",
    )
    add_collection_arguments(parser)


def main_region(args: argparse.Namespace) -> int:
    from search.region import search_region

    engine = _open(args)
    try:
        found = search_region(engine, args.image, args.box, args.k, () if args.no_query_scales else None)
    finally:
        engine.close()
    query = str(args.image.resolve())
    if args.json:
        payload = {
            "query": query,
            "box": list(found.query_box),
            "results": [match.to_dict(with_heatmap=args.heatmaps) for match in found.matches],
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    x0, y0, x1, y1 = found.query_box
    print(f"query: {query} ({found.query_width}x{found.query_height}), region {x0},{y0},{x1},{y1} (snapped to cells)")
    print(f"{'rank':>4}  {'score':>7}  {'similarity':>10}  {'matched box':>21}  {'size':>11}  path")
    for m in found.matches:
        box = ",".join(str(v) for v in m.box)
        size = f"{m.width}x{m.height}"
        print(f"{m.rank:>4}  {m.score:>7.3f}  {m.similarity:>10.4f}  {box:>21}  {size:>11}  {m.path}")
    return EXIT_OK


# duplicates --------------------------------------------------------------------------------------


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path


def setup_duplicates(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        type=_score,
        help="cosine similarity that makes two photos duplicates (default: the collection's calibrated threshold, "
        "else config search.near_duplicate_threshold)",
    )
    parser.add_argument(
        "--flips",
        action="store_true",
        help="also find mirrored and rotated copies: reads and encodes every photo again as its flips and "
        "rotations (config search.robust.variants), about 4x a build's model time",
    )
    parser.add_argument(
        "--reference",
        action="append",
        type=_folder,
        metavar="DIR",
        help="a reference folder (repeatable, added to config search.reference_folders): its photos are kept "
        "first (keeper rule 'reference', config search.keeper_rules) and --apply never acts on them",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per photo")
    add_apply_arguments(parser)
    add_decision_arguments(parser)
    add_collection_arguments(parser)


def _member_line(m: Any) -> str:
    kind = "original" if m.original else ("exact copy" if m.exact else f"{m.score:.4f}")
    taken = "" if m.capture_time is None else m.capture_time.strftime("%Y-%m-%d %H:%M")
    how = "" if m.match == "global" else f" ({m.match})"
    return f"  {kind:>10}  {m.file_format or '?':<6}  {taken:<16}  {f'{m.width}x{m.height}':>11}  {m.path}{how}"


def main_duplicates(args: argparse.Namespace) -> int:
    from search.duplicates import find_duplicate_groups
    from search.duplicates_csv import write_duplicates_csv

    if wants_decision(args):
        run_decision(args, _config(args), sys.stdout)
        return EXIT_OK
    if args.apply is None:
        if args.yes or args.journal is not None:
            raise LoupeError("--yes and --journal go with --apply ACTION")
    elif args.csv:
        raise LoupeError("--csv lists groups; a plan prints as a table or, with --json, as JSON")
    engine = _open(args)
    try:
        threshold = args.threshold if args.threshold is not None else engine.near_duplicate_threshold().threshold
        references = [*engine.config.search.reference_folders, *args.reference] if args.reference else None
        if args.flips:
            from tqdm import tqdm

            with tqdm(total=engine.catalog.counts().get("indexed", 0), unit="img", desc="flips and rotations") as bar:
                groups = find_duplicate_groups(
                    engine, threshold, reference_folders=references, flips=True, progress=bar.update
                )
        else:
            groups = find_duplicate_groups(engine, threshold, reference_folders=references)
    finally:
        engine.close()
    if args.apply is not None:
        return apply_duplicates(args, engine.config, groups, threshold)
    if args.json:
        print(json.dumps({"threshold": threshold, "groups": [g.to_dict() for g in groups]}, indent=2))
    elif args.csv:
        write_duplicates_csv(groups, sys.stdout)
    else:
        photos = sum(len(g.members) for g in groups)
        print(
            f"{len(groups)} groups of near-duplicates ({photos} photos): every photo scores >= {threshold} "
            "against its group's original, or is an exact copy of it"
        )
        for number, group in enumerate(groups, start=1):
            print(f"group {number} ({len(group.members)} photos, original chosen by: {group.keeper_rule})")
            for m in group.members:
                print(_member_line(m))
    return EXIT_OK


# lookup ------------------------------------------------------------------------------------------


def setup_lookup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, metavar="QUERY_DIR", help="folder of query images")
    parser.add_argument("-k", type=positive_int, default=5, help="matches per query (default 5)")
    parser.add_argument("--min-score", type=_score, help="drop matches below this cosine similarity")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", type=Path, metavar="FILE", help="write CSV rows (query, rank, score, ...) to FILE")
    _add_robust_flags(parser)
    add_collection_arguments(parser)


def main_lookup(args: argparse.Namespace) -> int:
    from search.lookup import reverse_lookup

    if not args.folder.is_dir():
        raise LoupeError(f"{args.folder}: not a folder")
    engine = _open(args)
    try:
        lookups = list(
            reverse_lookup(
                engine,
                args.folder,
                args.k,
                min_score=args.min_score,
                show_progress=not args.json,
                robust=_robust(args, engine.config),
            )
        )
    finally:
        engine.close()
    if args.json:
        print(json.dumps({"queries": [item.to_dict() for item in lookups]}, indent=2))
    elif args.csv is not None:
        with args.csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query", "rank", "score", "label", "id", "path", "error", "match", "box"])
            for item in lookups:
                if item.error is not None or not item.results:
                    writer.writerow([item.query, "", "", "", "", "", item.error or "no match", "", ""])
                for r in item.results:
                    box = "" if r.box is None else ",".join(str(v) for v in r.box)
                    writer.writerow([item.query, r.rank, f"{r.score:.6f}", r.label, r.id, r.path, "", r.match, box])
        print(f"wrote {len(lookups)} queries to {args.csv}")
    else:
        for item in lookups:
            if item.error is not None:
                print(f"query: {item.query}\n  cannot use it: {item.error}")
            else:
                _print_results(item.query, item.results, False, sys.stdout)
    return EXIT_OK


# wiring ------------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "query": ("photos most similar to an image file", setup_query, main_query),
    "similar": ("photos most similar to an indexed photo (by path or id)", setup_similar, main_similar),
    "region": ("photos that contain a region of an image, with the matched box", setup_region, main_region),
    "duplicates": ("groups of near-identical photos, suggested original first", setup_duplicates, main_duplicates),
    "lookup": ("best matches for every image in a folder of queries", setup_lookup, main_lookup),
    "undo": ("reverse a duplicates --apply, file by file, from its journal", setup_undo, main_undo),
}

EPILOG = """examples:
  python -m search query holiday.jpg -k 20
  python -m search similar /photos/2019/img_0042.jpg --under /photos/2020 --json
  python -m search region poster.jpg --box 120,80,360,300 --json
  python -m search duplicates --threshold 0.97 --csv > duplicates.csv
  python -m search duplicates --reference /photos/originals --json
  python -m search duplicates --apply move:/photos/duplicates --reference /photos/originals   # dry run
  python -m search duplicates --apply trash --yes
  python -m search undo ~/.local/share/loupe/journals/apply-20260101-120000.jsonl
  python -m search duplicates --dismiss /photos/a.jpg /photos/b.jpg
  python -m search duplicates --keep /photos/2019/img_0042.jpg
  python -m search lookup incoming/ -k 3 --csv matches.csv
"""


def build_parser() -> argparse.ArgumentParser:
    return command_parser(
        "python -m search",
        "Loupe search: nearest neighbours, regions, near-duplicates and reverse lookup over an index.",
        EPILOG,
        COMMANDS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_handler(build_parser().parse_args(argv))
