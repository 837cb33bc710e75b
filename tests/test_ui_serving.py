"""Where the UI is served: the address check, the app's refusal on a reachable address (``AppTest``), the
Streamlit options of ``loupe ui``, and a real ``loupe ui`` server started from an unrelated folder whose
listening sockets are checked to be loopback only."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.config import UIConfig
from core.errors import LoupeError
from core.report import RANDOM_WEIGHTS_WARNING
from tests.conftest import REPO, indexed_collection, open_app, serve_ui_at
from ui.launch import APP, LOOPBACK, STREAMLIT_OPTIONS, streamlit_command
from ui.serving import RemoteServingRefusedError, check_serving_address, is_local_address, remote_serving_refusal

PHOTO_NAMES = ("scikit-image__coffee.jpg", "scikit-image__rocket.jpg", "scikit-image__moon.jpg")
LISTEN = "0A"  # the TCP state "listen" in /proc/net/tcp


# --- the address check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),  # all of 127.0.0.0/8 is loopback
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("localhost", True),
        ("LOCALHOST", True),
        ("unix:///run/loupe/ui.sock", True),
        (None, False),  # Streamlit's unset address: every interface
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.5", False),
        ("::ffff:192.168.1.20", False),
        ("fe80::1", False),
        ("203.0.113.9", False),
        ("photos.example.org", False),  # names are not resolved: what they resolve to can change
    ],
)
def test_only_loopback_and_unix_sockets_are_local(address: str | None, local: bool) -> None:
    assert is_local_address(address) is local
    assert (remote_serving_refusal(address, allow_remote=False) is None) is local


@pytest.mark.parametrize("address", ["0.0.0.0", "", "::", "192.168.1.20"])
def test_a_reachable_address_is_refused_unless_the_config_allows_it(address: str) -> None:
    refusal = remote_serving_refusal(address, allow_remote=False)
    assert refusal is not None
    assert (address or "every network interface") in refusal and "ui.allow_remote: true" in refusal
    with pytest.raises(RemoteServingRefusedError, match="refusing to serve the UI") as raised:
        check_serving_address(address, allow_remote=False)
    assert isinstance(raised.value, LoupeError)  # the CLIs turn it into "error: ..." and exit code 2
    assert (address or "every network interface") in str(raised.value)
    assert remote_serving_refusal(address, allow_remote=True) is None
    check_serving_address(address, allow_remote=True)


def test_remote_serving_is_off_by_default() -> None:
    assert UIConfig().allow_remote is False


# --- the app refuses to show photos on a reachable address ------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return indexed_collection(tmp_path_factory.mktemp("ui-serving"), PHOTO_NAMES)[1]


def _app(data_dir: Path, monkeypatch: pytest.MonkeyPatch, address: str | None, config_text: str = "") -> AppTest:
    serve_ui_at(monkeypatch, address)
    return open_app(data_dir, monkeypatch, config_text)


def _shows_the_collection(at: AppTest) -> bool:
    return any(f"{len(PHOTO_NAMES)} images" in caption.value for caption in at.caption)


@pytest.mark.parametrize("address", ["0.0.0.0", "", "::", "192.168.1.20"])
def test_the_app_shows_no_photo_on_a_reachable_address(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    at = _app(data_dir, monkeypatch, address)
    assert not at.exception
    assert [error.value for error in at.error] == [remote_serving_refusal(address, allow_remote=False)]
    assert any("SSH tunnel" in text.value and "reverse proxy" in text.value for text in at.markdown)
    # Nothing past the check ran: no collection header, no page, no widget to pick or upload a photo.
    assert not _shows_the_collection(at)
    assert not at.header and not at.radio and not at.text_input and not at.selectbox


def test_the_app_shows_the_collection_on_loopback_and_where_remote_is_allowed(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random_weights_only = [f"This index was {RANDOM_WEIGHTS_WARNING}."]
    on_loopback = _app(data_dir, monkeypatch, "127.0.0.1")
    assert not on_loopback.exception
    assert [error.value for error in on_loopback.error] == random_weights_only
    assert _shows_the_collection(on_loopback)
    assert [header.value for header in on_loopback.header] == ["Search by image"]

    allowed = _app(data_dir, monkeypatch, "0.0.0.0", "ui:\n  allow_remote: true\n")
    assert not allowed.exception
    assert [error.value for error in allowed.error] == random_weights_only
    assert _shows_the_collection(allowed)


# --- what `loupe ui` starts -------------------------------------------------------------------------


def test_the_launcher_serves_the_installed_app_on_loopback_with_private_settings() -> None:
    # The app the launcher runs sits inside the ui package, its pages beside it.
    assert Path(sys.modules["ui"].__file__ or "").resolve().parent == APP.parent and APP.name == "app.py"
    pages = re.findall(r'st\.Page\("([^"]+)"', APP.read_text(encoding="utf-8"))
    assert pages == ["views/search.py", "views/region.py", "views/duplicates.py"]
    assert all((APP.parent / page).is_file() for page in pages)

    command = streamlit_command(APP, LOOPBACK, 8765)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"] and command[-1] == str(APP)
    options = dict(zip(command[4:-1:2], command[5:-1:2], strict=True))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8765"
    assert options["--server.headless"] == "true"
    assert options["--browser.gatherUsageStats"] == "false"
    assert options["--client.showErrorDetails"] == "type"
    assert int(options["--server.maxUploadSize"]) <= 64


def test_the_repository_streamlit_config_says_what_the_launcher_passes() -> None:
    # `streamlit run ui/app.py` from the project root reads .streamlit/config.toml; `loupe ui` passes flags.
    settings = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    in_file = {f"{section}.{key}": value for section, values in settings.items() for key, value in values.items()}
    assert in_file.pop("server.address") == LOOPBACK
    assert in_file.pop("server.port") == UIConfig().port
    for name, value in in_file.items():
        assert STREAMLIT_OPTIONS[name] == str(value).lower(), name


# --- a real server --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening_addresses(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses of every TCP socket listening on ``port``, from /proc/net/tcp and tcp6."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state != LISTEN or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address_hex)
            # The kernel prints each 32-bit word of the address in host (little-endian) byte order.
            ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.ip_address(ordered))
    return found


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode("utf-8", "replace")


@pytest.fixture()
def loupe_ui(data_dir: Path, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``python -m loupe ui`` started from an empty folder with no .streamlit/config.toml of its own."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's packages, whatever the venv holds
    for name in ("LOUPE_DATA_DIR", "LOUPE_DB_URL", "LOUPE_CONFIG"):
        env.pop(name, None)
    server = subprocess.Popen(
        [sys.executable, "-m", "loupe", "ui", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if server.poll() is not None:
                output = server.stdout.read() if server.stdout else ""
                pytest.fail(f"loupe ui exited with {server.returncode}: {output}")
            try:
                if _get(f"http://127.0.0.1:{port}/_stcore/health") == (200, "ok"):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("loupe ui did not answer its health check within 90 s")
        yield port, server
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from Linux's /proc")
def test_loupe_ui_from_an_unrelated_folder_listens_on_loopback_only(
    loupe_ui: tuple[int, subprocess.Popen[str]],
) -> None:
    port, server = loupe_ui
    status, page = _get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "<title>" in page.lower() and "streamlit" in page.lower()
    listening = _listening_addresses(port)
    assert listening, f"nothing listens on port {port}"
    assert all(address.is_loopback for address in listening), listening
    # Not reachable on this machine's other addresses either (none to try where loopback is the only one).
    try:
        others = {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except socket.gaierror:
        others = set()
    for other in others:
        if not ipaddress.ip_address(other).is_loopback:
            with socket.socket() as probe:
                probe.settimeout(2)
                assert probe.connect_ex((other, port)) != 0, other
    assert server.poll() is None
