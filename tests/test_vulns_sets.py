"""Each set's findings, computed from its base's and its difference, are what matching
the host's own packages says; sets and findings no host needs any more are deleted.

Why a test of its own: the computation (``patchwatch.pipeline.hostvulns``) never
matches a set written as a difference whole: it changes its base's findings, packed
ids and summary by the few packages the set adds or lacks. Here hosts drift from one
image in every way that changes findings (a vulnerable package dropped, one upgraded,
a vulnerable one added, one with no record swapped) and each host's stored findings
and summary are compared with ``assess_host`` and ``summarize`` over its packages, and
the fleet listing (which counts a group of sets as one plus differences) with counting
those hosts one by one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchwatch.domain.records import Package
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.ecosystems import ecosystem_for_os
from patchwatch.domain.vulns.match import FeedIndex
from patchwatch.domain.vulns.match import assess_host
from patchwatch.inventory.vulns import VulnFilter
from patchwatch.inventory.vulns import fleet_vulnerabilities
from patchwatch.inventory.vulns import vulnerability_detail
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.store import vulns as store_vulns
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import PackageSet
from patchwatch.store.package_sets import ensure_package_sets
from patchwatch.store.vuln_models import VulnFinding
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnSet
from patchwatch.store.vulns import FindingRow
from patchwatch.store.vulns import findings
from patchwatch.store.vulns import load_records
from patchwatch.store.vulns import set_finding_ids
from patchwatch.store.vulns import summarize
from patchwatch.store.vulns import vulnerability_meta
from patchwatch.store.vulns import worst_by_vulnerability
from tests.support.vulnfleet import BOOKWORM
from tests.support.vulnfleet import deb
from tests.support.vulnfleet import publish
from tests.support.vulnfleet import report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vulns"
KEV = FIXTURES / "known_exploited_vulnerabilities-2025-08-25.json.xz"


IMAGE = [
    deb("glibc", "2.36-9+deb12u1"),  # DSA-5514-1, CVE-2023-4911: fixed in u3
    deb("bind9", "1:9.18.19-1~deb12u1"),  # DSA-5621-1: five CVEs, fixed in 9.18.24
    deb("zlib", "1:1.2.13.dfsg-1"),  # no fix yet
    deb("tar", "1.34+dfsg-1.2"),  # fixed in +deb12u1
    deb("bash", "5.2.15-2+b2"),
    deb("coreutils", "9.1-1"),
    deb("sed", "4.9-1"),
    deb("grep", "3.8-5"),
]
HOSTS = {
    "image": IMAGE,
    "image-too": IMAGE,
    "no-bind": [p for p in IMAGE if p.name != "bind9"],
    "glibc-fixed": [p for p in IMAGE if p.name != "glibc"] + [deb("glibc", "2.36-9+deb12u3")],
    "plus-curl": [*IMAGE, deb("curl", "7.88.1-10+deb12u5")],
    "swap": [p for p in IMAGE if p.name not in ("zlib", "sed")]
    + [deb("php-league-commonmark", "2.4.0-1"), deb("gawk", "1:5.2.1-2")],
    "harmless": [p for p in IMAGE if p.name != "grep"] + [deb("less", "590-2")],
}


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), vulns_enabled=True,
                    vulns_osv_sources=(str(FIXTURES / "debian"),),
                    vulns_debian_tracker_source="",
                    vulns_kev_source=str(KEV),
                    vulns_epss_source="")  # fmt: skip


def expected(packages: list[Package], offered: list[Package]) -> set[FindingRow]:
    """The host's findings by matching its packages directly (no set, no memo)."""
    eco = ecosystem_for_os(BOOKWORM)
    assert eco is not None
    index = FeedIndex(load_records())
    installed: dict[str, list[str]] = {}
    for p in packages:
        installed.setdefault(p.name, []).append(p.evr)
    offers: dict[str, set[str]] = {}
    for p in offered:
        offers.setdefault(p.name, set()).add(p.evr)
    return {
        FindingRow(f.vulnerability, p.name, p.installed, p.status.value, p.fixed_version or "",
                   p.candidate or "", " ".join(p.records))
        for f in assess_host(eco, installed, index, offers)
        for p in f.packages
    }  # fmt: skip


def stored(host: str) -> tuple[set[FindingRow], dict[str, object]]:
    row = VulnHost.get(VulnHost.host == Host.get(Host.name == host).id)
    sid = row.vuln_set_id
    rows = list(findings(set_finding_ids([sid]).get(sid, [])).values())
    assert len(rows) == len(set(rows))  # no finding twice in a set
    return set(rows), json.loads(VulnSet.get_by_id(sid).summary)


def check_every_host(offered: list[Package]) -> None:
    meta = vulnerability_meta()
    exposed: dict[str, dict[str, int]] = {}  # status filter -> vulnerability -> hosts
    shown: dict[str, set[tuple[str, str, str, str]]] = {}  # vulnerability -> its hosts' rows
    for host, packages in HOSTS.items():
        rows, summary = stored(host)
        want = expected(packages, offered)
        assert rows == want, host
        assert summary == summarize(want, meta), host
        for r in want:
            shown.setdefault(r.vulnerability, set()).add((host, r.package, r.installed, r.status))
        for vid, status in worst_by_vulnerability(want).items():
            for only in ("", status):
                counts = exposed.setdefault(only, {})
                counts[vid] = counts.get(vid, 0) + 1
    # one vulnerability's hosts (read from the sets' packed ids, only its findings)
    for vid, want_rows in shown.items():
        detail = vulnerability_detail(vid)
        got = {(h["host"], h["package"], h["installed"], h["status"]) for h in detail["hosts"]}
        assert got == want_rows, vid
    # the fleet listing counts each host once per vulnerability, at its worst status
    for only in ("", "fixable", "fixed_upstream", "no_fix"):
        listed = fleet_vulnerabilities(VulnFilter(status=only or None))
        assert {r["id"]: r["hosts"] for r in listed} == exposed.get(only, {}), only
        fixable = exposed.get("fixable", {})
        if only in ("", "fixable"):
            assert {r["id"]: r["fixable"] for r in listed if r["fixable"]} == fixable, only


@pytest.mark.parametrize("per_write", [None, 2])
def test_sets_from_their_base_match_each_host_matched_alone(
    db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_write: int | None
) -> None:
    # per_write: the sets written a few per statement, as a large fleet's are (each
    # slice's ids read back, and on the recomputation each slice's updates)
    if per_write is not None:
        monkeypatch.setattr(store_vulns, "SETS_PER_WRITE", per_write)
    # the sets stored as processing stores a batch of reports: the drifting hosts'
    # as differences from the image's (conftest's small thresholds), the path under test
    ensure_package_sets(list(HOSTS.values()), 50.0)
    assert PackageSet.select().where(PackageSet.base.is_null(False)).count() >= 4
    for host, packages in HOSTS.items():
        report(host, packages)
    refresh_vulns(settings(tmp_path))
    offered = [deb("glibc", "2.36-9+deb12u3"), deb("tar", "1.34+dfsg-1.2+deb12u1"),
               deb("bind9", "1:9.18.24-1"), deb("curl", "7.88.1-10+deb12u5")]  # fmt: skip
    publish(offered, 200.0)
    run = refresh_host_vulns(1000.0)
    assert (run.computed, run.reused) == (len(HOSTS) - 1, 1)  # image-too shares image's
    check_every_host(offered)
    assert stored("harmless") == stored("image")  # a drift with no finding changes nothing
    _, summary = stored("image")
    assert summary["cells"] and summary["oldest"]  # the comparison compared something

    # the mirror lags: glibc's fix is no longer offered, every set is recomputed
    offered = [deb("glibc", "2.36-9+deb12u2"), deb("tar", "1.34+dfsg-1.2+deb12u1")]
    publish(offered, 300.0)
    assert refresh_host_vulns(2000.0).computed == len(HOSTS) - 1
    check_every_host(offered)


def test_sets_and_findings_no_host_needs_are_deleted(db, tmp_path: Path) -> None:
    ensure_package_sets([IMAGE, HOSTS["no-bind"]], 50.0)
    report("image", IMAGE)
    report("no-bind", HOSTS["no-bind"])
    refresh_vulns(settings(tmp_path))
    refresh_host_vulns(1000.0)
    bind = VulnFinding.select().where(VulnFinding.package == "bind9")
    assert bind.count() == 5  # DSA-5621-1's CVEs, only on "image"
    # "image" now reports without bind9: its old set is no host's, and only that set
    # held bind9's findings; the run computes one set and reuses the other
    report("image", HOSTS["no-bind"], at=200.0)
    run = refresh_host_vulns(2000.0)
    assert (run.computed, run.reused) == (0, 2)
    assert VulnSet.select().count() == 1
    assert bind.count() == 0
    with write_transaction():
        Host.delete().execute()
    refresh_host_vulns(3000.0)
    assert VulnSet.select().count() == 0 and VulnFinding.select().count() == 0
