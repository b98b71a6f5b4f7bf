#!/usr/bin/env python3
"""Measure what "an update that fixes a vulnerability is a security update" changes.

Why: before it, an update was a security update only when its candidate came from a
security suite (or an operator-marked repository), an updateinfo advisory of the
host's repository covered it, or the host said so. AlmaLinux (like Rocky Linux and
Red Hat) has no security suite: BaseOS and AppStream carry every update. This puts
the real AlmaLinux feed (``tests/fixtures/vulns/almalinux-osv-2026-08-21.tar.xz``,
5,680 advisories) through the whole pipeline on a SQLite store and counts the
security updates by both rules.

The hosts are built from the feed's own history of AlmaLinux 9 packages: each
package a record names, installed at the newest version any record (security, bug
fix or enhancement) fixed before a cut-off date, and a mirror (one repository, not a
security one, no updateinfo) offering the newest version the feed knows. So every
pending update is a real version step of a real package, and the question is only
which of them fix a vulnerability the installed version has.

Usage: ``bench/measure_fix_rule.py [--cutoff 2024-01-01 ...]``; prints one line per
cut-off (updates, security by the suite rule, security with findings, seconds the
update and vulnerability computations took).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALMALINUX = ROOT / "tests" / "fixtures" / "vulns" / "almalinux-osv-2026-08-21.tar.xz"


def history(ecosystem: str) -> dict[str, list[tuple[float, str]]]:
    """Per package name: (publication, fixed version) of every record fixing it."""
    from patchwatch.domain.vulns import archive
    from patchwatch.domain.vulns import osv
    from patchwatch.domain.vulns.model import FeedStats

    stats = FeedStats()
    out: dict[str, list[tuple[float, str]]] = {}
    for rec in osv.load_records(archive.iter_members(ALMALINUX, stats), stats):
        for entry in rec.affected:
            if entry.ecosystem != ecosystem:
                continue
            for rng in entry.ranges:
                for ev in rng.events:
                    if ev.kind == "fixed" and rec.published is not None:
                        out.setdefault(entry.name, []).append((rec.published, ev.version))
    return out


def package(name: str, evr: str):
    from patchwatch.domain.records import Package
    from patchwatch.domain.records import PackageKind

    epoch, _, rest = evr.rpartition(":")
    version, _, release = rest.rpartition("-")
    return Package(name, epoch if epoch not in ("", "0") else "", version, release,
                   "x86_64", PackageKind.RPM)  # fmt: skip


def measure(cutoff: float, hist: dict[str, list[tuple[float, str]]], workdir: Path) -> str:
    from patchwatch.domain.records import HostReport
    from patchwatch.domain.records import OSInfo
    from patchwatch.domain.records import RepoKind
    from patchwatch.domain.records import ReportedRepository
    from patchwatch.domain.settings import Settings
    from patchwatch.domain.versions import sort_key
    from patchwatch.pipeline.hostupdates import refresh_host_updates
    from patchwatch.pipeline.hostvulns import refresh_host_vulns
    from patchwatch.pipeline.processing import apply_report
    from patchwatch.pipeline.processing import store_report
    from patchwatch.pipeline.vulnfeeds import refresh_vulns
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate
    from patchwatch.store.models import Host
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Repository
    from patchwatch.store.package_sets import ensure_package_set
    from patchwatch.store.sets import repository_key

    db = open_database(f"sqlite:///{workdir / 'store.db'}")
    db.connect()
    migrate(db)

    def newest(versions: list[str]) -> str:
        return max(versions, key=lambda v: sort_key(package("x", v).kind, *_evr(v)))

    installed, offered = [], []
    for name, fixes in sorted(hist.items()):
        before = [v for published, v in fixes if published < cutoff]
        if not before:
            continue
        installed.append(package(name, newest(before)))
        offered.append(package(name, newest([v for _p, v in fixes])))
    baseos = ReportedRepository(RepoKind.RPM, "baseos", "BaseOS", ("http://rpm.example/baseos",))
    alma = OSInfo("redhat", "almalinux", "AlmaLinux 9.4", "9.4")
    rep = HostReport(hostname="alma1", os=alma, kernel="5.14.0", arch="x86_64",
                     packages=tuple(installed), repositories=(baseos,))  # fmt: skip
    apply_report(store_report("alma1", "patchwatch/1", {}, 100.0), rep, 100.0)
    repo = Repository.get(Repository.key == repository_key(baseos))
    Mirror.update(package_set=ensure_package_set(offered, 200.0), last_success_at=200.0,
                  metadata_checksum="m").where(Mirror.repository == repo).execute()  # fmt: skip

    started = time.perf_counter()
    refresh_host_updates(300.0)
    t_updates = time.perf_counter() - started
    host = Host.get(Host.name == "alma1")
    pending = host.security_updates + host.other_updates
    suite_rule = host.security_updates

    settings = Settings(data_dir=str(workdir / "data"), vulns_enabled=True,
                        vulns_osv_sources=(str(ALMALINUX),), vulns_debian_tracker_source="",
                        vulns_kev_source="", vulns_epss_source="")  # fmt: skip
    refresh_vulns(settings)
    started = time.perf_counter()
    refresh_host_vulns(400.0)
    t_vulns = time.perf_counter() - started
    started = time.perf_counter()
    ctx = refresh_host_updates(500.0)
    t_again = time.perf_counter() - started
    host = Host.get(Host.name == "alma1")
    db.close()
    day = datetime.fromtimestamp(cutoff, UTC).date().isoformat()
    return (
        f"installed as of {day}: {len(installed)} packages, {pending} pending updates; "
        f"security by the suite rule {suite_rule}, with findings {host.security_updates} "
        f"({host.security_updates / max(pending, 1):.0%}); other {host.other_updates}; "
        f"updates {t_updates:.2f} s, findings {t_vulns:.2f} s, "
        f"updates again {t_again:.2f} s ({ctx.computed} set computed)"
    )


LISTS = Path("/var/lib/apt/lists")
SUITES = (  # suite, list file, security
    ("bookworm", "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4", False),
    ("bookworm-updates",
     "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages.lz4", False),
    ("bookworm-security",
     "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages.lz4",
     True),
)  # fmt: skip


def debian(workdir: Path, with_security: bool = True) -> str:
    """This machine: its installed packages (dpkg-query) against its own apt lists.

    The feed is cut from the real ``bookworm-security`` index: each source package there
    is a record "fixed in the version the security archive carries" (Debian's OSV shape,
    ecosystem ``Debian:12``), a lower bound of what Debian's records say (their older
    fixes are not in today's index). The suite rule already calls an update from
    bookworm-security a security update; the question is how many updates from the
    main suite (point releases) and bookworm-updates also carry such a fix.
    ``with_security`` False: the host's sources list lacks bookworm-security (a local
    mirror of the main archive only, a forgotten line): its fixes come by point release.
    """
    import json
    import subprocess

    from patchwatch.domain.records import HostReport
    from patchwatch.domain.records import OSInfo
    from patchwatch.domain.records import Package
    from patchwatch.domain.records import PackageKind
    from patchwatch.domain.records import RepoKind
    from patchwatch.domain.records import ReportedRepository
    from patchwatch.domain.repodata.apt import parse_packages
    from patchwatch.domain.settings import Settings
    from patchwatch.pipeline.hostupdates import refresh_host_updates
    from patchwatch.pipeline.hostvulns import refresh_host_vulns
    from patchwatch.pipeline.processing import apply_report
    from patchwatch.pipeline.processing import store_report
    from patchwatch.pipeline.vulnfeeds import refresh_vulns
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate
    from patchwatch.store.models import Host
    from patchwatch.store.models import HostUpdate
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Repository
    from patchwatch.store.package_sets import ensure_package_set
    from patchwatch.store.sets import repository_key
    from patchwatch.store.vulns import remember_sources

    db = open_database(f"sqlite:///{workdir / 'store.db'}")
    db.connect()
    migrate(db)
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = []
    for line in out.splitlines():
        name, version, arch = line.split("\t")
        epoch, _, rest = version.rpartition(":")
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        installed.append(Package(name, epoch, upstream, revision, arch, PackageKind.DEB))
    repos = [
        ReportedRepository(RepoKind.DEB, suite, suite, ("http://deb.example/debian",), 500,
                           suite=suite, component="main", arch="amd64")
        for suite, _f, _s in SUITES
    ]  # fmt: skip
    rep = HostReport(hostname="this", os=OSInfo("debian", "debian", "Debian 12", "12",
                     "bookworm"), kernel="6.1.0-28-amd64", arch="x86_64",
                     packages=tuple(installed), repositories=tuple(repos))  # fmt: skip
    if not with_security:
        rep = dataclasses.replace(rep, repositories=tuple(repos[:2]))
    apply_report(store_report("this", "patchwatch/1", {}, 100.0), rep, 100.0)
    feed = workdir / "osv"
    feed.mkdir()
    for (suite, listing, security), reported in zip(SUITES, repos, strict=True):
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(LISTS / listing)],
                              capture_output=True, check=True).stdout  # fmt: skip
        parsed = list(parse_packages(text.splitlines()))
        sources = {a.package: a.source for a in parsed if a.source and a.source != a.package.name}
        remember_sources(sources)
        repo = Repository.get_or_none(Repository.key == repository_key(reported))
        if repo is None:  # not among the host's sources: its index is the feed only
            repo = Repository.create(kind="deb", key=repository_key(reported), created_at=0.0)
        Repository.update(security=security).where(Repository.id == repo.id).execute()
        pset = ensure_package_set([a.package for a in parsed], 200.0)
        Mirror.update(package_set=pset, last_success_at=200.0, metadata_checksum=suite).where(
            Mirror.repository == repo
        ).execute()
        if security:
            fixed = {}
            for a in parsed:
                src = a.source or a.package.name
                fixed[src] = (
                    a.package.evr.rsplit("+b", 1)[0] if "+b" in a.package.evr else (a.package.evr)
                )
            for i, (src, version) in enumerate(sorted(fixed.items())):
                doc = {"id": f"DEBIAN-SEC-{i}", "modified": "2026-01-01T00:00:00Z",
                       "published": "2026-01-01T00:00:00Z",
                       "affected": [{"package": {"ecosystem": "Debian:12", "name": src},
                                     "ranges": [{"type": "ECOSYSTEM", "events": [
                                         {"introduced": "0"}, {"fixed": version}]}]}]}  # fmt: skip
                (feed / f"DEBIAN-SEC-{i}.json").write_text(json.dumps(doc))
    refresh_host_updates(300.0)
    host = Host.get(Host.name == "this")
    before = (host.security_updates, host.other_updates)
    settings = Settings(data_dir=str(workdir / "data"), vulns_enabled=True,
                        vulns_osv_sources=(str(feed),), vulns_debian_tracker_source="",
                        vulns_kev_source="", vulns_epss_source="")  # fmt: skip
    refresh_vulns(settings)
    refresh_host_vulns(400.0)
    refresh_host_updates(500.0)
    host = Host.get(Host.name == "this")
    after = (host.security_updates, host.other_updates)
    became = [
        (u.installed.name, u.available.version_string, u.repository.suite)
        for u in HostUpdate.select().where(HostUpdate.host == host.id)
    ]
    from patchwatch.store.vuln_models import VulnSet

    cells = json.loads(VulnSet.get().summary)["cells"]
    by_suite: dict[str, int] = {}
    for _n, _v, suite in became:
        by_suite[suite] = by_suite.get(suite, 0) + 1
    db.close()
    return (
        f"this host{'' if with_security else ' without bookworm-security'}: "
        f"{len(installed)} packages, {sum(before)} pending updates "
        f"(by suite: {by_suite}); security by the suite rule {before[0]}, with findings "
        f"{after[0]}; other {before[1]} -> {after[1]}; findings by severity/status {cells}"
    )


def _evr(evr: str) -> tuple[str, str, str]:
    epoch, _, rest = evr.rpartition(":")
    version, _, release = rest.rpartition("-")
    return epoch, version, release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cutoff", action="append", default=[])
    parser.add_argument("--debian", action="store_true", help="this Debian machine only")
    args = parser.parse_args()
    if args.debian:
        for with_security in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                print(debian(Path(tmp), with_security), flush=True)
        return
    cutoffs = args.cutoff or ["2023-01-01", "2024-06-01", "2025-06-01"]
    hist = history("AlmaLinux:9")
    for text in cutoffs:
        cutoff = datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
        with tempfile.TemporaryDirectory() as tmp:
            print(measure(cutoff, hist, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
