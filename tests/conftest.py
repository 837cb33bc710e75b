"""Shared fixtures: a few real photos, a small test config, the real network with random weights, and the
catalog database (``db_url``: SQLite in the data dir, then a throwaway PostgreSQL server)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from indexer.config import LoupeConfig, with_overrides
from indexer.encoder import LoadedModel, load_model
from indexer.settings import ENVIRONMENT_VARIABLES
from tests.pg_server import REQUIRE_ENV, PostgresServer, ServerUnavailableError

DATA = Path(__file__).parent / "data"
PHOTOS = DATA / "photos"
TEST_IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def user_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache home for the session: other tools cache there too (fontconfig for Chromium, say), and
    rebuilding their caches for every test would cost seconds."""
    return tmp_path_factory.mktemp("user-cache")


@pytest.fixture(autouse=True)
def hermetic_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, user_cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own per-user data and config folders (XDG_DATA_HOME and XDG_CONFIG_HOME, which
    platformdirs reads on Linux, the OS the suite runs on; subprocesses inherit them), the session's cache
    folder, and no LOUPE_CONFIG / LOUPE_DATA_DIR / LOUPE_DB_URL: the suite never reads the developer's
    settings nor writes into their data dir. Returns the folder holding the data and config homes."""
    home = tmp_path_factory.mktemp("user-dirs")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache_home))
    for variable in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return home


def call_in_process(
    main: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str], args: Sequence[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A CLI's ``main(args)`` called as a function in ``cwd``, with a subprocess's result shape.

    Each ``python -m ...`` start costs the suite 5-10 s of imports (torch, birder and what birder imports),
    so tests cross the process boundary where it is under test and call ``main`` elsewhere.
    """
    capsys.readouterr()
    with contextlib.chdir(cwd):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors, which end a real process the same way
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def small_config(data_dir: Path, db_url: str | None = None, **overrides: Any) -> LoupeConfig:
    """The real model with random weights at a small input size, in-process decoding, on the CPU.
    ``db_url`` None: the default SQLite catalog in the data dir."""
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "db_url": db_url,
        "model.weights": "random",
        "model.image_size": TEST_IMAGE_SIZE,
        "runtime.device": "cpu",
        "runtime.batch_size": 4,
        "runtime.workers": 0,
    }
    settings.update(overrides)
    return with_overrides(LoupeConfig(), settings)


@pytest.fixture()
def photo_dir(tmp_path: Path) -> Path:
    """A private copy of the test photos, safe to move, touch and delete."""
    target = tmp_path / "photos"
    shutil.copytree(PHOTOS, target)
    return target


@pytest.fixture(scope="session")
def random_model() -> LoadedModel:
    config = small_config(Path("unused"))
    return load_model(config.model, torch.device("cpu"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | str]:
    """A PostgreSQL server for the whole run, or why none could be started (a string)."""
    try:
        server = PostgresServer()
    except (ServerUnavailableError, OSError) as error:
        yield f"no PostgreSQL server could be started: {error}"
        return
    yield server
    server.stop()


def new_postgres_database(request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server; skip (or fail, with LOUPE_REQUIRE_POSTGRES=1) without one."""
    server = request.getfixturevalue("postgres_server")
    if isinstance(server, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{server} ({REQUIRE_ENV}=1)")
        pytest.skip(server)
    return server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """The catalog of a test: None for SQLite in the data dir, else a fresh PostgreSQL database's URL."""
    return None if request.param == "sqlite" else new_postgres_database(request)


def serve_ui_at(monkeypatch: pytest.MonkeyPatch, address: str | None) -> None:
    """Make the app under ``AppTest`` see ``address`` as Streamlit's ``server.address``."""
    import streamlit as st

    real_get_option = st.get_option

    def get_option(key: str) -> Any:
        return address if key == "server.address" else real_get_option(key)

    monkeypatch.setattr(st, "get_option", get_option)


@pytest.fixture(autouse=True)
def ui_served_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AppTest`` starts no server, so ``server.address`` would be whatever the working folder's
    ``.streamlit/config.toml`` says, and with none Streamlit's default (every interface), which the app
    refuses. Loopback, wherever pytest is started; the tests of that refusal set their own."""
    serve_ui_at(monkeypatch, "127.0.0.1")
