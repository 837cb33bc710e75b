"""The catalog's core tables as SQLAlchemy models: photos, their patch grids, provenance and revision.

The satellite tables (calibrations, duplicate decisions, vector makers) are declared on the same
:class:`Base` by the modules that use them. The schema itself is made by the Alembic migrations
(:mod:`core.catalog.schema`); these models must match it, which opening a catalog checks.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.catalog.paths import FsPath, MessageText
from core.photo_metadata import MAX_TEXT

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6
STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"


class Base(DeclarativeBase):
    # Times are stored in UTC; PostgreSQL keeps the zone (timestamptz), SQLite stores the UTC wall time.
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012 - SQLAlchemy reads it once


class ImageRecord(Base):
    """One photo file. ``id`` is also its FAISS vector id."""

    __tablename__ = "images"
    # AUTOINCREMENT: SQLite never hands a deleted id to a new file, so an id seen once (in a link, a
    # CSV export, a FAISS file) never comes to mean another photo.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - SQLAlchemy reads it once

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None]
    height: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), index=True)
    error_reason: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(MessageText)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Catalog revision at which ``embedding`` was last written: the FAISS sync re-adds newer ones.
    vector_revision: Mapped[int | None] = mapped_column(BigInteger)
    # What the header says (schema 5, core.photo_metadata). The EXIF capture time is the camera's wall
    # clock without a zone (EXIF rarely records one), so it is kept naive rather than made up as UTC.
    capture_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    camera_make: Mapped[str | None] = mapped_column(String(MAX_TEXT))
    camera_model: Mapped[str | None] = mapped_column(String(MAX_TEXT))
    file_format: Mapped[str | None] = mapped_column(String(32))
    # The photo_metadata.METADATA_VERSION that read the four columns above; 0 = never read (rows from
    # before schema 5): the next build reads their headers, without a model pass.
    metadata_version: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PatchGridRecord(Base):
    """A photo's pooled patch grid (``grid x grid`` cells of ``dim``, stored as :mod:`core.grid_codes`
    codes): the source of the patch index and of the re-ranking of region queries. Deleted with its photo."""

    __tablename__ = "patch_grids"

    image_id: Mapped[int] = mapped_column(Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    grid: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ProvenanceRecord(Base):
    """How every vector in this catalog was made. One row."""

    __tablename__ = "provenance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    catalog_id: Mapped[str] = mapped_column(String(36))
    schema_version: Mapped[int]
    model: Mapped[str] = mapped_column(String(200))
    weights_kind: Mapped[str] = mapped_column(String(16))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    weights_source: Mapped[str] = mapped_column(Text)
    image_size: Mapped[int]
    dim: Mapped[int]
    preprocessing: Mapped[str] = mapped_column(String(200))
    patch_grid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime]


class CatalogState(Base):
    """The revision counter, bumped by every committed batch. One row."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)

