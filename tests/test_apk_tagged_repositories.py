"""An apk tagged repository offers a host only the names its world file pins to the tag.

The update computation's side is held against apk-tools' vectors in
tests/test_updates_apk_reference.py; here the vulnerability side: a fix that only a
tagged repository offers, for a package the host does not pin to its tag, is not in
the host's repositories (``fixed_upstream``, not ``fixable``), as apk would never
install it; for a package pinned to the tag it is one upgrade away (``fixable``, the
tag's version named as the candidate), as its update is listed.
"""

from __future__ import annotations

import json
from pathlib import Path

from patchwatch.domain.records import HostReport
from patchwatch.domain.records import OSInfo
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.processing import apply_report
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.sets import repository_key
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vulns import findings
from patchwatch.store.vulns import set_finding_ids

ALPINE = OSInfo("alpine", "alpine", "Alpine Linux v3.20", "3.20.3")
MAIN_URL = "http://dl.example/alpine/v3.20/main"
EDGE_URL = "http://dl.example/alpine/edge/main"


def apk(name: str, version: str) -> Package:
    return Package(name, "", version, "", "x86_64", PackageKind.APK)


def repos(pinned: tuple[str, ...]) -> tuple[ReportedRepository, ...]:
    main = ReportedRepository(RepoKind.APK, MAIN_URL, MAIN_URL, (MAIN_URL,), arch="x86_64")
    edge = ReportedRepository(RepoKind.APK, f"@edge {EDGE_URL}", f"@edge {EDGE_URL}",
                              (EDGE_URL,), arch="x86_64", tag="edge", pinned=pinned)  # fmt: skip
    return main, edge


def test_a_fix_only_an_unpinned_tag_offers_is_not_fixable(db: object, tmp_path: Path) -> None:
    installed = (apk("musl", "1.2.4-r0"), apk("busybox", "1.36.1-r28"))
    for host, pinned in (("plain", ()), ("pinned", ("musl",)), ("other", ("busybox",))):
        report = HostReport(hostname=host, os=ALPINE, kernel="6.6.58-0-lts", arch="x86_64",
                            packages=installed, repositories=repos(pinned))  # fmt: skip
        apply_report(store_report(host, "patchwatch/1", {}, 100.0), report, 100.0)
    main = [apk("musl", "1.2.4-r0"), apk("busybox", "1.36.1-r29")]
    edge = [apk("musl", "1.2.5-r0"), apk("busybox", "1.37.0-r0")]
    for url, offered in ((MAIN_URL, main), (EDGE_URL, edge)):
        pset = ensure_package_set(offered, 200.0)
        query = Repository.select(Repository.id).where(Repository.key.contains(url))
        Mirror.update(package_set=pset, last_success_at=200.0).where(
            Mirror.repository.in_(query)
        ).execute()
    osv = tmp_path / "osv"
    osv.mkdir()
    for rid, cve, name, fixed in (("ALPINE-CVE-2025-26519", "CVE-2025-26519", "musl", "1.2.5-r0"),
                                  ("ALPINE-CVE-2023-42366", "CVE-2023-42366", "busybox",
                                   "1.36.1-r29")):  # fmt: skip
        (osv / f"{rid}.json").write_text(json.dumps({
            "schema_version": "1.6.0", "id": rid, "modified": "2025-02-20T12:00:00Z",
            "upstream": [cve],
            "affected": [{"package": {"ecosystem": "Alpine:v3.20", "name": name},
                          "ranges": [{"type": "ECOSYSTEM", "events": [
                              {"introduced": "0"}, {"fixed": fixed}]}]}],
        }))  # fmt: skip
    settings = Settings(vulns_enabled=True, vulns_osv_sources=(str(osv),), vulns_kev_source="",
                        vulns_epss_source="", vulns_debian_tracker_source="")  # fmt: skip
    refresh_vulns(settings)
    refresh_host_vulns(1000.0)

    def statuses(host: str) -> dict[str, tuple[str, str]]:
        row = VulnHost.get(VulnHost.host == Host.get(Host.name == host).id)
        ids = set_finding_ids([row.vuln_set_id]).get(row.vuln_set_id, [])
        return {f.package: (f.status, f.candidate) for f in findings(ids).values()}

    # busybox's fix is in main: fixable on every host (from edge where busybox is pinned
    # to it: apk upgrades it to the tag's newer version); musl's only in edge, which
    # offers it to the host that pins musl to the tag, and to no other
    busybox = ("fixable", "1.36.1-r29")
    assert statuses("plain") == {"musl": ("fixed_upstream", ""), "busybox": busybox}
    assert statuses("other") == {
        "musl": ("fixed_upstream", ""),
        "busybox": ("fixable", "1.37.0-r0"),
    }
    assert statuses("pinned") == {"musl": ("fixable", "1.2.5-r0"), "busybox": busybox}
    assert repository_key(repos(())[1]) != repository_key(repos(())[0])
