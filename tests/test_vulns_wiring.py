"""Vulnerability feeds read into the store, and hosts' findings computed once per set."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from patchwatch.domain.records import HostReport
from patchwatch.domain.records import OSInfo
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.ecosystems import ecosystem_for_os
from patchwatch.domain.vulns.feeds import changed_too_much
from patchwatch.domain.vulns.feeds import fleet_ecosystems
from patchwatch.domain.vulns.feeds import plan_feeds
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.processing import apply_report
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.sets import repository_key
from patchwatch.store.vuln_models import Vulnerability
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnRecord
from patchwatch.store.vuln_models import VulnSet
from patchwatch.store.vuln_models import VulnSource
from tests.support.vulnfleet import BOOKWORM
from tests.support.vulnfleet import DEBIAN
from tests.support.vulnfleet import MAIN
from tests.support.vulnfleet import deb
from tests.support.vulnfleet import publish
from tests.support.vulnfleet import report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vulns"


def set_rows(set_id: int) -> list:
    from patchwatch.store.vulns import findings
    from patchwatch.store.vulns import set_finding_ids

    return list(findings(set_finding_ids([set_id]).get(set_id, [])).values())


KEV = FIXTURES / "known_exploited_vulnerabilities-2025-08-25.json.xz"
TRACKER = FIXTURES / "debian-tracker.json"
ALMALINUX = FIXTURES / "almalinux-osv-2026-08-21.tar.xz"


def local(tmp_path: Path, **over: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": str(tmp_path / "data"),
        "vulns_enabled": True,
        "vulns_osv_sources": (str(DEBIAN),),
        "vulns_debian_tracker_source": "",
        "vulns_kev_source": str(KEV),
        "vulns_epss_source": "",
    }
    values.update(over)
    return Settings(**values)  # type: ignore[arg-type]


# --- pure ------------------------------------------------------------------------------


def test_feed_plan_follows_the_fleet() -> None:
    hosts = [
        ecosystem_for_os(BOOKWORM),
        ecosystem_for_os(OSInfo("redhat", "almalinux", "AlmaLinux 9.4", "9.4")),
    ]
    ecos = fleet_ecosystems([h for h in hosts if h], ["Alpine:v3.20", "-AlmaLinux:9"])
    assert ecos == ["Alpine:v3.20", "Debian:12"]
    feeds = plan_feeds(
        osv_sources=["https://osv.example/{ecosystem}/all.zip", "/srv/osv"],
        ecosystems=ecos, debian_tracker="https://t.example/json", kev="/srv/kev.json",
        epss="", debian_hosts=False,
    )  # fmt: skip
    assert [(f.name, f.location) for f in feeds] == [
        ("osv:Alpine:v3.20", "https://osv.example/Alpine:v3.20/all.zip"),
        ("osv:Debian:12", "https://osv.example/Debian:12/all.zip"),
        ("osv", "/srv/osv"),
        ("kev", "/srv/kev.json"),
    ]  # no Debian host: the tracker is not read


def test_change_share() -> None:
    assert not changed_too_much(None, 10, 0.5)
    assert not changed_too_much(100, 60, 0.5)
    assert changed_too_much(100, 40, 0.5)
    assert changed_too_much(100, 151, 0.5)
    assert changed_too_much(0, 1, 0.5)
    assert not changed_too_much(0, 0, 0.5)


# --- feeds into the store --------------------------------------------------------------


def test_local_feeds_stored_merged_and_skipped_when_unchanged(db, tmp_path: Path) -> None:
    report("web1", [deb("bash", "5.2.15-2+b2")])
    settings = local(tmp_path)
    out = {o.name: o for o in refresh_vulns(settings)}
    assert out["osv"].outcome == "changed"
    # seven files, one withdrawn: six records kept
    assert out["osv"].records == 6
    assert out["kev"].outcome == "changed" and out["kev"].records == 1404
    cve = Vulnerability.get_by_id("CVE-2023-4911")
    assert set(cve.records.split()) == {"DSA-5514-1", "DEBIAN-CVE-2023-4911"}
    assert cve.kev and cve.kev_added == "2023-11-21"
    assert cve.severity == "high"  # the CVSS v3.1 vector of DEBIAN-CVE-2023-4911
    assert not Vulnerability.select().where(Vulnerability.id == "DEBIAN-CVE-2023-4911").exists()
    state = VulnSource.get_by_id("osv")
    assert (state.records, state.consecutive_failures, state.changed_too_much) == (6, 0, False)

    again = {o.name: o.outcome for o in refresh_vulns(settings)}
    assert again == {"osv": "unchanged", "kev": "unchanged"}


def test_failed_read_keeps_last_good_data_and_counts(db, tmp_path: Path) -> None:
    report("web1", [deb("bash", "5.2.15-2+b2")])
    folder = tmp_path / "osv"
    shutil.copytree(DEBIAN, folder)
    settings = local(tmp_path, vulns_osv_sources=(str(folder),), vulns_kev_source="")
    assert refresh_vulns(settings)[0].records == 6
    shutil.rmtree(folder)
    (failed,) = refresh_vulns(settings)
    assert failed.outcome == "failed" and "no such file" in failed.error
    state = VulnSource.get_by_id("osv")
    assert (state.records, state.consecutive_failures, state.failures_total) == (6, 1, 1)
    assert VulnRecord.select().where(VulnRecord.source == "osv").count() == 6


def test_feed_that_shrinks_too_much_is_kept_and_flagged(db, tmp_path: Path) -> None:
    report("web1", [deb("bash", "5.2.15-2+b2")])
    folder = tmp_path / "osv"
    shutil.copytree(DEBIAN, folder)
    settings = local(tmp_path, vulns_osv_sources=(str(folder),), vulns_kev_source="")
    refresh_vulns(settings)
    for name in ("DSA-5514-1.json", "DSA-5621-1.json", "DEBIAN-CVE-2023-45853.json",
                 "DEBIAN-CVE-2014-9586.json"):  # fmt: skip
        (folder / name).unlink()
    (out,) = refresh_vulns(settings)
    assert out.outcome == "changed" and out.records == 2 and out.flagged
    state = VulnSource.get_by_id("osv")
    assert state.changed_too_much and state.records == 2


def test_tracker_and_almalinux_archive(db, tmp_path: Path) -> None:
    report("web1", [deb("bash", "5.2.15-2+b2")])
    report("alma1", [Package("bash", "", "5.1.8", "6.el9", "x86_64", PackageKind.RPM)],
           os=OSInfo("redhat", "almalinux", "AlmaLinux 9.4", "9.4"))  # fmt: skip
    settings = local(
        tmp_path, vulns_osv_sources=(str(ALMALINUX),), vulns_kev_source="",
        vulns_debian_tracker_source=str(TRACKER),
    )  # fmt: skip
    out = {o.name: o for o in refresh_vulns(settings)}
    assert out["osv"].records == 5637  # 5,680 files, 43 duplicates
    assert out["debian_tracker"].outcome == "changed" and out["debian_tracker"].skipped > 0
    # the tracker's record for CVE-2023-4911 and its bookworm fix
    rec = VulnRecord.get((VulnRecord.source == "debian_tracker")
                         & (VulnRecord.record_id == "CVE-2023-4911"))  # fmt: skip
    # bookworm only: the parse keeps the releases the fleet runs
    assert [(a.ecosystem, a.package) for a in rec.affected] == [("Debian:12", "glibc")]


# --- findings per host -----------------------------------------------------------------


def test_statuses_once_per_set_and_recomputed_on_change(db, tmp_path: Path) -> None:
    old_glibc = deb("glibc", "2.36-9+deb12u1")  # affected by DSA-5514-1, fixed in u3
    old_bind = Package("bind9", "1", "9.18.19", "1~deb12u1", "amd64", PackageKind.DEB)
    for i in range(3):
        report(f"web{i}", [old_glibc, old_bind, deb("bash", "5.2.15-2+b2")])
    report("other", [deb("glibc", "2.36-9+deb12u3")])  # fixed already
    refresh_vulns(local(tmp_path))
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0)

    run = refresh_host_vulns(1000.0)
    assert (run.computed, run.reused) == (2, 2)  # three identical hosts share one set
    web0 = VulnHost.get(VulnHost.host == Host.get(Host.name == "web0").id)
    items = {(i.vulnerability, i.package): i for i in set_rows(web0.vuln_set_id)}
    glibc = items[("CVE-2023-4911", "glibc")]
    assert (glibc.status, glibc.fixed_version, glibc.candidate) == (
        "fixable", "2.36-9+deb12u3", "2.36-9+deb12u3")  # fmt: skip
    bind = {k: v for k, v in items.items() if k[1] == "bind9"}
    assert bind and {v.status for v in bind.values()} == {"fixed_upstream"}
    other = VulnHost.get(VulnHost.host == Host.get(Host.name == "other").id)
    assert set_rows(other.vuln_set_id) == []

    assert refresh_host_vulns(2000.0).computed == 0  # nothing changed
    publish([deb("glibc", "2.36-9+deb12u2")], 3000.0)  # the mirror now offers only u2
    run = refresh_host_vulns(3000.0)
    assert run.computed == 2
    web0 = VulnHost.get(VulnHost.host == Host.get(Host.name == "web0").id)
    (glibc,) = [i for i in set_rows(web0.vuln_set_id) if i.vulnerability == "CVE-2023-4911"]
    assert glibc.status == "fixed_upstream" and glibc.candidate == ""


def test_host_of_unmapped_os_is_not_matched(db, tmp_path: Path) -> None:
    report("sid1", [deb("glibc", "2.36-9+deb12u1")],
           os=OSInfo("debian", "debian", "Debian sid", "", "sid"))  # fmt: skip
    refresh_vulns(local(tmp_path))
    run = refresh_host_vulns(1000.0)
    assert run.unmatched == 1
    row = VulnHost.get()
    assert row.vuln_set_id is None and row.ecosystem == ""
    assert VulnSet.select().count() == 0


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_change_share_setting_bounds(share: float) -> None:
    from patchwatch.domain.errors import ConfigError
    from patchwatch.domain.settings import parse_settings

    with pytest.raises(ConfigError):
        parse_settings({"vulns_change_share": share})
    assert dataclasses.replace(Settings(), vulns_change_share=0.2).vulns_change_share == 0.2


# --- operator views --------------------------------------------------------------------


def _cli(url: str, home: Path, *args: str, env: dict[str, str] | None = None):
    import os
    import subprocess
    import sys

    from tests.support.paths import ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "PATCHWATCH_DATABASE_URL": url,
             **(env or {})},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_lists_shows_and_refreshes(db, database_url: str, tmp_path: Path) -> None:
    import json

    old_glibc = deb("glibc", "2.36-9+deb12u1")
    report("web1", [old_glibc], at=100.0)
    report("web2", [old_glibc, deb("bash", "5.2.15-2+b2")], at=100.0)
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0)

    listed = _cli(database_url, tmp_path, "vulns", "--format", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert "no vulnerability feed loaded yet" in listed.stderr

    env = {"PATCHWATCH_VULNS_OSV_SOURCES": str(DEBIAN), "PATCHWATCH_VULNS_KEV_SOURCE": "",
           "PATCHWATCH_VULNS_DEBIAN_TRACKER_SOURCE": ""}  # fmt: skip
    refreshed = _cli(database_url, tmp_path, "vulns", "refresh", env=env)
    assert refreshed.returncode == 0, refreshed.stderr
    assert "changed    osv: 6 records" in refreshed.stdout
    kev = _cli(database_url, tmp_path, "vulns", "refresh", "--source", "kev", "--file", str(KEV),
               env=env)  # fmt: skip
    assert kev.returncode == 0 and "kev: 1404 records" in kev.stdout, kev.stderr

    rows = json.loads(_cli(database_url, tmp_path, "vulns", "--format", "json").stdout)
    by_id = {r["id"]: r for r in rows}
    assert by_id["CVE-2023-4911"]["kev"] is True
    assert (by_id["CVE-2023-4911"]["hosts"], by_id["CVE-2023-4911"]["fixable"]) == (2, 2)
    assert rows[0]["id"] == "CVE-2023-4911"  # known-exploited first
    only_kev = json.loads(_cli(database_url, tmp_path, "vulns", "--kev", "--format", "json").stdout)
    assert [r["id"] for r in only_kev] == ["CVE-2023-4911"]
    csv_out = _cli(database_url, tmp_path, "vulns", "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "id,severity,cvss_score,kev,epss,published,hosts,fixable"

    shown = _cli(database_url, tmp_path, "vulns", "show", "CVE-2023-4911", "--format", "json")
    detail = json.loads(shown.stdout)
    assert {(h["host"], h["installed"], h["candidate"], h["status"]) for h in detail["hosts"]} == {
        ("web1", "2.36-9+deb12u1", "2.36-9+deb12u3", "fixable"),
        ("web2", "2.36-9+deb12u1", "2.36-9+deb12u3", "fixable"),
    }
    assert "https://www.debian.org/security/2023/dsa-5514" in detail["links"]
    table = _cli(database_url, tmp_path, "vulns", "show", "CVE-2023-4911")
    assert table.returncode == 0 and "web1" in table.stdout and "DSA-5514-1" in table.stdout

    missing = _cli(database_url, tmp_path, "vulns", "show", "CVE-1999-0001")
    assert missing.returncode == 1 and "no vulnerability 'CVE-1999-0001'" in missing.stderr
    bad = _cli(database_url, tmp_path, "vulns", "refresh", "--file", str(KEV))
    assert bad.returncode == 2 and "--file needs --source" in bad.stderr


# --- metrics ---------------------------------------------------------------------------


def _samples(db) -> dict[str, list[tuple[dict[str, str], float]]]:
    from patchwatch.exporter.collector import StoreCollector

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in StoreCollector(db).collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_metrics_absent_until_a_feed_is_loaded_then_counted(db, tmp_path: Path) -> None:
    old_glibc = deb("glibc", "2.36-9+deb12u1")
    report("web1", [old_glibc])
    report("clean", [deb("bash", "5.2.15-2+b2")])
    report("sid1", [old_glibc], os=OSInfo("debian", "debian", "Debian sid", "", "sid"))
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0)
    refresh_host_vulns(500.0)  # no feed yet: nothing can be said
    before = _samples(db)
    for name in ("patchwatch_host_vulnerabilities", "patchwatch_host_vulnerabilities_kev_fixable",
                 "patchwatch_host_vulnerabilities_computed_timestamp_seconds",
                 "patchwatch_vuln_feed_records"):  # fmt: skip
        assert name not in before, name

    refresh_vulns(local(tmp_path))
    refresh_host_vulns(1000.0)
    after = _samples(db)
    kev_fixable = {
        lab["host"]: v for lab, v in after["patchwatch_host_vulnerabilities_kev_fixable"]
    }
    assert kev_fixable == {"web1": 1, "clean": 0}  # sid1: not matched, no series
    cells = {
        (lab["severity"], lab["status"]): v
        for lab, v in after["patchwatch_host_vulnerabilities"]
        if lab["host"] == "web1"
    }
    assert cells[("high", "fixable")] >= 1
    assert not [
        lab for lab, _ in after["patchwatch_host_vulnerabilities"] if lab["host"] == "clean"
    ]
    computed = {
        lab["host"]
        for lab, _ in after["patchwatch_host_vulnerabilities_computed_timestamp_seconds"]
    }
    assert computed == {"web1", "clean"}
    kev = {(lab["cve"], lab["status"]): v for lab, v in after["patchwatch_kev_vulnerability_hosts"]}
    assert kev == {("CVE-2023-4911", "all"): 1, ("CVE-2023-4911", "fixable"): 1}
    name = "patchwatch_host_oldest_fixable_vulnerability_published_timestamp_seconds"
    oldest = {(lab["host"], lab["severity"]): v for lab, v in after[name]}
    assert oldest[("web1", "high")] == 1696352400.0  # DSA-5514-1, 2023-10-03T17:00:00Z
    records = {lab["feed"]: v for lab, v in after["patchwatch_vuln_feed_records"]}
    assert records == {"osv": 6, "kev": 1404}
    failures = {lab["feed"]: v for lab, v in after["patchwatch_vuln_feed_failures_total"]}
    assert failures == {"osv": 0, "kev": 0}


def _shard_samples(db, index: int, count: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    from patchwatch.domain.shards import Shard
    from patchwatch.exporter.collector import SCRAPE_SHARD

    token = SCRAPE_SHARD.set(Shard(index, count))
    try:
        return _samples(db)
    finally:
        SCRAPE_SHARD.reset(token)


def test_vulnerability_series_follow_the_scrape_shards(db, tmp_path: Path) -> None:
    """Each host's vulnerability series are in its own shard only; the fleet's KEV
    exposure and the feeds' health in shard 0 only, counting every host."""
    from patchwatch.domain.shards import shard_of

    old_glibc = deb("glibc", "2.36-9+deb12u1")
    names = [f"web{i}" for i in range(8)]
    for name in names:
        report(name, [old_glibc])
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0)
    refresh_vulns(local(tmp_path))
    refresh_host_vulns(1000.0)
    seen: dict[str, int] = {}
    for index in range(2):
        got = _shard_samples(db, index, 2)
        hosts = {lab["host"] for lab, _ in got["patchwatch_host_vulnerabilities_kev_fixable"]}
        assert hosts == {n for n in names if shard_of(n, 2) == index}
        for host in hosts:
            seen[host] = seen.get(host, 0) + 1
        kev = {(lab["cve"], lab["status"]): v
               for lab, v in got.get("patchwatch_kev_vulnerability_hosts", [])}  # fmt: skip
        feeds = got.get("patchwatch_vuln_feed_records", [])
        if index == 0:
            assert kev == {("CVE-2023-4911", "all"): 8, ("CVE-2023-4911", "fixable"): 8}
            assert feeds
        else:
            assert kev == {} and feeds == []
    assert seen == dict.fromkeys(names, 1)


# --- feeds over HTTP -------------------------------------------------------------------


class _FeedServer:
    """A loopback HTTP server for one feed file, honouring If-None-Match."""

    def __init__(self, body: bytes) -> None:
        import http.server
        import threading

        self.body = body
        self.status = 200
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(dict(self.headers))
                etag = f'"v-{len(outer.body)}"'
                if outer.status != 200:
                    self.send_response(outer.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", str(len(outer.body)))
                    self.end_headers()
                    self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/feeds/kev.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_feed_over_http_conditional_kept_on_failure_and_capped(db, tmp_path: Path) -> None:
    report("web1", [deb("bash", "5.2.15-2+b2")])
    server = _FeedServer(KEV.read_bytes())
    try:
        settings = local(
            tmp_path, vulns_osv_sources=(), vulns_kev_source=server.url,
            mirror_allowed_networks=("127.0.0.0/8",), http_retries=0,
        )  # fmt: skip
        (first,) = refresh_vulns(settings)
        assert first.outcome == "changed" and first.records == 1404
        assert "If-None-Match" not in server.requests[0]
        (second,) = refresh_vulns(settings)
        assert second.outcome == "unchanged"
        assert server.requests[1].get("If-None-Match") == f'"v-{len(server.body)}"'

        server.status = 503
        (failed,) = refresh_vulns(settings)
        assert failed.outcome == "failed" and "503" in failed.error
        state = VulnSource.get_by_id("kev")
        assert (state.records, state.consecutive_failures) == (1404, 1)
        assert Vulnerability.select().count() == 0  # no records: KEV alone makes none

        server.status = 200
        capped = dataclasses.replace(settings, vulns_max_feed_bytes=1000)
        (too_big,) = refresh_vulns(capped, force=True)
        assert too_big.outcome == "failed"
        assert VulnSource.get_by_id("kev").records == 1404  # last good data kept
        (back,) = refresh_vulns(settings)
        assert back.outcome == "unchanged" and VulnSource.get_by_id("kev").consecutive_failures == 0
    finally:
        server.close()


def test_feed_url_outside_loopback_allowance_is_refused(db, tmp_path: Path) -> None:
    report("web1", [deb("bash", "5.2.15-2+b2")])
    server = _FeedServer(KEV.read_bytes())
    try:
        settings = local(
            tmp_path, vulns_osv_sources=(), vulns_kev_source=server.url, http_retries=0
        )  # fmt: skip (no mirror_allowed_networks: loopback refused)
        (out,) = refresh_vulns(settings)
        assert out.outcome == "failed" and server.requests == []
    finally:
        server.close()


def test_host_vulnerabilities_in_the_api_and_hosts_show(db, database_url, tmp_path) -> None:
    import time as _time

    from patchwatch.receiver.app import create_app
    from patchwatch.store.tokens import create_token

    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    client = app.test_client()
    _, admin = create_token("admin", _time.time())
    auth = {"Authorization": f"Bearer {admin}"}
    report("web1", [deb("glibc", "2.36-9+deb12u1"), deb("bash", "5.2.15-2+b2")])
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0)

    before = client.get("/api/v1/hosts/web1", headers=auth).get_json()
    assert before["vulnerabilities"] == {"state": "unknown", "ecosystem": None,
                                         "vulnerabilities": []}  # fmt: skip
    # the web console's host page says the same, through the same query
    console = app.test_client()
    form = console.get("/ui/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    assert console.post("/ui/login", data={"csrf": csrf, "token": admin}).status_code == 303
    page = console.get("/ui/hosts/web1").get_data(as_text=True)
    assert "Unknown: no vulnerability feed is loaded yet" in page and "CVE-" not in page
    refresh_vulns(local(tmp_path))
    refresh_host_vulns(1000.0)
    body = client.get("/api/v1/hosts/web1", headers=auth).get_json()["vulnerabilities"]
    assert body["state"] == "known" and body["ecosystem"] == "Debian:12"
    by_id = {v["id"]: v for v in body["vulnerabilities"]}
    cve = by_id["CVE-2023-4911"]
    assert (cve["kev"], cve["status"], cve["severity"]) == (True, "fixable", "high")
    assert cve["packages"] == [{"name": "glibc", "installed": "2.36-9+deb12u1",
                                "status": "fixable", "fixed_version": "2.36-9+deb12u3",
                                "candidate": "2.36-9+deb12u3",
                                "records": ["DEBIAN-CVE-2023-4911", "DSA-5514-1"],
                                "held": False}]  # fmt: skip
    kev = client.get("/api/v1/hosts/web1?kev=true", headers=auth).get_json()["vulnerabilities"]
    assert [v["id"] for v in kev["vulnerabilities"]] == ["CVE-2023-4911"]
    bad = client.get("/api/v1/hosts/web1?severity=awful", headers=auth)
    assert bad.status_code == 400
    page = console.get("/ui/hosts/web1").get_data(as_text=True)
    row = page[page.index('<th scope="row">CVE-2023-4911</th>') :]
    row = row[: row.index("</tr>")]
    assert "<td>high</td><td>yes</td>" in row and "<td>fixable</td>" in row
    assert "2.36-9+deb12u1, fixed in 2.36-9+deb12u3, offered 2.36-9+deb12u3" in row

    if database_url.startswith("sqlite"):
        shown = _cli(database_url, tmp_path, "hosts", "show", "web1")
        assert shown.returncode == 0, shown.stderr
        assert "vulnerabilities (" in shown.stdout and "CVE-2023-4911" in shown.stdout
        assert "2.36-9+deb12u3" in shown.stdout


def test_held_package_is_reported_as_held(db, tmp_path: Path) -> None:
    from patchwatch.domain.records import HeldPackage
    from patchwatch.inventory.vulns import host_vulnerabilities

    glibc = deb("glibc", "2.36-9+deb12u1")
    rep = HostReport(hostname="held1", os=BOOKWORM, kernel="6.1.0-28-amd64", arch="x86_64",
                     packages=(glibc,), repositories=(MAIN,),
                     held=(HeldPackage("glibc", "amd64"),))  # fmt: skip
    apply_report(store_report("held1", "patchwatch/1", {}, 100.0), rep, 100.0)
    report("free1", [glibc])
    publish([deb("glibc", "2.36-9+deb12u3")], 200.0)
    refresh_vulns(local(tmp_path))
    refresh_host_vulns(1000.0)

    def glibc_held(name: str) -> list[bool]:
        found = host_vulnerabilities(Host.get(Host.name == name))["vulnerabilities"]
        return [p["held"] for v in found for p in v["packages"] if v["id"] == "CVE-2023-4911"]

    assert glibc_held("held1") == [True]
    assert glibc_held("free1") == [False]


def test_scheduler_jobs_only_when_enabled_and_the_feed_job_computes(db, tmp_path: Path) -> None:
    from patchwatch.scheduler.runner import default_jobs

    assert not {"refresh_vulns", "compute_vulns"} & {j.name for j in default_jobs(Settings())}
    settings = local(tmp_path)
    jobs = {j.name: j for j in default_jobs(settings)}
    assert jobs["refresh_vulns"].every_seconds == settings.vulns_refresh_interval_minutes * 60
    report("web1", [deb("glibc", "2.36-9+deb12u1")])
    detail = jobs["refresh_vulns"].run(1000.0)
    # findings changed: the update sets they touch are computed again at once
    assert detail == "feeds: 2 changed; 1 vulnerability sets computed; 1 update sets computed"
    assert VulnHost.get().vuln_set_id is not None
    assert jobs["compute_vulns"].run(2000.0) == "0 vulnerability sets computed, 1 reused"


def test_binaries_matched_under_the_source_a_mirror_names(db, tmp_path: Path) -> None:
    from patchwatch.store.vulns import remember_sources

    libc6_old, libc6_new = deb("libc6", "2.36-9+deb12u1"), deb("libc6", "2.36-9+deb12u3")
    rebuilt = deb("libc-bin", "2.36-9+deb12u1+b1")  # a binNMU: same source version
    report("web1", [libc6_old, rebuilt])
    publish([libc6_new], 200.0)
    refresh_vulns(local(tmp_path))
    refresh_host_vulns(500.0)
    web1 = VulnHost.get(VulnHost.host == Host.get(Host.name == "web1").id)
    assert set_rows(web1.vuln_set_id) == []  # no glibc binary: nothing matched yet

    assert remember_sources({libc6_old: "glibc", libc6_new: "glibc", rebuilt: "glibc"}) == 3
    assert remember_sources({libc6_old: "glibc"}) == 0  # written once
    refresh_host_vulns(1000.0, force=True)
    found = {(r.vulnerability, r.installed, r.status, r.candidate)
             for r in set_rows(web1.vuln_set_id) if r.package == "glibc"}  # fmt: skip
    assert ("CVE-2023-4911", "2.36-9+deb12u1", "fixable", "2.36-9+deb12u3") in found
    assert {installed for _v, installed, _s, _c in found} == {"2.36-9+deb12u1"}


def test_refresh_collects_the_source_names_that_differ() -> None:
    from patchwatch.domain.records import AvailablePackage
    from patchwatch.pipeline.refresh.fetched import collect

    libc6, bash = deb("libc6", "2.36-9"), deb("bash", "5.2.15-2")
    into: list[Package] = []
    sources: dict[Package, str] = {}
    parsed = [AvailablePackage(libc6, "glibc"), AvailablePackage(bash, "bash"),
              AvailablePackage(deb("tzdata", "2024a-0"), "")]  # fmt: skip
    collect(parsed, into, 10, "packages", sources)
    assert len(into) == 3 and sources == {libc6: "glibc"}


def test_updateinfo_advisories_are_a_source_for_hosts_of_their_repository(db, tmp_path) -> None:
    from patchwatch.store.models import Advisory
    from patchwatch.store.models import AdvisoryPackage
    from patchwatch.store.models import Package as PackageRow
    from patchwatch.store.sets import ensure_packages

    baseos = ReportedRepository(RepoKind.RPM, "baseos", "BaseOS", ("http://rpm.example/baseos",))
    other = ReportedRepository(RepoKind.RPM, "local", "Local", ("http://rpm.example/local",))
    alma = OSInfo("redhat", "almalinux", "AlmaLinux 9.4", "9.4")
    old = Package("openssl", "1", "3.0.1", "47.el9", "x86_64", PackageKind.RPM)
    fixed = Package("openssl", "1", "3.0.7", "27.el9", "x86_64", PackageKind.RPM)
    for host, repos in (("alma1", (baseos,)), ("alma2", (other,))):
        rep = HostReport(hostname=host, os=alma, kernel="5.14.0", arch="x86_64",
                         packages=(old,), repositories=repos)  # fmt: skip
        apply_report(store_report(host, "patchwatch/1", {}, 100.0), rep, 100.0)
    repo = Repository.get(Repository.key == repository_key(baseos))
    pset = ensure_package_set([fixed], 200.0)
    Mirror.update(package_set=pset, last_success_at=200.0).where(
        Mirror.repository == repo
    ).execute()
    adv = Advisory.create(advisory_id="ALSA-2099:0001", repository=repo, type="security",
                          severity="Important", title="Important: openssl security update",
                          cves="CVE-2099-1234")  # fmt: skip
    AdvisoryPackage.create(
        advisory=adv, package=PackageRow.get_by_id(ensure_packages([fixed])[fixed])
    )
    settings = local(tmp_path, vulns_osv_sources=(), vulns_kev_source="")

    (errata,) = refresh_vulns(settings)
    assert (errata.name, errata.outcome, errata.records) == ("updateinfo", "changed", 1)
    assert Vulnerability.get_by_id("CVE-2099-1234").severity == "high"  # Important
    assert refresh_vulns(settings)[0].outcome == "unchanged"
    refresh_host_vulns(1000.0)
    alma1 = VulnHost.get(VulnHost.host == Host.get(Host.name == "alma1").id)
    assert [(r.vulnerability, r.status, r.candidate) for r in set_rows(alma1.vuln_set_id)] == [
        ("CVE-2099-1234", "fixable", "1:3.0.7-27.el9")]  # fmt: skip
    alma2 = VulnHost.get(VulnHost.host == Host.get(Host.name == "alma2").id)
    assert set_rows(alma2.vuln_set_id) == []  # not a repository it uses
