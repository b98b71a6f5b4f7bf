"""Shared fixtures: a real database on each backend, the receiver's ``app`` and ``client``,
``patchwatch serve`` (``server_factory``), a loopback mirror (``root``, ``server``,
``mirror``, ``fetcher``), the base thresholds of the suite's small package sets, and
hooks that observe outgoing connections and DNS. Helpers (classes, builders, oracles)
live in tests/support/; test modules import from there, never from one another.

PostgreSQL is real: a throw-away cluster from Debian's packages is started on loopback
for the test session (initdb + pg_ctl under a temporary folder, fsync off). When it
cannot be started the PostgreSQL cases are skipped with the reason printed, except when
``PATCHWATCH_TEST_REQUIRE_POSTGRES=1`` (set by ``scripts/dev.sh test`` and CI): then
they fail, so a missing server can never pass as green.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playhouse.pool import PooledDatabase

from patchwatch.domain.set_bases import Thresholds
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.receiver.app import create_app
from patchwatch.store import package_sets
from patchwatch.store.db import database
from patchwatch.store.db import make_database
from patchwatch.store.migrations import migrate
from tests.support.mirrors import MirrorServer
from tests.support.mirrors import static_files
from tests.support.network import FakeDns
from tests.support.repositories import build_rpm_tree
from tests.support.repositories import make_fetcher
from tests.support.servers import PostgresServer
from tests.support.servers import Server
from tests.support.tools import require_or_skip


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
    feed = sys.modules.get("patchwatch.receiver.feed")
    if feed is not None:  # a receiver's processing thread finishes with this store
        feed.FEED.idle()
    if not handle.is_closed():
        handle.close()
    if isinstance(handle, PooledDatabase):  # other threads' connections, back in the pool
        handle.close_all()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"))


@pytest.fixture
def app(db, tmp_path):
    """The receiver on the test database, with small report bounds; reports stay queued."""
    settings = Settings(
        data_dir=str(tmp_path),
        process_inline=False,
        max_report_bytes=200_000,
        max_report_decompressed_bytes=1_000_000,
        protocol1_networks=("127.0.0.0/8",),
    )
    return create_app(settings, db=db)


@pytest.fixture
def client(app):
    """Flask's test client of ``app``."""
    return app.test_client()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []

    def make(env: dict[str, str] | None = None) -> Server:
        srv = Server(tmp_path, env).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


# small ids: every one stands for its set
SMALL_SETS = Thresholds(min_size=2, sample_every=1, max_difference=0.5)


@pytest.fixture(autouse=True, scope="session")
def small_sets_as_differences() -> Iterator[None]:
    """Write even the tests' small package sets as differences from a base.

    Real hosts' sets (1,500 packages) are written as differences and most test sets
    have a handful, which the default minimum would write whole: lowered here, every
    reader of package sets in the suite also reads sets written as differences.
    (Session-wide, not per test: hypothesis refuses function-scoped fixtures.) The
    thresholds are handed to the one index package sets use, not written over module
    constants that a ``from ... import`` elsewhere would not see.
    """
    defaults = package_sets.use_thresholds(SMALL_SETS)
    yield
    package_sets.use_thresholds(defaults)


# ------------------------------------------------------------- a mirror on loopback


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The folder the loopback mirror (``server``) serves."""
    www = tmp_path / "www"
    www.mkdir()
    return www


@pytest.fixture
def server(root: Path) -> Iterator[MirrorServer]:
    """A mirror on loopback serving ``root``, with faults and a request log."""
    srv = MirrorServer(root).start()
    yield srv
    srv.stop()


@pytest.fixture
def mirror(root: Path) -> Iterator[MirrorServer]:
    """A mirror on loopback serving a real rpm-md repository under ``/rpm``."""
    build_rpm_tree(root)
    srv = MirrorServer(root).start()
    yield srv
    srv.stop()


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    """A fetcher allowed to reach the loopback mirror, retrying once without waiting."""
    with make_fetcher() as f:
        yield f


@pytest.fixture
def single_try_fetcher() -> Iterator[HttpFetcher]:
    """A fetcher allowed to reach loopback that tries each request once."""
    with make_fetcher(timeout=2.0, retries=0) as f:
        yield f


@pytest.fixture
def static_www(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Python's own http.server serving ``tmp_path/www``: (that folder, its base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    with static_files(folder) as base:
        yield folder, base


# ------------------------------------------------- observing outgoing connections


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a socket tries to connect to, and nothing leaves 127.0.0.1.

    The hook sits under every client in the process (urllib3, the guard's own
    connections), so an empty list means that no connection was even attempted.
    """
    attempts: list[tuple[str, int]] = []
    real = socket.socket.connect

    def connect(sock: socket.socket, address: tuple[str, int]) -> None:
        attempts.append((str(address[0]), int(address[1])))
        if address[0] != "127.0.0.1":
            raise OSError(errno.ENETUNREACH, "the test's socket hook lets nothing off loopback")
        real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    dns = FakeDns()
    real = socket.getaddrinfo

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in dns.names:
            return real(dns.names[name], port, *args, **kwargs)  # type: ignore[arg-type]
        try:
            ipaddress.ip_address(name)
        except ValueError:
            dns.unknown.append(name)
            reason = f"{name}: unknown to the test's resolver"
            raise socket.gaierror(socket.EAI_NONAME, reason) from None
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the folder of the screenshots a browser test wrote in this run."""
    from tests.support.browser import SCREENSHOTS

    if SCREENSHOTS:
        folder = SCREENSHOTS[0].parent
        terminalreporter.write_line(f"console screenshots ({len(SCREENSHOTS)}): {folder}")
