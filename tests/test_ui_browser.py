"""One real-browser test: ``streamlit run`` on loopback, Debian's Chromium driven by Playwright.

Uploads a photo, waits for the results grid, checks the top result, saves a screenshot and records the
time from upload to a page of 50 thumbnails (printed, and written to ``ui-browser-timing.json`` beside
the screenshot in the test's temporary folder, or in ``$LOUPE_ARTIFACTS`` when set).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import run_build
from tests.conftest import PHOTOS, small_config

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = 50


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("ui-browser")
    photos = root / "photos"
    shutil.copytree(PHOTOS, photos)
    rng = np.random.default_rng(0)
    for i in range(RESULTS):  # enough photos for a full page of 50 results
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photos / f"noise-{i:02d}.jpg")
    run_build(small_config(root / "data"), [photos], show_progress=False)
    config = root / "ui.yaml"
    config.write_text(f"search:\n  default_k: {RESULTS // 2}\n")  # the results slider starts at 2 * default_k
    port = _free_port()
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
            "--data-dir",
            str(root / "data"),
            "--config",
            str(config),
        ],
        cwd=ROOT,  # the project's .streamlit/config.toml applies, as for a user
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None:
                pytest.fail(f"streamlit exited: {server.stdout.read() if server.stdout else ''}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", root
    finally:
        server.terminate()
        server.wait(timeout=30)


# Thumbnails of the results grid that the browser has fully loaded and decoded.
LOADED_THUMBNAILS = (
    "Array.from(document.querySelectorAll('.st-key-results-grid img'))"
    ".filter(i => i.complete && i.naturalWidth > 0).length"
)


def _upload_and_wait(page: Any, query: Path) -> tuple[float, float]:
    """Seconds from choosing the file to a grid of RESULTS loaded thumbnails, and from the query's
    answer (its "N results in X ms" line) to that grid: the rendering of the results page."""
    page.get_by_text("Search by image").first.wait_for(timeout=60_000)
    started = time.perf_counter()
    page.locator("input[type=file]").first.set_input_files(str(query))
    page.get_by_text(f"{RESULTS} results in").first.wait_for(timeout=120_000)
    answered = time.perf_counter()
    page.wait_for_function(f"{LOADED_THUMBNAILS} >= {RESULTS}", timeout=120_000)
    done = time.perf_counter()
    return done - started, done - answered


def test_upload_a_photo_and_see_its_neighbours(served: tuple[str, Path]) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("LOUPE_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)")
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (`apt-get install chromium`; CI installs it)")
    from playwright.sync_api import sync_playwright

    url, root = served
    artifacts = Path(os.environ.get("LOUPE_ARTIFACTS", root))
    artifacts.mkdir(parents=True, exist_ok=True)
    query = root / "query-coffee.jpg"
    shutil.copy(PHOTOS / "scikit-image__coffee.jpg", query)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("RANDOM weights").first.wait_for(timeout=60_000)  # the random-weights warning is shown

        first_total, first_render = _upload_and_wait(page, query)  # thumbnails are made on this first query
        assert page.locator(".st-key-results-grid img").count() == RESULTS
        first_caption = page.locator(".st-key-results-grid [data-testid='stCaptionContainer']").first.inner_text()
        assert "scikit-image__coffee.jpg" in first_caption and "exact" in first_caption
        page.screenshot(path=str(artifacts / "ui-search-results.png"), full_page=False)

        page.reload(wait_until="domcontentloaded")
        cached_total, cached_render = _upload_and_wait(page, query)  # thumbnails come from the disk cache now
        browser.close()
    timing = {
        "results": RESULTS,
        "first_query": {"upload_to_page_s": round(first_total, 2), "render_after_query_s": round(first_render, 2)},
        "cached_thumbnails": {
            "upload_to_page_s": round(cached_total, 2),
            "render_after_query_s": round(cached_render, 2),
        },
    }
    (artifacts / "ui-browser-timing.json").write_text(json.dumps(timing, indent=2))
    print(f"\nUI timing (upload to {RESULTS} loaded thumbnails): {timing}")
