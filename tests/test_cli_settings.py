"""The commands find the collection the same way from any working directory (flags, LOUPE_* variables, a
config file, the ./loupe-data of earlier versions, the per-user data dir), ``status`` says which and why,
and ``build --exclude`` leaves files out: as functions, and in one subprocess where the environment has to
cross the process boundary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.locations import user_data_dir, user_models_dir
from indexer.cli import main as indexer_main
from search.cli import main as search_main
from tests.conftest import TEST_IMAGE_SIZE, call_in_process

pytestmark = pytest.mark.slow

SMALL = ["--weights", "random", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu", "--workers", "0"]


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_command_finds_the_collection_from_anywhere(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()

    def indexer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return call_in_process(indexer_main, capsys, args, cwd)

    def search(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return call_in_process(search_main, capsys, args, cwd)

    # Nothing named: the per-user data dir, never the working directory.
    assert _json(indexer("build", str(photo_dir), *SMALL, "--json", cwd=work))["new"] == 12
    assert (user_data_dir() / "catalog.sqlite").is_file() and list(work.iterdir()) == []
    status = _json(indexer("status", "--json", cwd=elsewhere))
    assert status["data_dir"] == str(user_data_dir())
    assert status["data_dir_source"] == "per-user default"
    assert status["models_dir"] == str(user_models_dir())
    assert status["models_dir_source"] == "per-user default"
    assert (status["config_file"], status["config_file_source"]) == (None, "default")
    assert status["catalog_source"] == "default"

    # An index in ./loupe-data (where earlier versions built it) is found there, and the command says so.
    legacy = work / "loupe-data"
    shutil.move(user_data_dir(), legacy)
    human = indexer("status", cwd=work)
    assert human.returncode == 0, human.stderr
    assert f"data dir     {legacy} (legacy folder)" in human.stdout.splitlines()
    assert "images       12 (12 indexed, 0 failed)" in human.stdout
    assert human.stderr.startswith(f"note: using the data dir {legacy}")

    # LOUPE_DATA_DIR reaches a real process started in an unrelated folder.
    env_status = subprocess.run(
        [sys.executable, "-m", "indexer", "status", "--json"],
        cwd=elsewhere,
        env={**os.environ, "LOUPE_DATA_DIR": str(legacy)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (_json(env_status)["data_dir"], _json(env_status)["data_dir_source"]) == (str(legacy), "environment")
    assert env_status.stderr == ""  # named, so no note

    # ... and search, which resolves its settings the same way.
    monkeypatch.setenv("LOUPE_DATA_DIR", str(legacy))
    query = photo_dir / "scikit-image__coffee.jpg"
    found = _json(search("query", str(query), "-k", "2", "--json", cwd=elsewhere))
    assert found["results"][0]["path"] == str(query.resolve())
    monkeypatch.delenv("LOUPE_DATA_DIR")

    # A config file named by LOUPE_CONFIG, its relative data_dir taken from its own folder.
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "loupe.yaml").write_text(f"data_dir: {Path('..') / 'work' / 'loupe-data'}\n", encoding="utf-8")
    monkeypatch.setenv("LOUPE_CONFIG", str(settings / "loupe.yaml"))
    from_file = _json(indexer("status", "--json", cwd=elsewhere))
    assert Path(from_file["data_dir"]) == legacy and from_file["data_dir_source"] == "config file"
    assert from_file["config_file"] == str(settings / "loupe.yaml")
    assert from_file["config_file_source"] == "environment"
    found = _json(search("query", str(query), "-k", "1", "--json", cwd=elsewhere))
    assert found["results"][0]["path"] == str(query.resolve())
    # The flag beats both.
    flagged = indexer("status", "--data-dir", str(tmp_path / "nothing"), cwd=elsewhere)
    assert flagged.returncode == 2 and "nothing" in flagged.stderr


def test_build_exclude_leaves_files_out_and_drops_indexed_ones(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def indexer(*args: str) -> subprocess.CompletedProcess[str]:
        return call_in_process(indexer_main, capsys, args, tmp_path)

    thumbnails = photo_dir / "2020" / "thumbnails"
    thumbnails.mkdir(parents=True)
    for name in ("scikit-image__moon.jpg", "scikit-image__rocket.jpg"):
        shutil.move(photo_dir / name, thumbnails / name)
    data = ["--data-dir", str(tmp_path / "data")]
    first = _json(indexer("build", str(photo_dir), *data, *SMALL, "--json"))
    assert (first["new"], first["excluded"]) == (12, 0)

    second = _json(indexer("build", str(photo_dir), *data, *SMALL, "--exclude", "*/thumbnails/*", "--json"))
    assert (second["scanned"], second["unchanged"], second["excluded"], second["removed"]) == (10, 10, 2, 0)
    status = _json(indexer("status", *data, "--json"))
    assert (status["images"], status["vectors"]) == (10, 10)

    # A pattern in the config file, and the human summary's count.
    (tmp_path / "config.yaml").write_text("scan:\n  exclude: ['*/2020/']\n", encoding="utf-8")
    third = indexer("build", str(photo_dir), *data, *SMALL, "--exclude", "*/lxqt-themes__drop.jpg")
    assert third.returncode == 0, third.stderr
    assert "excluded 1 (left the catalog)" in third.stdout
    assert "scanned 9 files" in third.stdout

    # Without the patterns they come back.
    (tmp_path / "config.yaml").unlink()
    fourth = _json(indexer("build", str(photo_dir), *data, *SMALL, "--json"))
    assert (fourth["new"], fourth["unchanged"], fourth["excluded"]) == (3, 9, 0)
