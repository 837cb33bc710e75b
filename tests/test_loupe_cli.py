"""The ``loupe`` command: the subcommands of ``python -m indexer`` and ``python -m search`` and ``loupe ui``
under one parser, with the same flags, output and exit codes; its version; ``loupe ui``'s hand-over to
Streamlit (recorded, never started here: tests/test_ui_serving.py starts a real server); and the wheel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import pytest

import ui.launch
from indexer import cli as indexer_cli
from loupe import cli as loupe_cli
from search import cli as search_cli
from tests.conftest import PHOTOS, TEST_IMAGE_SIZE, call_in_process

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--weights", "random", "--image-size", str(TEST_IMAGE_SIZE), "--device", "cpu", "--workers", "0"]
PHOTO_NAMES = ("scikit-image__coffee.jpg", "scikit-image__rocket.jpg", "scikit-image__moon.jpg")

Main = Callable[[Sequence[str]], int]


@pytest.fixture()
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A CLI's ``main`` called in ``tmp_path`` (``loupe``'s unless another is given)."""

    def call(*args: str, main: Main = loupe_cli.main) -> subprocess.CompletedProcess[str]:
        return call_in_process(main, capsys, args, tmp_path)

    return call


def test_help_lists_every_command_with_its_purpose_and_examples(
    run: Callable[..., subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per command, however wide the terminal running the tests
    result = run("--help")
    assert result.returncode == 0
    commands = result.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    # argparse puts a purpose on the next line when the name is long ("duplicates").
    listed = dict(re.findall(r"^    (\w+)\s+(.+)$", commands, flags=re.MULTILINE))
    expected = [
        "build",
        "status",
        "verify",
        "reindex",
        "migrate",
        "calibrate",
        "query",
        "similar",
        "region",
        "duplicates",
    ]
    assert list(listed) == [*expected, "lookup", "undo", "ui"]
    assert listed == {name: purpose for name, (purpose, _, _) in loupe_cli.COMMANDS.items()}
    assert "--version" in result.stdout
    examples = result.stdout.split("examples:\n", 1)[1]
    assert {line.split()[1] for line in examples.splitlines() if line.startswith("  loupe ")} == set(listed) - {
        "verify",
        "reindex",
        "migrate",
    }


def test_the_commands_are_the_indexer_and_search_commands_themselves() -> None:
    # Reused, not copied: the same parser setup and main functions, so flags and output cannot drift.
    for name, command in {**indexer_cli.COMMANDS, **search_cli.COMMANDS}.items():
        assert loupe_cli.COMMANDS[name] is command
    assert loupe_cli.COMMANDS["ui"][1:] == (ui.launch.setup_ui, ui.launch.main_ui)


def test_version_is_the_installed_distribution_version(run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"loupe {version('loupe')}\n")


def test_same_output_and_exit_codes_as_python_m_indexer_and_search(
    run: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTO_NAMES:
        shutil.copy(PHOTOS / name, photos / name)
    data = ["--data-dir", str(tmp_path / "data")]
    built = run("build", str(photos), *data, *SMALL, "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["new"] == len(PHOTO_NAMES)

    query = str(photos / PHOTO_NAMES[0])
    missing = ["--data-dir", str(tmp_path / "nothing-here")]
    for main, args in [
        (indexer_cli.main, ["status", "--json", *data]),
        (indexer_cli.main, ["verify", *data]),
        (indexer_cli.main, ["status", *missing]),  # error: exit 2, one line on stderr
        (search_cli.main, ["query", query, "-k", "2", "--json", *data]),
        (search_cli.main, ["duplicates", "--csv", *data]),
        (search_cli.main, ["similar", str(tmp_path / "not-indexed.jpg"), *data]),
        (search_cli.main, ["query", query, *missing]),
    ]:
        by_loupe, by_module = run(*args), run(*args, main=main)
        assert (by_loupe.returncode, by_loupe.stdout, by_loupe.stderr) == (
            by_module.returncode,
            by_module.stdout,
            by_module.stderr,
        ), args
    assert run("status", *missing).returncode == 2 and run("status", *missing).stderr.startswith("error: ")
    # argparse's own errors: the same exit code, with loupe's name in the usage line.
    bad = run("query", query, "-k", "0", *data)
    assert bad.returncode == 2 and "usage: loupe query" in bad.stderr and "expected a number >= 1" in bad.stderr


@pytest.fixture()
def streamlit_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """What ``loupe ui`` would run, recorded instead of replacing the test process with Streamlit."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    def record(command: list[str], env: dict[str, str]) -> int:
        calls.append((command, dict(env)))
        return 0

    monkeypatch.setattr(ui.launch, "run_streamlit", record)
    for name in ("LOUPE_DATA_DIR", "LOUPE_DB_URL", "LOUPE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return calls


def _options(command: list[str]) -> dict[str, str]:
    return dict(zip(command[4:-1:2], command[5:-1:2], strict=True))


def test_loupe_ui_serves_the_packaged_app_and_hands_it_the_collection_by_environment(
    run: Callable[..., subprocess.CompletedProcess[str]],
    streamlit_calls: list[tuple[list[str], dict[str, str]]],
    tmp_path: Path,
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("ui:\n  port: 8777\n")
    secret_url = "postgresql+psycopg://alice:s3cret@db.example.org/loupe"
    result = run("ui", "--config", "mine.yaml", "--data-dir", "relative-data", "--db-url", secret_url)
    assert result.returncode == 0, result.stderr
    run("ui", "--port", "8778")
    (command, env), (default_command, default_env) = streamlit_calls
    assert command[-1] == str(ui.launch.APP)
    assert _options(command)["--server.address"] == "127.0.0.1" and _options(command)["--server.port"] == "8777"
    assert env["LOUPE_CONFIG"] == str(config) and env["LOUPE_DATA_DIR"] == str(tmp_path / "relative-data")
    assert env["LOUPE_DB_URL"] == secret_url and "s3cret" not in " ".join(command)  # not in the process list
    assert _options(default_command)["--server.port"] == "8778"
    assert not {"LOUPE_CONFIG", "LOUPE_DATA_DIR", "LOUPE_DB_URL"} & set(default_env)


def test_loupe_ui_refuses_a_reachable_address_unless_the_config_allows_it(
    run: Callable[..., subprocess.CompletedProcess[str]],
    streamlit_calls: list[tuple[list[str], dict[str, str]]],
    tmp_path: Path,
) -> None:
    for address in ("0.0.0.0", "::", "192.168.1.20"):
        refused = run("ui", "--address", address)
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"error: refusing to serve the UI on {address}, which other computers")
    assert not streamlit_calls
    (tmp_path / "remote.yaml").write_text("ui:\n  allow_remote: true\n")
    allowed = run("ui", "--address", "0.0.0.0", "--config", "remote.yaml")
    assert allowed.returncode == 0, allowed.stderr
    assert [_options(command)["--server.address"] for command, _ in streamlit_calls] == ["0.0.0.0"]

    missing = run("ui", "--config", "no-such.yaml").stderr
    assert missing.startswith("error: cannot read config file ") and "no-such.yaml: No such file" in missing
    (tmp_path / "typo.yaml").write_text("ui:\n  allow_remotely: true\n")
    assert "unknown setting ui.allow_remotely" in run("ui", "--config", "typo.yaml").stderr
    assert "a TCP port lies in 1-65535" in run("ui", "--port", "70000").stderr
    assert len(streamlit_calls) == 1


@pytest.mark.slow
def test_the_wheel_ships_the_command_the_app_its_pages_and_the_migrations(tmp_path: Path) -> None:
    """A plain ``pip install .`` installs the wheel: build one from a copy of the sources (no network)."""
    source = tmp_path / "source"
    for package in ("loupe", "core", "indexer", "search", "ui"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*command, "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("loupe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    app = ui.launch.APP.relative_to(REPO).as_posix()
    pages = re.findall(r'st\.Page\("([^"]+)"', ui.launch.APP.read_text(encoding="utf-8"))
    assert app in names and pages and {f"ui/{page}" for page in pages} <= names
    shipped = {"loupe/cli.py", "core/config/tree.py", "indexer/pipeline.py", "ui/launch.py", "ui/state.py"}
    assert shipped <= names
    migrations = {p.relative_to(REPO).as_posix() for p in (REPO / "core" / "migrations").rglob("*.py")}
    assert migrations | {"core/migrations/script.py.mako"} <= names
    assert not any(name.startswith("tests/") for name in names)
    assert re.search(r"^loupe = loupe\.cli:main$", entry_points, flags=re.MULTILINE)
    assert re.search(r"^loupe-indexer = indexer\.cli:main$", entry_points, flags=re.MULTILINE)


def test_ci_runs_the_development_commands_of_the_readme_and_the_quick_start_installs_no_test_tools() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Development and tests\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    ci = [
        line for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines() if line.startswith(tuple("p."))
    ]
    assert ci == commands
    assert "pip install -e '.[dev]'" in commands[0]
    quick_start = readme.split("\n## Quick start\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert ".venv/bin/pip install .\n" in quick_start and "dev" not in quick_start
    assert ".venv/bin/loupe build" in quick_start and ".venv/bin/loupe ui" in quick_start
