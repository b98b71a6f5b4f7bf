"""This Debian host's vulnerabilities, end to end: agent → server → Prometheus → Alertmanager.

The agent reports this very machine to a real ``patchwatch serve`` (gunicorn, the
scheduler, SQLite) on loopback. A Debian OSV feed is cut from what is installed here:
records naming three of its packages (whose binary and source names agree, since
hosts do not report source names yet), one fixed by a version a mirror of the host's
own repositories offers (and known-exploited: its CVE is in CISA's catalogue), one
with no fix, one fixed below the installed version (not affected). The feeds are read
from local files, as an air-gapped site would, by ``patchwatch vulns refresh``.

Debian's Prometheus scrapes the server and evaluates the shipped rules (``for:`` cut to
1 s); Debian's Alertmanager runs the example configuration, its receivers pointed at a
webhook here. The test reads the statuses back from Prometheus and waits for the KEV
alert at the webhook. The mirror's index is written into the server's store directly
(no mirror is reachable from a test): the real refresh path is tested elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.store.db import open_database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package as StoredPackage
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.vulns import stored_sources
from tests.support.monitoring import Alertmanager
from tests.support.monitoring import Prometheus
from tests.support.monitoring import Webhook
from tests.support.monitoring import derive_test_alertmanager
from tests.support.monitoring import derive_test_rules
from tests.support.paths import ROOT
from tests.support.tools import require_tool
from tests.support.web import wait_until

pytestmark = pytest.mark.slow

KEV = ROOT / "tests" / "fixtures" / "vulns" / "known_exploited_vulnerabilities-2025-08-25.json.xz"
HOST = "vulns-e2e.example.com"
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
HIGH = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"  # 7.8


def _installed_same_source(count: int) -> list[tuple[str, str, str]]:
    """(name, version, arch) of installed packages named and versioned as their source."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f",
         "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t"
         "${source:Package}\t${source:Version}\n"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = []
    for line in out.stdout.splitlines():
        status, name, version, arch, source, source_version = line.split("\t")
        if status.startswith("ii") and name == source and version == source_version:
            found.append((name, version, arch))
    assert len(found) >= count, "this host has too few packages named as their source"
    return found[:count]


def _record(ident: str, upstream: str, package: str, events: list[dict], vector: str) -> dict:
    return {
        "schema_version": "1.6.0", "id": ident, "modified": "2025-08-01T00:00:00Z",
        "published": "2025-01-15T12:00:00Z", "upstream": [upstream],
        "summary": f"{package} - security update",
        "severity": [{"type": "CVSS_V3", "score": vector}],
        "affected": [{"package": {"ecosystem": "Debian:12", "name": package},
                      "ranges": [{"type": "ECOSYSTEM", "events": events}]}],
    }  # fmt: skip


def _run_agent(base: str, token: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PATCHWATCH_SERVER": base,
           "PATCHWATCH_TOKEN": token, "HOME": str(home)}  # fmt: skip
    return subprocess.run(
        [sys.executable, str(ROOT / "agent/patchwatch_agent.py"), "--spool-dir",
         str(home / "spool"), "--hostname", HOST],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_this_hosts_statuses_reach_prometheus_and_the_kev_alert_alertmanager(
    server_factory, tmp_path: Path
) -> None:
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    fixable, unfixed, older = _installed_same_source(3)
    feed = tmp_path / "osv"
    feed.mkdir()
    records = [
        # CVE-2023-4911 is in the KEV catalogue: known-exploited, and fixable below
        _record("DEBIAN-CVE-2023-4911", "CVE-2023-4911", fixable[0],
                [{"introduced": "0"}, {"fixed": fixable[1] + "+pw1"}], CRITICAL),
        _record("DEBIAN-CVE-2099-0001", "CVE-2099-0001", unfixed[0],
                [{"introduced": "0"}], HIGH),
        _record("DEBIAN-CVE-2099-0002", "CVE-2099-0002", older[0],
                [{"introduced": "0"}, {"fixed": "0~pw1"}], HIGH),
    ]  # fmt: skip
    for rec in records:
        (feed / f"{rec['id']}.json").write_text(json.dumps(rec))
    env = {
        "PATCHWATCH_VULNS_ENABLED": "1", "PATCHWATCH_VULNS_OSV_SOURCES": str(feed),
        "PATCHWATCH_VULNS_KEV_SOURCE": str(KEV), "PATCHWATCH_VULNS_DEBIAN_TRACKER_SOURCE": "",
        "PATCHWATCH_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    srv = server_factory(env)
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    agent = _run_agent(srv.base, token, tmp_path)
    assert agent.returncode == 0, agent.stderr

    db = open_database(srv.database_url)

    def reported() -> Host | None:
        with db.connection_context():
            return Host.get_or_none((Host.name == HOST) & Host.package_set.is_null(False))

    host = wait_until(reported, 30, "the agent's report to be processed")
    # A mirror of one of the host's own repositories offers the fixed version.
    with db.connection_context(), write_transaction():
        members = RepositorySetMember.select(RepositorySetMember.repository)
        repo = members.where(RepositorySetMember.repository_set == host.repository_set_id).first()
        assert repo is not None, "the agent reported no repository"
        offered = Package(fixable[0], *_split(fixable[1] + "+pw1"), fixable[2], PackageKind.DEB)
        pset = ensure_package_set([offered], time.time())
        mirrors = Mirror.update(package_set=pset, last_success_at=time.time()).where(
            Mirror.repository == repo.repository_id
        )
        assert mirrors.execute() >= 1

    refreshed = srv.cli("vulns", "refresh")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    assert "osv: 3 records" in refreshed.stdout and "kev: 1404 records" in refreshed.stdout
    # the update carrying the fix is a security update, and says what it fixes
    shown_host = json.loads(srv.cli("hosts", "show", HOST, "--format", "json").stdout)
    (update,) = [u for u in shown_host["updates"] if u["name"] == fixable[0]]
    assert update["security"] is True and update["available"].endswith("+pw1")
    assert [(f["id"], [a["id"] for a in f["advisories"]]) for f in update["fixes"]] == [
        ("CVE-2023-4911", ["DEBIAN-CVE-2023-4911"])]  # fmt: skip
    assert update["fixes"][0]["advisories"][0]["url"] == (
        "https://security-tracker.debian.org/tracker/CVE-2023-4911")  # fmt: skip
    # the agent reported its sources (no mirror index was read here): libc6 is glibc's
    with db.connection_context():
        libc6 = [p.id for p in StoredPackage.select().where(StoredPackage.name == "libc6")]
        assert libc6 and {s for s, _v in stored_sources(libc6).values()} == {"glibc"}

    webhook = Webhook()
    alertmanager = Alertmanager(tmp_path / "am", derive_test_alertmanager(webhook.url))
    prometheus = Prometheus(tmp_path / "prom", [srv.base.removeprefix("http://")],
                            derive_test_rules(), alertmanager.address)  # fmt: skip
    try:
        webhook.start()
        alertmanager.start()
        prometheus.start()

        def cells() -> dict[tuple[str, str], float] | None:
            found = {
                (r["metric"]["severity"], r["metric"]["status"]): float(r["value"][1])
                for r in prometheus.query(f'patchwatch_host_vulnerabilities{{host="{HOST}"}}')
            }
            return found or None

        statuses = wait_until(cells, 60, "the host's vulnerability counts in Prometheus")
        assert statuses == {("critical", "fixable"): 1.0, ("high", "no_fix"): 1.0}
        kev = prometheus.query(f'patchwatch_host_vulnerabilities_kev_fixable{{host="{HOST}"}}')
        assert [float(r["value"][1]) for r in kev] == [1.0]
        hosts = prometheus.query('patchwatch_kev_vulnerability_hosts{cve="CVE-2023-4911"}')
        assert {r["metric"]["status"]: float(r["value"][1]) for r in hosts} == {
            "all": 1.0, "fixable": 1.0}  # fmt: skip

        def delivered() -> list[dict] | None:
            return webhook.alerts("PatchwatchKnownExploitedVulnerabilityFixable", HOST) or None

        (alert, *_) = wait_until(delivered, 60, "the KEV alert at the webhook")
        assert alert["status"] == "firing" and alert["labels"]["severity"] == "critical"
    finally:
        prometheus.stop()
        alertmanager.stop()
        webhook.stop()

    shown = json.loads(srv.cli("vulns", "show", "CVE-2023-4911", "--format", "json").stdout)
    assert [(h["host"], h["package"], h["installed"], h["candidate"]) for h in shown["hosts"]] == [
        (HOST, fixable[0], fixable[1], fixable[1] + "+pw1")]  # fmt: skip


def _split(version: str) -> tuple[str, str, str]:
    """A Debian version as (epoch, upstream, revision), as Package rows keep it."""
    epoch, sep, rest = version.partition(":")
    if not sep:
        epoch, rest = "", version
    upstream, sep, revision = rest.rpartition("-")
    return (epoch, upstream, revision) if sep else (epoch, rest, "")
