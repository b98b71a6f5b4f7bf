"""Benchmark: compute updates for 10,000 hosts drawn from 100 images, real bookworm data.

Usage:
    python bench/bench_updates.py [--hosts N] [--images N] [--packages N] [--drift N]
                                  [--mirror URL] [--security-mirror URL] [--database-url URL]

Setup (not timed): a fresh SQLite database (or the empty PostgreSQL one given) gets the
real bookworm, bookworm-updates and bookworm-security main amd64 indexes through
``refresh_all``; then ``--images`` package sets are drawn from the bookworm index
(``--packages`` random packages each, at their bookworm version, with a fixed seed, so
the packages the security and updates suites carry newer versions of become pending
updates), and ``--hosts`` hosts are spread over them, all using the three repositories.
With ``--drift N`` each host replaces N packages of its image by others of the index,
so that (as in a real fleet) almost every host is a package set of its own and the
first computation pays per distinct set; setting up those sets takes a while.

Timed:
    all hosts, first time   ``refresh_host_updates`` over every host: one computation
                            per distinct (package set, repository set, kernel), the
                            rest reused, and every host's pending updates written
                            (aim: 10 s for 10,000 hosts); also per computation
    all hosts, again        the same with nothing changed (the scheduler's next run)
    one new report          a host reports one package upgraded (a new package set):
                            ``process_pending`` + ``refresh_host_updates`` for that host
                            (aim: 50 ms)
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SUITES = (("bookworm", False), ("bookworm-updates", False), ("bookworm-security", True))
KERNEL = "6.1.0-28-amd64"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--packages", type=int, default=1_500, help="packages per image")
    parser.add_argument("--drift", type=int, default=0, help="packages each host changes")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--security-mirror", default="http://deb.debian.org/debian-security")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pw-bench-updates-") as tmp:
        run(args, args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}")


def run(args: argparse.Namespace, database_url: str) -> None:
    from loopback import insert_hosts

    from patchwatch.domain.records import Package as PackageRecord
    from patchwatch.domain.records import PackageKind
    from patchwatch.domain.records import RepoKind
    from patchwatch.domain.records import ReportedRepository
    from patchwatch.domain.settings import Settings
    from patchwatch.pipeline.fetch import HttpFetcher
    from patchwatch.pipeline.hostupdates import refresh_host_updates
    from patchwatch.pipeline.processing import process_pending
    from patchwatch.pipeline.processing import store_report
    from patchwatch.pipeline.refresh import refresh_all
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate
    from patchwatch.store.models import Host
    from patchwatch.store.models import HostUpdate
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Package
    from patchwatch.store.models import PackageSetMember
    from patchwatch.store.models import Repository
    from patchwatch.store.package_sets import ensure_package_set
    from patchwatch.store.sets import ensure_repository_set

    db = open_database(database_url)
    db.connect()
    migrate(db)
    now = time.time()

    # ---- setup: real mirror data
    reported = []
    for suite, security in SUITES:
        url = args.security_mirror if security else args.mirror
        reported.append(
            ReportedRepository(
                kind=RepoKind.DEB,
                id=f"{url} {suite} main",
                name=suite,
                urls=(url,),
                priority=500,
                suite=suite,
                component="main",
                arch="amd64",
            )
        )
    rset = ensure_repository_set(reported, now)
    started = time.perf_counter()
    with HttpFetcher.from_settings(Settings()) as fetcher:
        results = refresh_all(fetcher, now, Settings())
    bad = [f"{r.repository}: {r.detail}" for r in results if not r.ok]
    if bad:
        raise SystemExit("refresh failed: " + "; ".join(bad))
    print(
        f"setup: refreshed {sum(r.packages for r in results):,} packages "
        f"in {time.perf_counter() - started:.1f} s"
    )

    # ---- setup: images drawn from the bookworm index
    main_repo = Repository.get(Repository.suite == "bookworm")
    main_set = Mirror.get(Mirror.repository == main_repo).package_set_id
    rows = list(
        Package.select(Package.name, Package.epoch, Package.version, Package.release, Package.arch)
        .join(PackageSetMember, on=(PackageSetMember.package == Package.id))
        .where(PackageSetMember.package_set == main_set)
        .tuples()
    )
    by_name = {}
    for name, epoch, version, release, arch in rows:
        by_name.setdefault(
            (name, arch), PackageRecord(name, epoch, version, release, arch, PackageKind.DEB)
        )
    pool = sorted(by_name)
    rng = random.Random(20260711)
    started = time.perf_counter()
    images = []
    contents = []
    for _ in range(args.images):
        picked = [by_name[k] for k in rng.sample(pool, args.packages)]
        images.append(ensure_package_set(picked, now).id)
        contents.append(picked)
    print(
        f"setup: {args.images} images of {args.packages} packages "
        f"in {time.perf_counter() - started:.1f} s"
    )
    host_sets = [images[i % len(images)] for i in range(args.hosts)]
    if args.drift:
        started = time.perf_counter()
        for i in range(args.hosts):
            packages = list(contents[i % len(images)])
            for j in rng.sample(range(len(packages)), args.drift):
                packages[j] = by_name[rng.choice(pool)]
            host_sets[i] = ensure_package_set(packages, now).id
        print(
            f"setup: {len(set(host_sets)):,} drifted package sets "
            f"in {time.perf_counter() - started:.1f} s"
        )
    hosts = [
        (f"host{i:05d}.bench", host_sets[i], rset.id, KERNEL, "x86_64", now, now)
        for i in range(args.hosts)
    ]
    insert_hosts(db, hosts)

    # ---- timed
    started = time.perf_counter()
    ctx = refresh_host_updates(now)
    first = time.perf_counter() - started
    pending = HostUpdate.select().count()
    security = HostUpdate.select().where(HostUpdate.security).count()
    print(
        f"all hosts, first time: {first:.2f} s for {args.hosts:,} hosts "
        f"({ctx.computed} computed, {ctx.reused} reused; {pending:,} pending updates, "
        f"{security:,} security; {first / max(ctx.computed, 1) * 1000:.1f} ms per computation)"
    )

    started = time.perf_counter()
    ctx = refresh_host_updates(now + 60)
    again = time.perf_counter() - started
    print(f"all hosts, again:      {again:.2f} s ({ctx.computed} computed, {ctx.reused} reused)")

    name = "host00042.bench"
    host = Host.get(Host.name == name)
    packages = [
        {
            "name": p.name,
            "epoch": p.epoch,
            "version": p.version,
            "release": p.release,
            "arch": p.arch,
            "type": "deb",
        }
        for p in Package.select()
        .join(PackageSetMember, on=(PackageSetMember.package == Package.id))
        .where(PackageSetMember.package_set == host.package_set_id)
    ]
    packages[0]["release"] += "+bench1"  # one package upgraded: a new package set
    report = {
        "version": 1,
        "host": name,
        "kernel": KERNEL,
        "arch": "x86_64",
        "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12"},
        "packages": packages,
        "repositories": [
            {
                "type": "deb",
                "id": r.id,
                "urls": list(r.urls),
                "suite": r.suite,
                "component": r.component,
                "arch": r.arch,
                "priority": 500,
            }
            for r in reported
        ],
    }
    later = now + 120
    store_report(name, "patchwatch/1", report, later)
    started = time.perf_counter()
    process_pending(later)
    processed = time.perf_counter() - started
    started = time.perf_counter()
    ctx = refresh_host_updates(later, [name])
    one = time.perf_counter() - started
    print(
        f"one new report:        {one * 1000:.0f} ms for its updates "
        f"({ctx.computed} computed), after {processed * 1000:.0f} ms processing it"
    )
    started = time.perf_counter()
    ctx = refresh_host_updates(later + 60)
    print(
        f"all hosts after it:    {time.perf_counter() - started:.2f} s "
        f"({ctx.computed} computed, {ctx.reused} reused)"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
