"""Shared fixtures: a few real photos, a small test config, the real network with random weights, the
catalog database (``db_url``: SQLite in the data dir, then a throwaway PostgreSQL server), an indexed
collection and the app on it under ``AppTest``, a record of the files the process opens, and the optional
dependencies that CI requires (``LOUPE_REQUIRE_*``)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
import torch

from core.config import LoupeConfig, with_overrides
from core.image_threads import one_intra_op_thread
from core.model import LoadedModel, load_model
from core.settings import ENVIRONMENT_VARIABLES
from indexer.pipeline import run_build
from tests.pg_server import REQUIRE_ENV, PostgresServer, ServerUnavailableError

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
PHOTOS = DATA / "photos"
TEST_IMAGE_SIZE = 64
# RGB mean and std that are neither birder's "centered" stats (mean = std = 0.5), which the random model and
# the pretrained file declare, nor another preset, and that differ per channel: a test that uses them fails
# against hard-coded constants and against swapped channels.
OTHER_MEAN, OTHER_STD = (0.3, 0.45, 0.6), (0.2, 0.25, 0.3)
APP = REPO / "ui" / "app.py"
RAY_REQUIRE_ENV = "LOUPE_REQUIRE_RAY"


def unavailable(reason: str, require_env: str) -> NoReturn:
    """Skip a test that needs what this machine lacks; fail it where ``require_env=1`` (CI sets it), so a
    missing or broken dependency can never pass CI as a skip."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason} ({require_env}=1)")
    pytest.skip(reason)


def required_module(name: str, require_env: str, install: str) -> ModuleType:
    """``import name``, or :func:`unavailable`: a missing module and one that fails to import (any error,
    not only ``ImportError``: a broken install) alike."""
    try:
        return importlib.import_module(name)
    except Exception as error:
        unavailable(f"{name} cannot be imported ({type(error).__name__}: {error}); {install}", require_env)


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
        unavailable(server, REQUIRE_ENV)
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


# --- an indexed collection and the app on it ---------------------------------------------------------


def indexed_collection(
    root: Path, names: Sequence[str] | None = None, add: Callable[[Path], None] | None = None
) -> tuple[Path, Path]:
    """(photos, data dir) under ``root``: copies of the test photos ``names`` (all of them when None) plus
    whatever ``add`` writes into the photos folder, every one built into the data dir with
    :func:`small_config`."""
    photos = root / "photos"
    photos.mkdir(parents=True)
    for name in sorted(path.name for path in PHOTOS.iterdir()) if names is None else names:
        shutil.copy(PHOTOS / name, photos / name)
    if add is not None:
        add(photos)
    with one_intra_op_thread():
        summary = run_build(small_config(root / "data"), [photos], show_progress=False)
    assert (summary.scanned, summary.failed) == (len(list(photos.iterdir())), 0)
    return photos, root / "data"


def open_app(data_dir: Path, monkeypatch: pytest.MonkeyPatch, config: str = "") -> AppTest:
    """The app under ``AppTest`` on the collection in ``data_dir``, after its first run. ``config`` is the
    text of its config file, which always exists so that no ``./config.yaml`` of the working folder is read
    (one file per text, beside the data dir: tests that share a collection never see each other's)."""
    from streamlit.testing.v1 import AppTest

    path = data_dir.parent / f"app-config-{hashlib.sha256(config.encode()).hexdigest()[:12]}.yaml"
    path.write_text(config, encoding="utf-8")
    monkeypatch.setenv("LOUPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOUPE_CONFIG", str(path))
    return AppTest.from_file(str(APP), default_timeout=120).run()


def captions(at: AppTest) -> list[str]:
    return [caption.value for caption in at.caption]


def result_captions(at: AppTest) -> list[str]:
    """The captions of the results grid ("#1 · 0.93 ...")."""
    return [caption for caption in captions(at) if caption.startswith("#")]


# --- the files the process opens --------------------------------------------------------------------

# Audit hooks cannot be removed: one hook for the session, which records only while a block is open.
_open_records: list[list[str]] = []
_open_hook_installed = False


def _record_open(event: str, args: tuple[Any, ...]) -> None:
    # Python's "open" audit event: open(), io.open, os.open and the import system's reads. args[0] is an
    # int where a file descriptor is wrapped, which opens nothing.
    if event == "open" and _open_records and isinstance(args[0], str | bytes | os.PathLike):
        path = os.path.abspath(os.fsdecode(args[0]))
        for record in _open_records:
            record.append(path)


@contextlib.contextmanager
def opened_files() -> Iterator[list[str]]:
    """The absolute paths of every file the process opens from Python inside the block, in any thread
    (``AppTest`` runs the script in one of its own). Python's opens only: not those of C libraries (SQLite,
    FAISS), which read the catalog and the index files, paths that no user input chooses."""
    global _open_hook_installed
    if not _open_hook_installed:
        sys.addaudithook(_record_open)
        _open_hook_installed = True
    record: list[str] = []
    _open_records.append(record)
    try:
        yield record
    finally:
        _open_records.remove(record)


def opened_outside(opened: Iterable[str], *allowed: Path | str) -> list[str]:
    """The paths in ``opened`` that are neither one of ``allowed`` nor inside one of them."""
    roots = [Path(os.path.abspath(root)) for root in allowed]
    return [path for path in opened if not any(Path(path).is_relative_to(root) for root in roots)]
