"""The command-line side of acting on duplicates: ``duplicates --apply`` (its flags, the dry run's plan,
the apply's summary) and ``undo``. :mod:`search.cli` registers them; the work is done by
:mod:`search.apply_plan`, :mod:`search.apply` and :mod:`search.undo`, which the UI calls too."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.command_line import EXIT_OK, EXIT_PROBLEMS, add_collection_arguments, resolve_command_settings
from core.config import LoupeConfig


def add_apply_arguments(parser: argparse.ArgumentParser) -> None:
    """``--apply``, ``--journal`` and ``--yes`` of ``duplicates`` (``--reference`` is shared with the keeper
    rules: :mod:`search.cli`)."""
    act = parser.add_argument_group("acting on duplicates (a dry run that prints the plan, unless --yes)")
    act.add_argument(
        "--apply",
        type=_action,
        metavar="move:DIR|trash|hardlink|symlink",
        help="move every non-keeper into DIR, send it to the trash, or replace it by a hard or symbolic link "
        "to its keeper (the replaced bytes are kept for undo under the data dir)",
    )
    act.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="journal of the apply (a new file; default: <data dir>/journals/apply-YYYYmmdd-HHMMSS.jsonl)",
    )
    act.add_argument("--yes", action="store_true", help="act: without it --apply only prints the plan")


def _action(text: str) -> Any:
    from search.apply_plan import ActionSpecError, parse_action

    try:
        return parse_action(text)
    except ActionSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def apply_duplicates(args: argparse.Namespace, config: LoupeConfig, groups: Sequence[Any], threshold: float) -> int:
    """The plan of ``--apply`` on ``groups`` (a dry run), or, with ``--yes``, the apply and its summary."""
    from search.apply import apply_plan
    from search.apply_plan import plan_actions
    from search.apply_report import DRY_RUN_LINE, apply_lines, plan_lines, unfinished_lines
    from search.journal import unfinished_journals

    references = [*config.search.reference_folders, *(args.reference or [])]
    plan = plan_actions(groups, args.apply, threshold, references)
    if not args.yes:
        unfinished = unfinished_journals(config.data_dir)
        if args.json:
            payload = {"dry_run": True, **plan.to_dict(), "unfinished_journals": [str(path) for path in unfinished]}
            print(json.dumps(payload, indent=2))
        else:
            print("\n".join(plan_lines(plan)))
            print(DRY_RUN_LINE)
            for line in unfinished_lines(unfinished):
                print(line, file=sys.stderr)
        return EXIT_OK
    report = apply_plan(plan, config, args.journal, show_progress=not args.json)
    if args.json:
        print(json.dumps({"dry_run": False, **report.to_dict()}, indent=2))
    else:
        command = "" if report.journal is None else undo_command(args, report.journal)
        print("\n".join(apply_lines(report, command)))
    failed = report.count("failed") + sum(1 for o in report.recovered if o.status == "failed")
    return EXIT_PROBLEMS if failed else EXIT_OK


def undo_command(args: argparse.Namespace, journal: Path) -> str:
    """The command that undoes an apply journaled in ``journal`` (``loupe undo`` when run as ``loupe``),
    with the collection flags given."""
    from core.catalog import redact_url

    command = "loupe" if Path(sys.argv[0]).name == "loupe" else "python -m search"
    words = [f"{command} undo", str(journal)]
    if args.config is not None:
        words += ["--config", str(args.config.absolute())]
    if args.data_dir is not None:
        words += ["--data-dir", str(args.data_dir.absolute())]
    if args.db_url is not None:
        words += ["--db-url", redact_url(args.db_url)]
    return " ".join(words)


def setup_undo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("journal", type=Path, metavar="JOURNAL", help="the journal of a duplicates --apply --yes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_collection_arguments(parser)


def main_undo(args: argparse.Namespace) -> int:
    from search.apply_report import undo_lines
    from search.undo import undo_journal

    report = undo_journal(args.journal, resolve_command_settings(args, {}).config)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(undo_lines(report)))
    return EXIT_OK if report.complete else EXIT_PROBLEMS
