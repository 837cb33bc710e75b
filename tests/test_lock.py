"""One writer per collection: a second build is refused at once; a killed build leaves no stale lock
(a lock file for SQLite, an advisory lock in the database for PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.lock import LOCK_FILE, BuildLockedError, exclusive_writer
from indexer.pipeline import run_build
from tests.conftest import small_config

HOLD_LOCK = """
import sys, time
from pathlib import Path
from core.lock import exclusive_writer
with exclusive_writer(Path(sys.argv[1]), "test holder", sys.argv[2] if len(sys.argv) > 2 else None):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_while_the_first_runs(photo_dir: Path, tmp_path: Path, db_url: str | None) -> None:
    data = tmp_path / "data"
    config = small_config(data, db_url)
    catalog_args = [] if db_url is None else ["--db-url", db_url]
    assert run_build(config, [photo_dir], show_progress=False).new == 12
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(data), *([] if db_url is None else [db_url])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        with pytest.raises(BuildLockedError, match=r"test holder pid \d+"):
            run_build(config, [photo_dir], show_progress=False)
        assert time.perf_counter() - started < 30  # refused at once, not after waiting
        cli = subprocess.run(
            [sys.executable, "-m", "indexer", "reindex", "--data-dir", str(data), *catalog_args],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 2 and "is being written by test holder" in cli.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock went with it (the server ends a dead client's session), and the next
    # build runs.
    assert (data / LOCK_FILE).exists() == (db_url is None)
    assert run_build(config, [photo_dir], show_progress=False).unchanged == 12


def test_the_lock_is_released_after_the_block(tmp_path: Path) -> None:
    with exclusive_writer(tmp_path, "first"):
        pass
    with exclusive_writer(tmp_path, "second"):
        assert "second pid" in (tmp_path / LOCK_FILE).read_text()
