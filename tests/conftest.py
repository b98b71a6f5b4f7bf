"""Shared fixtures: settings, a real database on each backend, free ports.

PostgreSQL is real: a throw-away cluster from Debian's packages is started on loopback
for the test session (initdb + pg_ctl under a temporary folder, fsync off). When it
cannot be started the PostgreSQL cases are skipped with the reason printed, except when
``PATCHWATCH_TEST_REQUIRE_POSTGRES=1`` (set by ``scripts/dev.sh test`` and CI): then
they fail, so a missing server can never pass as green.
"""

from __future__ import annotations

import errno
import glob
import ipaddress
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playhouse.pool import PooledDatabase

from patchwatch.domain import set_bases
from patchwatch.domain.settings import Settings
from patchwatch.store.db import database
from patchwatch.store.db import make_database
from patchwatch.store.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# For every server process a test starts: its mirror requests go through a "proxy" on a
# loopback port where nothing listens, so a report that names a real mirror (this
# machine's agent report names deb.debian.org) makes the scheduler's refresh fail at
# once instead of reaching the network; mirrors served on loopback are reached directly.
NO_EGRESS_ENV = {
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
    "PATCHWATCH_HTTP_RETRIES": "0",
}  # fmt: skip


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
        self.resume()

    def resume(self) -> None:
        """Start (again) the server on its port."""
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
            "-w", "-o", opts, "start",
        )  # fmt: skip

    def pause(self) -> None:
        """Stop the server but keep its data, as an outage would."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped
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
    if isinstance(handle, PooledDatabase):  # other threads' connections, back in the pool
        handle.close_all()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"))


class Server:
    """``patchwatch serve`` running on loopback in a subprocess, for tests that need it real."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PATCHWATCH_WORKERS": "2",
            **NO_EGRESS_ENV,
            **(env or {}),
        }
        self.log_path = tmp_path / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def database_url(self) -> str:
        return (
            self.env.get("PATCHWATCH_DATABASE_URL")
            or f"sqlite:///{self.data_dir / 'patchwatch.db'}"
        )

    def start(self, timeout: float = 30) -> Server:
        import time
        import urllib.request

        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data_dir)],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-2000:]}")
            # our own gunicorn must hold the port: a free port can be taken by another
            # process between free_port() and bind, and would then answer for us
            listening = self._owns_port()
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as resp:
                    if resp.status == 200 and listening:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become healthy")

    def _owns_port(self) -> bool:
        """Whether our server process holds the listening socket of our port."""
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{self.port:04X}") and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
        fd_dir = Path(f"/proc/{self.proc.pid}/fd") if self.proc else None
        if not inodes or fd_dir is None:
            return False
        try:
            return any(os.readlink(fd) in inodes for fd in fd_dir.iterdir())
        except OSError:
            return False

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "patchwatch", *args],
            cwd=ROOT,
            env={**self.env, "PATCHWATCH_DATA_DIR": str(self.data_dir)},
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()


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


@pytest.fixture(autouse=True, scope="session")
def small_sets_as_differences() -> Iterator[None]:
    """Write even the tests' small package sets as differences from a base.

    Real hosts' sets (1,500 packages) are written as differences and most test sets
    have a handful, which the default minimum would write whole: lowered here, every
    reader of package sets in the suite also reads sets written as differences.
    (Session-wide, not per test: hypothesis refuses function-scoped fixtures.)
    """
    defaults = (set_bases.MIN_SIZE, set_bases.SAMPLE_EVERY, set_bases.MAX_DIFFERENCE)
    set_bases.MIN_SIZE = 2
    set_bases.SAMPLE_EVERY = 1  # small ids: every one stands for its set
    set_bases.MAX_DIFFERENCE = 0.5
    yield
    set_bases.MIN_SIZE, set_bases.SAMPLE_EVERY, set_bases.MAX_DIFFERENCE = defaults


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


class FakeDns:
    """Names the tests make up, resolved to the addresses each test chooses.

    Only those names and literal addresses resolve; any other lookup fails and is
    recorded, so that no test sends a DNS query off the machine either.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.unknown: list[str] = []

    def __setitem__(self, name: str, address: str) -> None:
        self.names[name] = address


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
