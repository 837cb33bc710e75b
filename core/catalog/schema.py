"""The catalog's schema version, kept by Alembic (the migrations live in ``core/migrations``, beside
this package), and :func:`migrate_catalog`, the ``migrate`` command's upgrade.

Writers (``build``, ``migrate``) bring a catalog up to date before they touch it; readers (search, the
UI, ``status``, ``verify``, ``reindex``) never change a schema behind the back of the build that owns the
catalog: an out-of-date catalog is a :class:`CatalogError` that says which command upgrades it.

Catalogs written before Loupe used Alembic have no ``alembic_version`` table. They are recognised by their
tables (``patch_grids`` came with schema 2), stamped with the matching revision, and upgraded from there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, inspect, pool
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from core.catalog.urls import error_without_password, redact_url
from core.errors import CatalogError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parents[1] / "migrations"
UPGRADE_HINT = "run `python -m indexer migrate` (or `python -m indexer build`) to upgrade it"
# What catalogs from before Alembic are stamped with, by the tables they have.
LEGACY_SCHEMA_1 = "0001"
LEGACY_SCHEMA_2 = "0002"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision this Loupe's code expects."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise CatalogError(f"no migrations found in {MIGRATIONS}")
    return head


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def schema_revision(connection: Connection) -> str | None:
    """The catalog's revision: from ``alembic_version``, or recognised from the tables of a catalog written
    before Loupe used Alembic; None for an empty database."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables:
        return MigrationContext.configure(connection).get_current_revision()
    if "images" not in tables:
        return None
    return LEGACY_SCHEMA_2 if "patch_grids" in tables else LEGACY_SCHEMA_1


def _sqlite_transactional_ddl(engine: Engine) -> None:
    """pysqlite runs DDL outside any transaction; a killed migration would leave half a schema. Take the
    transaction into our own hands (SQLAlchemy's documented recipe), with the write lock up front."""

    def no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=30000")

    def begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", no_implicit_transactions)
    event.listen(engine, "begin", begin_immediate)


def upgrade(url: str, shown_url: str) -> tuple[str | None, str]:
    """Create or upgrade the catalog at ``url`` to the head revision, in one transaction.
    Return ``(revision before, revision after)``; ``shown_url`` is the URL without its password."""
    head = head_revision()
    engine = create_engine(url, poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":
        _sqlite_transactional_ddl(engine)
    try:
        with engine.begin() as connection:
            before = schema_revision(connection)
            if before is not None and not _known(before):
                raise CatalogError(_newer(shown_url, before, head))
            config = _config(connection)
            if before is not None and "alembic_version" not in inspect(connection).get_table_names():
                logger.info("stamping a catalog from before migrations at revision %s", before)
                command.stamp(config, before)
            if before != head:
                command.upgrade(config, "head")
                logger.info("catalog %s upgraded from %s to %s", shown_url, before or "empty", head)
    finally:
        engine.dispose()
    return before, head


def require_current(engine: Engine, shown_url: str) -> None:
    """Raise :class:`CatalogError` unless the catalog exists and is at the head revision (read-only)."""
    with engine.connect() as connection:
        current = schema_revision(connection)
    head = head_revision()
    if current is None:
        raise CatalogError(f"no catalog at {shown_url}: build an index first (python -m indexer build PHOTOS)")
    if current == head:
        return
    if not _known(current):
        raise CatalogError(_newer(shown_url, current, head))
    raise CatalogError(
        f"the catalog at {shown_url} has schema revision {current}, this Loupe needs {head}: {UPGRADE_HINT}"
    )


def _newer(shown_url: str, current: str, head: str) -> str:
    return (
        f"the catalog at {shown_url} has schema revision {current}, which this Loupe (revision {head}) does not "
        "know: it was written by a newer Loupe; upgrade Loupe"
    )


def migrate_catalog(url: str) -> tuple[str | None, str]:
    """Upgrade an existing catalog (or an empty PostgreSQL database) to this Loupe's schema; return the
    schema revisions before and after. Builds do the same on their own; this is for upgrading a catalog
    before readers (search, the UI) that refuse an out-of-date one are started."""
    shown = redact_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise CatalogError(f"no catalog at {parsed.database or shown}: nothing to migrate")
    try:
        before, after = upgrade(url, shown)
        if before != after and parsed.get_backend_name() == "sqlite":
            # Give back the pages an upgrade freed (schema 6 shrinks every patch grid ten times), which
            # SQLite otherwise keeps in the file for reuse. Not in the upgrade's transaction: VACUUM cannot be.
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("VACUUM")
            finally:
                engine.dispose()
        return before, after
    except SQLAlchemyError as error:
        raise CatalogError(f"cannot migrate catalog {shown}: {error_without_password(error, parsed)}") from error

