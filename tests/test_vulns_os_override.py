"""An OS group's vulnerability ecosystems, overridden by an operator (``os set
--vuln-ecosystem``): an OS the mapping does not know reads the feed it follows; ``none``
keeps a group out; ``auto`` gives it back to the os-release mapping."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchwatch.domain.errors import ParseError
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import OSInfo
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.ecosystems import Ordering
from patchwatch.domain.vulns.ecosystems import host_ecosystem
from patchwatch.domain.vulns.ecosystems import parse_override
from patchwatch.inventory.os_groups import os_release_detail
from patchwatch.inventory.os_groups import set_vuln_ecosystem
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.processing import apply_report
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.vulnfeeds import plan
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.store.models import Host
from patchwatch.store.models import OSRelease
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vulns import findings
from patchwatch.store.vulns import set_finding_ids
from tests.support.paths import ROOT

DEBIAN = ROOT / "tests" / "fixtures" / "vulns" / "debian"
RASPBIAN = OSInfo("debian", "raspbian", "Raspbian GNU/Linux 12 (bookworm)", "12", "bookworm")
BOOKWORM = OSInfo("debian", "debian", "Debian 12", "12", "bookworm")
MAIN = ReportedRepository(RepoKind.DEB, "m", "main", ("http://deb.example/debian",), 500,
                          suite="bookworm", component="main", arch="amd64")  # fmt: skip
GLIBC = Package("glibc", "", "2.36", "9+deb12u1", "armhf", PackageKind.DEB)


def report(host: str, os_info: OSInfo) -> None:
    rep = HostReport(hostname=host, os=os_info, kernel="6.1.0", arch="armv7l",
                     packages=(GLIBC,), repositories=(MAIN,))  # fmt: skip
    apply_report(store_report(host, "patchwatch/1", {}, 100.0), rep, 100.0)


def local(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path), vulns_enabled=True, vulns_osv_sources=(str(DEBIAN),),
                    vulns_debian_tracker_source="", vulns_kev_source="",
                    vulns_epss_source="")  # fmt: skip


def vulns_of(host: str) -> tuple[str, set[str]] | None:
    link = VulnHost.get(VulnHost.host == Host.get(Host.name == host).id)
    if link.vuln_set_id is None:
        return None
    rows = findings(set_finding_ids([link.vuln_set_id]).get(link.vuln_set_id, [])).values()
    return link.ecosystem, {r.vulnerability for r in rows}


def group(os_info: OSInfo) -> OSRelease:
    return OSRelease.get(OSRelease.name == os_info.name)


# --- pure ------------------------------------------------------------------------------


def test_overrides_parse_to_ecosystems_of_one_ordering() -> None:
    eco = parse_override(" Ubuntu:22.04 , Ubuntu:22.04:LTS,Ubuntu:22.04 ")
    assert eco is not None
    assert (eco.label, eco.ordering, eco.names) == (
        "Ubuntu:22.04", Ordering.DPKG, frozenset({"Ubuntu:22.04", "Ubuntu:22.04:LTS"}))  # fmt: skip
    assert parse_override("none") is None
    for bad in ("Fedora:40", "Debian:12,AlmaLinux:9", "", ",", ",".join(["Debian:12"] * 9 + ["x"])):
        with pytest.raises(ParseError):
            parse_override(bad)
    assert host_ecosystem(RASPBIAN) is None  # the mapping does not know Raspbian
    assert host_ecosystem(RASPBIAN, "Debian:12").label == "Debian:12"  # type: ignore[union-attr]
    assert host_ecosystem(BOOKWORM, "none") is None
    assert host_ecosystem(BOOKWORM, "Fedora:40") is None  # never stored so: not a guess


# --- wiring ----------------------------------------------------------------------------


def test_override_matches_an_unknown_os_and_keeps_a_group_out(db, tmp_path) -> None:
    report("pi1", RASPBIAN)
    report("deb1", BOOKWORM)
    settings = local(tmp_path)
    refresh_vulns(settings)
    refresh_host_vulns(1000.0)
    assert vulns_of("pi1") is None  # not matched: nothing is known
    assert vulns_of("deb1") == ("Debian:12", {"CVE-2023-4911", "CVE-2023-4527"})

    assert set_vuln_ecosystem(group(RASPBIAN), "Debian:12") == "Debian:12"
    assert set_vuln_ecosystem(group(BOOKWORM), "none") == "none"
    run = refresh_host_vulns(2000.0)
    assert run.unmatched == 1
    assert vulns_of("pi1") == ("Debian:12", {"CVE-2023-4911", "CVE-2023-4527"})
    assert vulns_of("deb1") is None
    detail = os_release_detail(group(BOOKWORM))
    assert (detail["vuln_ecosystem_override"], detail["vuln_ecosystems"]) == ("none", None)

    assert set_vuln_ecosystem(group(BOOKWORM), "AUTO") == ""
    refresh_host_vulns(3000.0)
    assert vulns_of("deb1") == ("Debian:12", {"CVE-2023-4911", "CVE-2023-4527"})
    detail = os_release_detail(group(BOOKWORM))
    assert (detail["vuln_ecosystem_override"], detail["vuln_ecosystems"]) == (None, ["Debian:12"])
    with pytest.raises(ParseError):
        set_vuln_ecosystem(group(BOOKWORM), "Fedora:40")
    assert group(BOOKWORM).vuln_ecosystem == ""  # a refused value changes nothing


def test_the_feeds_read_follow_an_override(db, tmp_path) -> None:
    report("pi1", RASPBIAN)
    template = Settings(data_dir=str(tmp_path), vulns_enabled=True,
                        vulns_osv_sources=("https://osv.example/{ecosystem}/all.zip",),
                        vulns_debian_tracker_source="", vulns_kev_source="",
                        vulns_epss_source="")  # fmt: skip
    assert [f.name for f in plan(template)] == []
    set_vuln_ecosystem(group(RASPBIAN), "Debian:12")
    assert [f.name for f in plan(template)] == ["osv:Debian:12"]


def test_cli_and_api_set_it(db, database_url, tmp_path) -> None:
    from patchwatch.receiver.app import create_app
    from patchwatch.store.tokens import create_token

    report("pi1", RASPBIAN)
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    client = app.test_client()
    _, admin = create_token("admin", time.time())
    auth = {"Authorization": f"Bearer {admin}"}
    release = group(RASPBIAN)
    r = client.patch(f"/api/v1/os-releases/{release.id}", headers=auth,
                     json={"vuln_ecosystem": "Debian:12"})  # fmt: skip
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["vuln_ecosystems"] == ["Debian:12"]
    r = client.patch(f"/api/v1/os-releases/{release.id}", headers=auth,
                     json={"vuln_ecosystem": "Fedora:40"})  # fmt: skip
    assert r.status_code == 400 and r.get_json()["where"] == "vuln_ecosystem"
    r = client.patch(f"/api/v1/os-releases/{release.id}", headers=auth,
                     json={"vuln_ecosystem": 12})  # fmt: skip
    assert r.status_code == 400

    if not database_url.startswith("sqlite"):
        return

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                 "PATCHWATCH_DATABASE_URL": database_url},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    done = cli("os", "set", "raspbian", "--vuln-ecosystem", "none")
    assert done.returncode == 0, done.stderr
    assert "none (its hosts are not matched)" in done.stdout
    shown = cli("os", "show", "raspbian")
    assert "vulnerability ecosystems: none (not matched) (set)" in shown.stdout, shown.stdout
    bad = cli("os", "set", "raspbian", "--vuln-ecosystem", "Debian:12,AlmaLinux:9")
    assert bad.returncode != 0 and "one ordering" in bad.stderr
    assert cli("os", "set", "raspbian").returncode != 0  # nothing to set
