"""The catalog store: opening a catalog database, its engine, and the provenance of the whole index.

The catalog is the source of truth. Every embedding lives here, so the FAISS files are derived data that
:mod:`core.index` can always rebuild. Work is committed in batches, each in one transaction
that also bumps the catalog ``revision``; the FAISS files record the revision they reflect, so a reader
can tell at once whether they are current.

:class:`Catalog` composes the reads (:mod:`core.catalog.reads`), the vector and grid reads
(:mod:`core.catalog.vectors`) and the writes (:mod:`core.catalog.writes`); this module opens it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from core.catalog.reads import PhotoReads
from core.catalog.records import Provenance
from core.catalog.schema import require_current, upgrade
from core.catalog.tables import SCHEMA_VERSION, Base, CatalogState, ProvenanceRecord
from core.catalog.urls import error_without_password, redact_url
from core.catalog.vectors import VectorReads
from core.catalog.writes import CatalogWrites
from core.errors import CatalogError, ProvenanceMismatchError

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets searches read the last committed state while a build writes; NORMAL sync in WAL mode keeps
    # every committed transaction through a process kill (only an OS crash may lose the last few).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Catalog(PhotoReads, VectorReads, CatalogWrites):
    """Access to one catalog database. Open with :meth:`open`; thread-safe (a session per call)."""

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Catalog:
        """Open the catalog at a SQLAlchemy URL (SQLite or PostgreSQL).

        ``create`` (writers): create the catalog, or upgrade an older one with its migrations. Without it
        (readers) a missing catalog, or one that needs an upgrade, is a :class:`CatalogError` that says
        which command to run: a search never changes a schema, nor leaves an empty SQLite file behind.
        """
        try:
            parsed = make_url(url)
        except (SQLAlchemyError, ValueError) as error:
            raise CatalogError(f"not a database URL: {redact_url(url)}") from error
        shown = redact_url(url)
        if parsed.get_backend_name() == "sqlite" and not create:
            database = parsed.database or ""
            if database in ("", ":memory:") or not Path(database).exists():
                raise CatalogError(
                    f"no catalog at {database or shown}: build an index first (python -m indexer build PHOTOS)"
                )
        try:
            if create:
                upgrade(url, shown)
            engine = _engine(url)
            if not create:
                require_current(engine, shown)
            _check_schema(engine, shown)
        except SQLAlchemyError as error:
            raise CatalogError(f"cannot open catalog {shown}: {error_without_password(error, parsed)}") from error
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # Provenance ----------------------------------------------------------------------------------

    def provenance(self) -> Provenance | None:
        with self.session() as session:
            row = session.get(ProvenanceRecord, 1)
            if row is None:
                return None
            return Provenance(
                model=row.model,
                weights_kind=row.weights_kind,
                weights_sha256=row.weights_sha256,
                weights_source=row.weights_source,
                image_size=row.image_size,
                dim=row.dim,
                preprocessing=row.preprocessing,
                patch_grid=row.patch_grid,
                schema_version=row.schema_version,
                catalog_id=row.catalog_id,
            )

    def ensure_provenance(self, wanted: Provenance) -> Provenance:
        """Record ``wanted`` in a new catalog, or check an existing catalog was built the same way.

        Vectors from another model, other weights or another image size live in another space: adding
        them would make every search silently wrong, so a mismatch is refused (rclip's db.py does the
        same for its model name).
        """
        existing = self.provenance()
        if existing is not None:
            problems = existing.differences(wanted)
            if problems:
                raise ProvenanceMismatchError(
                    "this catalog was built differently; refusing to mix vectors:\n  "
                    + "\n  ".join(problems)
                    + "\nUse another --data-dir (or --db-url) for a new index, or rerun with the catalog's settings."
                )
            return existing
        with self.session() as session, session.begin():
            record = ProvenanceRecord(
                id=1,
                catalog_id=str(uuid.uuid4()),
                schema_version=SCHEMA_VERSION,
                model=wanted.model,
                weights_kind=wanted.weights_kind,
                weights_sha256=wanted.weights_sha256,
                weights_source=wanted.weights_source,
                image_size=wanted.image_size,
                dim=wanted.dim,
                preprocessing=wanted.preprocessing,
                patch_grid=wanted.patch_grid,
                created_at=_now(),
            )
            session.add(record)
            session.add(CatalogState(id=1, revision=0))
        created = self.provenance()
        if created is None:  # pragma: no cover - the row was just committed
            raise CatalogError("provenance row vanished right after it was written")
        return created


def _engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A pool of connections (sessions are per call, so threads each borrow their own); pre-ping so a
    # long-running UI survives a database restart instead of failing its next query.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _check_schema(engine: Engine, shown_url: str) -> None:
    """After the migrations, every table and column the models use must be there: anything else is a
    database that is not (only) a Loupe catalog."""
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            raise CatalogError(f"{shown_url} is not a Loupe catalog: it has no table {table.name}")
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = sorted(column.name for column in table.columns if column.name not in present)
        if missing:
            raise CatalogError(
                f"{shown_url} is not a Loupe catalog of this version: table {table.name} lacks {', '.join(missing)}"
            )
