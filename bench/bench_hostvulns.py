#!/usr/bin/env python3
"""The vulnerability computation alone, in-process, on a fleet's kept store.

Why: ``bench_pipeline.py`` measures ``patchwatch vulns refresh`` through the CLI inside a
whole pipeline run (ingest, process, refresh, updates: many minutes at 10,000 hosts).
Working on the computation needs its cost alone, repeated, old and new code on the same
store: this takes a store kept by ``bench_pipeline.py --keep-store`` (real bookworm
fleet, real mirror data), stores the generated Debian-sized feed into a copy once
(``refresh_vulns``: timed, peak RSS), then for each repeat, on a fresh copy of that:

    first       ``refresh_host_vulns()`` with nothing computed yet (aim: 10 s, 10,000 hosts)
    again       the same with nothing changed (aim: 1 s)
    one host    one host moved to another host's package set, then a run
    scrape      ``scrape_rows()``: what the exporter reads per scrape
    fleet       ``fleet_vulnerabilities()``: ``patchwatch vulns`` over the whole fleet

Wall-clock and CPU seconds (``process_time``) of the first run and the listing: on a
machine shared with other work the CPU seconds vary less.

    .venv/bin/python bench/bench_pipeline.py --hosts 10000 --backends sqlite --no-doc \\
        --no-vulns --keep-store /tmp/stores
    .venv/bin/python bench/bench_hostvulns.py --store /tmp/stores/patchwatch-sqlite-10000.db \\
        --prepared /tmp/stores/with-feed.db [--repeat 3]

``--prepared`` keeps the store with the feed loaded, so later runs (and another
checkout's copy of this script, for an interleaved comparison) skip loading it.

On PostgreSQL, give the ``pg_dump`` archive ``bench_pipeline.py --backends postgresql
--keep-store`` saves as ``--store`` (and no ``--prepared``): a throw-away cluster on
127.0.0.1 (the tests' recipe, fsync off) restores it, the feed is loaded into a copy
(``CREATE DATABASE … TEMPLATE``: timed as on SQLite), and each repeat runs on a fresh
copy of that:

    .venv/bin/python bench/bench_pipeline.py --hosts 1000 --backends postgresql --no-doc \
        --no-vulns --keep-store /tmp/stores
    .venv/bin/python bench/bench_hostvulns.py --store /tmp/stores/patchwatch-postgresql-1000.dump
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

KEV = ROOT / "tests" / "fixtures" / "vulns" / "known_exploited_vulnerabilities-2025-08-25.json.xz"


def _open(path: Path | str) -> None:
    """Open a store: a SQLite file, or a database URL."""
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate

    db = open_database(path if isinstance(path, str) else f"sqlite:///{path}")
    db.connect(reuse_if_open=True)
    migrate(db)


class _Cluster:
    """A throw-away PostgreSQL cluster (``bench_pipeline.Postgres``) holding a kept
    store and copies of it."""

    def __init__(self, dump: Path) -> None:
        from bench_pipeline import Postgres

        self.pg = Postgres()
        self.base = self._create("base")
        restore = [str(self.pg.server.bindir / "pg_restore"), "--no-owner", "-d", self.base]
        subprocess.run([*restore, str(dump)], check=True, capture_output=True)
        self._n = 0

    def _create(self, name: str, template: str = "") -> str:
        from bench_process import pg_admin

        pg_admin(self.pg, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.pg.server.url(name)

    def copy(self, of: str) -> str:
        """A new database copied from ``of`` (a URL of this cluster)."""
        self._n += 1
        return self._create(f"copy{self._n}", of.rsplit("/", 1)[1])

    def drop(self, url: str) -> None:
        from bench_process import pg_admin

        pg_admin(self.pg, f"DROP DATABASE {url.rsplit('/', 1)[1]}")

    def stop(self) -> None:
        self.pg.stop()


def _close() -> None:
    """Close the store, every pooled connection too (a database with a connection can
    be neither copied nor dropped)."""
    from playhouse.pool import PooledDatabase

    from patchwatch.store.db import database

    if not database.is_closed():
        database.close()
    if isinstance(database.obj, PooledDatabase):
        database.obj.close_all()


def prepare(
    store: Path | str, prepared: Path | str, records: int, cluster: _Cluster | None = None
) -> dict[str, float]:
    """Copy the store and load the generated feed and KEV into the copy (``prepared``:
    a SQLite file, or on ``cluster`` the URL of a database to copy into)."""
    from bench_vulns import debian_feed

    from patchwatch.domain.settings import Settings
    from patchwatch.pipeline.vulnfeeds import refresh_vulns

    with tempfile.TemporaryDirectory(prefix="pw-bench-hostvulns-") as tmp:
        feed, _ = debian_feed(Path(tmp) / "debian-all.zip", records)
        if cluster is None:
            shutil.copyfile(store, prepared)
        _open(prepared)
        settings = Settings(
            vulns_osv_sources=(str(feed),),
            vulns_kev_source=str(KEV),
            vulns_debian_tracker_source="",
        )
        started = time.perf_counter()
        outcomes = refresh_vulns(settings)
        seconds = time.perf_counter() - started
        _close()
    for o in outcomes:
        print(f"{o.outcome:<10} {o.name}: {o.records} records in {o.seconds:.1f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"feed_seconds": seconds, "feed_rss_mb": rss}


def _peak_mb() -> float:
    """The process's peak RSS so far (it only grows: read after each step, it tells
    which step raised it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(
    prepared: Path | str, fleet: bool = True, cluster: _Cluster | None = None
) -> dict[str, float]:
    from patchwatch.inventory.vulns import VulnFilter
    from patchwatch.inventory.vulns import fleet_vulnerabilities
    from patchwatch.pipeline.hostvulns import refresh_host_vulns
    from patchwatch.store.db import write_transaction
    from patchwatch.store.models import Host
    from patchwatch.store.vulns import scrape_rows

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pw-bench-hostvulns-") as tmp:
        path: Path | str
        if cluster is not None:
            path = cluster.copy(str(prepared))
        else:
            path = Path(tmp) / "store.db"
            shutil.copyfile(prepared, path)
        _open(path)
        t, cpu = time.perf_counter(), time.process_time()
        first = refresh_host_vulns(1.8e9)
        out["first"] = time.perf_counter() - t
        out["first_cpu"] = time.process_time() - cpu
        out["peak_after_first_mb"] = _peak_mb()
        out["computed"] = first.computed
        out["reused"] = first.reused
        t = time.perf_counter()
        refresh_host_vulns(1.8e9 + 60)
        out["again"] = time.perf_counter() - t
        hosts = list(Host.select(Host.id, Host.package_set).order_by(Host.id).limit(2).tuples())
        with write_transaction():
            Host.update(package_set=hosts[1][1]).where(Host.id == hosts[0][0]).execute()
        t = time.perf_counter()
        refresh_host_vulns(1.8e9 + 120)
        out["one_host"] = time.perf_counter() - t
        t = time.perf_counter()
        scrape = scrape_rows()
        out["scrape_rows"] = time.perf_counter() - t
        out["peak_after_scrape_mb"] = _peak_mb()
        out["scrape_hosts"] = len(scrape.hosts)
        if fleet:
            t, cpu = time.perf_counter(), time.process_time()
            rows = fleet_vulnerabilities(VulnFilter())
            out["fleet"] = time.perf_counter() - t
            out["fleet_cpu"] = time.process_time() - cpu
            out["fleet_vulns"] = len(rows)
        _close()
        if cluster is not None:
            cluster.drop(str(path))
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="a store kept by bench_pipeline.py")
    parser.add_argument(
        "--prepared", type=Path, help="the store with the feed (SQLite; made from --store)"
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet listing")
    args = parser.parse_args()
    if args.store is not None and args.store.suffix == ".dump":
        cluster = _Cluster(args.store)
        try:
            prepared = cluster.copy(cluster.base)
            print(json.dumps({"prepare": prepare(args.store, prepared, args.records, cluster)}))
            for _ in range(args.repeat):
                print(json.dumps(one_run(prepared, not args.no_fleet, cluster)), flush=True)
        finally:
            cluster.stop()
        return
    if args.prepared is None:
        raise SystemExit("--prepared is needed with a SQLite store")
    if not args.prepared.exists():
        if args.store is None:
            raise SystemExit("--prepared does not exist yet: give --store to make it")
        print(json.dumps({"prepare": prepare(args.store, args.prepared, args.records)}))
    for _ in range(args.repeat):
        print(json.dumps(one_run(args.prepared, not args.no_fleet)), flush=True)


if __name__ == "__main__":
    main()
