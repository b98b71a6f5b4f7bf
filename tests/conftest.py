"""Shared fixtures: settings, a real database on each backend, free ports.

PostgreSQL is real: a throw-away cluster from Debian's packages is started on loopback
for the test session (initdb + pg_ctl under a temporary folder, fsync off). When it
cannot be started the PostgreSQL cases are skipped with the reason printed, except when
``PATCHWATCH_TEST_REQUIRE_POSTGRES=1`` (set by ``scripts/dev.sh test`` and CI): then
they fail, so a missing server can never pass as green.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchwatch.db import database
from patchwatch.db import make_database
from patchwatch.migrations import migrate
from patchwatch.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_or_skip(env: str, reason: str) -> None:
    """Skip with ``reason``, or fail when the environment says the tool is required."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{reason} (required because {env}=1)")
    pytest.skip(reason)


class PostgresServer:
    """A disposable PostgreSQL cluster on 127.0.0.1."""

    def __init__(self) -> None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not candidates:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bindir = Path(candidates[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="patchwatch-pg-"))
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb refuses to run as root
            self.user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self._counter = itertools.count(1)

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
            "-U", "postgres", "--no-sync",
        )  # fmt: skip
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
            "-w", "-o", opts, "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._counter)}"
        admin = make_database(self.url())
        admin.connect()
        admin.execute_sql(f'CREATE DATABASE "{name}"')
        admin.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
        server.start()
    except (RuntimeError, OSError, KeyError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        require_or_skip(
            "PATCHWATCH_TEST_REQUIRE_POSTGRES",
            f"cannot start PostgreSQL: {exc} {detail.decode(errors='replace')[-300:]}",
        )
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'patchwatch.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def db(database_url: str) -> Iterator[object]:
    """The store, migrated and bound, on each backend."""
    handle = make_database(database_url)
    database.initialize(handle)
    handle.connect()
    migrate(handle)
    yield handle
    if not handle.is_closed():
        handle.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"))
