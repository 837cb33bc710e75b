"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, listen on loopback, a fresh
database per test (CREATE DATABASE copies ``template1``, which takes milliseconds).

PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` system user (Debian's
package creates it), with its data dir owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from itertools import count
from pathlib import Path

import psycopg

REQUIRE_ENV = "LOUPE_REQUIRE_POSTGRES"


class ServerUnavailableError(Exception):
    """No PostgreSQL server could be started here; the message says why."""


def _binaries() -> Path:
    found = shutil.which("pg_ctl")
    if found is not None and shutil.which("initdb") is not None:
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "pg_ctl").exists() and (Path(folder) / "initdb").exists():
            return Path(folder)
    raise ServerUnavailableError(
        "no pg_ctl/initdb on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A running server; :meth:`create_database` hands out a new empty database's SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix="loupe-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as error:
                raise ServerUnavailableError(
                    "running as root and there is no `postgres` user to run the server as"
                ) from error
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self._numbers = count(1)
        self._start()

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.run_as, *args], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ServerUnavailableError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-1500:]} {tail}")

    def _start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        # fsync off: the tests kill processes, never the machine; the server's files are thrown away.
        options = f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"loupe_test_{next(self._numbers)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a counter, never user input
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
