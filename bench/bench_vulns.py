#!/usr/bin/env python3
"""Benchmark the vulnerability feed readers and matching (``patchwatch.domain.vulns``).

Why: issue 25 sets the aims for one 2-core server: the 5,680 real AlmaLinux records
read from their archive in under 3 s, and a Debian-sized feed (about 50,000 records) in
under 10 s and 200 MB. This measures both, plus matching throughput, the KEV catalogue
and a full-size EPSS file.

Cells (each load runs in a fresh child process, so its peak RSS, ``VmHWM``, is its own;
"RSS added" is the peak minus the RSS after imports):

- ``almalinux``: ``tests/fixtures/vulns/almalinux-osv-2026-08-21.tar.xz`` (xz tarball,
  35 MB of JSON) through ``archive.iter_members`` + ``osv.load_records``; the same records
  repacked as a zip (osv.dev's ``all.zip`` shape).
- ``debian``: a generated Debian-sized feed in osv.dev's shape, one zip of JSON records:
  44,000 DEBIAN-CVE records (Debian 11/12/13 entries, 70 % fixed, 30 % open with a
  ``versions`` list, urgency, CVSS vectors on 60 %), 4,000 DSA and 2,000 DLA records
  naming 1-8 CVEs. Source package names and versions are the real ones of this
  machine's bookworm ``Packages`` list (``apt-helper cat-file``), else of
  ``tests/fixtures/versions/bookworm-versions.txt`` under made-up names. Seeded.
- ``match``: the Debian feed indexed (``FeedIndex``), then hosts of 1,500 source packages
  each (drawn from the feed's packages, each at one of the last three versions its
  history lists, one newer version offered) assessed with ``assess_host``; hosts/s.
- ``store``: the Debian feed stored as ``patchwatch vulns refresh`` stores it, into a
  fresh SQLite store (``--store-url`` for another database, emptied of vulnerability
  data first), in one transaction: parse (``archive`` + ``osv.load_records``), store
  (``replace_records``), merge (``rebuild_vulnerabilities``); CPU and wall seconds of
  each step and of the whole, peak RSS.
- ``kev``: the real catalogue (1,404 entries, xz); ``epss``: a generated 300,000-row
  gzip CSV (today's file size).

CPU seconds (``getrusage``) vary less than wall seconds on a shared machine; every line
also gives the load average it was measured at.

Usage: ``bench/bench_vulns.py [--repeat N] [--records 50000] [--hosts 200]
[--cells almalinux,debian,match,store,kev,epss] [--feed ZIP] [--store-url URL]``
(``--feed`` reads a feed generated before instead of generating one).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures" / "vulns"
ALMALINUX = FIXTURES / "almalinux-osv-2026-08-21.tar.xz"
KEV = FIXTURES / "known_exploited_vulnerabilities-2025-08-25.json.xz"
APT_LIST = Path(
    "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
)
VERSIONS = ROOT / "tests" / "fixtures" / "versions" / "bookworm-versions.txt"

URGENCIES = ["not yet assigned"] * 5 + ["low", "medium", "high", "unimportant", "end-of-life"]
VECTORS = [
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H",
    "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N",
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
    "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:N/I:N/A:H",
    "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N",
]
VECTORS_V4 = [
    "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N",
    "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
]
RELEASES = {"Debian:11": "deb11u", "Debian:12": "deb12u", "Debian:13": ""}
WORDS = ["buffer", "overflow", "use-after-free", "heap", "stack", "integer", "out-of-bounds",
         "read", "write", "denial", "of", "service", "crafted", "file", "remote", "attacker",
         "allows", "via", "in", "the", "when"]  # fmt: skip


# --- the generated Debian feed ------------------------------------------------------------


def real_sources() -> dict[str, str]:
    """Source package -> version from bookworm's Packages list, or a fallback."""
    helper = Path("/usr/lib/apt/apt-helper")
    sources: dict[str, str] = {}
    if APT_LIST.exists() and helper.exists():
        text = subprocess.run([str(helper), "cat-file", str(APT_LIST)], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip
        for stanza in text.split("\n\n"):
            fields = dict(
                line.split(": ", 1)
                for line in stanza.splitlines()
                if ": " in line and line[0] != " "
            )
            if "Package" not in fields:
                continue
            name, version = fields["Package"], fields["Version"]
            if "Source" in fields:
                src = fields["Source"].split()
                name = src[0]
                if len(src) > 1:
                    version = src[1].strip("()")
            sources.setdefault(name, version)
    if len(sources) < 1000:
        versions = [v for v in VERSIONS.read_text().splitlines() if v and not v.startswith("#")]
        sources = {f"src{n:05d}": v for n, v in enumerate(versions)}
    return sources


def _history(version: str, release: str, n: int) -> list[str]:
    """The versions a release held, oldest first (``+debNNuK`` stable updates).

    The same list for every record naming the package, as osv.dev enumerates a package's
    real version history into each record's ``versions``.
    """
    if release:
        return [version] + [f"{version}+{release}{k}" for k in range(1, n)]
    return [version] + [f"{version}.{k}" for k in range(1, n)]


def _details(rnd: random.Random) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(15, 90))).capitalize() + "."


def _entry(name: str, version: str, eco: str, rnd: random.Random, fixed: bool) -> dict:
    """One affected entry: fixed at a point of the package's history, or still open."""
    release = RELEASES[eco]
    history = _history(version, release, 1 + sum(map(ord, name)) % 40)
    distro = {"Debian:11": "bullseye", "Debian:12": "bookworm", "Debian:13": "trixie"}[eco]
    events: list[dict] = [{"introduced": "0"}]
    cut = rnd.randrange(1, len(history) + 1)
    if fixed:
        fix = f"{version}+{release}{cut}" if release else f"{version}.{cut}"
        events.append({"fixed": fix})
    return {
        "package": {
            "name": name,
            "ecosystem": eco,
            "purl": f"pkg:deb/debian/{name}?arch=source&distro={distro}",
        },
        "ranges": [{"type": "ECOSYSTEM", "events": events}],
        "versions": history[:cut],
        "ecosystem_specific": {"urgency": rnd.choice(URGENCIES)},
    }


def debian_feed(path: Path, total: int, seed: int = 25) -> tuple[Path, dict[str, str]]:
    """Write the generated feed as one zip; return it and the source packages used."""
    rnd = random.Random(seed)
    sources = real_sources()
    names = sorted(sources)
    rnd.shuffle(names)
    # CVEs per package are heavy-tailed (the kernel alone has thousands): Zipf weights
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(len(names))))

    def pick() -> str:
        return rnd.choices(names, cum_weights=cumulative, k=1)[0]

    dsa, dla = total * 8 // 100, total * 4 // 100
    cves = total - dsa - dla
    cve_ids = [f"CVE-{2005 + n % 21}-{10000 + n}" for n in range(cves)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, cve in enumerate(cve_ids):
            picked = [pick() for _ in range(2 if rnd.random() < 0.1 else 1)]
            affected = []
            for name in picked:
                for eco, p in (("Debian:11", 0.6), ("Debian:12", 1.0), ("Debian:13", 0.8)):
                    if rnd.random() < p:
                        affected.append(_entry(name, sources[name], eco, rnd, rnd.random() < 0.7))
            rec: dict = {
                "schema_version": "1.7.0",
                "id": f"DEBIAN-{cve}",
                "published": f"20{5 + n % 21:02d}-0{1 + n % 9}-1{n % 9}T0{n % 10}:15:10Z",
                "modified": "2026-08-20T03:11:30.918811Z",
                "upstream": [cve],
                "details": _details(rnd),
                "affected": affected,
                "references": [{"type": "ADVISORY",
                                "url": f"https://security-tracker.debian.org/tracker/{cve}"}],
            }  # fmt: skip
            roll = rnd.random()
            if roll < 0.5:
                rec["severity"] = [{"type": "CVSS_V3", "score": rnd.choice(VECTORS)}]
            elif roll < 0.6:
                rec["severity"] = [{"type": "CVSS_V4", "score": rnd.choice(VECTORS_V4)}]
            z.writestr(f"DEBIAN-{cve}.json", json.dumps(rec, indent=2))
        for kind, count, ecos in (
            ("DSA", dsa, ["Debian:12", "Debian:11"]),
            ("DLA", dla, ["Debian:11"]),
        ):
            for n in range(count):
                name = pick()
                url = f"https://www.debian.org/security/2024/{kind.lower()}-{3000 + n}"
                entries = [
                    _entry(name, sources[name], e, rnd, True) for e in ecos if rnd.random() < 0.8
                ]
                rec = {
                    "schema_version": "1.7.0",
                    "id": f"{kind}-{3000 + n}-1",
                    "summary": f"{name} - security update",
                    "published": "2024-02-13T00:00:00Z",
                    "modified": "2024-09-18T03:23:30.150411Z",
                    "upstream": rnd.sample(cve_ids, rnd.randrange(1, 9)),
                    "details": _details(rnd),
                    "affected": entries or [_entry(name, sources[name], ecos[0], rnd, True)],
                    "references": [{"type": "ADVISORY", "url": url}],
                }
                z.writestr(f"{kind}-{3000 + n}-1.json", json.dumps(rec, indent=2))
    return path, sources


# --- child processes ----------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_load(source: str) -> None:
    """Read one archive of records; print JSON with time and memory."""
    from patchwatch.domain.vulns import archive
    from patchwatch.domain.vulns import osv
    from patchwatch.domain.vulns.model import FeedStats

    base = _rss_kib("VmRSS")
    started, cpu = time.perf_counter(), _cpu()
    stats = FeedStats()
    records = osv.load_records(archive.iter_members(source, stats), stats)
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    print(json.dumps({
        "seconds": elapsed, "cpu": cpu, "load": os.getloadavg()[0],
        "records": len(records), "read": stats.read,
        "skipped": stats.skipped_total, "duplicates": stats.duplicates,
        "peak_mib": _rss_kib("VmHWM") / 1024, "added_mib": (_rss_kib("VmHWM") - base) / 1024,
    }))  # fmt: skip


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_store(source: str, url: str) -> None:
    """Store a feed as ``vulns refresh`` does, step by step; print JSON with the times."""
    from patchwatch.domain.vulns import archive
    from patchwatch.domain.vulns import osv
    from patchwatch.domain.vulns.model import FeedStats
    from patchwatch.store.db import open_database
    from patchwatch.store.db import write_transaction
    from patchwatch.store.migrations import migrate
    from patchwatch.store.vuln_models import VulnAffected
    from patchwatch.store.vuln_models import Vulnerability
    from patchwatch.store.vuln_models import VulnRecord
    from patchwatch.store.vulns import rebuild_vulnerabilities
    from patchwatch.store.vulns import replace_records

    db = open_database(url)
    db.connect(reuse_if_open=True)
    migrate(db)
    with write_transaction():  # an emptied store, whatever an earlier run left
        VulnAffected.delete().execute()
        VulnRecord.delete().execute()
        Vulnerability.delete().execute()
    out: dict[str, float] = {}
    cpu, wall = _cpu(), time.perf_counter()
    start = cpu, wall
    with write_transaction():
        stats = FeedStats()
        records = osv.load_records(archive.iter_members(source, stats), stats)
        out["parse_cpu"], out["parse_seconds"] = _cpu() - cpu, time.perf_counter() - wall
        cpu, wall = _cpu(), time.perf_counter()
        out["records"] = replace_records("osv", records)
        del records
        out["store_cpu"], out["store_seconds"] = _cpu() - cpu, time.perf_counter() - wall
        cpu, wall = _cpu(), time.perf_counter()
        out["vulnerabilities"] = rebuild_vulnerabilities()
        out["merge_cpu"], out["merge_seconds"] = _cpu() - cpu, time.perf_counter() - wall
        cpu, wall = _cpu(), time.perf_counter()
    out["commit_seconds"] = time.perf_counter() - wall
    out["cpu"], out["seconds"] = _cpu() - start[0], time.perf_counter() - start[1]
    out["peak_mib"] = _rss_kib("VmHWM") / 1024
    out["load"] = os.getloadavg()[0]
    db.close()
    print(json.dumps(out))


def child_match(source: str, hosts: int, size: int) -> None:
    """Index a feed and assess ``hosts`` generated hosts of ``size`` source packages."""
    from patchwatch.domain.osinfo import normalise_os
    from patchwatch.domain.vulns import archive
    from patchwatch.domain.vulns import osv
    from patchwatch.domain.vulns.ecosystems import ecosystem_for_os
    from patchwatch.domain.vulns.match import FeedIndex
    from patchwatch.domain.vulns.match import assess_host
    from patchwatch.domain.vulns.model import FeedStats

    stats = FeedStats()
    records = osv.load_records(archive.iter_members(source, stats), stats)
    started = time.perf_counter()
    index = FeedIndex(records)
    host = ecosystem_for_os(normalise_os({"id": "debian", "version_id": "12"}))
    assert host is not None
    view = index.for_host(host)
    indexed = time.perf_counter() - started
    rnd = random.Random(1)
    names = sorted(view)
    per_host = []
    findings = 0
    for _ in range(hosts):
        installed: dict[str, list[str]] = {}
        offered: dict[str, list[str]] = {}
        for name in rnd.sample(names, min(size, len(names))):
            history = max((e.versions for _, e in view[name]), key=len) or ("0",)
            # hosts are mostly up to date: one of the last three versions a release held
            installed[name] = [rnd.choice(history[-3:])]
            offered[name] = [history[-1] + "+deb12u99"]
        t = time.perf_counter()
        findings += len(assess_host(host, installed, index, offered))
        per_host.append(time.perf_counter() - t)
    print(json.dumps({
        "index_seconds": indexed, "hosts": hosts, "packages_per_host": size,
        "median_host_seconds": statistics.median(per_host), "mean_findings": findings / hosts,
        "hosts_per_second": hosts / sum(per_host), "peak_mib": _rss_kib("VmHWM") / 1024,
    }))  # fmt: skip


def child_small(kind: str, source: str) -> None:
    from patchwatch.domain.vulns.epss import parse_epss
    from patchwatch.domain.vulns.kev import parse_kev

    data = Path(source).read_bytes()
    started = time.perf_counter()
    result = parse_kev(data) if kind == "kev" else parse_epss(data)
    elapsed = time.perf_counter() - started
    count = len(result.entries) if kind == "kev" else len(result.scores)  # type: ignore[union-attr]
    print(json.dumps({"seconds": elapsed, "records": count, "peak_mib": _rss_kib("VmHWM") / 1024}))


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def best(runs: list[dict], key: str = "seconds") -> dict:
    return min(runs, key=lambda r: r[key])


def load_line(label: str, runs: list[dict]) -> str:
    r = best(runs)
    times = ", ".join(f"{x['seconds']:.2f} s / {x['cpu']:.2f} CPU s" for x in runs)
    loads = ", ".join(f"{x['load']:.1f}" for x in runs)
    return (
        f"{label:<17} {r['records']:,} records ({r['read']:,} read, {r['duplicates']} "
        f"duplicates, {r['skipped']} skipped) in {r['seconds']:.2f} s (runs {times}; load "
        f"average {loads}), peak RSS {r['peak_mib']:.0f} MiB, added {r['added_mib']:.0f} MiB"
    )


def repack_as_zip(target: Path) -> Path:
    """The AlmaLinux tarball's members, unchanged, in a zip (osv.dev's all.zip shape)."""
    import tarfile

    with (
        tarfile.open(ALMALINUX, "r|xz") as t,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z,
    ):
        for info in t:
            f = t.extractfile(info) if info.isfile() else None
            if f is not None:
                z.writestr(info.name, f.read())
    return target


def epss_file(target: Path, rows: int = 300_000) -> Path:
    rnd = random.Random(3)
    head = "#model_version:v2025.03.14,score_date:2025-08-25T12:55:00+0000\n"
    body = "".join(
        f"CVE-{1999 + n % 27}-{n:05d},{rnd.random():.5f},{rnd.random():.5f}\n" for n in range(rows)
    )
    target.write_bytes(gzip.compress((head + "cve,epss,percentile\n" + body).encode()))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--cells", default="almalinux,debian,match,store,kev,epss")
    parser.add_argument("--feed", help="a generated feed (zip) to read instead of a new one")
    parser.add_argument("--store-url", help="database for the store cell (default: SQLite)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "load":
            child_load(rest[0])
        elif kind == "match":
            child_match(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "store":
            child_store(rest[0], rest[1])
        else:
            child_small(kind, rest[0])
        return
    cells = set(args.cells.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-vulns-"))
    try:
        if "almalinux" in cells:
            runs = [run_child("load", str(ALMALINUX)) for _ in range(args.repeat)]
            print(load_line("almalinux tar.xz:", runs))
            repacked = repack_as_zip(tmp / "almalinux.zip")
            runs = [run_child("load", str(repacked)) for _ in range(args.repeat)]
            print(load_line("almalinux zip:", runs))
        feed = Path(args.feed) if args.feed else tmp / "debian-all.zip"
        if cells & {"debian", "match", "store"} and not args.feed:
            started = time.perf_counter()
            _, sources = debian_feed(feed, args.records)
            json_bytes = sum(i.file_size for i in zipfile.ZipFile(feed).infolist())
            print(
                f"generated debian feed: {args.records:,} records, {len(sources):,} source "
                f"packages, zip {feed.stat().st_size / 1e6:.0f} MB ({json_bytes / 1e6:.0f} MB "
                f"of JSON) in {time.perf_counter() - started:.1f} s"
            )
        if "debian" in cells:
            runs = [run_child("load", str(feed)) for _ in range(args.repeat)]
            print(load_line("debian zip:", runs))
        if "match" in cells:
            r = run_child("match", str(feed), str(args.hosts), "1500")
            print(
                f"match:            index {r['index_seconds']:.2f} s; {r['hosts']} hosts of "
                f"{r['packages_per_host']} source packages: median "
                f"{r['median_host_seconds'] * 1000:.1f} ms per host "
                f"({r['hosts_per_second']:.0f} hosts/s), {r['mean_findings']:.0f} "
                f"vulnerabilities per host, peak RSS {r['peak_mib']:.0f} MiB"
            )
        if "store" in cells:
            for n in range(args.repeat):
                url = args.store_url or f"sqlite:///{tmp / f'store-{n}.db'}"
                r = run_child("store", str(feed), url)
                print(
                    f"store:            {r['records']:,} records, {r['vulnerabilities']:,} "
                    f"vulnerabilities: {r['cpu']:.2f} CPU s, {r['seconds']:.2f} s (parse "
                    f"{r['parse_cpu']:.2f} CPU s / {r['parse_seconds']:.2f} s, store "
                    f"{r['store_cpu']:.2f} / {r['store_seconds']:.2f}, merge {r['merge_cpu']:.2f}"
                    f" / {r['merge_seconds']:.2f}, commit {r['commit_seconds']:.2f} s), peak RSS "
                    f"{r['peak_mib']:.0f} MiB, load average {r['load']:.1f}",
                    flush=True,
                )
        if "kev" in cells:
            r = best([run_child("kev", str(KEV)) for _ in range(args.repeat)])
            print(f"kev:              {r['records']:,} entries in {r['seconds'] * 1000:.0f} ms")
        if "epss" in cells:
            path = epss_file(tmp / "epss.csv.gz")
            r = best([run_child("epss", str(path)) for _ in range(args.repeat)])
            print(
                f"epss:             {r['records']:,} rows in {r['seconds']:.2f} s, "
                f"peak RSS {r['peak_mib']:.0f} MiB"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
