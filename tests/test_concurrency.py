"""Concurrent use: searches (engine and UI) answer from the last commit while a build or reindex runs in
another process, frozen mid-transaction; a second writer is refused with a clear message.

A killed writer's lock is recovered: tests/test_lock.py (a killed holder) and every rerun of
tests/test_crash_campaign.py (SIGKILLed builds) cover it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.lock import BuildLockedError
from indexer.pipeline import run_build
from search.engine import SearchEngine
from tests.conftest import PHOTOS, TEST_IMAGE_SIZE, open_app, small_config
from tests.crash_harness import HARNESS_FILE, harness_env, one_torch_thread

pytestmark = pytest.mark.slow

SMALL = ["--weights", "random", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]


def _wait_until_stopped(process: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"the writer ended (exit {process.returncode}) before pausing: {err}")
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the writer never reached its pause point")


@contextlib.contextmanager
def paused_writer(calls: Path, phase: str, at: int, args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``python -m indexer ARGS`` in another process, frozen (SIGSTOP) at the ``at``-th ``phase``; resumed
    when the block ends."""
    command = [sys.executable, HARNESS_FILE, str(calls), phase, str(at), "stop", "--", *args]
    process = subprocess.Popen(command, env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_stopped(process)
        yield process
    finally:
        process.send_signal(signal.SIGCONT)


def _neighbours(engine: SearchEngine, query: str, k: int = 50) -> list[tuple[str, float]]:
    return [(r.path, round(r.score, 5)) for r in engine.search_similar(query, k, include_self=True)]


def _write_noise(folder: Path, count: int) -> None:
    rng = np.random.default_rng(3)
    folder.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"new-{i:02d}.jpg")


def test_searches_answer_from_the_last_commit_while_a_writer_is_frozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(PHOTOS, photos)
    data = tmp_path / "data"
    with one_torch_thread():
        assert run_build(small_config(data), [photos], show_progress=False).new == 12
    engine = SearchEngine.open(small_config(data))
    query = str((photos / "scikit-image__coffee.jpg").resolve())
    before = _neighbours(engine, query)
    assert len(before) == 12
    _write_noise(photos / "new", 12)

    build = ["build", str(photos), "--data-dir", str(data), *SMALL, "--batch-size", "4", "--workers", "0", "--json"]
    with paused_writer(tmp_path / "calls.log", "commit", 3, build) as writer:
        # The writer holds SQLite's write lock: its transaction has rows that are not committed.
        with contextlib.closing(sqlite3.connect(data / "catalog.sqlite", timeout=0)) as connection:
            committed = {path for (path,) in connection.execute("SELECT path FROM images WHERE status = 'indexed'")}
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                connection.execute("BEGIN IMMEDIATE")
        assert 12 <= len(committed) < 24
        during = _neighbours(engine, query)
        assert {path for path, _ in during} == committed  # exactly the committed photos, no more, no fewer
        assert [hit for hit in during if hit[0] in dict(before)] == before  # the old ones score as before
        by_upload = engine.search_image((photos / "scikit-image__rocket.jpg").read_bytes(), 3)
        assert by_upload[0].label == "exact" and by_upload[0].path.endswith("scikit-image__rocket.jpg")

        app = open_app(data, monkeypatch)
        app.radio(key="search-source").set_value("Pick an indexed photo").run()
        app.text_input(key="search-name").input("coffee").run()
        assert not app.exception
        assert f"{len(committed)} images (0 failed)" in app.caption[0].value
        assert len([c for c in app.caption if c.value.startswith("#")]) == min(20, len(committed))

        with pytest.raises(BuildLockedError, match=rf"indexer build pid {writer.pid}"):
            run_build(small_config(data), [photos], show_progress=False)
        refused = subprocess.run(
            [sys.executable, "-m", "indexer", "reindex", "--data-dir", str(data)],
            env=harness_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 2
        assert f"is being written by indexer build pid {writer.pid}" in refused.stderr
        assert "searches keep working" in refused.stderr
    _, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    after = _neighbours(engine, query)  # the engine follows the build's commit
    assert len(after) == 24

    # A reindex frozen after writing its new index file to a temporary name: searches are unchanged.
    with paused_writer(tmp_path / "calls.log", "index-write", 1, ["reindex", "--data-dir", str(data)]) as reindex:
        assert _neighbours(engine, query) == after
    reindex.communicate(timeout=600)
    assert reindex.returncode == 0
    assert _neighbours(engine, query) == after
    engine.close()
