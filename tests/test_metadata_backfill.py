"""Photo metadata in the catalog: a build stores it with each photo; a catalog from before schema 5 is
upgraded in place and its next build reads the headers it lacks, without the model and without touching
a vector. On SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from PIL import ExifTags, Image
from sqlalchemy import create_engine, inspect, text

from core.catalog import Catalog, IndexedFile, Provenance, schema
from core.catalog.metadata import backfill_metadata, count_unread, metadata_counts
from core.encoder import Encoder
from core.errors import CatalogError
from indexer.cli import main as indexer_main
from indexer.pipeline import run_build
from tests.conftest import PHOTOS, small_config

TAKEN = datetime(2016, 8, 14, 7, 5, 9)


def camera_jpeg(path: Path, make: str = "FUJIFILM", model: str = "X-T2") -> Path:
    """A JPEG as a camera writes it: make, model and DateTimeOriginal in its EXIF."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = make
    exif[ExifTags.Base.Model] = model
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = TAKEN.strftime("%Y:%m:%d %H:%M:%S")
    with Image.open(PHOTOS / "scikit-image__rocket.jpg") as source:
        source.convert("RGB").save(path, "JPEG", quality=90, exif=exif)
    return path


def _collection(root: Path) -> Path:
    photos = root / "photos"
    photos.mkdir()
    for name in ("scikit-image__coffee.jpg", "scikit-image__moon.jpg"):
        shutil.copy2(PHOTOS / name, photos / name)
    camera_jpeg(photos / "camera.jpg")
    with Image.open(PHOTOS / "scikit-image__astronaut.jpg") as source:
        source.save(photos / "astronaut.png")
    return photos


def _vectors(url: str) -> dict[str, bytes]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT path, embedding FROM images ORDER BY path")).all()
    engine.dispose()
    return {str(path): bytes(data) for path, data in rows}


def _downgrade_to_schema_4(url: str) -> None:
    """The catalog as a schema-4 Loupe left it: migration 0005 undone (its columns and table dropped)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        command.downgrade(schema._config(connection), "0004")
    with engine.connect() as connection:
        columns = {column["name"] for column in inspect(connection).get_columns("images")}
        assert "capture_time" not in columns and "duplicate_decisions" not in inspect(connection).get_table_names()
    engine.dispose()


def test_a_schema_4_catalog_gets_its_metadata_on_the_next_build_without_the_model(
    tmp_path: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = _collection(tmp_path)
    config = small_config(tmp_path / "data", db_url)
    first = run_build(config, [photos], show_progress=False)
    assert first.embedded == 4 and first.metadata_read == 0  # new photos get their metadata as they are indexed
    catalog = Catalog.open(config.resolved_db_url, create=False)
    camera = catalog.photo_by_path(str(photos / "camera.jpg"))
    png = catalog.photo_by_path(str(photos / "astronaut.png"))
    assert camera is not None and png is not None
    assert (camera.file_format, camera.capture_time, camera.camera_make, camera.camera_model) == (
        "JPEG",
        TAKEN,
        "FUJIFILM",
        "X-T2",
    )
    assert (png.file_format, png.capture_time, png.camera_make) == ("PNG", None, None)
    catalog.close()
    before = _vectors(config.resolved_db_url)

    _downgrade_to_schema_4(config.resolved_db_url)
    with pytest.raises(CatalogError, match="schema revision 0004, this Loupe needs 0006"):
        Catalog.open(config.resolved_db_url, create=False)  # readers refuse, as for every upgrade

    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model must not run to fill in metadata")

    monkeypatch.setattr(Encoder, "submit", no_model)
    monkeypatch.setattr(Encoder, "encode", no_model)
    second = run_build(config, [photos], show_progress=False)
    assert (second.embedded, second.model_batches, second.unchanged, second.metadata_read) == (0, 0, 4, 4)
    assert _vectors(config.resolved_db_url) == before  # the same bytes, row by row

    catalog = Catalog.open(config.resolved_db_url, create=False)
    camera = catalog.photo_by_path(str(photos / "camera.jpg"))
    assert camera is not None and (camera.capture_time, camera.camera_make, camera.file_format) == (
        TAKEN,
        "FUJIFILM",
        "JPEG",
    )
    counts = metadata_counts(catalog)
    assert counts == {
        "read": 4,
        "pending": 0,
        "with_capture_time": 1,
        "with_camera": 1,
        "formats": {"JPEG": 3, "PNG": 1},
    }
    catalog.close()

    assert indexer_main(["status", "--data-dir", str(config.data_dir), "--json", *_db(db_url)]) == 0
    assert json.loads(capsys.readouterr().out)["photo_metadata"] == counts
    assert indexer_main(["status", "--data-dir", str(config.data_dir), *_db(db_url)]) == 0
    assert "1 of 4 photos with an EXIF capture date, 1 with a camera; formats: JPEG 3, PNG 1" in capsys.readouterr().out

    third = run_build(config, [photos], show_progress=False)
    assert third.metadata_read == 0  # read once


def _db(db_url: str | None) -> list[str]:
    return [] if db_url is None else ["--db-url", db_url]


def test_backfill_reads_only_files_that_still_hold_what_was_indexed(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    catalog.ensure_provenance(Provenance("m", "random", "0" * 64, "test", image_size=64, dim=4, preprocessing="t"))
    same, changed, gone, junk = (tmp_path / name for name in ("same.jpg", "changed.jpg", "gone.jpg", "junk.jpg"))
    for path in (same, changed, gone):
        camera_jpeg(path)
    junk.write_bytes(b"<html>no longer an image</html>")
    rows = []
    for number, path in enumerate((same, changed, gone, junk)):
        info = path.stat()
        rows.append(
            IndexedFile(
                path=str(path),
                size_bytes=info.st_size,
                mtime_ns=info.st_mtime_ns,
                sha256=f"{number:064x}",
                width=10,
                height=10,
                embedding=np.ones(4, dtype=np.float32),
                metadata=None,  # as rows from before schema 5
            )
        )
    catalog.commit_outcomes(rows)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    changed.write_bytes(buffer.getvalue())  # new bytes since the scan: the next build indexes it again
    gone.unlink()

    assert count_unread(catalog) == 4
    report = backfill_metadata(catalog)
    assert (report.read, report.skipped) == (1, 3)
    photo = catalog.photo_by_path(str(same))
    assert photo is not None and (photo.camera_make, photo.capture_time) == ("FUJIFILM", TAKEN)
    assert count_unread(catalog) == 3  # tried again by the next build
    catalog.close()
