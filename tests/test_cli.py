"""The indexer CLI end to end on real photos with random weights at a small size: in subprocesses where the
process boundary is under test (exit codes, output streams, signals), as a function elsewhere."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from core.config import ModelConfig
from core.weights import pretrained_file
from indexer.cli import main as indexer_main
from tests.conftest import TEST_IMAGE_SIZE, call_in_process

pytestmark = pytest.mark.slow

# Enough batches of 4 that the kill lands mid-build (the first 20 rows commit within a second or two).
PHOTOS_TO_KILL = 120
SMALL = ["--weights", "random", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu"]


def _indexer(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indexer", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


_subprocess_indexer = _indexer


def _in_process_indexer(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m indexer`` called as a function, with the same result shape as :func:`_indexer`."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return call_in_process(indexer_main, capsys, args, cwd)

    return run


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _catalog(data: Path, db_url: str | None) -> list[str]:
    """The CLI flags that choose the catalog: the data dir, and the database when it is not SQLite there."""
    return ["--data-dir", str(data)] + ([] if db_url is None else ["--db-url", db_url])


def _rows(data: Path, db_url: str | None = None) -> dict[str, bytes]:
    engine = create_engine(db_url or f"sqlite:///{data / 'catalog.sqlite'}")
    try:
        with engine.connect() as connection:
            query = text("SELECT path, embedding FROM images WHERE status = 'indexed'")
            return {path: bytes(embedding) for path, embedding in connection.execute(query)}
    finally:
        engine.dispose()


def test_build_status_rerun_verify_reindex(
    photo_dir: Path,
    tmp_path: Path,
    db_url: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    _indexer = _in_process_indexer(capsys)
    # The SQLite run crosses the process boundary for a build (JSON on stdout, exit 0) and a failing verify
    # (exit 1); every other call is in process: nine interpreter starts would cost the suite half a minute.
    crossing = _subprocess_indexer if db_url is None else _indexer
    first = _json(crossing("build", str(photo_dir), *_catalog(data, db_url), *SMALL, "--json", cwd=tmp_path))
    assert (first["new"], first["embedded"], first["failed"]) == (12, 12, 0)
    assert first["weights"] == "random" and "RANDOM weights" in first["warning"]

    status = _json(_indexer("status", *_catalog(data, db_url), "--json", cwd=tmp_path))
    assert {k: status[k] for k in ("images", "failed", "vectors", "weights", "image_size", "index_type")} == {
        "images": 12,
        "failed": 0,
        "vectors": 12,
        "weights": "random",
        "image_size": TEST_IMAGE_SIZE,
        "index_type": "IDMap2,Flat",
    }
    assert status["model"] == "rope_i_vit_reg1_s16_pn_npn_avg_c1" and status["index_current"] is True

    human = _indexer("status", *_catalog(data, db_url), cwd=tmp_path)
    assert "12 indexed" in human.stdout and "WARNING: built with RANDOM weights" in human.stdout

    second = _json(_indexer("build", str(photo_dir), *_catalog(data, db_url), *SMALL, "--json", cwd=tmp_path))
    assert (second["embedded"], second["unchanged"]) == (0, 12)

    assert _indexer("verify", *_catalog(data, db_url), cwd=tmp_path).returncode == 0
    for faiss_file in (data / "index").glob("*.faiss"):
        faiss_file.unlink()
    broken = crossing("verify", *_catalog(data, db_url), cwd=tmp_path)
    assert broken.returncode == 1 and "cannot read" in broken.stdout
    assert _indexer("reindex", *_catalog(data, db_url), cwd=tmp_path).returncode == 0
    assert _indexer("verify", *_catalog(data, db_url), cwd=tmp_path).returncode == 0


def test_progress_bar_and_human_summary(photo_dir: Path, tmp_path: Path) -> None:
    result = _indexer("build", str(photo_dir), "--data-dir", str(tmp_path / "d"), *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "img/s" in result.stderr  # tqdm's bar, with its rate
    assert "new 12" in result.stdout and "images/s" in result.stdout


class _RefusingProxy(http.server.BaseHTTPRequestHandler):
    """An HTTP(S) proxy that records what it is asked for and refuses it: downloads fail at once, with the
    refusal in their error, whether or not the machine is online."""

    REFUSAL = "loupe tests refuse downloads"
    requests: list[str]

    def do_CONNECT(self) -> None:  # an https:// URL through the proxy
        self.requests.append(f"CONNECT {self.path}")
        self.send_error(503, self.REFUSAL)

    def do_GET(self) -> None:  # an http:// URL through the proxy
        self.requests.append(f"GET {self.path}")
        self.send_error(503, self.REFUSAL)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def refused_downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Route the HTTP(S) of this process's children (urllib reads the *_proxy variables) through a
    :class:`_RefusingProxy` on loopback; yields the requests it refused."""
    requests: list[str] = []
    handler = type("Handler", (_RefusingProxy,), {"requests": requests})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        proxy = f"http://127.0.0.1:{server.server_port}"
        for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, proxy)
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        try:
            yield requests
        finally:
            server.shutdown()
            thread.join()


def test_errors_exit_2_with_a_clear_message(
    photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = pretrained_file(ModelConfig())
    started = time.perf_counter()
    with refused_downloads(monkeypatch) as requests:
        offline = _subprocess_indexer(
            "build", str(photo_dir), "--data-dir", str(tmp_path / "d"), "--image-size", "64", cwd=tmp_path
        )
    # The download was tried, through the refusing proxy: the test holds on a machine that is online.
    assert requests == [f"CONNECT {urlsplit(weights.url).hostname}:443"]
    assert offline.returncode == 2
    assert _RefusingProxy.REFUSAL in offline.stderr
    assert "rope_i_vit_reg1_s16_pn_npn_avg_c1_pe-spatial.pt" in offline.stderr
    assert "4e65e500f2a7d2b11fc28aaa0b1ad4921692780507de014ebc5659e757327fde" in offline.stderr
    assert "Traceback" not in offline.stderr
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "d").exists()

    # The process boundary is covered above; the other messages come from the same main(), in process.
    run = _in_process_indexer(capsys)
    (tmp_path / "config.yaml").write_text("runtime:\n  batchsize: 4\n")
    typo = run("status", cwd=tmp_path)
    assert typo.returncode == 2 and "unknown setting runtime.batchsize" in typo.stderr

    missing = run(
        "status", "--data-dir", str(tmp_path / "never-built"), "--config", str(tmp_path / "none.yaml"), cwd=tmp_path
    )
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr

    nothing = run("status", "--data-dir", str(tmp_path / "never-built"), cwd=photo_dir)
    assert nothing.returncode == 2 and "build an index first" in nothing.stderr

    data = tmp_path / "d2"
    assert run("build", str(photo_dir), "--data-dir", str(data), *SMALL, cwd=photo_dir).returncode == 0
    mixed = run(
        "build", str(photo_dir), "--data-dir", str(data), "--weights", "random", "--image-size", "96", cwd=photo_dir
    )
    assert mixed.returncode == 2 and "refusing to mix" in mixed.stderr


def _noise_photos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        pixels = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=85)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """Generated photos and the rows of one uninterrupted build of them (SQLite), shared by both catalogs."""
    root = tmp_path_factory.mktemp("uninterrupted")
    photos = root / "generated"
    _noise_photos(photos, PHOTOS_TO_KILL)
    reference = root / "reference"
    _json(_indexer("build", str(photos), "--data-dir", str(reference), *SMALL, "--json", cwd=root))
    return photos, _rows(reference)


def test_sigkilled_build_resumes_to_the_uninterrupted_state(
    uninterrupted: tuple[Path, dict[str, bytes]], tmp_path: Path, db_url: str | None
) -> None:
    photos, reference_rows = uninterrupted
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "indexer",
        "build",
        str(photos),
        *_catalog(killed, db_url),
        *SMALL,
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--no-progress",
    ]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if db_url is not None or (killed / "catalog.sqlite").exists():
                try:
                    committed = len(_rows(killed, db_url))
                except SQLAlchemyError:
                    committed = 0  # the tables are not there yet
                if committed >= 20:
                    break
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    at_kill = len(_rows(killed, db_url))
    assert 20 <= at_kill < PHOTOS_TO_KILL

    resumed = _json(_indexer("build", str(photos), *_catalog(killed, db_url), *SMALL, "--json", cwd=tmp_path))
    # Nothing committed before the kill went through the model again.
    assert resumed["embedded"] == PHOTOS_TO_KILL - at_kill
    assert _indexer("verify", *_catalog(killed, db_url), cwd=tmp_path).returncode == 0
    assert _rows(killed, db_url) == reference_rows
