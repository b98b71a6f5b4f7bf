"""Benchmark: compute updates for 10,000 Arch Linux and Alpine hosts, offline.

Usage:
    python bench/bench_updates_archalpine.py [--hosts N] [--images N] [--packages N]
                                             [--older SHARE] [--database-url URL]

Setup (not timed): the generated indexes of ``bench_parse_archrepo.py`` (a 15,000-package
pacman database, a 25,000-stanza APKINDEX) are served on loopback and refreshed into a
fresh SQLite database (or the empty PostgreSQL one given). ``--images`` package sets
(half pacman, half apk) of ``--packages`` packages each are drawn from those indexes
with a fixed seed, ``--older`` of them (default 7 %: about the hundred pending updates a
host of ``bench_updates.py``'s Debian fleet has) at an older build than the index offers
(pacman: a lower pkgrel; apk: a ``_rc1`` pre-release of the same version), and
``--hosts`` hosts are spread over them, each family's hosts using its repository.

Timed, as ``bench_updates.py`` times the Debian fleet: ``refresh_host_updates`` over
every host, first time and again with nothing changed. Aim: the first under the 10 s
of the Debian fleet.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loopback import ALPINE_PATH  # noqa: E402
from loopback import ARCH_PATH  # noqa: E402
from loopback import arch_alpine_mirror  # noqa: E402
from loopback import insert_hosts  # noqa: E402
from loopback import loopback_fetcher  # noqa: E402
from loopback import loopback_settings  # noqa: E402

from patchwatch.domain.records import Package as PackageRecord  # noqa: E402
from patchwatch.domain.records import PackageKind  # noqa: E402
from patchwatch.domain.records import RepoKind  # noqa: E402
from patchwatch.domain.records import ReportedRepository  # noqa: E402
from patchwatch.pipeline.hostupdates import refresh_host_updates  # noqa: E402
from patchwatch.pipeline.refresh.run import refresh_all  # noqa: E402
from patchwatch.store.db import open_database  # noqa: E402
from patchwatch.store.migrations import migrate  # noqa: E402
from patchwatch.store.models import HostUpdate  # noqa: E402
from patchwatch.store.models import Mirror  # noqa: E402
from patchwatch.store.models import Package  # noqa: E402
from patchwatch.store.models import PackageSetMember  # noqa: E402
from patchwatch.store.models import Repository  # noqa: E402
from patchwatch.store.package_sets import ensure_package_set  # noqa: E402
from patchwatch.store.sets import ensure_repository_set  # noqa: E402


def older(p: PackageRecord) -> PackageRecord:
    """An older build of the same package, as a host that has not upgraded yet has."""
    if p.kind == PackageKind.ARCH:
        return PackageRecord(p.name, p.epoch, p.version, "0.5", p.arch, p.kind)
    version, _, rel = p.version.rpartition("-r")
    return PackageRecord(p.name, "", f"{version}_rc1-r{rel}", "", p.arch, p.kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--packages", type=int, default=1_500)
    parser.add_argument(
        "--older", type=float, default=0.07, help="share of each image's packages not upgraded"
    )
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="pw-bench-archalpine-") as tmp,
        arch_alpine_mirror(Path(tmp), 15_000, 25_000) as base,
    ):
        top = Path(tmp)
        db = open_database(args.database_url or f"sqlite:///{top / 'bench.db'}")
        db.connect()
        migrate(db)
        now = time.time()
        arch_repo = ReportedRepository(
            kind=RepoKind.ARCH,
            id="core",
            name="core",
            urls=(f"{base}/{ARCH_PATH}",),
            arch="x86_64",
        )
        apk_repo = ReportedRepository(kind=RepoKind.APK, id=f"{base}/{ALPINE_PATH}",
                                      name="main", urls=(f"{base}/{ALPINE_PATH}",),
                                      arch="x86_64")  # fmt: skip
        sets = {
            PackageKind.ARCH: ensure_repository_set([arch_repo], now).id,
            PackageKind.APK: ensure_repository_set([apk_repo], now).id,
        }
        started = time.perf_counter()
        with loopback_fetcher() as fetcher:
            results = refresh_all(fetcher, now, loopback_settings())
        assert all(r.ok for r in results), [r.detail for r in results]
        print(f"setup: refreshed {sum(r.packages for r in results):,} packages "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip

        pools: dict[PackageKind, list[PackageRecord]] = {}
        for kind, repo_kind in ((PackageKind.ARCH, "arch"), (PackageKind.APK, "apk")):
            mirror = Mirror.select().join(Repository).where(Repository.kind == repo_kind).get()
            rows = (
                Package.select(Package.name, Package.epoch, Package.version, Package.release,
                               Package.arch)
                .join(PackageSetMember, on=(PackageSetMember.package == Package.id))
                .where(PackageSetMember.package_set == mirror.package_set_id)
                .tuples()
            )  # fmt: skip
            pools[kind] = sorted(PackageRecord(*row, kind) for row in rows)
        rng = random.Random(20261207)
        images = []
        started = time.perf_counter()
        for i in range(args.images):
            kind = PackageKind.ARCH if i % 2 == 0 else PackageKind.APK
            picked = rng.sample(pools[kind], args.packages)
            picked = [older(p) if rng.random() < args.older else p for p in picked]
            images.append((ensure_package_set(picked, now).id, sets[kind]))
        print(f"setup: {args.images} images of {args.packages} packages "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        kernels = {0: "6.12.8-arch1-1", 1: "6.6.58-0-lts"}
        hosts = [
            (f"host{i:05d}.bench", *images[i % len(images)], kernels[i % len(images) % 2],
             "x86_64", now, now)
            for i in range(args.hosts)
        ]  # fmt: skip
        insert_hosts(db, hosts)

        started = time.perf_counter()
        ctx = refresh_host_updates(now)
        first = time.perf_counter() - started
        pending = HostUpdate.select().count()
        print(
            f"all hosts, first time: {first:.2f} s for {args.hosts:,} hosts "
            f"({ctx.computed} computed, {ctx.reused} reused; {pending:,} pending updates)"
        )
        started = time.perf_counter()
        ctx = refresh_host_updates(now + 60)
        again = time.perf_counter() - started
        print(f"all hosts, again:      {again:.2f} s ({ctx.computed} computed, "
              f"{ctx.reused} reused)")  # fmt: skip


if __name__ == "__main__":
    main()
