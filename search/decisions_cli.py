"""``python -m search duplicates --dismiss/--undismiss/--keep/--unkeep/--decisions``: record or list the
curator's decisions about duplicates (:mod:`core.catalog.decisions`), print what was stored, exit.

They open the catalog as readers do (an out-of-date schema is refused with the command that upgrades it)
and write only the decisions table, so they run while a build runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from core.catalog import Catalog
from core.catalog.decisions import (
    DISMISS,
    DecisionError,
    Pair,
    dismiss,
    keep,
    list_decisions,
    paths_by_content,
    photos_at,
    undismiss,
    unkeep,
)
from core.config import LoupeConfig

logger = logging.getLogger(__name__)

ACTIONS = ("dismiss", "undismiss", "keep", "unkeep", "decisions")


def add_decision_arguments(parser: argparse.ArgumentParser) -> None:
    """The decision flags of ``duplicates``; at most one per run."""
    group = parser.add_argument_group(
        "decisions",
        "kept in the catalog by content (sha256), so they survive rebuilds, moves and renames; "
        "each records, prints what it stored and exits",
    ).add_mutually_exclusive_group()
    group.add_argument(
        "--dismiss",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="these photos are not duplicates (keep both): no two of them are grouped together again",
    )
    group.add_argument(
        "--undismiss", nargs="+", type=Path, metavar="PATH", help="withdraw --dismiss among these photos"
    )
    group.add_argument("--keep", type=Path, metavar="PATH", help="pin this photo as the keeper of its group")
    group.add_argument("--unkeep", type=Path, metavar="PATH", help="withdraw --keep of this photo")
    group.add_argument("--decisions", action="store_true", help="list the stored decisions")


def wants_decision(args: argparse.Namespace) -> bool:
    """Whether ``args`` ask to record or list decisions rather than to list groups."""
    return any(getattr(args, action, None) for action in ACTIONS)


def run_decision(args: argparse.Namespace, config: LoupeConfig, out: IO[str]) -> None:
    """Record (or list) the decision ``args`` ask for in the collection of ``config``; report it on ``out``."""
    catalog = Catalog.open(config.resolved_db_url, create=False)
    try:
        report = _record(args, catalog)
    finally:
        catalog.close()
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return
    for line in _lines(report):
        print(line, file=out)


def _paths_of(pairs: Sequence[Pair], photos: dict[str, str]) -> list[list[str]]:
    return [[photos[a], photos[b]] for a, b in pairs]


def _record(args: argparse.Namespace, catalog: Catalog) -> dict[str, Any]:
    if args.dismiss or args.undismiss:
        paths = args.dismiss or args.undismiss
        if len(paths) < 2:
            raise DecisionError(f"--{'dismiss' if args.dismiss else 'undismiss'} needs at least two photos")
        photos = photos_at(catalog, paths)
        by_content = {photo.sha256: photo.path for photo in photos}
        if args.dismiss:
            stored, already = dismiss(catalog, photos)
            return {
                "action": "dismiss",
                "stored": _paths_of(stored, by_content),
                "already": _paths_of(already, by_content),
            }
        return {
            "action": "undismiss",
            "photos": [photo.path for photo in photos],
            "removed": undismiss(catalog, photos),
        }
    if args.keep or args.unkeep:
        (photo,) = photos_at(catalog, [args.keep or args.unkeep])
        if args.keep:
            return {"action": "keep", "path": photo.path, "sha256": photo.sha256, "already": keep(catalog, photo)}
        return {"action": "unkeep", "path": photo.path, "sha256": photo.sha256, "removed": unkeep(catalog, photo)}
    decisions = list_decisions(catalog)
    contents = [[d.sha256_a] + ([d.sha256_b] if d.sha256_b else []) for d in decisions]
    paths = paths_by_content(catalog, (sha for shas in contents for sha in shas))
    return {
        "action": "decisions",
        "decisions": [
            {
                "kind": decision.kind,
                "created_at": decision.created_at.isoformat(),
                "contents": [{"sha256": sha, "paths": paths.get(sha, [])} for sha in shas],
            }
            for decision, shas in zip(decisions, contents, strict=True)
        ],
    }


def _lines(report: dict[str, Any]) -> list[str]:
    action = report["action"]
    if action == "dismiss":
        lines = [
            f"dismissed {_pairs(len(report['stored']))}: not offered as duplicates of each other again "
            "(undo: --undismiss)"
        ]
        lines += [f"  {a}  !=  {b}" for a, b in report["stored"]]
        lines += [f"  {a}  !=  {b}  (already dismissed)" for a, b in report["already"]]
        return lines
    if action == "undismiss":
        return [f"withdrew {_pairs(report['removed'])} among {len(report['photos'])} photos: dismissed no longer"]
    if action == "keep":
        state = "was pinned already; now the most recent pin" if report["already"] else "pinned"
        return [f"{report['path']}: {state} as the keeper of its group (undo: --unkeep)"]
    if action == "unkeep":
        return [f"{report['path']}: {'unpinned' if report['removed'] else 'was not pinned'}"]
    decisions = report["decisions"]
    if not decisions:
        return ["no decisions stored"]
    lines = []
    for decision in decisions:
        shown = [_content_line(content) for content in decision["contents"]]
        what = "not duplicates: " + "  !=  ".join(shown) if decision["kind"] == DISMISS else "keeper: " + shown[0]
        lines.append(f"{decision['created_at'][:16].replace('T', ' ')} UTC  {what}")
    return lines


def _pairs(count: int) -> str:
    return f"{count} pair" + ("" if count == 1 else "s")


def _content_line(content: dict[str, Any]) -> str:
    """A content as its first path (and how many more copies), or its sha256 when no photo holds it now."""
    paths = content["paths"]
    if not paths:
        return f"sha256 {content['sha256'][:12]}... (no indexed photo now)"
    return paths[0] + (f" (+{len(paths) - 1} copies)" if len(paths) > 1 else "")
