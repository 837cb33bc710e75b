"""``loupe ui``: serve the installed app with Streamlit, on loopback, with Loupe's settings.

Streamlit reads ``.streamlit/config.toml`` only from the folder it starts in, so the settings that keep the
UI private are passed on its command line instead, and hold wherever ``loupe ui`` runs. The collection
reaches the app through ``LOUPE_*`` environment variables (``ui/state.py`` reads them), which keep a
database password out of the process list.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from core.command_line import add_collection_arguments, resolve_command_settings
from core.config import LoupeConfig
from ui.serving import check_serving_address

logger = logging.getLogger(__name__)

# The app as installed: views/ and everything it reads sit beside it in the package.
APP = Path(__file__).resolve().with_name("app.py")
LOOPBACK = "127.0.0.1"

# Streamlit options of every `loupe ui`, in Streamlit's own names. The repository's
# .streamlit/config.toml holds the same values for `streamlit run ui/app.py` from the project root.
STREAMLIT_OPTIONS: dict[str, str] = {
    "server.headless": "true",
    # Uploads above this many MB are refused by Streamlit itself (Loupe's own limits are in config.yaml).
    "server.maxUploadSize": "64",
    # The installed app does not change while it runs: no watcher over site-packages.
    "server.fileWatcherType": "none",
    # Streamlit's defaults, pinned so that a user's ~/.streamlit/config.toml cannot turn them off.
    "server.enableCORS": "true",
    "server.enableXsrfProtection": "true",
    "browser.gatherUsageStats": "false",
    # Unexpected errors show their type and a generic message in the browser; tracebacks go to the console.
    "client.showErrorDetails": "type",
    "client.toolbarMode": "minimal",
}


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from error
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port lies in 1-65535, got {value}")
    return value


def setup_ui(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=_port, help="port to listen on (config: ui.port, default 8501)")
    parser.add_argument(
        "--address",
        default=LOOPBACK,
        help=f"address to listen on (default {LOOPBACK}); any other than loopback needs ui.allow_remote: true",
    )
    add_collection_arguments(parser)


def streamlit_command(app: Path, address: str, port: int, python: str = sys.executable) -> list[str]:
    """``python -m streamlit run`` with :data:`STREAMLIT_OPTIONS`, the address and the port."""
    options = {**STREAMLIT_OPTIONS, "server.address": address, "server.port": str(port)}
    flags = [part for name, value in options.items() for part in (f"--{name}", value)]
    return [python, "-m", "streamlit", "run", *flags, str(app)]


def app_environment(
    base: Mapping[str, str], config_file: Path | None, data_dir: Path | None, db_url: str | None
) -> dict[str, str]:
    """``base`` plus the collection flags as the ``LOUPE_*`` variables the app reads (absolute paths,
    so they mean the same to the server whatever folder it resolves them in)."""
    env = dict(base)
    if config_file is not None:
        env["LOUPE_CONFIG"] = str(config_file.resolve())
    if data_dir is not None:
        env["LOUPE_DATA_DIR"] = str(data_dir.resolve())
    if db_url is not None:
        env["LOUPE_DB_URL"] = db_url
    return env


def _ui_config(args: argparse.Namespace) -> LoupeConfig:
    """The settings every command resolves (flags > ``LOUPE_*`` > config file > defaults), with ``--port``."""
    return resolve_command_settings(args, {"ui.port": args.port}).config


def run_streamlit(command: list[str], env: Mapping[str, str]) -> int:
    """Become the Streamlit server on POSIX, so signals and the exit status are the server's own;
    elsewhere run it as a child and return its exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(command[0], command, env)
    with subprocess.Popen(command, env=dict(env)) as server:
        try:
            return server.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the server too: let it stop, and report how it ended
            return server.wait()


def main_ui(args: argparse.Namespace) -> int:
    # The config is read here too, so a bad file or flag fails with a one-line error before the server starts.
    config = _ui_config(args)
    check_serving_address(args.address, config.ui.allow_remote)
    command = streamlit_command(APP, args.address, config.ui.port)
    env = app_environment(os.environ, args.config, args.data_dir, args.db_url)
    logger.info("running %s", shlex.join(command))
    return run_streamlit(command, env)
