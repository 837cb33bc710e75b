"""``python -m search`` end to end on a small real index built with random weights: in subprocesses where the
process boundary is under test (JSON on stdout, exit codes, no traceback), as a function elsewhere."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from indexer.pipeline import run_build
from search.cli import main as search_main
from tests.conftest import PHOTOS, call_in_process, small_config

pytestmark = pytest.mark.slow


def _search(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "search", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


Search = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def search(capsys: pytest.CaptureFixture[str]) -> Search:
    """``python -m search`` called as a function, with :func:`_search`'s result shape."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return call_in_process(search_main, capsys, args, cwd)

    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search-cli")
    shutil.copytree(PHOTOS, root / "photos")
    shutil.copy(PHOTOS / "scikit-image__coffee.jpg", root / "photos" / "coffee-copy.jpg")
    run_build(small_config(root / "data"), [root / "photos"], show_progress=False)
    return root


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_query_json_and_table(built: Path, search: Search) -> None:
    data = str(built / "data")
    query = built / "photos" / "scikit-image__rocket.jpg"
    payload = _json(_search("query", str(query), "-k", "3", "--data-dir", data, "--json", cwd=built))
    assert payload["query"] == str(query.resolve())
    first = payload["results"][0]
    assert {"rank", "id", "path", "score", "label", "width", "height"} <= set(first)
    assert (first["rank"], first["path"], first["label"]) == (1, str(query.resolve()), "exact")
    assert first["score"] >= 0.99 and len(payload["results"]) == 3

    table = search("query", str(query), "-k", "2", "--data-dir", data, cwd=built)
    assert table.returncode == 0
    assert "rank" in table.stdout and "exact" in table.stdout and "RANDOM weights" in table.stderr


def test_similar_by_id_and_under(built: Path, search: Search) -> None:
    data = str(built / "data")
    payload = _json(
        search("similar", str(built / "photos" / "scikit-image__coffee.jpg"), "--data-dir", data, "--json", cwd=built)
    )
    assert payload["results"][0]["path"].endswith("coffee-copy.jpg")
    assert payload["results"][0]["label"] == "exact"
    by_id = _json(
        search("similar", str(payload["results"][0]["id"]), "-k", "1", "--data-dir", data, "--json", cwd=built)
    )
    assert by_id["results"][0]["path"].endswith("scikit-image__coffee.jpg")


def test_duplicates_csv_and_json(built: Path, search: Search) -> None:
    data = str(built / "data")
    result = search("duplicates", "--threshold", "0.99", "--data-dir", data, "--csv", cwd=built)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and {Path(r["path"]).name for r in rows} == {"scikit-image__coffee.jpg", "coffee-copy.jpg"}
    assert [r["original"] for r in rows] == ["1", "0"] and rows[1]["exact"] == "1"
    payload = _json(search("duplicates", "--threshold", "0.99", "--data-dir", data, "--json", cwd=built))
    assert payload["threshold"] == 0.99 and [g["size"] for g in payload["groups"]] == [2]


def test_lookup_writes_csv(built: Path, tmp_path: Path, search: Search) -> None:
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(PHOTOS / "scikit-image__moon.jpg", queries / "moon.jpg")
    (queries / "junk.png").write_text("<html></html>")
    out = tmp_path / "matches.csv"
    result = search("lookup", str(queries), "-k", "2", "--csv", str(out), "--data-dir", str(built / "data"), cwd=built)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    moon = [r for r in rows if r["query"].endswith("moon.jpg")]
    assert [r["rank"] for r in moon] == ["1", "2"] and moon[0]["label"] == "exact"
    junk = [r for r in rows if r["query"].endswith("junk.png")]
    assert len(junk) == 1 and "not-an-image" in junk[0]["error"]


def test_errors_are_messages(built: Path, tmp_path: Path, search: Search) -> None:
    missing = search("query", str(PHOTOS / "scikit-image__moon.jpg"), "--data-dir", str(tmp_path / "none"), cwd=built)
    assert missing.returncode == 2 and "build an index first" in missing.stderr
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    unreadable = _search("query", str(bad), "--data-dir", str(built / "data"), cwd=built)
    assert unreadable.returncode == 2 and "not-an-image" in unreadable.stderr and "Traceback" not in unreadable.stderr
    unknown = search("similar", "/not/indexed.jpg", "--data-dir", str(built / "data"), cwd=built)
    assert unknown.returncode == 2 and "not an indexed photo" in unknown.stderr


def test_region_json_carries_boxes(built: Path, search: Search) -> None:
    query = built / "photos" / "scikit-learn__flower.jpg"
    payload = _json(
        search(
            "region",
            str(query),
            "--box",
            "0,0,320,427",
            "-k",
            "2",
            "--json",
            "--heatmaps",
            "--data-dir",
            str(built / "data"),
            cwd=built,
        )
    )
    assert payload["query"] == str(query.resolve()) and len(payload["box"]) == 4
    first = payload["results"][0]
    assert first["path"] == str(query.resolve()) and first["rank"] == 1
    x0, y0, x1, y1 = first["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 427 and x1 <= 400  # the left half, where it was cut
    assert len(first["heatmap"]) == 4 and len(first["heatmap"][0]) == 4
    bad = search("region", str(query), "--box", "5,5,1,1", "--data-dir", str(built / "data"), cwd=built)
    assert bad.returncode == 2 and "x0 < x1" in bad.stderr
