"""``loupe``: every command of Loupe under one name.

Only wiring: the indexer's and the search's command tables and ``loupe ui`` under one parser, with the
same flags, output and exit codes as ``python -m indexer`` and ``python -m search`` (which keep working).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from core.command_line import Command, command_parser, run_handler
from indexer import cli as indexer_cli
from search import cli as search_cli
from ui.launch import main_ui, setup_ui

DISTRIBUTION = "loupe"

COMMANDS: dict[str, Command] = {
    **indexer_cli.COMMANDS,
    **search_cli.COMMANDS,
    "ui": ("serve the browser UI on loopback (http://127.0.0.1:8501 by default)", setup_ui, main_ui),
}

EPILOG = """examples:
  loupe build ~/Pictures/archive
  loupe build photos/ --weights random --image-size 128   # offline test run
  loupe status --json
  loupe calibrate --sample 200
  loupe query holiday.jpg -k 20
  loupe similar /photos/2019/img_0042.jpg --under /photos/2020 --json
  loupe region poster.jpg --box 120,80,360,300 --json
  loupe duplicates --threshold 0.97 --csv > duplicates.csv
  loupe duplicates --apply move:/photos/duplicates --yes
  loupe lookup incoming/ -k 3 --csv matches.csv
  loupe undo ~/.local/share/loupe/journals/apply-20260101-120000.jsonl
  loupe ui --port 8502 --data-dir /archive/loupe-data

`loupe COMMAND --help` lists a command's flags.
"""


def package_version() -> str:
    """The installed distribution's version (its metadata, so right for any kind of install)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: run `pip install .` in the project)"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "loupe",
        "Loupe: self-hosted image similarity search. Index photos, search them by image, region or "
        "near-duplicate, and browse them in the browser.",
        EPILOG,
        COMMANDS,
    )
    parser.add_argument("--version", action="version", version=f"loupe {package_version()}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_handler(build_parser().parse_args(argv))
