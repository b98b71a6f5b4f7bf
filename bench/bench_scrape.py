#!/usr/bin/env python3
"""How long one /metrics scrape takes for a big fleet, and whether memory grows.

Seeds a fresh SQLite store with a fleet shaped like a real one (default 10,000 hosts:
a few OS releases, a few hundred shared package sets, on average about 12 pending
updates per host of which about a third are security updates first seen over the
last two months, some hosts needing a reboot or silent, most with a count of packages
no repository offers, 30 mirrors, job runs), then scrapes the exporter's WSGI app
(``patchwatch.exporter.app.make_app``: the store, process and platform collectors, as a server
has them) several times, and prints the seconds per scrape and the resident memory
after each. The target (issue 6) is under 1 s per scrape and no growth across scrapes.

Each scrape is timed three ways: reading the store alone (``StoreCollector.collect``,
what ``patchwatch_scrape_collect_duration_seconds`` reports), the plain text format
as curl or bench_pipeline.py ask for it, and the way Prometheus asks (Debian 12's
Prometheus 2.42 ``Accept`` header, which negotiates OpenMetrics, and gzip). With
``--generic`` the families of each scrape are also written by prometheus_client's own
``generate_latest``, the writer every family went through before the exporter wrote
the per-host ones itself, and the two texts are compared.

    .venv/bin/python bench/bench_scrape.py                 # 10,000 hosts, 5 scrapes
    .venv/bin/python bench/bench_scrape.py --hosts 50000 --scrapes 10 --keep /tmp/big.db
    .venv/bin/python bench/bench_scrape.py --keep /tmp/big.db --generic   # reuse it
    .venv/bin/python bench/bench_scrape.py --updates-per-host 109 --security-share 0.6
    .venv/bin/python bench/bench_scrape.py --hosts 100000 --shards 10 --keep /tmp/100k.db

With ``--shards N`` each scrape is ``/metrics?shard=I&shards=N`` for every I, as
Prometheus asks, instead of the whole fleet: the time of each shard, and a check that
the shards' host series add up to the fleet, each host once.

``--updates-per-host 109 --security-share 0.6`` approaches bench_pipeline.py's fleet
(1.09 million pending updates for 10,000 hosts), where reading the updates costs more.

Run apart from the test suite: seeding takes a few seconds (about a minute with 109
updates per host). Rows are written directly (the report path would take minutes to
build the same store); the collector reads them the same way either way.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest

from patchwatch.exporter.app import make_app
from patchwatch.exporter.collector import StoreCollector
from patchwatch.store import host_counts
from patchwatch.store.db import open_database
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Repository

DAY = 86400.0
BATCH = 2000
# What Debian 12's Prometheus (2.42) sends: it gets OpenMetrics.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
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


def seed(
    hosts: int,
    rng: random.Random,
    now: float,
    updates_per_host: float = 12.0,
    security_share: float = 0.33,
) -> dict[str, int]:
    """Write a fleet of ``hosts`` hosts; return row counts.

    ``updates_per_host`` is the mean of an exponential draw, capped at four times the
    mean (at least 200); ``security_share`` the chance that an update is a security one.
    """
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
        computed = now - rng.uniform(0, 600)
        host_rows.append(
            {
                "name": f"host{i:05d}.example.com",
                "os_release": release,
                "kernel": rng.choice(["6.1.0-28-amd64", "6.1.0-27-amd64", "5.14.0-427.el9"]),
                "arch": "x86_64",
                "tags": rng.choice(["web prod", "db prod", "ci", "", "batch dc:ams1"]),
                "reboot_reported": rng.random() < 0.1,
                "reboot_kernel": rng.choice([True, False, None]),
                "package_set": rng.choice(set_ids),
                "maintenance_until": now + DAY if rng.random() < 0.01 else None,
                "created_at": now - 120 * DAY,
                "last_report_at": now - (rng.uniform(3, 20) if silent else rng.uniform(0, 1)) * DAY,
                # absent until the host's repositories have been read
                "packages_without_repository": rng.randint(0, 40) if rng.random() < 0.95 else None,
                # known (computed with every repository's data) but for a few
                "updates_complete": rng.random() < 0.99,
                "updates_computed_at": computed,
                "inputs_changed_at": computed - 5,
                "updates_inputs_at": computed - 5,
            }
        )
    insert(Host, host_rows)
    host_ids = [row[0] for row in Host.select(Host.id).tuples()]

    updates = 0
    cap = min(pool, max(200, int(4 * updates_per_host)))
    for host_id in host_ids:
        pending = min(int(rng.expovariate(1 / updates_per_host)), cap)
        update_rows = [
            {
                "host": host_id,
                "installed": ids[(f"pkg{n}", "1.0")],
                "available": ids[(f"pkg{n}", "1.1")],
                "security": rng.random() < security_share,
                "first_seen_at": now - rng.uniform(0, 60) * DAY,
            }
            for n in rng.sample(range(pool), pending)
        ]
        insert(HostUpdate, update_rows)
        updates += len(update_rows)

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
    return {"hosts": len(host_rows), "host updates": updates, "mirrors": 30}


class Collected:
    """Stand-in registry that serves families already collected (to time the parts)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


def get(app: Callable[..., Any], headers: dict[str, str]) -> tuple[float, bytes, dict[str, str]]:
    """One GET /metrics through the WSGI app: seconds, body as sent, response headers."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "", **headers}
    answer: dict[str, str] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        assert status == "200 OK", status
        answer.update(response_headers)

    started = time.perf_counter()
    body = b"".join(app(environ, start_response))
    return time.perf_counter() - started, body, answer


def series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def spread(label: str, times: list[float]) -> str:
    return (
        f"{label}: best {min(times):.3f} s, median {statistics.median(times):.3f} s, "
        f"max {max(times):.3f} s"
    )


def scrape_shards(app: Callable[..., Any], count: int, scrapes: int) -> int:
    """Scrape every shard ``scrapes`` times as Prometheus asks; check the partition."""
    headers = {"HTTP_ACCEPT": PROMETHEUS_ACCEPT, "HTTP_ACCEPT_ENCODING": "gzip"}
    times: list[list[float]] = [[] for _ in range(count)]
    hosts_seen: list[bytes] = []
    for n in range(1, scrapes + 1):
        line: list[str] = []
        for index in range(count):
            environ = {**headers, "QUERY_STRING": f"shard={index}&shards={count}"}
            seconds, sent, _headers = get(app, environ)  # asserts 200
            times[index].append(seconds)
            if n == 1:
                text = gzip.decompress(sent)
                hosts_seen += [
                    sample.split(b'host="', 1)[1].split(b'"', 1)[0]
                    for sample in text.splitlines()
                    if sample.startswith(b"patchwatch_host_info{")
                ]
                line.append(f"{seconds:.3f} s ({series(text):,} series)")
            else:
                line.append(f"{seconds:.3f} s")
        print(f"round {n}: " + ", ".join(line))
    with Host._meta.database.connection_context():
        fleet = Host.select().count()
    exact = len(hosts_seen) == len(set(hosts_seen)) == fleet
    print(f"hosts over all shards: {len(hosts_seen):,} for a fleet of {fleet:,} "
          f"({'each once' if exact else 'NOT a partition'})")  # fmt: skip
    print(f"RSS after the shard scrapes: {rss_bytes() / 1e6:.1f} MB")
    worst = [max(t) for t in times]
    for index, shard_times in enumerate(times):
        print(spread(f"shard {index} of {count}", shard_times))
    print(f"target < 1 s per shard: {'met' if max(worst) < 1 else 'NOT met'} "
          f"(worst {max(worst):.3f} s)")  # fmt: skip
    return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=6, help="random seed (default %(default)s)")
    parser.add_argument(
        "--updates-per-host",
        type=float,
        default=12.0,
        help="mean pending updates per host (default %(default)s)",
    )
    parser.add_argument(
        "--security-share",
        type=float,
        default=0.33,
        help="share of updates that are security updates (default %(default)s)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="write the store here and keep it; a store an earlier run kept there is "
        "reused as it is (the fleet options are then ignored)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="seed a throw-away PostgreSQL cluster (the tests' recipe) instead of SQLite",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        help="scrape the fleet as this many shards (/metrics?shard=I&shards=N) instead",
    )
    parser.add_argument(
        "--generic",
        action="store_true",
        help="also write each scrape with prometheus_client alone, and compare",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="patchwatch-bench-") as tmp:
        path = args.keep or Path(tmp) / "patchwatch.db"
        reuse = path.exists() and not args.postgres
        pg = None
        if args.postgres:
            # the tests' throw-away cluster on loopback (fsync off), stopped at the end
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.conftest import PostgresServer

            pg = PostgresServer()
            pg.start()
            db = open_database(pg.create_database())
        else:
            db = open_database("sqlite:///" + str(path.resolve()))
        db.connect()
        migrate(db)  # a kept store from before a schema change is brought up to date
        if reuse:
            print(
                f"reusing {path}: {Host.select().count():,} hosts, "
                f"{HostUpdate.select().count():,} host updates "
                f"({path.stat().st_size / 1e6:.0f} MB SQLite)"
            )
        else:
            started = time.perf_counter()
            with db.atomic():
                counts = seed(
                    args.hosts,
                    random.Random(args.seed),
                    time.time(),
                    args.updates_per_host,
                    args.security_share,
                )
                # rows written directly: counted onto the hosts as the computation does
                host_counts.recount(db)
            seeded = time.perf_counter() - started
            size = "PostgreSQL" if pg else f"{path.stat().st_size / 1e6:.0f} MB SQLite"
            print(
                f"seeded {', '.join(f'{v:,} {k}' for k, v in counts.items())} "
                f"in {seeded:.1f} s ({size})"
            )
        db.close()
        try:
            return scrape_all(args, db)
        finally:
            if pg is not None:
                pg.stop()


def scrape_all(args: argparse.Namespace, db: Any) -> int:
    """Scrape the seeded store as the options say; print the figures."""
    collector = StoreCollector(db)
    app = make_app(db)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (others' work skews times)")
    if args.shards:
        return scrape_shards(app, args.shards, args.scrapes)
    gc.collect()
    rss_before = rss_bytes()
    reads, plain, prom, generic = [], [], [], []
    rss_after = []
    for n in range(1, args.scrapes + 1):
        t0 = time.perf_counter()
        families = list(collector.collect())
        reads.append(time.perf_counter() - t0)
        seconds, text, headers = get(app, {})
        plain.append(seconds)
        seconds, sent, prom_headers = get(
            app, {"HTTP_ACCEPT": PROMETHEUS_ACCEPT, "HTTP_ACCEPT_ENCODING": "gzip"}
        )
        prom.append(seconds)
        line = (
            f"scrape {n}: store read {reads[-1]:.3f} s; text {plain[-1]:.3f} s, "
            f"{series(text):,} series, {len(text) / 1e6:.1f} MB; Prometheus (OpenMetrics, "
            f"gzip) {prom[-1]:.3f} s, {len(sent) / 1e6:.2f} MB sent"
        )
        if args.generic:
            # Both writers on the same families: the exporter's (hand-written per-host
            # lines, prometheus_client for the rest) and prometheus_client's alone.
            from patchwatch.exporter.exposition import render  # absent before the fast writer

            t0 = time.perf_counter()
            fast = render(families, generate_latest, False)
            t1 = time.perf_counter()
            reference = generate_latest(Collected(families))  # type: ignore[arg-type]
            t2 = time.perf_counter()
            generic.append(t2 - t1)
            line += (
                f"; same families written by the exporter {t1 - t0:.3f} s, by "
                f"prometheus_client alone {t2 - t1:.3f} s"
                f" ({'identical' if fast == reference else 'DIFFERENT'})"
            )
            del fast, reference
        assert headers["Content-Type"].startswith("text/plain"), headers
        assert prom_headers["Content-Type"].startswith("application/openmetrics-text")
        assert gzip.decompress(sent).endswith(b"# EOF\n")
        del text, sent, families
        gc.collect()
        rss_after.append(rss_bytes())
        print(f"{line}; RSS {rss_after[-1] / 1e6:.1f} MB")
    print(spread("store read", reads))
    print(spread("scrape, text", plain))
    print(spread("scrape, as Prometheus asks", prom))
    if generic:
        print(spread("store families written by prometheus_client alone", generic))
    worst = max(max(plain), max(prom))
    print(f"target < 1 s per scrape: {'met' if worst < 1 else 'NOT met'} (worst {worst:.3f} s)")
    growth = (rss_after[-1] - rss_after[0]) / 1e6
    print(
        f"RSS: {rss_before / 1e6:.1f} MB before the first scrape, "
        f"{rss_after[0] / 1e6:.1f} MB after it, {rss_after[-1] / 1e6:.1f} MB after the "
        f"last; growth from scrape 1 to {args.scrapes}: {growth:+.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
