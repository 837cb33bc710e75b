"""The real-browser tests: ``streamlit run`` on loopback, Debian's Chromium driven by Playwright.

Search: uploads a photo, waits for the results grid, checks the top result, saves a screenshot and records
the time from upload to a page of 50 thumbnails (printed, and written to ``ui-browser-timing.json`` beside
the screenshot in the test's temporary folder, or in ``$LOUPE_ARTIFACTS`` when set).

Duplicates: times a page of 20 groups of 10 thumbnails (``ui-duplicates-timing.json``), then reviews,
applies a move and undoes it, checking the files on disk after each step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import run_build
from tests.browser_app import CHROMIUM, CHROMIUM_ARGS, require_chromium, served_app
from tests.conftest import PHOTOS, small_config

pytestmark = pytest.mark.slow

RESULTS = 50


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (skipped without it, failed with ``LOUPE_REQUIRE_BROWSER``)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir(root: Path) -> Path:
    """Where screenshots and timings go: ``$LOUPE_ARTIFACTS``, else the test's temporary folder."""
    artifacts = Path(os.environ.get("LOUPE_ARTIFACTS", root))
    artifacts.mkdir(parents=True, exist_ok=True)
    return artifacts


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
    with served_app(root / "data", root / "streamlit.log", config) as url:
        yield url, root


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
    url, root = served
    artifacts = artifacts_dir(root)
    query = root / "query-coffee.jpg"
    shutil.copy(PHOTOS / "scikit-image__coffee.jpg", query)
    with chromium() as browser:
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


GROUPS, COPIES = 20, 10


def make_duplicate_photos(photos: Path) -> None:
    """GROUPS originals (the test photos, then seeded smooth colour fields), each saved COPIES times at
    96 px and a little smaller each time, at a lower JPEG quality each time: GROUPS groups of COPIES."""
    photos.mkdir(parents=True)
    originals = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        with Image.open(path) as image:
            originals.append(image.convert("RGB"))
    rng = np.random.default_rng(0)
    while len(originals) < GROUPS:
        field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        originals.append(Image.fromarray(field).resize((96, 96), Image.Resampling.BICUBIC))
    for number, original in enumerate(originals[:GROUPS]):
        for copy in range(COPIES):
            image = original.copy()
            image.thumbnail((96 - 3 * copy, 96 - 3 * copy))
            image.save(photos / f"g{number:02d}-{copy}.jpg", quality=92 - copy)


@pytest.fixture(scope="module")
def served_duplicates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("ui-browser-duplicates")
    make_duplicate_photos(root / "photos")
    # Uncalibrated: with random weights a calibration would put the threshold at 1.
    config = small_config(root / "data", **{"search.calibration.on_build": False})
    run_build(config, [root / "photos"], show_progress=False)
    settings = root / "ui.yaml"
    settings.write_text("search:\n  near_duplicate_threshold: 0.99\n")  # random weights: copies score > 0.99
    with served_app(root / "data", root / "streamlit.log", settings) as url:
        yield url, root


# The groups' contact sheets (one image per group) that the browser has fully loaded and decoded.
LOADED_GROUP_SHEETS = (
    "Array.from(document.querySelectorAll('.st-key-duplicates-groups img'))"
    ".filter(i => i.complete && i.naturalWidth > 0).length"
)


def _home(browser: Any, url: str) -> Any:
    """A new browser page (its own cache and Streamlit session) on the app's first page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("RANDOM weights").first.wait_for(timeout=60_000)
    return page


def _open_duplicates(page: Any) -> float:
    """Seconds from clicking "Duplicates" in the navigation to a page of GROUPS groups of COPIES photos
    with their thumbnails loaded (grouping, catalog rows, thumbnails and contact sheets, Streamlit's
    rendering and the browser's loading)."""
    started = time.perf_counter()
    page.get_by_role("link", name="Duplicates").click()
    page.wait_for_function(f"{LOADED_GROUP_SHEETS} >= {GROUPS}", timeout=120_000)
    return time.perf_counter() - started


def _photo_states(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*.jpg")}


def test_review_apply_and_undo_duplicates(served_duplicates: tuple[str, Path]) -> None:
    """A page of 20 groups of 10 (timed), a keep toggle, a move with its plan and confirmation, the files
    moved on disk, then undone: every photo back where it was, byte for byte."""
    url, root = served_duplicates
    artifacts = artifacts_dir(root)
    photos, dups = root / "photos", root / "dups"
    before = _photo_states(photos)
    with chromium() as browser:
        page = _home(browser, url)
        first_view = _open_duplicates(page)  # groups computed and thumbnails made now
        assert page.locator(".st-key-duplicates-groups img").count() == GROUPS
        page.get_by_text(f"{GROUPS} groups").first.wait_for()
        page.screenshot(path=str(artifacts / "ui-duplicates.png"), full_page=False)
        page.close()
        page = _home(browser, url)  # a new session, and a browser with nothing cached
        new_session_view = _open_duplicates(page)  # groups computed again, thumbnails from the disk cache
        page.get_by_role("link", name="Search by image").click()
        page.get_by_text("Upload a photo").first.wait_for(timeout=60_000)
        revisit_view = _open_duplicates(page)  # groups kept in the session, thumbnails in the browser's cache

        # Group 4 is g03's (groups of the same size come in their keepers' path order): keep g03-4.jpg.
        page.locator(".st-key-duplicates-keep-4").get_by_text("g03-4.jpg").click()
        folder = page.locator(".st-key-duplicates-apply-folder input")
        folder.fill(str(dups))
        folder.press("Enter")
        page.get_by_role("button", name="Review the plan").click()
        to_act = GROUPS * (COPIES - 1) - 1
        page.get_by_text(f"{to_act} to act on").first.wait_for(timeout=60_000)
        assert _photo_states(photos) == before and not dups.exists()  # the plan is a dry run

        page.get_by_role("button", name=f"Confirm: move {to_act} photos").click()
        page.get_by_text(f"{to_act} done, 0 skipped, 0 failed").first.wait_for(timeout=120_000)
        moved = _photo_states(dups)
        assert len(moved) == to_act and len(_photo_states(photos)) == GROUPS + 1
        assert {**_photo_states(photos), **moved} == before  # moved byte for byte, none lost
        assert "g03-4.jpg" in _photo_states(photos)  # toggled to keep

        page.get_by_role("button", name="Undo", exact=True).click()
        page.get_by_text(f"{to_act} undone").first.wait_for(timeout=120_000)
        assert _photo_states(photos) == before and _photo_states(dups) == {}
    timing = {
        "groups": GROUPS,
        "photos_per_group": COPIES,
        "first_view_s": round(first_view, 2),
        "new_session_view_s": round(new_session_view, 2),
        "revisit_view_s": round(revisit_view, 2),
        "load_average_1min": round(os.getloadavg()[0], 1),  # the machine is shared: context for the figures
    }
    (artifacts / "ui-duplicates-timing.json").write_text(json.dumps(timing, indent=2))
    print(f"\nUI timing (a page of {GROUPS} groups of {COPIES} loaded thumbnails): {timing}")
    # The issue asks for under 3 s on the 2-core machine (README); the bound here leaves room for a loaded CI host.
    assert new_session_view < 10 and first_view < 20
