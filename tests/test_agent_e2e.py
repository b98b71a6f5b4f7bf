"""The agent on this very machine, through the real receiver under gunicorn."""

from __future__ import annotations

import subprocess
import sys
import time

from patchwatch.store.db import open_database
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from tests.support.paths import ROOT


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


def test_the_agent_enrolls_keeps_its_own_token_and_recovers_a_lost_answer(server_factory):
    """Against the real receiver: the first run enrolls the host and keeps its token;
    the enrollment token is revoked and the host still reports; the kept token is lost
    (as if the answer never arrived) and the same enrollment key gets a fresh one."""
    import json
    import stat

    srv = server_factory()
    enroll = srv.cli("token", "create", "--enroll").stdout.strip()
    state = srv.data_dir.parent / "spool"
    out = run_agent(srv, enroll, "--hostname", "agent1.example.com")
    assert out.returncode == 0, out.stderr
    kept = state / ".host-token"
    own = json.loads(kept.read_text())["token"]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert own not in out.stdout + out.stderr and enroll not in out.stdout + out.stderr
    listed = json.loads(srv.cli("token", "list", "--format", "json").stdout)
    assert {(t["prefix"], t["kind"], t["host"]) for t in listed if t["kind"] == "host"} == {
        (own.split("_")[1], "host", "agent1.example.com")}  # fmt: skip

    assert srv.cli("token", "revoke", enroll.split("_")[1]).returncode == 0
    assert run_agent(srv, enroll, "--hostname", "agent1.example.com").returncode == 0

    kept.unlink()  # the answer to the enrollment was lost; the enrollment key was kept
    fresh = srv.cli("token", "create", "--enroll").stdout.strip()
    out = run_agent(srv, fresh, "--hostname", "agent1.example.com")
    assert out.returncode == 0, out.stderr
    second = json.loads(kept.read_text())["token"]
    assert second != own
    db = open_database(srv.database_url)
    with db.connection_context():
        from patchwatch.store.models import Token

        assert Token.get(Token.prefix == own.split("_")[1]).revoked_at is not None
        assert Report.select().where(Report.host_name == "agent1.example.com").count() == 3

    (state / ".enrollment-key").unlink()  # another machine claiming the name: refused
    kept.unlink()
    out = run_agent(srv, fresh, "--hostname", "agent1.example.com")
    assert out.returncode == 3 and "own token" in out.stderr
