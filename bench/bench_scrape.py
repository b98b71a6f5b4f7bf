#!/usr/bin/env python3
"""How long one /metrics scrape takes for a big fleet, and whether memory grows.

Seeds a fresh SQLite store with a fleet shaped like a real one (default 10,000 hosts:
a few OS releases, a few hundred shared package sets, on average about 12 pending
updates per host of which about a third are security updates first seen over the
last two months, some hosts needing a reboot or silent, 30 mirrors, job runs), then
renders the exporter's StoreCollector through prometheus_client exactly as a scrape
does, several times, and prints the seconds per scrape and the resident memory after
each. The target (issue 6) is under 1 s per scrape and no growth across scrapes.

    .venv/bin/python bench/bench_scrape.py                 # 10,000 hosts, 5 scrapes
    .venv/bin/python bench/bench_scrape.py --hosts 50000 --scrapes 10 --keep /tmp/big.db

Run apart from the test suite: seeding takes a few seconds. Rows are written directly
(the report path would take minutes to build the same store); the collector reads them
the same way either way.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest

from exporter.collector import StoreCollector
from patchwatch.db import open_database
from patchwatch.migrations import migrate
from patchwatch.models import Host
from patchwatch.models import HostUpdate
from patchwatch.models import JobRun
from patchwatch.models import Mirror
from patchwatch.models import OSRelease
from patchwatch.models import Package
from patchwatch.models import PackageSet
from patchwatch.models import Repository

DAY = 86400.0
BATCH = 2000
OS_RELEASES = [
    ("Debian GNU/Linux 12 (bookworm)", "debian", 0.45),
    ("Ubuntu 24.04.1 LTS", "debian", 0.25),
    ("Rocky Linux 9.4 (Blue Onyx)", "redhat", 0.2),
    ("openSUSE Leap 15.6", "suse", 0.1),
]


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def chunks(rows: list[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def insert(model: Any, rows: list[dict[str, Any]]) -> None:
    for chunk in chunks(rows):
        model.insert_many(chunk).execute()


def seed(hosts: int, rng: random.Random, now: float) -> dict[str, int]:
    """Write a fleet of ``hosts`` hosts; return row counts."""
    releases = []
    for name, family, share in OS_RELEASES:
        releases.append((OSRelease.create(name=name, family=family).id, share))

    # A pool of installed packages and their newer versions, shared across hosts.
    pool = 4000
    insert(
        Package,
        [
            {"kind": "deb", "name": f"pkg{i}", "version": v, "release": "1", "arch": "amd64"}
            for i in range(pool)
            for v in ("1.0", "1.1")
        ],
    )
    ids = {
        (name, version): pid
        for pid, name, version in Package.select(Package.id, Package.name, Package.version).tuples()
    }

    # Hosts run a few hundred images: package sets are shared.
    insert(
        PackageSet,
        [
            {"digest": hashlib.sha256(str(i).encode()).hexdigest(), "size": rng.randint(300, 1800),
             "created_at": now - 90 * DAY}
            for i in range(300)
        ],
    )  # fmt: skip
    set_ids = [row[0] for row in PackageSet.select(PackageSet.id).tuples()]

    host_rows = []
    for i in range(hosts):
        release = rng.choices([r for r, _ in releases], [s for _, s in releases])[0]
        silent = rng.random() < 0.02
        host_rows.append(
            {
                "name": f"host{i:05d}.example.com",
                "os_release": release,
                "kernel": rng.choice(["6.1.0-28-amd64", "6.1.0-27-amd64", "5.14.0-427.el9"]),
                "arch": "x86_64",
                "tags": rng.choice(["web prod", "db prod", "ci", "", "batch dc:ams1"]),
                "reboot_required": rng.random() < 0.1,
                "package_set": rng.choice(set_ids),
                "maintenance_until": now + DAY if rng.random() < 0.01 else None,
                "created_at": now - 120 * DAY,
                "last_report_at": now - (rng.uniform(3, 20) if silent else rng.uniform(0, 1)) * DAY,
            }
        )
    insert(Host, host_rows)
    host_ids = [row[0] for row in Host.select(Host.id).tuples()]

    update_rows = []
    for host_id in host_ids:
        pending = min(int(rng.expovariate(1 / 12)), 200)
        for n in rng.sample(range(pool), pending):
            update_rows.append(
                {
                    "host": host_id,
                    "installed": ids[(f"pkg{n}", "1.0")],
                    "available": ids[(f"pkg{n}", "1.1")],
                    "security": rng.random() < 0.33,
                    "first_seen_at": now - rng.uniform(0, 60) * DAY,
                }
            )
    insert(HostUpdate, update_rows)

    for r in range(30):
        repo = Repository.create(kind="deb", key=f"repo{r}", created_at=now - 100 * DAY)
        failing = r % 10 == 0
        Mirror.create(
            repository=repo,
            url=f"http://mirror{r % 3}.example/repo{r}",
            last_attempt_at=now - 600,
            last_success_at=now - (20 * 3600 if failing else 1200),
            failures_total=rng.randint(0, 50),
            consecutive_failures=5 if failing else 0,
            package_count=rng.randint(100, 60000),
        )
    insert(
        JobRun,
        [
            {"job": job, "started_at": now - k * 60, "finished_at": now - k * 60 + 1,
             "duration_seconds": 1.0, "outcome": "success"}
            for job in ("process_reports", "prune", "refresh_mirrors")
            for k in range(200)
        ],
    )  # fmt: skip
    return {"hosts": len(host_rows), "host updates": len(update_rows), "mirrors": 30}


class Collected:
    """Stand-in registry that serves families already collected (to time the parts)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=6, help="random seed (default %(default)s)")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="patchwatch-bench-") as tmp:
        path = args.keep or Path(tmp) / "patchwatch.db"
        if path.exists():
            parser.error(f"{path} exists; give a new file")
        db = open_database("sqlite:///" + str(path.resolve()))
        db.connect()
        migrate(db)
        started = time.perf_counter()
        with db.atomic():
            counts = seed(args.hosts, random.Random(args.seed), time.time())
        db.close()
        seeded = time.perf_counter() - started
        print(
            f"seeded {', '.join(f'{v:,} {k}' for k, v in counts.items())} "
            f"in {seeded:.1f} s ({path.stat().st_size / 1e6:.0f} MB SQLite)"
        )

        collector = StoreCollector(db)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (others' work skews times)")
        gc.collect()
        rss_before = rss_bytes()
        times = []
        rss_after = []
        for n in range(1, args.scrapes + 1):
            # What a scrape does, in its two parts: read the store into metric families
            # (the collector), then write the exposition text (prometheus_client).
            t0 = time.perf_counter()
            families = list(collector.collect())
            t1 = time.perf_counter()
            body = generate_latest(Collected(families))  # type: ignore[arg-type]
            t2 = time.perf_counter()
            times.append(t2 - t0)
            samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            size = len(body)
            del body, families
            gc.collect()
            rss_after.append(rss_bytes())
            print(
                f"scrape {n}: {times[-1]:.3f} s (store read {t1 - t0:.3f} s, text {t2 - t1:.3f} s),"
                f" {samples:,} samples, {size / 1e6:.1f} MB, RSS {rss_after[-1] / 1e6:.1f} MB"
            )
        best, worst = min(times), max(times)
        mean = sum(times) / len(times)
        growth = (rss_after[-1] - rss_after[0]) / 1e6
        print(
            f"per scrape: mean {mean:.3f} s, min {best:.3f} s, max {worst:.3f} s "
            f"(target < 1 s: {'met' if worst < 1 else 'NOT met'})"
        )
        print(
            f"RSS: {rss_before / 1e6:.1f} MB before the first scrape, "
            f"{rss_after[0] / 1e6:.1f} MB after it, {rss_after[-1] / 1e6:.1f} MB after the "
            f"last; growth from scrape 1 to {args.scrapes}: {growth:+.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
