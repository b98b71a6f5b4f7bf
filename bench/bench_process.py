#!/usr/bin/env python3
"""The processing step of bench_pipeline.py alone, again and again on the same queue.

Why: bench_pipeline.py measures processing once per cell, after an ingest that takes
minutes at 10,000 hosts; comparing two versions of processing needs many runs on the
same queued reports, interleaved (docs/performance.md). This ingests the fleet's first
reports once through ``patchwatch serve`` exactly as bench_pipeline.py does (deferred
processing, 50 senders), keeps that store as a template (a copy of the SQLite file, or
a PostgreSQL template database), and then, round after round, gives each code tree a
fresh copy of it and times ``patchwatch process --workers N`` there (wall time,
interpreter start included, as bench_pipeline.py times it), and the CPU time of the
command and its workers: on a machine that other work keeps busy, wall times of the
same code vary twofold while CPU times move much less.

    .venv/bin/python bench/bench_process.py --hosts 1000 --backend sqlite \\
        --tree new=. --tree old=/tmp/old-tree --rounds 3

A tree is a directory holding the project's packages (``git archive`` of a commit
unpacked somewhere will do); each runs with this interpreter, from its directory, so
its own code is imported.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_pipeline as pipeline  # noqa: E402
from fleet import build_fleet  # noqa: E402


def ingest(
    backend: str, bodies: list[bytes], pg: pipeline.Postgres | None, tmp: Path, tree: str
) -> str:
    """Queue every body through a real server of ``tree`` (deferred processing); return
    the URL. The first tree given makes the queue: an older tree cannot open a store
    a newer one migrated, while a newer one migrates the older's as it opens it."""
    data = tmp / "data"
    url = pg.new_database() if pg else f"sqlite:///{data / 'patchwatch.db'}"
    port = pipeline.free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(tmp, url if pg else "", data)
    log = tmp / "server.log"
    with log.open("a") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{port}"],
            cwd=tree, env=env, stdout=err, stderr=err,
        )  # fmt: skip
    try:
        pipeline.wait_ready(base, url, server)
        made = subprocess.run(
            [sys.executable, "-m", "patchwatch", "token", "create", "--enroll"],
            cwd=tree, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        token = made.stdout.strip().splitlines()[-1].strip()
        wall, _lat, statuses, _retries = pipeline.send_all(base, [token] * len(bodies), bodies, 50)
        print(f"ingested {len(bodies):,} reports in {wall:.1f} s: {statuses}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return url


def base_env(tmp: Path, url: str, data: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(tmp),
        "PATCHWATCH_DATA_DIR": str(data),
        "PATCHWATCH_DATABASE_URL": url,
        "PATCHWATCH_PROCESS_INLINE": "false",
        "PATCHWATCH_PROCESS_INTERVAL_SECONDS": pipeline.DAY,
        "PATCHWATCH_REFRESH_INTERVAL_MINUTES": pipeline.DAY,
        "PATCHWATCH_UPDATES_INTERVAL_MINUTES": pipeline.DAY,
        "PATCHWATCH_PRUNE_INTERVAL_MINUTES": pipeline.DAY,
        "PATCHWATCH_FOLLOW_REPORTS": "false",
        "PATCHWATCH_LOG_LEVEL": "WARNING",
    }
    env.pop("PATCHWATCH_CONFIG", None)
    return env


def pg_admin(pg: pipeline.Postgres, sql: str, template: str | None = None) -> None:
    """Run ``sql`` on the server's maintenance database; with ``template``, first end
    the sessions still open on it (a server's processes may take a moment to go, and
    PostgreSQL copies no database others are connected to)."""
    from patchwatch.store.db import make_database

    admin = make_database(pg.server.url())
    admin.connect()
    try:
        if template is not None:
            admin.execute_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (template,),
            )
        admin.execute_sql(sql)
    finally:
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="also copy the queued SQLite store here")
    parser.add_argument("--queued", type=Path, help="a store --keep saved: no ingest (SQLite)")
    parser.add_argument("--workers", type=int, default=pipeline.PROCESS_WORKERS)
    parser.add_argument("--seed", type=int, default=20260711)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/patchwatch-bench-indexes"))
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["current", str(ROOT)]]

    if args.queued:
        bodies: list[bytes] = []
    else:
        fleet = build_fleet(args.cache_dir, args.hosts, 100, 1500, args.seed, 0.7)
        bodies, _raw = pipeline.render_bodies(fleet, args.hosts)
    pg = pipeline.Postgres() if args.backend == "postgresql" else None
    tmp = Path(tempfile.mkdtemp(prefix="pw-process-"))
    times: dict[str, list[float]] = {name: [] for name, _ in trees}
    cpu: dict[str, list[float]] = {name: [] for name, _ in trees}
    try:
        if args.queued:
            url, snapshot = "", args.queued
        else:
            url = ingest(args.backend, bodies, pg, tmp, trees[0][1])
            snapshot = tmp / "queued.db"
        template = url.rsplit("/", 1)[1] if pg else None
        if not pg and not args.queued:
            shutil.copy(tmp / "data" / "patchwatch.db", snapshot)
            if args.keep:
                shutil.copy(snapshot, args.keep)
        for n in range(args.rounds):
            for name, tree in trees:
                data = tmp / f"run-{n}-{name}"
                data.mkdir()
                if pg:
                    assert pg is not None and template is not None
                    run_db = f"r{n}_{re.sub(r'[^a-z0-9]', '_', name.lower())}"
                    pg_admin(pg, f'CREATE DATABASE "{run_db}" TEMPLATE "{template}"', template)
                    run_url = pg.server.url(run_db)
                else:
                    shutil.copy(snapshot, data / "patchwatch.db")
                    run_url = ""
                env = base_env(tmp, run_url, data)
                cmd = [
                    sys.executable,
                    "-m",
                    "patchwatch",
                    "process",
                    "--workers",
                    str(args.workers),
                ]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                done = int(m.group(1)) if (m := re.search(r"(\d+) processed", out.stdout)) else 0
                if out.returncode not in (0, 1) or done != args.hosts:
                    raise SystemExit(f"{name}: {out.returncode} {out.stdout} {out.stderr[-800:]}")
                times[name].append(seconds)
                cpu[name].append(used)
                load = os.getloadavg()[0]
                print(f"round {n + 1} {name}: {done:,} in {seconds:.2f} s = "
                      f"{done / seconds:.0f}/s; CPU {used:.2f} s (load {load:.1f})",
                      flush=True)  # fmt: skip
                if not pg:
                    shutil.rmtree(data)
        for name, values in times.items():
            rates = sorted(args.hosts / v for v in values)
            print(f"{name}: {', '.join(f'{r:.0f}' for r in rates)} reports/s "
                  f"(median {statistics.median(rates):.0f}); CPU "
                  f"{', '.join(f'{c:.2f}' for c in sorted(cpu[name]))} s")  # fmt: skip
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
