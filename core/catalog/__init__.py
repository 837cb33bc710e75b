"""The catalog: one row per photo file, its embedding and patch grid, and the provenance of the whole index.

The catalog is the source of truth; the FAISS files are derived from it (:mod:`core.index`).
Importers take the names below from ``core.catalog``; the modules that hold them:

- :mod:`~core.catalog.store`: :class:`Catalog`, opening a catalog (engine, SQLite pragmas, schema check)
  and its provenance; it composes :mod:`~core.catalog.reads` (photo rows), :mod:`~core.catalog.vectors`
  (embeddings and patch grids) and :mod:`~core.catalog.writes` (a build's outcomes), all on
  :mod:`~core.catalog.sessions`.
- :mod:`~core.catalog.tables`: the ORM tables; :mod:`~core.catalog.paths`: file paths as database text.
- :mod:`~core.catalog.records`: the record types reads return and writes take.
- :mod:`~core.catalog.codecs`: vectors and grids as stored bytes.
- :mod:`~core.catalog.schema`: Alembic revisions and :func:`migrate_catalog` (migrations: ``core/migrations``).
- :mod:`~core.catalog.urls`: database URLs without their passwords.

Stores of their own on the same database, imported from their modules: :mod:`~core.catalog.moves` (rows
that follow a file Loupe moved), :mod:`~core.catalog.calibrations`, :mod:`~core.catalog.decisions`
(duplicate decisions) and :mod:`~core.catalog.metadata` (header backfill).
"""

from core.catalog.codecs import bytes_to_grid, bytes_to_vector, grid_to_bytes, vector_to_bytes
from core.catalog.paths import FsPath, MessageText, path_from_db, path_to_db
from core.catalog.records import (
    Embeddings,
    FailedFile,
    FileOutcome,
    FileState,
    Ids,
    IndexedFile,
    KnownContent,
    PatchGrid,
    PhotoRecord,
    Provenance,
    StoredGrid,
    metadata_values,
)
from core.catalog.schema import migrate_catalog
from core.catalog.store import Catalog
from core.catalog.tables import (
    SCHEMA_VERSION,
    STATUS_FAILED,
    STATUS_INDEXED,
    Base,
    CatalogState,
    ImageRecord,
    PatchGridRecord,
    ProvenanceRecord,
)
from core.catalog.urls import redact_url, url_without_password

__all__ = [
    "SCHEMA_VERSION",
    "STATUS_FAILED",
    "STATUS_INDEXED",
    "Base",
    "Catalog",
    "CatalogState",
    "Embeddings",
    "FailedFile",
    "FileOutcome",
    "FileState",
    "FsPath",
    "Ids",
    "ImageRecord",
    "IndexedFile",
    "KnownContent",
    "MessageText",
    "PatchGrid",
    "PatchGridRecord",
    "PhotoRecord",
    "Provenance",
    "ProvenanceRecord",
    "StoredGrid",
    "bytes_to_grid",
    "bytes_to_vector",
    "grid_to_bytes",
    "metadata_values",
    "migrate_catalog",
    "path_from_db",
    "path_to_db",
    "redact_url",
    "url_without_password",
    "vector_to_bytes",
]
