"""The catalog: one row per photo file, its embedding, and the provenance of the whole index.

The catalog is the source of truth. Every embedding lives here, so the FAISS files are derived data that
:mod:`core.vector_index` can always rebuild. Work is committed in batches, each in one transaction
that also bumps the catalog ``revision``; the FAISS files record the revision they reflect, so a reader
can tell at once whether they are current.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from core import grid_codes, schema
from core.errors import CatalogError, ProvenanceMismatchError
from core.photo_metadata import MAX_TEXT, METADATA_VERSION, PhotoMetadata

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6
STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"

Embeddings = npt.NDArray[np.float32]
# A grid of unit cell vectors: float16 as the model's pooling makes it, float32 as the catalog decodes it.
PatchGrid = npt.NDArray[np.float16] | npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def _now() -> datetime:
    return datetime.now(UTC)


# File names are bytes on POSIX; Python shows undecodable bytes as lone surrogates (U+DC80-U+DCFF),
# which no database can store as text. They are kept as code points U+10FF80-U+10FFFF of the last
# private-use plane instead: reversible, still text, and prefix queries on folders keep working.
_SURROGATE_TO_PRIVATE = {code: code - 0xDC80 + 0x10FF80 for code in range(0xDC80, 0xDD00)}
_PRIVATE_TO_SURROGATE = {private: surrogate for surrogate, private in _SURROGATE_TO_PRIVATE.items()}


def path_to_db(path: str) -> str:
    """A file system path as storable text (see the comment above)."""
    return path.translate(_SURROGATE_TO_PRIVATE)


def path_from_db(text: str) -> str:
    """The file system path back from :func:`path_to_db`."""
    return text.translate(_PRIVATE_TO_SURROGATE)


class FsPath(TypeDecorator[str]):
    """Text column holding a file system path, undecodable bytes included."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_to_db(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_from_db(value)


class MessageText(TypeDecorator[str]):
    """Text column holding a message for people, which may quote an undecodable file name or a NUL byte
    (PostgreSQL text rejects both): names are kept as :class:`FsPath` keeps them, NUL becomes U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_to_db(value).replace("\x00", "\ufffd")

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else path_from_db(value)


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


@dataclass(frozen=True)
class Provenance:
    """What must be equal for two vectors to be comparable."""

    model: str
    weights_kind: str
    weights_sha256: str
    weights_source: str
    image_size: int
    dim: int
    preprocessing: str
    patch_grid: int = 0
    schema_version: int = SCHEMA_VERSION
    catalog_id: str = ""

    def differences(self, other: Provenance) -> list[str]:
        """Human-readable list of the settings that differ (the source path may differ freely)."""
        problems = []
        for name in (
            "model",
            "weights_kind",
            "weights_sha256",
            "image_size",
            "dim",
            "preprocessing",
            "patch_grid",
            "schema_version",
        ):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                problems.append(f"{name}: index has {mine!r}, this run has {theirs!r}")
        return problems


@dataclass(frozen=True)
class FileState:
    """What the catalog knows of a path, enough to decide whether it must be read again."""

    id: int
    size_bytes: int
    mtime_ns: int
    status: str
    sha256: str | None


@dataclass(frozen=True)
class StoredGrid:
    """A patch grid as the catalog stores it: ``grid`` cells per side, ``data`` its stored bytes. Reused
    content carries these bytes to its new row as they are, never decoded and encoded again."""

    grid: int
    data: bytes


@dataclass(frozen=True)
class IndexedFile:
    """A file that was embedded (or whose content's embedding was reused). ``patches``: a fresh grid, or
    a stored one carried over from a row with the same content."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    embedding: Embeddings
    patches: PatchGrid | StoredGrid | None = None
    # None: not read (the next build reads it from the header).
    metadata: PhotoMetadata | None = None


@dataclass(frozen=True)
class FailedFile:
    """A file that could not be indexed, and why."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None
    reason: str
    message: str


FileOutcome = IndexedFile | FailedFile


@dataclass(frozen=True)
class KnownContent:
    """An indexed file whose content (sha256) matched: its embedding and stored patch grid (None: the
    catalog has none for this content) can be reused."""

    id: int
    path: str
    width: int
    height: int
    embedding: Embeddings
    patches: StoredGrid | None = None
    metadata: PhotoMetadata | None = None


@dataclass(frozen=True)
class PhotoRecord:
    """What search results show of an indexed photo. ``capture_time`` (EXIF, camera wall-clock time, no
    zone), ``camera_make``, ``camera_model`` and ``file_format`` (:class:`PhotoMetadata`) are None where
    the file does not say, or its header was not read yet."""

    id: int
    path: str
    width: int
    height: int
    sha256: str
    size_bytes: int
    mtime_ns: int
    capture_time: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    file_format: str | None = None


def _photo(row: ImageRecord) -> PhotoRecord:
    return PhotoRecord(
        id=row.id,
        path=row.path,
        width=row.width or 0,
        height=row.height or 0,
        sha256=row.sha256 or "",
        size_bytes=row.size_bytes,
        mtime_ns=row.mtime_ns,
        capture_time=row.capture_time,
        camera_make=row.camera_make,
        camera_model=row.camera_model,
        file_format=row.file_format,
    )


def metadata_values(metadata: PhotoMetadata | None) -> dict[str, Any]:
    """The ``images`` columns that hold ``metadata`` (None: not read)."""
    known = metadata or PhotoMetadata()
    return {
        "capture_time": known.capture_time,
        "camera_make": known.camera_make,
        "camera_model": known.camera_model,
        "file_format": known.file_format,
        "metadata_version": 0 if metadata is None else METADATA_VERSION,
    }


def _stored_metadata(row: ImageRecord) -> PhotoMetadata | None:
    if row.metadata_version < METADATA_VERSION:
        return None
    return PhotoMetadata(row.file_format, row.capture_time, row.camera_make, row.camera_model)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets searches read the last committed state while a build writes; NORMAL sync in WAL mode keeps
    # every committed transaction through a process kill (only an OS crash may lose the last few).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _row_values(outcome: FileOutcome, revision: int, now: datetime) -> dict[str, Any]:
    """The ``images`` columns an outcome sets (all but ``path`` and ``created_at``)."""
    values: dict[str, Any] = {
        "size_bytes": outcome.size_bytes,
        "mtime_ns": outcome.mtime_ns,
        "sha256": outcome.sha256,
        "updated_at": now,
    }
    if isinstance(outcome, IndexedFile):
        values.update(
            status=STATUS_INDEXED,
            width=outcome.width,
            height=outcome.height,
            error_reason=None,
            error=None,
            embedding=vector_to_bytes(outcome.embedding),
            vector_revision=revision,
            **metadata_values(outcome.metadata),
        )
    else:
        values.update(
            status=STATUS_FAILED,
            width=None,
            height=None,
            error_reason=outcome.reason,
            error=outcome.message,
            embedding=None,
            vector_revision=None,
            **metadata_values(None),
        )
    return values


def _grid_values(grid: PatchGrid | StoredGrid) -> dict[str, Any]:
    """The ``patch_grids`` columns of a fresh grid (encoded here) or a stored one (copied as it is)."""
    if isinstance(grid, StoredGrid):
        return {"grid": grid.grid, "data": grid.data}
    return {"grid": int(grid.shape[0]), "data": grid_to_bytes(grid)}


def vector_to_bytes(vector: Embeddings) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def grid_to_bytes(grid: PatchGrid) -> bytes:
    return grid_codes.encode_grid(grid)


def bytes_to_grid(data: bytes, grid: int, dim: int) -> npt.NDArray[np.float32]:
    try:
        return grid_codes.decode_grid(data, grid, dim)
    except ValueError as error:
        raise CatalogError(str(error)) from error


def bytes_to_vector(data: bytes, dim: int) -> Embeddings:
    vector = np.frombuffer(data, dtype="<f4")
    if vector.shape[0] != dim:
        raise CatalogError(f"stored embedding has {vector.shape[0]} values, expected {dim}")
    return vector.astype(np.float32)


class Catalog:
    """Access to one catalog database. Open with :meth:`open`; thread-safe (a session per call)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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
                schema.upgrade(url, shown)
            engine = _engine(url)
            if not create:
                schema.require_current(engine, shown)
            _check_schema(engine, shown)
        except SQLAlchemyError as error:
            raise CatalogError(f"cannot open catalog {shown}: {_without_password(error, parsed)}") from error
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

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

    # Reads ---------------------------------------------------------------------------------------

    def revision(self) -> int:
        with self.session() as session:
            value = session.scalar(select(CatalogState.revision).where(CatalogState.id == 1))
            return int(value or 0)

    def file_states(self) -> dict[str, FileState]:
        """Every row's change-detection facts, keyed by path."""
        query = select(
            ImageRecord.path,
            ImageRecord.id,
            ImageRecord.size_bytes,
            ImageRecord.mtime_ns,
            ImageRecord.status,
            ImageRecord.sha256,
        )
        with self.session() as session:
            return {
                path: FileState(id=id_, size_bytes=size, mtime_ns=mtime, status=status, sha256=sha)
                for path, id_, size, mtime, status, sha in session.execute(query)
            }

    def indexed_hashes(self) -> set[str]:
        query = select(ImageRecord.sha256).where(ImageRecord.status == STATUS_INDEXED).distinct()
        with self.session() as session:
            return {sha for sha in session.scalars(query) if sha is not None}

    def known_content(self, sha256: str, dim: int, *, need_grid: bool = False) -> KnownContent | None:
        """An indexed row with this content hash, whose embedding (and patch grid) can be reused.

        A row that has a stored grid is preferred; ``need_grid``: None unless one has (the content must
        then go through the model again, so that no photo is committed without its grid)."""
        query = (
            select(ImageRecord, PatchGridRecord)
            .outerjoin(PatchGridRecord, PatchGridRecord.image_id == ImageRecord.id)
            .where(ImageRecord.sha256 == sha256, ImageRecord.status == STATUS_INDEXED)
            .order_by(PatchGridRecord.image_id.is_(None), ImageRecord.id)
            .limit(1)
        )
        with self.session() as session:
            found = session.execute(query).first()
            if found is None:
                return None
            row, grid = found
            if row.embedding is None or row.width is None or row.height is None or (need_grid and grid is None):
                return None
            return KnownContent(
                id=row.id,
                path=row.path,
                width=row.width,
                height=row.height,
                embedding=bytes_to_vector(row.embedding, dim),
                metadata=_stored_metadata(row),
                patches=None if grid is None else StoredGrid(grid.grid, grid.data),
            )

    def photos_without_grid(self) -> list[PhotoRecord]:
        """Indexed photos that have no stored patch grid, by id (a catalog built with patches should have
        none: ``verify`` reports them, the next build recomputes their grids)."""
        query = (
            select(ImageRecord)
            .outerjoin(PatchGridRecord, PatchGridRecord.image_id == ImageRecord.id)
            .where(ImageRecord.status == STATUS_INDEXED, PatchGridRecord.image_id.is_(None))
            .order_by(ImageRecord.id)
        )
        with self.session() as session:
            return [_photo(row) for row in session.scalars(query)]

    def counts(self) -> dict[str, int]:
        query = select(ImageRecord.status, func.count()).group_by(ImageRecord.status)
        with self.session() as session:
            by_status = {status: int(count) for status, count in session.execute(query)}
        return {
            "images": sum(by_status.values()),
            STATUS_INDEXED: by_status.get(STATUS_INDEXED, 0),
            STATUS_FAILED: by_status.get(STATUS_FAILED, 0),
        }

    def failures_by_reason(self) -> dict[str, int]:
        query = (
            select(ImageRecord.error_reason, func.count())
            .where(ImageRecord.status == STATUS_FAILED)
            .group_by(ImageRecord.error_reason)
        )
        with self.session() as session:
            return {str(reason): int(count) for reason, count in session.execute(query)}

    def failures(self, limit: int | None = None) -> list[tuple[str, str, str]]:
        """``(path, reason, message)`` of failed files, by path."""
        query = (
            select(ImageRecord.path, ImageRecord.error_reason, ImageRecord.error)
            .where(ImageRecord.status == STATUS_FAILED)
            .order_by(ImageRecord.path)
            .limit(limit)
        )
        with self.session() as session:
            return [(path, str(reason), str(message)) for path, reason, message in session.execute(query)]

    def indexed_ids(self) -> tuple[Ids, npt.NDArray[np.int64]]:
        """Ids of indexed rows (sorted) and the revision at which each one's vector was written."""
        query = (
            select(ImageRecord.id, ImageRecord.vector_revision)
            .where(ImageRecord.status == STATUS_INDEXED)
            .order_by(ImageRecord.id)
        )
        with self.session() as session:
            rows = session.execute(query).all()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        revisions = np.fromiter((row[1] or 0 for row in rows), dtype=np.int64, count=len(rows))
        return ids, revisions

    def embeddings_for(
        self, ids: Sequence[int] | Ids, dim: int, chunk: int = 2_000
    ) -> Iterator[tuple[Ids, Embeddings]]:
        """Yield ``(ids, vectors)`` chunks for the given indexed ids, in the order given."""
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            found = self.stored_embeddings(part, dim)
            missing = [i for i in part if i not in found]
            if missing:
                raise CatalogError(f"{len(missing)} indexed rows have no stored embedding (first: id {missing[0]})")
            yield np.asarray(part, dtype=np.int64), np.stack([found[i] for i in part])

    def stored_embeddings(self, ids: Sequence[int], dim: int) -> dict[int, Embeddings]:
        """The stored embeddings of those ``ids`` that are indexed now (rows removed meanwhile are absent)."""
        query = select(ImageRecord.id, ImageRecord.embedding).where(
            ImageRecord.id.in_([int(i) for i in ids]), ImageRecord.status == STATUS_INDEXED
        )
        with self.session() as session:
            return {id_: bytes_to_vector(data, dim) for id_, data in session.execute(query) if data is not None}

    def iter_embeddings(self, dim: int, chunk: int = 2_000) -> Iterator[tuple[Ids, Embeddings]]:
        """Every indexed row's embedding, by id, in chunks (keyset pagination: flat memory)."""
        last = 0
        while True:
            query = (
                select(ImageRecord.id, ImageRecord.embedding)
                .where(ImageRecord.status == STATUS_INDEXED, ImageRecord.id > last)
                .order_by(ImageRecord.id)
                .limit(chunk)
            )
            with self.session() as session:
                rows = session.execute(query).all()
            if not rows:
                return
            vectors: list[Embeddings] = []
            for id_, data in rows:
                if data is None:
                    raise CatalogError(f"indexed row {id_} has no stored embedding")
                vectors.append(bytes_to_vector(data, dim))
            yield np.asarray([row[0] for row in rows], dtype=np.int64), np.stack(vectors)
            last = int(rows[-1][0])

    def photos(self, ids: Iterable[int]) -> dict[int, PhotoRecord]:
        """Indexed photos by id (ids that are not indexed photos are left out)."""
        wanted = [int(i) for i in ids]
        found: dict[int, PhotoRecord] = {}
        for start in range(0, len(wanted), 500):
            query = select(ImageRecord).where(
                ImageRecord.id.in_(wanted[start : start + 500]), ImageRecord.status == STATUS_INDEXED
            )
            with self.session() as session:
                found.update({row.id: _photo(row) for row in session.scalars(query)})
        return found

    def photo_by_path(self, path: str) -> PhotoRecord | None:
        query = select(ImageRecord).where(ImageRecord.path == path, ImageRecord.status == STATUS_INDEXED)
        with self.session() as session:
            row = session.scalars(query).first()
            return None if row is None else _photo(row)

    def embedding(self, id_: int, dim: int) -> Embeddings | None:
        query = select(ImageRecord.embedding).where(ImageRecord.id == id_, ImageRecord.status == STATUS_INDEXED)
        with self.session() as session:
            data = session.scalar(query)
        return None if data is None else bytes_to_vector(data, dim)

    def find_photos(self, name_contains: str, limit: int = 50) -> list[PhotoRecord]:
        """Indexed photos whose path contains ``name_contains`` (case-insensitive), by path."""
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(ImageRecord)
            .where(ImageRecord.status == STATUS_INDEXED, ImageRecord.path.ilike(f"%{escaped}%", escape="\\"))
            .order_by(ImageRecord.path)
            .limit(limit)
        )
        with self.session() as session:
            return [_photo(row) for row in session.scalars(query)]

    def patch_ids(self) -> tuple[Ids, npt.NDArray[np.int64]]:
        """Ids of indexed photos that have a stored patch grid (sorted), and their vector revisions."""
        query = (
            select(ImageRecord.id, ImageRecord.vector_revision)
            .join(PatchGridRecord, PatchGridRecord.image_id == ImageRecord.id)
            .where(ImageRecord.status == STATUS_INDEXED)
            .order_by(ImageRecord.id)
        )
        with self.session() as session:
            rows = session.execute(query).all()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        revisions = np.fromiter((row[1] or 0 for row in rows), dtype=np.int64, count=len(rows))
        return ids, revisions

    def stored_grids(self, ids: Sequence[int] | Ids, chunk: int = 256) -> Iterator[tuple[Ids, list[StoredGrid]]]:
        """Yield ``(ids, stored grids)`` chunks for photos that have a stored grid, in the order given."""
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            query = select(PatchGridRecord.image_id, PatchGridRecord.grid, PatchGridRecord.data).where(
                PatchGridRecord.image_id.in_(part)
            )
            with self.session() as session:
                found = {id_: StoredGrid(grid, data) for id_, grid, data in session.execute(query)}
            present = [i for i in part if i in found]
            if present:
                yield np.asarray(present, dtype=np.int64), [found[i] for i in present]

    def patch_grids(
        self, ids: Sequence[int] | Ids, dim: int, chunk: int = 256
    ) -> Iterator[tuple[Ids, npt.NDArray[np.float32]]]:
        """Yield ``(ids, decoded grids [n, g, g, dim])`` chunks for photos that have a stored grid, in the
        order given."""
        for present, stored in self.stored_grids(ids, chunk):
            yield present, np.stack([bytes_to_grid(grid.data, grid.grid, dim) for grid in stored])

    def patch_bytes(self) -> tuple[int, int]:
        """``(stored grids, bytes of their data)``: what the grids cost the catalog, before the database's
        own per-row and per-page overhead."""
        query = select(func.count(), func.coalesce(func.sum(func.length(PatchGridRecord.data)), 0))
        with self.session() as session:
            count, size = session.execute(query).one()
        return int(count), int(size)

    def same_content_ids(self) -> list[list[int]]:
        """Ids of indexed photos that share their bytes (sha256) with another, grouped, ascending."""
        shared = (
            select(ImageRecord.sha256)
            .where(ImageRecord.status == STATUS_INDEXED)
            .group_by(ImageRecord.sha256)
            .having(func.count() > 1)
        )
        query = (
            select(ImageRecord.sha256, ImageRecord.id)
            .where(ImageRecord.status == STATUS_INDEXED, ImageRecord.sha256.in_(shared))
            .order_by(ImageRecord.sha256, ImageRecord.id)
        )
        groups: dict[str | None, list[int]] = {}
        with self.session() as session:
            for sha, id_ in session.execute(query):
                groups.setdefault(sha, []).append(id_)
        return list(groups.values())

    def path_of(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = [int(i) for i in ids]
        with self.session() as session:
            return {
                id_: path
                for id_, path in session.execute(
                    select(ImageRecord.id, ImageRecord.path).where(ImageRecord.id.in_(wanted))
                )
            }

    # Writes --------------------------------------------------------------------------------------

    def commit_outcomes(self, outcomes: Sequence[FileOutcome]) -> int:
        """Insert or update one row per outcome (keyed by path) in one transaction; return the new revision."""
        now = _now()
        with self.session() as session, session.begin():
            state = session.get(CatalogState, 1, with_for_update=True)
            if state is None:
                raise CatalogError("catalog has no provenance yet: call ensure_provenance first")
            state.revision += 1
            revision = state.revision
            latest = {outcome.path: outcome for outcome in outcomes}  # a path given twice: its last outcome
            existing = {
                row.path: row for row in session.scalars(select(ImageRecord).where(ImageRecord.path.in_(list(latest))))
            }
            grids: dict[str, PatchGrid | StoredGrid] = {}
            stale: list[int] = []  # known photos whose stored grid is replaced or dropped
            fresh: list[dict[str, Any]] = []
            for path, outcome in latest.items():
                values = _row_values(outcome, revision, now)
                if isinstance(outcome, IndexedFile) and outcome.patches is not None:
                    grids[path] = outcome.patches
                row = existing.get(path)
                if row is None:
                    fresh.append({"path": path, "created_at": now, **values})
                    continue
                for name, value in values.items():
                    setattr(row, name, value)
                stale.append(row.id)
            ids = {path: row.id for path, row in existing.items()}
            if fresh:
                # New files (every file of a first build) go in as one multi-row INSERT ... RETURNING, without
                # an ORM object per row: 11-12 instead of 15 ms of the build thread's CPU per batch of 8 photos
                # at 224 px (most of the rest is SQLite writing the patch grids' pages).
                inserted = session.execute(insert(ImageRecord).returning(ImageRecord.path, ImageRecord.id), fresh)
                ids.update((path, id_) for path, id_ in inserted)
            session.flush()
            # Replace, not merge: one DELETE and one multi-row INSERT per batch instead of a SELECT per photo
            # (round trips count against a database server).
            if stale:
                session.execute(delete(PatchGridRecord).where(PatchGridRecord.image_id.in_(stale)))
            if grids:
                session.execute(
                    insert(PatchGridRecord),
                    [{"image_id": ids[path], **_grid_values(grid)} for path, grid in grids.items()],
                )
        return revision

    def touch(self, path: str, size_bytes: int, mtime_ns: int) -> None:
        """Record a new size/mtime for a file whose content did not change (its vector stays)."""
        with self.session() as session, session.begin():
            session.execute(
                update(ImageRecord)
                .where(ImageRecord.path == path)
                .values(size_bytes=size_bytes, mtime_ns=mtime_ns, updated_at=_now())
            )

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Delete the rows of files that are gone; return how many. Bumps the revision."""
        if not paths:
            return 0
        removed = 0
        with self.session() as session, session.begin():
            state = session.get(CatalogState, 1, with_for_update=True)
            if state is None:
                raise CatalogError("catalog has no provenance yet")
            for start in range(0, len(paths), 500):
                part = list(paths[start : start + 500])
                result = session.execute(delete(ImageRecord).where(ImageRecord.path.in_(part)))
                removed += int(result.rowcount or 0)  # type: ignore[attr-defined]
            state.revision += 1
        return removed


def migrate_catalog(url: str) -> tuple[str | None, str]:
    """Upgrade an existing catalog (or an empty PostgreSQL database) to this Loupe's schema; return the
    schema revisions before and after. Builds do the same on their own; this is for upgrading a catalog
    before readers (search, the UI) that refuse an out-of-date one are started."""
    shown = redact_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise CatalogError(f"no catalog at {parsed.database or shown}: nothing to migrate")
    try:
        before, after = schema.upgrade(url, shown)
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
        raise CatalogError(f"cannot migrate catalog {shown}: {_without_password(error, parsed)}") from error


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


def _without_password(error: SQLAlchemyError, parsed: URL) -> str:
    """The driver's message, with the password cut out should a driver ever quote its connection string."""
    text = str(error.args[0]) if error.args else str(error)
    if parsed.password:
        text = text.replace(str(parsed.password), "***")
    return text


def url_without_password(url: str) -> str:
    """A database URL that can be written to disk: the password left out (libpq finds it in ~/.pgpass or
    PGPASSWORD when the URL has none)."""
    try:
        parsed = make_url(url)
        bare = URL.create(
            parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
        )
        return bare.render_as_string(hide_password=False)
    except (SQLAlchemyError, ValueError):
        return "<unparseable url>"


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable url>"
