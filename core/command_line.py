"""The command-line plumbing every Loupe command shares: exit codes, argument types, the collection
arguments (--config, --data-dir, --db-url, -v), subcommand parsers, logging set-up, and the one place where
library errors become a message and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.errors import LoupeError
from core.settings import Requested, ResolvedSettings, resolve_settings

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def image_size(text: str) -> int:
    value = positive_int(text)
    if value % 16 != 0 or value < 32:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of 16 and at least 32, got {value}")
    return value


def add_collection_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --data-dir, --db-url and -v, shared by every command."""
    group = parser.add_argument_group("collection")
    group.add_argument(
        "--config",
        type=Path,
        help="config file (env: LOUPE_CONFIG; default: ./config.yaml, else the per-user config.yaml, when present)",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        help="folder of the catalog and index files (env: LOUPE_DATA_DIR; config: data_dir; "
        "default: ./loupe-data when present, else the per-user data dir)",
    )
    group.add_argument(
        "--db-url", help="SQLAlchemy URL of the catalog (env: LOUPE_DB_URL; default: SQLite in the data dir)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def resolve_command_settings(args: argparse.Namespace, overrides: dict[str, Any]) -> ResolvedSettings:
    """The settings of a command (flags > environment > config file > defaults, see
    :mod:`core.settings`), after a note on stderr for each folder found by an earlier version's rule."""
    settings = resolve_settings(Requested(args.config, args.data_dir, args.db_url), overrides)
    for line in settings.origins.notices(settings.config):
        print(line, file=sys.stderr)
    return settings


def command_parser(prog: str, description: str, epilog: str, commands: dict[str, Command]) -> argparse.ArgumentParser:
    """An argparse parser with one subcommand per entry of ``commands`` (help, setup, main)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, setup, handler) in commands.items():
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        setup(sub)
        sub.set_defaults(handler=handler)
    return parser


def configure_logging(verbose: bool) -> None:
    """Handlers are set here, in the entry point, and nowhere in library code."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # torch warns at import that a CUDA build found no CUDA runtime: expected on CPU machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # birder configures its own logger at import; LOG_LEVEL is the knob it reads.
    os.environ.setdefault("LOG_LEVEL", "INFO" if verbose else "WARNING")


def run_handler(args: argparse.Namespace) -> int:
    """Run a subcommand's ``main``, turning library errors into a message and an exit code."""
    configure_logging(args.verbose)
    try:
        code: int = args.handler(args)
        return code
    except LoupeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except SQLAlchemyError as error:
        detail = error.args[0] if error.args else error
        print(f"error: catalog database: {error.__class__.__name__}: {detail}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        # Disk full, read-only data dir and the like: committed work is safe, say what failed.
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: every finished batch is committed; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
