"""One writer per data dir: builds and reindexes take an exclusive lock on ``<data dir>/build.lock``.

The lock is ``flock(2)``: the kernel drops it when its process ends, however it ends, so a build killed
with SIGKILL leaves no stale lock behind (the file stays, unlocked, and says who held it last).
Searches never take it: they read the last committed state.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from indexer.errors import LoupeError

logger = logging.getLogger(__name__)

LOCK_FILE = "build.lock"


class BuildLockedError(LoupeError):
    """Another build or reindex is writing to this data dir right now."""


@contextmanager
def exclusive_writer(data_dir: Path, what: str) -> Iterator[None]:
    """Hold the data dir's writer lock for the duration of the block, or raise at once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BuildLockedError(
                f"{data_dir} is being written by {holder}; wait for it to finish (searches keep working meanwhile)"
            ) from error
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what} pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
