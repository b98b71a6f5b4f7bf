"""Arch's security tracker and Alpine's secdb fetched on a schedule, the last good copy kept.

The feeds are served on loopback by the faulty mirror of tests/support/mirrors.py (ETag
and 304, 503, bodies over the cap, a gzip that expands past it); the pacman database is
the one repo-add wrote (tests/fixtures/arch), the APKINDEX an Alpine-shaped index
(tests/fixtures/apk). What is checked: the conditional requests, that a failure keeps
the last good copy in use and is counted (state row, metrics), the fetch policy, and
that a new copy reclassifies a mirror's updates at its next refresh even when the index
did not change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.pipeline.securityfeeds import plan_security_feeds
from patchwatch.pipeline.securityfeeds import refresh_security_feeds
from patchwatch.scheduler.runner import default_jobs
from patchwatch.store.models import Advisory
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.security_feeds import SecurityFeed
from tests.support.archrepo import index_member
from tests.support.cli import SQLITE_ONLY
from tests.support.cli import cli_env
from tests.support.mirrors import Fault
from tests.support.mirrors import MirrorServer
from tests.support.paths import FIXTURES
from tests.support.paths import ROOT
from tests.support.repositories import loopback_settings
from tests.support.repositories import reload

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp()
ARCH_PATH = "archlinux/pwtest/os/x86_64"
TRACKER_PATH = "/issues/all.json"


def group(avg: int, package: str, fixed: str | None, cve: str) -> dict[str, object]:
    """One AVG group in the shape of security.archlinux.org/issues/all.json."""
    return {
        "name": f"AVG-{avg}", "packages": [package],
        "status": "Fixed" if fixed else "Vulnerable", "severity": "High",
        "type": "arbitrary code execution", "affected": "0.1-1", "fixed": fixed,
        "ticket": None, "issues": [cve], "advisories": [],
    }  # fmt: skip


TRACKER_1 = [group(9001, "hello", "1.1-1", "CVE-2026-0001"), group(9004, "libdemo", None, "x")]
TRACKER_2 = [*TRACKER_1, group(9002, "widget", "2:3.0-1", "CVE-2026-0002")]


def secdb(branch: str, repo: str, fixes: dict[str, dict[str, list[str]]]) -> bytes:
    packages = [{"pkg": {"name": n, "secfixes": f}} for n, f in fixes.items()]
    return json.dumps({"distroversion": branch, "reponame": repo, "archs": ["x86_64"],
                       "packages": packages}).encode()  # fmt: skip


def put(root: Path, path: str, data: bytes) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def feed_settings(server: MirrorServer, **over: object) -> Settings:
    """Settings whose feed URLs are on the loopback server, reachable by the job's fetcher."""
    values: dict[str, object] = {"arch_security_tracker": server.url(TRACKER_PATH)}
    values.update(over)
    return loopback_settings(**values)


def arch_mirror(server: MirrorServer, root: Path) -> Mirror:
    (root / ARCH_PATH).mkdir(parents=True)
    shutil.copy(FIXTURES / "arch" / "pwtest.db.tar.gz", root / ARCH_PATH / "pwtest.db")
    repo = Repository.create(kind="arch", key=f"arch pwtest x86_64 {server.url(ARCH_PATH)}",
                             repo_id="pwtest", arch="x86_64", created_at=NOW)  # fmt: skip
    return Mirror.create(repository=repo, url=server.url(ARCH_PATH), kind="baseurl")


def apk_mirror(server: MirrorServer, path: str) -> Mirror:
    """An unsigned APKINDEX of tests/fixtures/apk at ``path`` on the server, and its mirror."""
    apkindex = (FIXTURES / "apk" / "APKINDEX").read_bytes()
    put(server.root, f"{path}/x86_64/APKINDEX.tar.gz", index_member(apkindex))
    url = server.url(path)
    repo = Repository.create(kind="apk", key=f"apk {url} x86_64 {url}", repo_id=url,
                             arch="x86_64", created_at=NOW)  # fmt: skip
    return Mirror.create(repository=repo, url=url, kind="baseurl")


def advisories() -> set[tuple[str, str]]:
    return {(a.advisory_id, a.cves) for a in Advisory.select()}


# --- pure ------------------------------------------------------------------------------


def test_feed_names_come_from_the_locations() -> None:
    feeds = plan_security_feeds(
        "https://security.archlinux.org/issues/all.json",
        ["https://secdb.alpinelinux.org/v3.20/main.json", "/srv/secdb/v3.20/community.json",
         "http://mirror.lan/copy/v3.20/main.json", ""],
    )  # fmt: skip
    assert [(f.name, f.kind) for f in feeds] == [
        ("arch_tracker", "arch_tracker"),
        ("apk_secdb:v3.20/main", "apk_secdb"),
        ("apk_secdb:v3.20/community", "apk_secdb"),
        ("apk_secdb:v3.20/main#2", "apk_secdb"),
    ]
    assert plan_security_feeds("", ()) == []


# --- fetching --------------------------------------------------------------------------


def test_conditional_kept_on_failure_and_capped(db: object, server: MirrorServer) -> None:
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_1).encode())
    settings = feed_settings(server)
    (first,) = refresh_security_feeds(settings, now=NOW)
    assert (first.name, first.outcome, first.records) == ("arch_tracker", "changed", 1)
    assert "If-None-Match" not in server.headers_seen[0]
    row = SecurityFeed.get_by_id("arch_tracker")
    assert bytes(row.content) == json.dumps(TRACKER_1).encode() and row.etag

    (second,) = refresh_security_feeds(settings, now=NOW + 60)
    assert second.outcome == "unchanged" and second.records == 1
    assert server.headers_seen[1].get("If-None-Match") == row.etag
    assert server.log[-1] == (TRACKER_PATH, 304)

    server.faults[TRACKER_PATH] = Fault(status=503)
    (failed,) = refresh_security_feeds(settings, now=NOW + 120)
    assert failed.outcome == "failed" and "503" in failed.error
    row = SecurityFeed.get_by_id("arch_tracker")
    assert (row.fixes, row.consecutive_failures, row.failures_total) == (1, 1, 1)
    assert bytes(row.content) == json.dumps(TRACKER_1).encode()  # the last good copy stays
    assert row.last_success_at == NOW + 60

    del server.faults[TRACKER_PATH]
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_2).encode())
    (too_big,) = refresh_security_feeds(
        dataclasses.replace(settings, security_feed_max_bytes=200), now=NOW + 180
    )
    assert too_big.outcome == "failed" and "limit of 200 bytes" in too_big.error
    # a small gzip that expands past the cap fails too, after the download
    bomb = gzip.compress(b" " * 100_000 + json.dumps(TRACKER_2).encode())
    assert len(bomb) < 2000
    put(server.root, TRACKER_PATH, bomb)
    (expands,) = refresh_security_feeds(
        dataclasses.replace(settings, security_feed_max_bytes=2000), now=NOW + 200
    )
    assert expands.outcome == "failed" and "2000" in expands.error
    # not the tracker's JSON: refused, the last good copy stays
    put(server.root, TRACKER_PATH, b"<html>maintenance</html>")
    (garbage,) = refresh_security_feeds(settings, now=NOW + 220)
    assert garbage.outcome == "failed" and "not JSON" in garbage.error
    row = SecurityFeed.get_by_id("arch_tracker")
    assert (row.fixes, row.consecutive_failures, row.failures_total) == (1, 4, 4)
    assert bytes(row.content) == json.dumps(TRACKER_1).encode()

    put(server.root, TRACKER_PATH, json.dumps(TRACKER_2).encode())
    (back,) = refresh_security_feeds(settings, now=NOW + 240)
    assert back.outcome == "changed" and back.records == 2
    row = SecurityFeed.get_by_id("arch_tracker")
    assert (row.consecutive_failures, row.failures_total, row.last_error) == (0, 4, "")


def test_feed_url_outside_the_allowed_networks_is_refused(db: object, server: MirrorServer) -> None:
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_1).encode())
    settings = feed_settings(server, mirror_allowed_networks=())
    (out,) = refresh_security_feeds(settings, now=NOW)
    assert out.outcome == "failed" and server.log == []
    assert SecurityFeed.get_by_id("arch_tracker").fixes is None


def test_a_feed_taken_out_of_the_settings_is_forgotten(db: object, server: MirrorServer) -> None:
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_1).encode())
    refresh_security_feeds(feed_settings(server), now=NOW)
    assert SecurityFeed.select().count() == 1
    assert refresh_security_feeds(feed_settings(server, arch_security_tracker=""), now=NOW) == []
    assert SecurityFeed.select().count() == 0


# --- the mirror refresh reads the copy -------------------------------------------------


def test_a_new_tracker_copy_reclassifies_without_a_new_database(
    db: object, server: MirrorServer, single_try_fetcher: HttpFetcher
) -> None:
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_1).encode())
    mirror = arch_mirror(server, server.root)
    settings = feed_settings(server)
    # not fetched yet: the feed says nothing, nothing is security
    res = refresh_mirror(mirror, single_try_fetcher, NOW, settings)
    assert res.outcome == "changed", res.detail
    assert advisories() == set()

    refresh_security_feeds(settings, now=NOW + 10)
    res = refresh_mirror(reload(mirror), single_try_fetcher, NOW + 20, settings)
    assert res.outcome == "changed", res.detail  # the same database, a new copy
    assert advisories() == {("AVG-9001", "CVE-2026-0001")}
    res = refresh_mirror(reload(mirror), single_try_fetcher, NOW + 30, settings)
    assert res.outcome == "unchanged" and "not modified" in res.detail

    # the tracker fails: the mirror keeps classifying with the last good copy
    server.faults[TRACKER_PATH] = Fault(status=503)
    refresh_security_feeds(settings, now=NOW + 40)
    res = refresh_mirror(reload(mirror), single_try_fetcher, NOW + 50, settings)
    assert res.outcome == "unchanged", res.detail
    assert advisories() == {("AVG-9001", "CVE-2026-0001")}

    del server.faults[TRACKER_PATH]
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_2).encode())
    refresh_security_feeds(settings, now=NOW + 60)
    res = refresh_mirror(reload(mirror), single_try_fetcher, NOW + 70, settings)
    assert res.outcome == "changed", res.detail
    assert advisories() == {("AVG-9001", "CVE-2026-0001"), ("AVG-9002", "CVE-2026-0002")}


def test_secdb_copies_apply_to_their_branch_and_repository(
    db: object, server: MirrorServer, single_try_fetcher: HttpFetcher
) -> None:
    put(server.root, "secdb/v3.20/main.json",
        secdb("v3.20", "main", {"musl": {"1.2.5-r0": ["CVE-2025-26519"]}}))  # fmt: skip
    put(server.root, "secdb/v3.20/community.json",
        secdb("v3.20", "community", {"musl": {"1.2.5-r0": ["CVE-2025-0001"]}}))  # fmt: skip
    urls = (server.url("secdb/v3.20/main.json"), server.url("secdb/v3.20/community.json"))
    settings = loopback_settings(apk_secdb=urls, apk_verify_signatures=False)
    out = {o.name: (o.outcome, o.records) for o in refresh_security_feeds(settings, now=NOW)}
    assert out == {"apk_secdb:v3.20/main": ("changed", 1),
                   "apk_secdb:v3.20/community": ("changed", 1)}  # fmt: skip
    mirror = apk_mirror(server, "alpine/v3.20/main")
    res = refresh_mirror(mirror, single_try_fetcher, NOW + 10, settings)
    assert res.outcome == "changed", res.detail
    assert advisories() == {("alpine-secdb:v3.20/main:musl-1.2.5-r0", "CVE-2025-26519")}


# --- scheduler, CLI, metrics -----------------------------------------------------------


def test_the_job_runs_before_the_mirrors_and_only_when_configured() -> None:
    names = [j.name for j in default_jobs(Settings(arch_security_tracker="https://t.example/a"))]
    assert names.index("refresh_security_feeds") == names.index("refresh_mirrors") - 1
    assert "refresh_security_feeds" not in [j.name for j in default_jobs(Settings())]


def run_cli(
    url: str, home: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, env={**cli_env(url, home), **env},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@SQLITE_ONLY
def test_cli_refreshes_and_shows(
    db: object, database_url: str, server: MirrorServer, tmp_path: Path
) -> None:
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_2).encode())
    env = {"PATCHWATCH_ARCH_SECURITY_TRACKER": server.url(TRACKER_PATH),
           "PATCHWATCH_MIRROR_ALLOWED_NETWORKS": "127.0.0.1/32",
           "PATCHWATCH_HTTP_RETRIES": "0"}  # fmt: skip
    done = run_cli(database_url, tmp_path, "security-feeds", "refresh", env=env)
    assert done.returncode == 0, done.stderr
    assert "changed    arch_tracker: 2 fixes" in done.stdout
    shown = run_cli(database_url, tmp_path, "security-feeds", "--format", "json", env=env)
    (row,) = json.loads(shown.stdout)
    assert (row["name"], row["fixes"], row["consecutive_failures"]) == ("arch_tracker", 2, 0)
    server.faults[TRACKER_PATH] = Fault(status=503)
    failed = run_cli(database_url, tmp_path, "security-feeds", "refresh", "--force", env=env)
    assert failed.returncode == 1 and "failed     arch_tracker: " in failed.stderr


def test_metrics_absent_until_a_good_copy_then_counted(db: object, server: MirrorServer) -> None:
    from prometheus_client.core import CollectorRegistry

    from patchwatch.exporter.collector import StoreCollector

    def samples() -> dict[str, dict[str, float]]:
        registry = CollectorRegistry()
        registry.register(StoreCollector(db))  # type: ignore[arg-type]
        out: dict[str, dict[str, float]] = {}
        for family in registry.collect():
            for s in family.samples:
                if s.name.startswith("patchwatch_security_feed"):
                    out.setdefault(s.name, {})[s.labels["feed"]] = s.value
        return out

    server.faults[TRACKER_PATH] = Fault(status=503)
    refresh_security_feeds(feed_settings(server), now=NOW)
    before = samples()
    assert before["patchwatch_security_feed_failures_total"] == {"arch_tracker": 1}
    assert before["patchwatch_security_feed_last_attempt_timestamp_seconds"] == {
        "arch_tracker": NOW
    }
    assert "patchwatch_security_feed_fixes" not in before  # unknown, not 0
    assert "patchwatch_security_feed_last_success_timestamp_seconds" not in before
    del server.faults[TRACKER_PATH]
    put(server.root, TRACKER_PATH, json.dumps(TRACKER_2).encode())
    refresh_security_feeds(feed_settings(server), now=NOW + 60)
    after = samples()
    assert after["patchwatch_security_feed_fixes"] == {"arch_tracker": 2}
    assert after["patchwatch_security_feed_consecutive_failures"] == {"arch_tracker": 0}
    assert after["patchwatch_security_feed_skipped_entries"] == {"arch_tracker": 0}
    assert after["patchwatch_security_feed_last_success_timestamp_seconds"] == {
        "arch_tracker": NOW + 60
    }


# --- OSV Alpine:v3.x records beside secdb ----------------------------------------------


def osv_alpine(record_id: str, cve: str, package: str, fixed: str) -> dict[str, object]:
    """One record in the shape osv.dev publishes for Alpine (from the secdb, by origin)."""
    return {
        "schema_version": "1.6.0", "id": record_id, "modified": "2025-02-20T12:00:00Z",
        "published": "2025-02-14T00:00:00Z", "upstream": [cve],
        "affected": [{
            "package": {"ecosystem": "Alpine:v3.20", "name": package,
                        "purl": f"pkg:apk/alpine/{package}?arch=source"},
            "ranges": [{"type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": fixed}]}],
        }],
    }  # fmt: skip


def test_osv_alpine_records_classify_beside_secdb(
    db: object, server: MirrorServer, single_try_fetcher: HttpFetcher, tmp_path: Path
) -> None:
    from patchwatch.pipeline.vulnfeeds import refresh_vulns
    from patchwatch.store.models import AdvisoryPackage
    from patchwatch.store.models import Package

    put(server.root, "secdb/v3.20/main.json",
        secdb("v3.20", "main", {"busybox": {"1.36.1-r29": ["CVE-2023-42366"]}}))  # fmt: skip
    settings = loopback_settings(
        apk_secdb=(server.url("secdb/v3.20/main.json"),), apk_verify_signatures=False
    )
    refresh_security_feeds(settings, now=NOW)
    mirror = apk_mirror(server, "alpine/v3.20/main")
    res = refresh_mirror(mirror, single_try_fetcher, NOW + 10, settings)
    assert res.outcome == "changed", res.detail
    secdb_only = {("alpine-secdb:v3.20/main:busybox-1.36.1-r29", "CVE-2023-42366")}
    assert advisories() == secdb_only

    osv = tmp_path / "osv"
    osv.mkdir()
    for record in (
        osv_alpine("ALPINE-CVE-2025-26519", "CVE-2025-26519", "musl", "1.2.5-r0"),
        osv_alpine("ALPINE-CVE-2024-9143", "CVE-2024-9143", "openssl", "3.3.2-r1"),
        osv_alpine("ALPINE-CVE-2024-0001", "CVE-2024-0001", "not-offered", "1.0-r0"),
    ):
        (osv / f"{record['id']}.json").write_text(json.dumps(record))
    vulns = dataclasses.replace(settings, vulns_enabled=True, vulns_osv_sources=(str(osv),),
                                vulns_kev_source="", vulns_epss_source="")  # fmt: skip
    read = {o.name: (o.outcome, o.records) for o in refresh_vulns(vulns, only="osv")}
    assert read == {"osv": ("changed", 3)}
    # the same index, new records of its branch: read again, reclassified
    res = refresh_mirror(reload(mirror), single_try_fetcher, NOW + 20, settings)
    assert res.outcome == "changed", res.detail
    assert advisories() == secdb_only | {
        ("ALPINE-CVE-2025-26519", "CVE-2025-26519"),
        ("ALPINE-CVE-2024-9143", "CVE-2024-9143"),
    }
    # by origin: musl's fix reaches musl-utils, openssl's libcrypto3
    fixed = {
        (a, n, v)
        for a, n, v in AdvisoryPackage.select(Advisory.advisory_id, Package.name, Package.version)
        .join(Advisory, on=(AdvisoryPackage.advisory == Advisory.id))
        .switch(AdvisoryPackage)
        .join(Package, on=(AdvisoryPackage.package == Package.id))
        .tuples()
    }
    assert {
        ("ALPINE-CVE-2025-26519", "musl", "1.2.5-r0"),
        ("ALPINE-CVE-2025-26519", "musl-utils", "1.2.5-r0"),
        ("ALPINE-CVE-2024-9143", "openssl", "3.3.2-r1"),
        ("ALPINE-CVE-2024-9143", "libcrypto3", "3.3.2-r1"),
    } <= fixed
    res = refresh_mirror(reload(mirror), single_try_fetcher, NOW + 30, settings)
    assert res.outcome == "unchanged", res.detail
    # an index of another branch does not read v3.20's records
    other = apk_mirror(server, "alpine/v3.19/main")
    res = refresh_mirror(other, single_try_fetcher, NOW + 40, settings)
    assert res.outcome == "changed", res.detail
    assert Advisory.select().where(Advisory.repository == other.repository_id).count() == 0
