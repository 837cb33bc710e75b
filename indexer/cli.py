"""``python -m indexer``: build, status, verify, reindex, migrate, calibrate.

Each subcommand has its own parser setup and ``main``. Library errors become a one-line message and
exit code 2; ``verify`` exits 1 when it finds problems; Ctrl-C exits 130 with the work committed so far.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.command_line import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Command,
    add_collection_arguments,
    command_parser,
    image_size,
    non_negative_int,
    positive_int,
    resolve_command_settings,
    run_handler,
)
from core.config import LoupeConfig, with_overrides

logger = logging.getLogger(__name__)


def _resolve_config(args: argparse.Namespace, overrides: dict[str, Any]) -> LoupeConfig:
    return resolve_command_settings(args, overrides).config


# build -------------------------------------------------------------------------------------------


def setup_build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="folders (or files) of photos")
    add_collection_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--weights", help="pretrained (default), random, or the path of a birder .pt file")
    model.add_argument("--image-size", type=image_size, help="model input size in pixels (default 512)")
    model.add_argument("--device", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    model.add_argument("--batch-size", type=positive_int, help="images per forward pass and per commit")
    model.add_argument("--workers", type=non_negative_int, help="decode worker processes (0 = in-process)")
    model.add_argument(
        "--engine", choices=("local", "ray"), help="local (default) or ray: decode and embed on a Ray cluster"
    )
    model.add_argument("--ray-address", help="Ray cluster to join: auto or ray://HOST:10001 (default: a private one)")
    model.add_argument(
        "--no-patches", action="store_true", help="no patch vectors: smaller index, no region search (config: patches)"
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="skip files whose resolved path matches GLOB, e.g. '*/thumbnails/*' (repeatable; adds to "
        "config scan.exclude); indexed files that match leave the catalog",
    )
    parser.add_argument(
        "--no-calibrate",
        action="store_true",
        help="do not calibrate the near-duplicate threshold after the build (config: search.calibration.on_build)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any scanned file is failed: in this build, or in an earlier one and unchanged since",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_build(args: argparse.Namespace) -> int:
    from indexer.pipeline import run_build
    from indexer.summary import build_summary_lines, summary_to_dict

    config = _resolve_config(
        args,
        {
            "model.weights": str(args.weights) if args.weights is not None else None,
            "model.image_size": args.image_size,
            "runtime.device": args.device,
            "runtime.batch_size": args.batch_size,
            "runtime.workers": args.workers,
            "runtime.engine": args.engine,
            "runtime.ray_address": args.ray_address,
            "patches.enabled": False if args.no_patches else None,
            "search.calibration.on_build": False if args.no_calibrate else None,
        },
    )
    if args.exclude:
        config = with_overrides(config, {"scan.exclude": [*config.scan.exclude, *args.exclude]})
    summary = run_build(config, args.paths, show_progress=not (args.no_progress or args.json))
    if args.json:
        print(json.dumps(summary_to_dict(summary), indent=2))
    else:
        for line in build_summary_lines(summary):
            print(line)
    return EXIT_PROBLEMS if args.strict and (summary.failed or summary.unchanged_failed) else EXIT_OK


# status ------------------------------------------------------------------------------------------


def setup_status(parser: argparse.ArgumentParser) -> None:
    add_collection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--failures", action="store_true", help="also list every failed file and why")


def main_status(args: argparse.Namespace) -> int:
    from core.report import collection_status
    from indexer.summary import status_lines

    settings = resolve_command_settings(args, {})
    status = collection_status(settings.config, with_failures=args.failures, origins=settings.origins)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for line in status_lines(status):
            print(line)
    return EXIT_OK


# verify ------------------------------------------------------------------------------------------


def setup_verify(parser: argparse.ArgumentParser) -> None:
    add_collection_arguments(parser)


def main_verify(args: argparse.Namespace) -> int:
    from core.report import verify_collection

    config = _resolve_config(args, {})
    result = verify_collection(config)
    if result.problems:
        print(f"verify: {len(result.problems)} problem(s) in {config.data_dir}:")
        for problem in result.problems:
            print(f"  - {problem}")
        for repair in result.repairs:
            print(repair)
        print("`python -m indexer reindex` rebuilds the index files from the catalog.")
        return EXIT_PROBLEMS
    print(f"verify: OK ({result.checked_rows} catalog rows, {result.checked_vectors} vectors agree)")
    return EXIT_OK


# reindex -----------------------------------------------------------------------------------------


def setup_reindex(parser: argparse.ArgumentParser) -> None:
    add_collection_arguments(parser)


def main_reindex(args: argparse.Namespace) -> int:
    from core.catalog import Catalog
    from core.index.source import patch_vectors_of
    from core.index.sync import rebuild_index
    from core.lock import exclusive_writer

    config = _resolve_config(args, {})
    catalog = Catalog.open(config.resolved_db_url, create=False)
    try:
        with exclusive_writer(config.data_dir, "indexer reindex", config.resolved_db_url):
            report = rebuild_index(catalog, config.data_dir, config.index)
            print(f"reindex: wrote the global index, {report.spec.factory_string} with {report.ntotal} vectors")
            patches = patch_vectors_of(catalog)
            if patches is not None:
                report = rebuild_index(catalog, config.data_dir, config.patches.index, patches)
                print(f"reindex: wrote the patch index, {report.spec.factory_string} with {report.ntotal} vectors")
                without_grid = catalog.photos_without_grid()
                if without_grid:
                    print(
                        f"reindex: {len(without_grid)} indexed photos have no patch grid (first: "
                        f"{without_grid[0].path!r}); the next build recomputes them from their files"
                    )
    finally:
        catalog.close()
    return EXIT_OK


# migrate -----------------------------------------------------------------------------------------


def setup_migrate(parser: argparse.ArgumentParser) -> None:
    add_collection_arguments(parser)


def main_migrate(args: argparse.Namespace) -> int:
    from core.catalog import migrate_catalog
    from core.lock import exclusive_writer

    config = _resolve_config(args, {})
    with exclusive_writer(config.data_dir, "indexer migrate", config.resolved_db_url):
        before, after = migrate_catalog(config.resolved_db_url)
    print(f"migrate: schema revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    return EXIT_OK


# calibrate ---------------------------------------------------------------------------------------


def _precision_target(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from error
    if not 0.5 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a precision at least 0.5 and below 1, got {value}")
    return value


def setup_calibrate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sample", type=positive_int, help="indexed photos to edit and search (config: search.calibration.sample)"
    )
    parser.add_argument("--seed", type=int, help="seed of the sample and the edits (config: search.calibration.seed)")
    parser.add_argument(
        "--precision",
        type=_precision_target,
        help="how often a near-duplicate label must be right, e.g. 0.99 (config: search.calibration.precision)",
    )
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_collection_arguments(parser)


def main_calibrate(args: argparse.Namespace) -> int:
    from core.catalog import Catalog
    from core.decode import DecodeLimits
    from core.encoder import open_collection_encoder
    from core.errors import CatalogError
    from core.index.sync import current_index
    from core.lock import exclusive_writer
    from indexer.calibrate import calibrate_collection, embed_with
    from indexer.summary import calibration_line

    config = _resolve_config(
        args,
        {
            "search.calibration.sample": args.sample,
            "search.calibration.seed": args.seed,
            "search.calibration.precision": args.precision,
        },
    )
    with exclusive_writer(config.data_dir, "indexer calibrate", config.resolved_db_url):
        catalog = Catalog.open(config.resolved_db_url, create=False)
        try:
            provenance = catalog.provenance()
            if provenance is None:
                raise CatalogError(f"no index in {config.data_dir}: build one with `python -m indexer build PHOTOS`")
            # The collection's own model, checked against the catalog's provenance (weights sha256, image size).
            encoder = open_collection_encoder(config.data_dir, config.model, config.runtime, provenance)
            embed = embed_with(lambda pixels: encoder.encode(pixels).embeddings, provenance.image_size, one_thread=True)
            calibration = calibrate_collection(
                catalog,
                current_index(catalog, config.data_dir, config.index)[0],
                provenance,
                embed,
                config.search.calibration,
                DecodeLimits.of(config.decode),
                show_progress=not (args.no_progress or args.json),
            )
        finally:
            catalog.close()
    result = calibration.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(f"calibrate: near-duplicate {calibration_line(result)} in {result['seconds']:.1f} s")
    for family, recall in result["per_edit"].items():
        print(f"  {family:<15} recall {recall:.3f}")
    if result["left_out"]:
        print(f"  {result['left_out']} non-matching pairs left out as probable real duplicates")
    return EXIT_OK


# wiring ------------------------------------------------------------------------------------------


COMMANDS: dict[str, Command] = {
    "build": ("index the photos under one or more folders (incremental)", setup_build, main_build),
    "status": ("what the collection holds", setup_status, main_status),
    "verify": ("check that catalog and index files agree (exit 1 if not)", setup_verify, main_verify),
    "reindex": ("rebuild the FAISS files from the catalog", setup_reindex, main_reindex),
    "migrate": ("upgrade the catalog's schema to this version of Loupe", setup_migrate, main_migrate),
    "calibrate": (
        "calibrate the near-duplicate threshold on edited copies of the collection's photos",
        setup_calibrate,
        main_calibrate,
    ),
}

EPILOG = """examples:
  python -m indexer build ~/Pictures/archive
  python -m indexer build photos/ --weights random --image-size 128   # offline test run
  python -m indexer build /nfs/photos --engine ray --ray-address auto   # on a Ray cluster
  python -m indexer status --json
  python -m indexer verify
  python -m indexer calibrate --sample 200 --json
"""


def build_parser() -> argparse.ArgumentParser:
    return command_parser(
        "python -m indexer",
        "Loupe indexer: embed photos with PE-Spatial ViT-S/16 into a FAISS index and a SQL catalog.",
        EPILOG,
        COMMANDS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_handler(build_parser().parse_args(argv))
