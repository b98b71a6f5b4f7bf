"""Real servers the tests start on loopback: ``patchwatch serve`` and a throw-away PostgreSQL."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from patchwatch.store.db import make_database
from tests.support.network import NO_EGRESS_ENV
from tests.support.network import free_port
from tests.support.paths import ROOT


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


class Server:
    """``patchwatch serve`` running on loopback in a subprocess, for tests that need it real."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        #: how patchwatch is started (an installed script, say) and from where
        self.command = command or [sys.executable, "-m", "patchwatch"]
        self.cwd = cwd or ROOT
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
            [*self.command, "serve", "--bind", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data_dir)],
            cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
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
            [*self.command, *args],
            cwd=self.cwd,
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
