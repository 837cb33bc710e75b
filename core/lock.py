"""One writer per collection: builds and reindexes take an exclusive lock, or are refused at once.

With SQLite the lock is ``flock(2)`` on ``<data dir>/build.lock``: the kernel drops it when its process
ends, however it ends, so a build killed with SIGKILL leaves no stale lock behind (the file stays,
unlocked, and says who held it last). Where there is no ``fcntl`` (Windows) it is ``msvcrt.locking`` on
one byte of the same file, far past the holder's line so that line stays readable; Windows, too, drops
a process's locks when it ends. With PostgreSQL the catalog may be shared by several machines, so
the lock lives in the database: a session-level advisory lock held on a dedicated connection, which the
server drops when that connection ends (process killed, machine gone: once the TCP session times out).
Searches never take either: they read the last committed state.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from core.errors import CatalogError, LoupeError

logger = logging.getLogger(__name__)

LOCK_FILE = "build.lock"
# The advisory lock's key: any fixed 64-bit number, unlikely to clash with another application's locks in
# the same database (advisory locks are per database). These are the bytes "loupe-wr".
ADVISORY_KEY = int.from_bytes(b"loupe-wr", "big") - (1 << 63)
# msvcrt.locking locks a byte range, and a locked range cannot be read by others: lock a byte past the end
# of the holder's line (Windows allows locking beyond the end of a file).
MSVCRT_LOCK_OFFSET = 1 << 20

LockCall = Callable[[int], None]


class BuildLockedError(LoupeError):
    """Another build or reindex is writing to this data dir right now."""


@contextmanager
def exclusive_writer(data_dir: Path, what: str, db_url: str | None = None) -> Iterator[None]:
    """Hold the collection's writer lock for the duration of the block, or raise at once: an advisory
    lock in the database when ``db_url`` is PostgreSQL, else a lock file in ``data_dir``. Either way the
    data dir exists afterwards (the writer puts the index files there)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if db_url is not None and make_url(db_url).get_backend_name() == "postgresql":
        with _advisory_lock(db_url, what):
            yield
    else:
        with _file_lock(data_dir, what):
            yield


def lock_calls() -> tuple[LockCall, LockCall]:
    """This OS's non-blocking exclusive lock and its release, on a file descriptor: ``flock`` where
    ``fcntl`` exists, else ``msvcrt.locking``. The lock raises :class:`BlockingIOError` when it is held."""
    try:
        import fcntl
    except ImportError:
        import msvcrt  # no fcntl: Windows

        def lock_byte(fd: int) -> None:
            os.lseek(fd, MSVCRT_LOCK_OFFSET, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            except OSError as error:  # EACCES or EDEADLOCK: another process holds it
                raise BlockingIOError(error.errno, error.strerror) from error

        def unlock_byte(fd: int) -> None:
            os.lseek(fd, MSVCRT_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]

        return lock_byte, unlock_byte

    def flock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unflock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    return flock, unflock


@contextmanager
def _file_lock(data_dir: Path, what: str) -> Iterator[None]:
    path = data_dir / LOCK_FILE
    lock, unlock = lock_calls()
    with path.open("a+", encoding="utf-8") as handle:
        try:
            lock(handle.fileno())
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
            unlock(handle.fileno())


@contextmanager
def _advisory_lock(db_url: str, what: str) -> Iterator[None]:
    since = datetime.now(UTC).isoformat(timespec="seconds")
    holder = f"{what} pid {os.getpid()} on {socket.gethostname()} since {since}"
    # Its own connection, outside any pool, held for the whole block: the lock lives as long as it does.
    # application_name (at most 63 bytes) is how a refused writer learns who holds the lock.
    engine = create_engine(
        db_url, poolclass=pool.NullPool, connect_args={"application_name": holder.encode()[:63].decode(errors="ignore")}
    )
    shown = make_url(db_url).render_as_string(hide_password=True)
    try:
        try:
            connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as error:
            detail = error.args[0] if error.args else error
            raise CatalogError(f"cannot open catalog {shown} to lock it: {detail}") from error
        with connection:
            taken = connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            if not taken:
                # pg_locks shows a bigint key as its high and low halves, unsigned.
                unsigned = ADVISORY_KEY & 0xFFFF_FFFF_FFFF_FFFF
                who = connection.scalar(
                    text(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                        "AND l.classid::bigint = :high AND l.objid::bigint = :low "
                        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1"
                    ),
                    {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF},
                )
                raise BuildLockedError(
                    f"the catalog at {shown} is being written by "
                    f"{who or 'another process'}; wait for it to finish (searches keep working meanwhile)"
                )
            try:
                yield
            finally:
                try:
                    connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                except SQLAlchemyError as error:
                    # The connection is gone, and the lock with it; don't hide the block's own outcome.
                    logger.warning("could not release the build lock explicitly: %s", error)
    finally:
        engine.dispose()
