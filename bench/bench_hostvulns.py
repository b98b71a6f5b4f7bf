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
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

KEV = ROOT / "tests" / "fixtures" / "vulns" / "known_exploited_vulnerabilities-2025-08-25.json.xz"


def _open(path: Path) -> None:
    from patchwatch.store.db import open_database
    from patchwatch.store.migrations import migrate

    db = open_database(f"sqlite:///{path}")
    db.connect(reuse_if_open=True)
    migrate(db)


def _close() -> None:
    from patchwatch.store.db import database

    if not database.is_closed():
        database.close()


def prepare(store: Path, prepared: Path, records: int) -> dict[str, float]:
    """Copy the store and load the generated feed and KEV into the copy."""
    from bench_vulns import debian_feed

    from patchwatch.domain.settings import Settings
    from patchwatch.pipeline.vulnfeeds import refresh_vulns

    with tempfile.TemporaryDirectory(prefix="pw-bench-hostvulns-") as tmp:
        feed, _ = debian_feed(Path(tmp) / "debian-all.zip", records)
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


def one_run(prepared: Path, fleet: bool = True) -> dict[str, float]:
    from patchwatch.inventory.vulns import VulnFilter
    from patchwatch.inventory.vulns import fleet_vulnerabilities
    from patchwatch.pipeline.hostvulns import refresh_host_vulns
    from patchwatch.store.db import write_transaction
    from patchwatch.store.models import Host
    from patchwatch.store.vulns import scrape_rows

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pw-bench-hostvulns-") as tmp:
        path = Path(tmp) / "store.db"
        shutil.copyfile(prepared, path)
        _open(path)
        t, cpu = time.perf_counter(), time.process_time()
        first = refresh_host_vulns(1.8e9)
        out["first"] = time.perf_counter() - t
        out["first_cpu"] = time.process_time() - cpu
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
        out["scrape_hosts"] = len(scrape.hosts)
        if fleet:
            t, cpu = time.perf_counter(), time.process_time()
            rows = fleet_vulnerabilities(VulnFilter())
            out["fleet"] = time.perf_counter() - t
            out["fleet_cpu"] = time.process_time() - cpu
            out["fleet_vulns"] = len(rows)
        _close()
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="a store kept by bench_pipeline.py")
    parser.add_argument("--prepared", type=Path, required=True, help="the store with the feed")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet listing")
    args = parser.parse_args()
    if not args.prepared.exists():
        if args.store is None:
            raise SystemExit("--prepared does not exist yet: give --store to make it")
        print(json.dumps({"prepare": prepare(args.store, args.prepared, args.records)}))
    for _ in range(args.repeat):
        print(json.dumps(one_run(args.prepared, not args.no_fleet)), flush=True)


if __name__ == "__main__":
    main()
