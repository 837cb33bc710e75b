"""The app served by ``streamlit run`` on loopback, and Debian's Chromium, for real-browser tests.

Used by ``tests/test_ui_browser.py`` and ``tests/test_ui_browser_region.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent


def require_chromium() -> None:
    """Skip the test without Chromium; fail instead where ``LOUPE_REQUIRE_BROWSER`` is set (CI)."""
    if CHROMIUM.exists():
        return
    if os.environ.get("LOUPE_REQUIRE_BROWSER"):
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)")
    pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (`apt-get install chromium`; CI installs it)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served_app(data_dir: Path, log: Path, config: Path | None = None, start_timeout_s: float = 90) -> Iterator[str]:
    """``streamlit run ui/app.py`` on a free loopback port for ``data_dir``; yields the app's URL. The
    server's output goes to ``log`` (a pipe nobody reads would stall it once full)."""
    port = free_port()
    app_args = ["--data-dir", str(data_dir)] + (["--config", str(config)] if config is not None else [])
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "ui" / "app.py"),
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--",
                *app_args,
            ],
            cwd=ROOT,  # the project's .streamlit/config.toml applies, as for a user
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + start_timeout_s
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if server.poll() is not None:
                    pytest.fail(f"streamlit exited: {log.read_text()}")
                time.sleep(0.2)
            else:
                pytest.fail(f"streamlit did not listen on port {port} within {start_timeout_s:.0f} s")
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=30)
