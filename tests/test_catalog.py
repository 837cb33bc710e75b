"""The catalog on SQLite and PostgreSQL (no model): what it stores comes back the same, deletes cascade,
old catalogs are upgraded by migrations, readers never migrate, and passwords stay out of messages."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import create_engine, text

from core import grid_codes
from core.catalog import Catalog, FailedFile, IndexedFile, Provenance, redact_url, schema
from core.errors import CatalogError
from indexer.cli import main as indexer_main

DIM = 8
GRID = 2
PROVENANCE = Provenance(
    model="test-model",
    weights_kind="random",
    weights_sha256="0" * 64,
    weights_source="test",
    image_size=64,
    dim=DIM,
    preprocessing="test",
    patch_grid=GRID,
)


def _url(tmp_path: Path, db_url: str | None) -> str:
    return db_url or f"sqlite:///{tmp_path / 'catalog.sqlite'}"


def _indexed(path: str, seed: int) -> IndexedFile:
    rng = np.random.default_rng(seed)
    return IndexedFile(
        path=path,
        size_bytes=100 + seed,
        mtime_ns=1_700_000_000_000_000_000 + seed,
        sha256=f"{seed:064x}",
        width=640,
        height=480,
        embedding=rng.standard_normal(DIM).astype(np.float32),
        patches=rng.standard_normal((GRID, GRID, DIM)).astype(np.float16),
    )


def test_paths_messages_vectors_and_grids_come_back_the_same(tmp_path: Path, db_url: str | None) -> None:
    catalog = Catalog.open(_url(tmp_path, db_url))
    catalog.ensure_provenance(PROVENANCE)
    latin1 = os.fsdecode(b"/photos/caf\xe9.jpg")  # not UTF-8: a lone surrogate in Python
    paths = ["/photos/b.jpg", "/photos/B.jpg", "/photos/é.jpg", "/photos/100%_a.jpg", latin1]
    indexed = [_indexed(path, seed) for seed, path in enumerate(paths)]
    failed = FailedFile(
        path=os.fsdecode(b"/photos/bad-\xff.jpg"),
        size_bytes=3,
        mtime_ns=1,
        sha256=None,
        reason="empty-file",
        message=os.fsdecode(b"/photos/bad-\xff.jpg is empty\x00, really"),
    )
    revision = catalog.commit_outcomes([*indexed, failed])
    assert revision == catalog.revision() == 1

    ids, revisions = catalog.indexed_ids()
    assert revisions.tolist() == [1] * len(paths)
    by_path = {photo.path: photo for photo in catalog.photos(ids.tolist()).values()}
    assert set(by_path) == set(paths)
    for item in indexed:
        stored = catalog.embedding(by_path[item.path].id, DIM)
        assert stored is not None and np.array_equal(stored, item.embedding)
    patch_ids, _ = catalog.patch_ids()
    grids = {
        int(i): grid
        for chunk_ids, chunk in catalog.patch_grids(patch_ids, DIM)
        for i, grid in zip(chunk_ids, chunk, strict=True)
    }
    for item in indexed:
        # Grids are stored as compact codes: what comes back is the codes' decoding, bit for bit.
        assert item.patches is not None
        expected = grid_codes.decode_grid(grid_codes.encode_grid(item.patches), GRID, DIM)
        assert np.array_equal(grids[by_path[item.path].id], expected)

    # The failure's name comes back as the same bytes; its message too, with the NUL byte made visible.
    assert catalog.failures() == [(failed.path, "empty-file", failed.message.replace("\x00", "\ufffd"))]
    assert os.fsencode(catalog.failures()[0][0]) == b"/photos/bad-\xff.jpg"
    # Byte order (digits, upper case, lower case, then é), as SQLite sorts; not a locale's order.
    in_byte_order = sorted(paths, key=lambda p: p.encode("utf-8", "surrogateescape"))
    assert [p.path for p in catalog.find_photos("/photos/")] == in_byte_order
    assert in_byte_order[:3] == ["/photos/100%_a.jpg", "/photos/B.jpg", "/photos/b.jpg"]
    assert [p.path for p in catalog.find_photos("100%_")] == ["/photos/100%_a.jpg"]  # % and _ are literal
    assert [p.path for p in catalog.find_photos("CAF")] == [latin1]
    catalog.close()


def test_removing_a_photo_removes_its_grid_and_bumps_the_revision(tmp_path: Path, db_url: str | None) -> None:
    catalog = Catalog.open(_url(tmp_path, db_url))
    catalog.ensure_provenance(PROVENANCE)
    catalog.commit_outcomes([_indexed("/p/one.jpg", 1), _indexed("/p/two.jpg", 2)])
    # A photo that fails on its next read loses its vector and its grid.
    catalog.commit_outcomes([FailedFile("/p/two.jpg", 5, 2, None, "truncated", "unexpected end of data")])
    assert catalog.remove_paths(["/p/one.jpg", "/p/never-there.jpg"]) == 1
    assert catalog.revision() == 3
    with catalog.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM patch_grids")) == 0
    assert catalog.counts() == {"images": 1, "indexed": 0, "failed": 1}
    catalog.close()


# An SQLite catalog exactly as Loupe's first release wrote it (schema 1, before migrations), with two rows.
SCHEMA_1 = """
CREATE TABLE images (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL, sha256 VARCHAR(64), width INTEGER, height INTEGER, status VARCHAR(16) NOT NULL,
    error_reason VARCHAR(64), error TEXT, embedding BLOB, vector_revision BIGINT, created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL, UNIQUE (path));
CREATE INDEX ix_images_sha256 ON images (sha256);
CREATE INDEX ix_images_status ON images (status);
CREATE TABLE provenance (
    id INTEGER NOT NULL, catalog_id VARCHAR(36) NOT NULL, schema_version INTEGER NOT NULL,
    model VARCHAR(200) NOT NULL, weights_kind VARCHAR(16) NOT NULL, weights_sha256 VARCHAR(64) NOT NULL,
    weights_source TEXT NOT NULL, image_size INTEGER NOT NULL, dim INTEGER NOT NULL,
    preprocessing VARCHAR(200) NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id));
CREATE TABLE catalog_state (id INTEGER NOT NULL, revision BIGINT NOT NULL, PRIMARY KEY (id));
INSERT INTO provenance VALUES (1, 'c0ffee00-0000-4000-8000-000000000001', 1, 'test-model', 'random',
    '0000000000000000000000000000000000000000000000000000000000000000', 'test', 64, 8, 'test',
    '2026-11-01 10:00:00.000000');
INSERT INTO catalog_state VALUES (1, 7);
INSERT INTO images VALUES (1, '/old/sunset.jpg', 1234, 1700000000000000000, 'aa', 640, 480, 'indexed', NULL,
    NULL, :vector, 7, '2026-11-01 10:00:00.000000', '2026-11-01 10:00:00.000000');
INSERT INTO images VALUES (2, '/old/broken.jpg', 10, 1700000000000000001, 'bb', NULL, NULL, 'failed',
    'truncated', 'unexpected end of data', NULL, NULL, '2026-11-01 10:00:00.000000', '2026-11-01 10:00:00.000000');
"""
OLD_VECTOR = np.arange(DIM, dtype="<f4") / DIM


def _schema_1_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        for statement in SCHEMA_1.split(";"):
            if statement.strip():
                parameters = {"vector": OLD_VECTOR.tobytes()} if ":vector" in statement else {}
                connection.execute(statement, parameters)
    return f"sqlite:///{path}"


def _schema_1_postgres(url: str) -> str:
    """The same catalog on PostgreSQL: migration 0001's tables, the same rows, no alembic_version."""
    engine = create_engine(url)
    with engine.begin() as connection:
        config = schema._config(connection)
        command.upgrade(config, "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        for statement in SCHEMA_1.split(";"):
            if statement.strip().startswith("INSERT"):
                parameters = {"vector": OLD_VECTOR.tobytes()} if ":vector" in statement else {}
                connection.execute(text(statement), parameters)
        # The ids were given by hand: move the sequence past them, as rows inserted by Loupe would have.
        connection.execute(text("SELECT setval('images_id_seq', 2)"))
    engine.dispose()
    return url


def test_a_schema_1_catalog_is_upgraded_in_place(tmp_path: Path, db_url: str | None) -> None:
    url = _schema_1_sqlite(tmp_path / "old.sqlite") if db_url is None else _schema_1_postgres(db_url)

    # Readers refuse, and say what to run; they change nothing.
    needs = r"schema revision 0001, this Loupe needs 0006: run `python -m indexer migrate`"
    with pytest.raises(CatalogError, match=needs):
        Catalog.open(url, create=False)

    catalog = Catalog.open(url)  # a writer (build) migrates
    provenance = catalog.provenance()
    assert provenance is not None
    assert (provenance.schema_version, provenance.patch_grid, provenance.catalog_id) == (
        6,
        0,
        "c0ffee00-0000-4000-8000-000000000001",
    )
    assert catalog.revision() == 7
    assert catalog.counts() == {"images": 2, "indexed": 1, "failed": 1}
    assert catalog.failures() == [("/old/broken.jpg", "truncated", "unexpected end of data")]
    stored = catalog.embedding(1, DIM)
    assert stored is not None and np.array_equal(stored, OLD_VECTOR)
    assert catalog.patch_ids()[0].tolist() == []
    # New rows still get new ids, and the upgraded catalog takes patch grids.
    catalog.ensure_provenance(Provenance(**{**PROVENANCE.__dict__, "patch_grid": 0}))
    catalog.commit_outcomes([_indexed("/old/new.jpg", 3)])
    assert catalog.photo_by_path("/old/new.jpg") is not None
    assert catalog.photo_by_path("/old/new.jpg").id == 3  # type: ignore[union-attr]
    catalog.close()
    with create_engine(url).connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == schema.head_revision()
    Catalog.open(url, create=False).close()  # readers are happy now


def test_a_current_catalog_from_before_migrations_is_read_and_stamped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v2.sqlite'}"
    from core.catalog import Base

    engine = create_engine(url)
    # How Loupe made schema-2 catalogs before it used Alembic: every table of the time, with the columns of
    # the time (those of schema 5 came later).
    later = ("vector_makers", "calibrations", "duplicate_decisions")
    schema_2 = [table for name, table in Base.metadata.tables.items() if name not in later]
    Base.metadata.create_all(engine, tables=schema_2)
    with engine.begin() as connection:
        for column in ("capture_time", "camera_make", "camera_model", "file_format", "metadata_version"):
            connection.execute(text(f"ALTER TABLE images DROP COLUMN {column}"))
    engine.dispose()
    with pytest.raises(CatalogError, match="schema revision 0002, this Loupe needs 0006"):
        Catalog.open(url, create=False)  # recognised as schema 2 by its tables; readers change nothing
    Catalog.open(url).close()  # a writer stamps it 0002 and upgrades it
    with create_engine(url).connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0006"
        assert connection.scalar(text("SELECT count(*) FROM vector_makers")) == 0
        assert connection.scalar(text("SELECT count(*) FROM calibrations")) == 0
    Catalog.open(url, create=False).close()


def test_float16_grids_of_schema_4_are_encoded_in_place(tmp_path: Path, db_url: str | None) -> None:
    url = _url(tmp_path, db_url)
    catalog = Catalog.open(url)
    catalog.ensure_provenance(Provenance(**{**PROVENANCE.__dict__, "dim": 384, "patch_grid": 4}))
    rng = np.random.default_rng(3)
    grids = rng.standard_normal((3, 4, 4, 384)).astype(np.float32)
    grids /= np.linalg.norm(grids, axis=-1, keepdims=True)
    outcomes = [
        IndexedFile(f"/p/{i}.jpg", 1, 1, f"{i:064x}", 8, 8, grids[i, 0, 0], grids[i].astype(np.float16))
        for i in range(3)
    ]
    catalog.commit_outcomes(outcomes)
    catalog.close()
    # Back to schema 4 and its float16 grids, as a catalog of the previous Loupe holds them.
    with create_engine(url).begin() as connection:
        command.downgrade(schema._config(connection), "0004")
        rows = connection.execute(text("SELECT image_id, data FROM patch_grids ORDER BY image_id")).all()
        assert [len(data) for _, data in rows] == [4 * 4 * 384 * 2] * 3
        for image_id, _ in rows:
            original = grids[image_id - 1].astype(np.float16).tobytes()
            connection.execute(
                text("UPDATE patch_grids SET data = :d WHERE image_id = :i"), {"d": original, "i": image_id}
            )
        assert connection.scalar(text("SELECT schema_version FROM provenance")) == 4

    assert indexer_main(["migrate", "--db-url", url, "--data-dir", str(tmp_path)]) == 0
    catalog = Catalog.open(url, create=False)
    provenance = catalog.provenance()
    assert provenance is not None and provenance.schema_version == 6
    count, size = catalog.patch_bytes()
    assert (count, size) == (3, 3 * grid_codes.grid_bytes(4, 384))
    ids, _ = catalog.patch_ids()
    for chunk_ids, chunk in catalog.patch_grids(ids, 384):
        for image_id, decoded in zip(chunk_ids.tolist(), chunk, strict=True):
            original = grids[image_id - 1]
            # Each decoded cell estimates its original's inner products: with itself, 1 to the cosine byte.
            np.testing.assert_allclose((decoded * original).sum(axis=-1), 1.0, atol=3e-3)
            rounded = original.astype(np.float16)
            assert np.array_equal(decoded, grid_codes.decode_grid(grid_codes.encode_grid(rounded), 4, 384))
    catalog.close()


def test_a_catalog_from_a_newer_loupe_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    Catalog.open(url).close()
    with create_engine(url).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for create in (False, True):
        with pytest.raises(CatalogError, match="written by a newer Loupe"):
            Catalog.open(url, create=create)


def test_migrate_command_upgrades_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _schema_1_sqlite(tmp_path / "catalog.sqlite")
    assert indexer_main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "migrate: schema revision 0006 (was 0001)"
    assert indexer_main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "migrate: schema revision 0006"
    assert indexer_main(["migrate", "--data-dir", str(tmp_path / "nothing")]) == 2
    assert "no catalog at" in capsys.readouterr().err


def _closed_port() -> int:
    """A loopback port that was free a moment ago: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_passwords_stay_out_of_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://loupe:s3cret-pw@127.0.0.1:{port}/photos"
    assert redact_url(url) == f"postgresql+psycopg://loupe:***@127.0.0.1:{port}/photos"
    assert redact_url("postgresql+psycopg://loupe:pw0rd@[odd") == "postgresql+psycopg://loupe:***@[odd"
    assert redact_url("not a url at all, pw0rd") == "<unparseable url>"
    small = ["--weights", "random", "--image-size", "64", "--device", "cpu"]
    for command_line in (
        ["status", "--db-url", url],
        ["migrate", "--db-url", url],
        ["build", str(tmp_path), "--db-url", url, "--data-dir", str(tmp_path), *small],
    ):
        assert indexer_main(command_line) == 2
        out, err = capsys.readouterr()
        assert "s3cret-pw" not in out + err
        assert f"cannot open catalog postgresql+psycopg://loupe:***@127.0.0.1:{port}/photos" in err, err
