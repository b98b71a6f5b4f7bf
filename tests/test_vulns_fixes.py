"""Pending updates list the vulnerabilities and advisories they fix, and count as security.

An update of a package with a fixable vulnerability is a security update whatever
repository offers it: here glibc's fix (DSA-5514-1) comes from the main suite, which the
suite-based rule calls "other".
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.links import advisory_url
from patchwatch.domain.vulns.links import is_advisory
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.store import host_counts
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import UpdateSet
from tests.support.vulnfleet import DEBIAN
from tests.support.vulnfleet import deb
from tests.support.vulnfleet import publish
from tests.support.vulnfleet import report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vulns"
KEV = FIXTURES / "known_exploited_vulnerabilities-2025-08-25.json.xz"


def local(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), vulns_enabled=True,
                    vulns_osv_sources=(str(DEBIAN),), vulns_debian_tracker_source="",
                    vulns_kev_source=str(KEV), vulns_epss_source="")  # fmt: skip


def updates(name: str) -> dict[str, tuple[str, bool, float]]:
    host = Host.get(Host.name == name)
    rows = HostUpdate.select().where(HostUpdate.host == host.id)
    return {u.installed.name: (u.available.version_string, u.security, u.first_seen_at)
            for u in rows}  # fmt: skip


def counts(name: str) -> tuple[int, int]:
    host = Host.get(Host.name == name)
    return host.security_updates, host.other_updates


# --- links (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "ecosystem", "url"),
    [
        ("DSA-5514-1", "Debian:12", "https://security-tracker.debian.org/tracker/DSA-5514-1"),
        ("DLA-3600-1", "Debian:11", "https://security-tracker.debian.org/tracker/DLA-3600-1"),
        ("USN-6409-1", "Ubuntu:22.04:LTS", "https://ubuntu.com/security/notices/USN-6409-1"),
        ("ALSA-2023:5453", "AlmaLinux:9",
         "https://errata.almalinux.org/9/ALSA-2023-5453.html"),
        ("RHSA-2023:5453", "Red Hat:enterprise_linux:9",
         "https://access.redhat.com/errata/RHSA-2023:5453"),
        ("RLSA-2023:5453", "Rocky Linux:9", "https://errata.rockylinux.org/RLSA-2023:5453"),
        ("DEBIAN-CVE-2023-4911", "Debian:12",
         "https://security-tracker.debian.org/tracker/CVE-2023-4911"),
        ("UBUNTU-CVE-2023-4911", "Ubuntu:22.04", "https://ubuntu.com/security/CVE-2023-4911"),
        ("CVE-2023-4911", "", "https://www.cve.org/CVERecord?id=CVE-2023-4911"),
        ("ALSA-2023:5453", "updateinfo:3", None),  # no release to file it under
        ("GHSA-xxxx-yyyy-zzzz", "", None),
    ],
)  # fmt: skip
def test_advisory_links(record: str, ecosystem: str, url: str | None) -> None:
    assert advisory_url(record, ecosystem) == url


def test_feed_link_naming_the_record_wins() -> None:
    own = "https://errata.almalinux.org/8/ALSA-2023-5453.html"
    other = "https://example.org/unrelated"
    assert advisory_url("ALSA-2023:5453", "AlmaLinux:9", [other, own]) == own
    assert advisory_url("DSA-5514-1", "Debian:12", [other]).startswith("https://security-")
    assert is_advisory("DSA-5514-1") and is_advisory("ALSA-2023:5453")
    assert not is_advisory("DEBIAN-CVE-2023-4911") and not is_advisory("CVE-2023-4911")


# --- wiring ----------------------------------------------------------------------------


def test_update_fixing_a_vulnerability_is_security_whatever_its_suite(db, tmp_path) -> None:
    old_glibc = deb("glibc", "2.36-9+deb12u1")  # DSA-5514-1 / CVE-2023-4911, fixed in u3
    bash = deb("bash", "5.2.15-2+b2")
    for i in range(3):
        report(f"web{i}", [old_glibc, bash, deb("tzdata", "2024a-0+deb12u1")])
    publish(
        [deb("glibc", "2.36-9+deb12u3"), deb("tzdata", "2025a-0+deb12u1")], 200.0, checksum=True
    )

    ctx = refresh_host_updates(300.0)
    assert ctx.computed == 1  # three identical hosts, one update set
    before = updates("web0")
    assert {n: (v, s) for n, (v, s, _f) in before.items()} == {
        "glibc": ("2.36-9+deb12u3", False), "tzdata": ("2025a-0+deb12u1", False)}  # fmt: skip
    assert counts("web0") == (0, 2)  # the suite-based rule: main is no security suite

    refresh_vulns(local(tmp_path))
    assert refresh_host_vulns(400.0).computed == 1
    ctx = refresh_host_updates(500.0)
    assert ctx.computed == 1 and UpdateSet.select().count() == 1  # still shared
    after = updates("web1")
    assert after["glibc"][:2] == ("2.36-9+deb12u3", True)
    assert after["tzdata"][1] is False  # fixes nothing: still "other"
    assert after["glibc"][2] == before["glibc"][2] == 300.0  # first seen kept
    assert counts("web1") == (1, 1)
    assert Host.get(Host.name == "web1").oldest_security_at == 300.0

    # nothing changed: nothing computed again, by either
    assert refresh_host_vulns(600.0).computed == 0
    assert refresh_host_updates(700.0).computed == 0

    # the mirror drops the fix: the update (to u2, still affected) is no security one
    publish(
        [deb("glibc", "2.36-9+deb12u2"), deb("tzdata", "2025a-0+deb12u1")], 800.0, checksum=True
    )
    refresh_host_vulns(900.0)
    refresh_host_updates(1000.0)
    assert updates("web2")["glibc"][:2] == ("2.36-9+deb12u2", False)
    assert counts("web2") == (0, 2)


def test_security_count_in_the_metric(db, tmp_path) -> None:
    from patchwatch.exporter.collector import StoreCollector

    def security() -> float | None:
        for family in StoreCollector(db).collect():
            for s in family.samples:
                if s.name == "patchwatch_host_updates_pending" and s.labels == {
                    "host": "web1", "kind": "security"}:  # fmt: skip
                    return s.value
        return None

    report("web1", [deb("glibc", "2.36-9+deb12u1")])
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0, checksum=True)
    refresh_host_updates(300.0)
    assert security() == 0
    refresh_vulns(local(tmp_path))
    refresh_host_vulns(400.0)
    refresh_host_updates(500.0)
    assert security() == 1


def test_scheduler_vulnerability_job_recomputes_updates(db, tmp_path) -> None:
    from patchwatch.scheduler.runner import default_jobs

    jobs = {j.name: j for j in default_jobs(local(tmp_path))}
    report("web1", [deb("glibc", "2.36-9+deb12u1")])
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0, checksum=True)
    refresh_host_updates(300.0)
    assert counts("web1") == (0, 1)
    detail = jobs["refresh_vulns"].run(1000.0)
    assert detail.endswith("1 vulnerability sets computed; 1 update sets computed")
    assert counts("web1") == (1, 0)
    assert jobs["compute_vulns"].run(2000.0) == "0 vulnerability sets computed, 1 reused"


def test_pending_updates_list_what_they_fix_in_api_console_and_cli(
    db, database_url, tmp_path
) -> None:
    import os
    import re
    import subprocess
    import sys

    from patchwatch.receiver.app import create_app
    from patchwatch.store.tokens import create_token
    from tests.support.paths import ROOT

    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    client = app.test_client()
    _, admin = create_token("admin", time.time())
    auth = {"Authorization": f"Bearer {admin}"}
    report("web1", [deb("glibc", "2.36-9+deb12u1"), deb("tzdata", "2024a-0+deb12u1")])
    publish(
        [deb("glibc", "2.36-9+deb12u3"), deb("tzdata", "2025a-0+deb12u1")], 200.0, checksum=True
    )
    refresh_host_updates(300.0)

    body = client.get("/api/v1/hosts/web1", headers=auth).get_json()
    assert {u["name"]: u["fixes"] for u in body["updates"]} == {"glibc": None, "tzdata": None}

    refresh_vulns(local(tmp_path))
    refresh_host_vulns(400.0)
    refresh_host_updates(500.0)
    body = client.get("/api/v1/hosts/web1", headers=auth).get_json()
    by_name = {u["name"]: u for u in body["updates"]}
    assert by_name["tzdata"]["fixes"] == [] and by_name["tzdata"]["security"] is False
    glibc = by_name["glibc"]
    assert glibc["security"] is True
    fixes = {f["id"]: f for f in glibc["fixes"]}
    # DSA-5514-1 fixes both CVEs; Debian's own record names CVE-2023-4911 alone
    assert sorted(fixes) == ["CVE-2023-4527", "CVE-2023-4911"]
    assert fixes["CVE-2023-4527"]["advisories"] == [
        {"id": "DSA-5514-1", "url": "https://security-tracker.debian.org/tracker/DSA-5514-1"}
    ]
    assert [fixes["CVE-2023-4911"]] == [
        {
            "id": "CVE-2023-4911",
            # the feed's own ADVISORY reference names it: that link wins
            "url": "https://security-tracker.debian.org/tracker/CVE-2023-4911",
            "severity": "high",
            "kev": True,
            "advisories": [
                {"id": "DEBIAN-CVE-2023-4911",
                 "url": "https://security-tracker.debian.org/tracker/CVE-2023-4911"},
                {"id": "DSA-5514-1",
                 "url": "https://security-tracker.debian.org/tracker/DSA-5514-1"},
            ],
        }
    ]  # fmt: skip

    console = app.test_client()
    form = console.get("/ui/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    assert console.post("/ui/login", data={"csrf": csrf, "token": admin}).status_code == 303
    page = console.get("/ui/hosts/web1").get_data(as_text=True)
    section = page[page.index('id="h-updates"') : page.index('id="h-vulns"')]
    assert 'href="https://security-tracker.debian.org/tracker/DSA-5514-1"' in section
    assert ">CVE-2023-4911</a>" in section

    if database_url.startswith("sqlite"):
        env = {"PATCHWATCH_DATABASE_URL": database_url, "HOME": str(tmp_path),
               "PATH": os.environ["PATH"]}  # fmt: skip
        shown = subprocess.run(
            [sys.executable, "-m", "patchwatch", "hosts", "show", "web1"], cwd=ROOT,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120,
            check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "advisories fixed by pending updates (4):" in shown.stdout
        assert "https://security-tracker.debian.org/tracker/DSA-5514-1" in shown.stdout


# --- first seen at publication ---------------------------------------------------------

NOW = 1_800_000_000.0  # 2027: long after the fixture's advisories were published


def _first_seen(name: str) -> float:
    host = Host.get(Host.name == name)
    (row,) = [u for u in HostUpdate.select().where(HostUpdate.host == host.id)
              if u.installed.name == "glibc"]  # fmt: skip
    return row.first_seen_at


def test_first_seen_of_a_fixing_update_starts_at_publication(db, tmp_path) -> None:
    from patchwatch.store.vuln_models import Vulnerability

    report("web1", [deb("glibc", "2.36-9+deb12u1"), deb("tzdata", "2024a-0+deb12u1")])
    publish([deb("glibc", "2.36-9+deb12u3"), deb("tzdata", "2025a-0+deb12u1")], NOW, checksum=True)
    refresh_host_updates(NOW)
    assert _first_seen("web1") == NOW  # the day patchwatch is installed

    refresh_vulns(local(tmp_path))
    refresh_host_vulns(NOW + 10)
    refresh_host_updates(NOW + 20)
    published = min(
        Vulnerability.get_by_id(v).published for v in ("CVE-2023-4911", "CVE-2023-4527")
    )
    assert published < NOW - 365 * 86400
    # the kept row is backdated, the count's oldest time with it; tzdata fixes nothing
    assert _first_seen("web1") == published
    assert Host.get(Host.name == "web1").oldest_security_at == published
    assert updates("web1")["tzdata"][2] == NOW

    # a host reporting later gets its update set's rows copied, then backdated
    report("web2", [deb("glibc", "2.36-9+deb12u1"), deb("tzdata", "2024a-0+deb12u1")])
    refresh_host_updates(NOW + 30)
    assert _first_seen("web2") == published
    assert updates("web2")["tzdata"][2] == NOW + 30
    assert Host.get(Host.name == "web2").oldest_security_at == published
    # a host moving to a package set whose update set exists: its kept row is not
    # moved back by a run that reused the set, and its counts say what its rows say
    report("web3", [deb("glibc", "2.36-9+deb12u1")])
    refresh_host_updates(NOW + 40)
    report("web3", [deb("glibc", "2.36-9+deb12u1"), deb("tzdata", "2024a-0+deb12u1")])
    refresh_host_updates(NOW + 50)
    assert host_counts.mismatched(db) == []


def test_first_seen_at_publication_off(db, tmp_path) -> None:
    from patchwatch.scheduler.runner import default_jobs

    report("web1", [deb("glibc", "2.36-9+deb12u1")])
    publish([deb("glibc", "2.36-9+deb12u3")], NOW, checksum=True)
    refresh_host_updates(NOW)
    settings = dataclasses.replace(local(tmp_path), vulns_first_seen_at_publication=False)
    jobs = {j.name: j for j in default_jobs(settings)}
    jobs["refresh_vulns"].run(NOW + 10)
    assert updates("web1")["glibc"][1:] == (True, NOW)  # security, first seen as seen
    assert Host.get(Host.name == "web1").oldest_security_at == NOW
    # turned on: the sets are computed again (their digest covers it), and backdated
    on = {j.name: j for j in default_jobs(local(tmp_path))}
    assert on["compute_vulns"].run(NOW + 20).startswith("1 vulnerability sets computed")
    assert _first_seen("web1") < NOW


def test_fixes_unknown_until_the_findings_are_of_the_hosts_packages(db, tmp_path) -> None:
    from patchwatch.inventory.vulns import update_fixes

    report("web1", [deb("glibc", "2.36-9+deb12u1")])
    publish(
        [deb("glibc", "2.36-9+deb12u3"), deb("tzdata", "2025a-0+deb12u1")], 200.0, checksum=True
    )
    refresh_vulns(local(tmp_path))
    refresh_host_vulns(300.0)
    refresh_host_updates(400.0)
    fixes = update_fixes(Host.get(Host.name == "web1"))
    assert fixes is not None and [f["id"] for f in fixes[("glibc", "amd64")]] == [
        "CVE-2023-4527", "CVE-2023-4911"]  # fmt: skip
    # a new report with another package: its findings are not computed yet
    report("web1", [deb("glibc", "2.36-9+deb12u1"), deb("tzdata", "2024a-0+deb12u1")])
    refresh_host_updates(500.0)
    assert update_fixes(Host.get(Host.name == "web1")) is None
    refresh_host_vulns(600.0)
    fixes = update_fixes(Host.get(Host.name == "web1"))
    assert fixes is not None and fixes[("tzdata", "amd64")] == []
