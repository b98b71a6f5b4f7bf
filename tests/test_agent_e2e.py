"""The agent on this very machine, through the real receiver under gunicorn."""

from __future__ import annotations

import subprocess
import sys
import time

from patchwatch.db import open_database
from patchwatch.models import Host
from patchwatch.models import Report
from tests.conftest import ROOT


def dpkg_installed_count() -> int:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sum(1 for line in out.stdout.splitlines() if line[:2] in ("ii", "hi"))


def run_agent(srv, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PATCHWATCH_SERVER": srv.base,
           "PATCHWATCH_TOKEN": token, "HOME": str(srv.data_dir.parent)}  # fmt: skip
    return subprocess.run(
        [sys.executable, str(ROOT / "agent/patchwatch_agent.py"),
         "--spool-dir", str(srv.data_dir.parent / "spool"), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_agent_reports_this_machine_and_the_host_appears(server_factory) -> None:
    srv = server_factory()
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    out = run_agent(srv, token)
    assert out.returncode == 0, out.stderr
    assert token not in out.stdout + out.stderr
    db = open_database(srv.database_url)
    deadline = time.monotonic() + 30
    host = None
    while time.monotonic() < deadline:
        with db.connection_context():
            host = Host.select().where(Host.package_set.is_null(False)).first()
            if host is not None:
                break
        time.sleep(0.2)
    assert host is not None, srv.log()[-2000:]
    with db.connection_context():
        host = Host.get_by_id(host.id)
        assert host.package_set.size == dpkg_installed_count()
        assert host.os_release.family == "debian"
        assert host.repository_set is not None and host.repository_set.size >= 1
        assert Report.select().where(Report.state == "failed").count() == 0
