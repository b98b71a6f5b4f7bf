#!/usr/bin/env python3
"""The whole pipeline at fleet scale, on SQLite and PostgreSQL, in one command.

Why: each component has its own benchmark in ``bench/``, but an operator sizing a
server needs the costs *together*, through the real processes and the real protocol:
gunicorn receiving gzip reports from many agents at once, the CLI steps the scheduler
would run, the real Debian mirror, and a Prometheus scrape. This runs exactly that for
each (backend, fleet size) and writes the measured table into ``docs/performance.md``.

    .venv/bin/python bench/bench_pipeline.py                          # 1,000 and 10,000 hosts,
                                                                      # SQLite and PostgreSQL
    .venv/bin/python bench/bench_pipeline.py --hosts 1000 --backends sqlite --no-doc
    .venv/bin/python bench/bench_pipeline.py --hosts 10000 --backends postgresql \
        --no-doc --keep-store /tmp/stores   # keep the store for measuring one step

For each backend and fleet size, in a fresh store:

1. ``patchwatch serve`` (subprocess, default workers and threads) with
   ``PATCHWATCH_PROCESS_INLINE=false``, day-long scheduler intervals and
   ``PATCHWATCH_FOLLOW_REPORTS=false``, so that the receiver only stores reports and
   each later step is measured on its own; the scheduler's start-up round (nothing to
   do yet) is waited for before anything is sent.
2. ``patchwatch token create --enroll``.
3. **ingest**: every host's report (from ``bench/fleet.py``: real bookworm packages,
   100 images with per-host drift; pre-rendered and gzip-compressed at level 6 as the
   agent does, not timed) POSTed to ``/api/v1/reports`` with a Bearer token by 50
   concurrent senders, one connection per report as agents do; a 503 is retried after
   its ``Retry-After``. Throughput is acknowledged reports per wall-clock second;
   latency percentiles are per request (first attempt to final answer).
4. **process**: ``patchwatch process --workers N``, N the number of cores (all queued
   reports; reports/s over its wall time, interpreter start included).
5. **refresh**: ``patchwatch refresh`` against the real Debian mirror that the hosts'
   repositories name (bookworm, -updates, -security, -backports main amd64, signatures
   checked). The server inherits ``PATCHWATCH_*`` from the environment: where
   deb.debian.org resolves to a non-public address (a site cache), export
   ``PATCHWATCH_MIRROR_ALLOWED_NETWORKS`` with it, or the fetch policy refuses it.
6. **updates**: ``patchwatch updates`` (every host, first computation).
6b. **vulns**: ``patchwatch vulns refresh`` reading a generated Debian-sized OSV feed
   (``bench_vulns.debian_feed``: 50,000 records in osv.dev's shape, real bookworm source
   names and versions; hosts' binaries are matched under their own names) and the real
   KEV catalogue from local files, then the first computation of every host's
   vulnerabilities; run again with nothing changed (feeds skipped, nothing computed).
7. **scrape**: ``GET /metrics`` three times (first and best time, size).
8. **memory**: peak RSS (``VmHWM``) of every process of the server tree (gunicorn
   master, workers, scheduler), summed and largest; and each CLI step's own peak RSS
   (``ru_maxrss``, through a small trampoline process). **database size**: SQLite
   file + WAL + shm, or ``pg_database_size``.

PostgreSQL runs on a throw-away cluster on 127.0.0.1 (``initdb`` + ``pg_ctl`` under
/tmp as the ``postgres`` user, fsync off as in the tests: this measures patchwatch,
not the disk). The sender threads run on the same 2 cores as the server, so ingest
figures are a floor for what a dedicated server sees.

Results already in the doc for (backend, hosts) pairs not run now are kept (they are
stored as JSON in a comment beside the table), so sizes can be run one at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fleet import Fleet  # noqa: E402
from fleet import build_fleet  # noqa: E402

KEV = ROOT / "tests" / "fixtures" / "vulns" / "known_exploited_vulnerabilities-2025-08-25.json.xz"

DOC = ROOT / "docs" / "performance.md"
START = "<!-- pipeline-table:start -->"
END = "<!-- pipeline-table:end -->"
DATA_RE = re.compile(r"<!-- pipeline-data: (.*?) -->", re.S)
DAY = "86400"
PROCESS_WORKERS = os.cpu_count() or 1  # processing a backlog: one process per core
AIMS = {
    "process_rate": 200.0,  # reports/s processed
    "refresh_seconds": 3.0,  # 66,000-package refresh
    "updates_seconds": 10.0,  # 10,000 hosts' updates
    "scrape_seconds": 1.0,  # scrape of 10,000 hosts
    "vulns_compute_seconds": 10.0,  # 10,000 hosts' vulnerabilities, first computation
    "again_vulns_seconds": 1.0,  # nothing changed
}


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: what the slowest (1 - q) of agents waited at least."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc (gunicorn workers, the scheduler)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of one live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# Runs a command and writes its peak RSS (KiB) to the file named first. Why a
# trampoline: Linux carries the parent's RSS high-water mark into a child's ru_maxrss
# at fork + exec, so measured straight from this process (which holds every report
# body) each CLI step would read at least this process's own size. A child of a small
# process starts from that small process's mark instead.
TRAMPOLINE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def run_cli(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run ``patchwatch ARGS``; return (wall seconds, its own peak RSS in MB, stdout)."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.NamedTemporaryFile("r") as rss,
        log.open("a") as err,
    ):
        cmd = [sys.executable, "-c", TRAMPOLINE, rss.name, sys.executable, "-m", "patchwatch"]
        started = time.perf_counter()
        code = subprocess.call([*cmd, *args], cwd=ROOT, env=env, stdout=out, stderr=err)
        elapsed = time.perf_counter() - started
        out.seek(0)
        text = out.read()
        maxrss_kib = int(rss.read() or 0)
    if code not in (0, 1):  # 1: some work failed, reported in the text
        raise SystemExit(f"patchwatch {' '.join(args)} exited {code}: {text[-500:]}")
    return elapsed, maxrss_kib / 1024, text


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    """One throw-away PostgreSQL cluster for the whole run (the tests' own recipe)."""

    def __init__(self) -> None:
        from tests.support.servers import PostgresServer

        self.server = PostgresServer()
        self.server.start()

    def new_database(self) -> str:
        return self.server.create_database()

    def size(self, url: str) -> int:
        from patchwatch.store.db import make_database

        db = make_database(url)
        db.connect()
        try:
            name = url.rsplit("/", 1)[1]
            return int(db.execute_sql("SELECT pg_database_size(%s)", (name,)).fetchone()[0])
        finally:
            db.close()

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------- one run


def seconds_in(pattern: str, out: str) -> float:
    """The seconds a CLI step printed (matched by ``pattern``), NaN when it did not."""
    m = re.search(pattern, out, re.M)
    return float(m.group(1)) if m else float("nan")


def store_counts(url: str) -> dict[str, int]:
    """Row counts that explain the costs (distinct sets drive processing and updates)."""
    from patchwatch.store.db import open_database
    from patchwatch.store.models import Host
    from patchwatch.store.models import HostUpdate
    from patchwatch.store.models import JobRun
    from patchwatch.store.models import Package
    from patchwatch.store.models import PackageSet
    from patchwatch.store.models import PackageSetMember
    from patchwatch.store.models import Report

    db = open_database(url)
    db.connect()
    try:
        return {
            "hosts": Host.select().count(),
            "reports": Report.select().count(),
            "package_sets": PackageSet.select().count(),
            "difference_sets": PackageSet.select().where(PackageSet.base.is_null(False)).count(),
            "member_rows": PackageSetMember.select().count(),
            "packages": Package.select().count(),
            "host_updates": HostUpdate.select().count(),
            "security_updates": HostUpdate.select().where(HostUpdate.security).count(),
            "hosts_with_updates": HostUpdate.select(HostUpdate.host).distinct().count(),
            "job_runs_done": JobRun.select().where(JobRun.finished_at.is_null(False)).count(),
        }
    finally:
        db.close()


def wait_ready(base: str, url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait for /healthz and for the scheduler's start-up round of its four jobs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"patchwatch serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                pass
            if store_counts(url)["job_runs_done"] >= 4:
                return
        except Exception:  # not up yet (connection refused, no schema yet): try again
            pass
        time.sleep(0.2)
    raise SystemExit("patchwatch serve did not become ready")


def send_all(
    base: str, tokens: list[str], bodies: list[bytes], senders: int
) -> tuple[float, list[float], dict[int, int], int]:
    """POST every body (with the token of the same index) with ``senders`` threads;
    return wall time, latencies, statuses (0: the connection closed unanswered on every
    attempt). A host's own token handed out in an answer (the enrollment) replaces its
    entry in ``tokens``, for the next round."""
    statuses: dict[int, int] = {}
    retries = 0
    lock = threading.Lock()

    def send(index: int) -> float:
        nonlocal retries
        body = bodies[index]
        started = time.perf_counter()
        for attempt in range(5):
            req = urllib.request.Request(
                base + "/api/v1/reports",
                data=body,
                method="POST",
                headers={
                    "Authorization": f"Bearer {tokens[index]}",
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                    "User-Agent": "patchwatch-agent/0.1.0 (bench)",
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    code = resp.status
                    answer = json.loads(resp.read() or b"{}")
                    if answer.get("host_token"):
                        tokens[index] = answer["host_token"]
            except urllib.error.HTTPError as exc:
                code = exc.code
                if code == 503 and attempt < 4:
                    with lock:
                        retries += 1
                    time.sleep(float(exc.headers.get("Retry-After", "1")))
                    continue
            except (ConnectionError, http.client.HTTPException):
                # closed unanswered (the slow-loris header deadline, when a loaded
                # machine starves the sender): the agent keeps the report and sends again
                code = 0
                if attempt < 4:
                    with lock:
                        retries += 1
                    time.sleep(1)
                    continue
            break
        with lock:
            statuses[code] = statuses.get(code, 0) + 1
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        latencies = list(pool.map(send, range(len(bodies))))
    return time.perf_counter() - started, latencies, statuses, retries


def scrape(base: str) -> tuple[list[float], int, int]:
    times, size, series = [], 0, 0
    for _ in range(3):
        started = time.perf_counter()
        with urllib.request.urlopen(base + "/metrics", timeout=120) as resp:
            body = resp.read()
        times.append(time.perf_counter() - started)
        size = len(body)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return times, size, series


def keep_store(backend: str, hosts: int, url: str, pg: Postgres | None, into: Path) -> Path:
    """Save a cell's final store for later measurements (``--keep-store``).

    SQLite through its backup API (one consistent file, WAL included); PostgreSQL as
    a ``pg_dump`` custom-format archive (``createdb NAME && pg_restore -d NAME
    FILE``). The store is as the run left it: reports processed twice, updates
    computed (``patchwatch updates --force`` computes them again from the start).
    """
    into.mkdir(parents=True, exist_ok=True)
    if pg:
        target = into / f"patchwatch-{backend}-{hosts}.dump"
        pg_dump = str(pg.server.bindir / "pg_dump")
        subprocess.run([pg_dump, "-Fc", "-f", str(target), "-d", url], check=True)
    else:
        import sqlite3

        target = into / f"patchwatch-{backend}-{hosts}.db"
        target.unlink(missing_ok=True)
        source = sqlite3.connect(url.removeprefix("sqlite:///"))
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
    print(f"store kept: {target} ({target.stat().st_size / 2**20:.0f} MB)", flush=True)
    return target


def run_one(
    backend: str,
    bodies: list[bytes],
    raw_kib: float,
    senders: int,
    pg: Postgres | None,
    keep: Path | None = None,
    feed: Path | None = None,
) -> dict[str, Any]:
    hosts = len(bodies)
    print(f"\n== {backend}, {hosts:,} hosts", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"pw-pipeline-{backend}-{hosts}-"))
    data = tmp / "data"
    log = tmp / "server.log"
    url = pg.new_database() if pg else f"sqlite:///{data / 'patchwatch.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HOME": str(tmp),
        "PATCHWATCH_DATA_DIR": str(data),
        "PATCHWATCH_DATABASE_URL": url if pg else "",
        "PATCHWATCH_PROCESS_INLINE": "false",
        "PATCHWATCH_PROCESS_INTERVAL_SECONDS": DAY,
        "PATCHWATCH_REFRESH_INTERVAL_MINUTES": DAY,
        "PATCHWATCH_UPDATES_INTERVAL_MINUTES": DAY,
        "PATCHWATCH_PRUNE_INTERVAL_MINUTES": DAY,
        "PATCHWATCH_FOLLOW_REPORTS": "false",  # no refresh or computation behind the steps
        "PATCHWATCH_LOG_LEVEL": "WARNING",
    }
    env.pop("PATCHWATCH_CONFIG", None)
    r: dict[str, Any] = {"backend": backend, "hosts": hosts, "date": dt.date.today().isoformat()}
    with log.open("a") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "patchwatch", "serve", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=err,
            stderr=err,
        )
    try:
        wait_ready(base, url, server)
        _, _, token = run_cli(["token", "create", "--enroll"], env, log)
        token = token.strip().splitlines()[-1].strip()
        tokens = [token] * len(bodies)  # each host's own token after its first report

        wall, lat, statuses, retries = send_all(base, tokens, bodies, senders)
        ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
        r.update(
            ingest_seconds=wall,
            ingest_rate=ok / wall,
            ingest_ok=ok,
            ingest_statuses={str(k): v for k, v in sorted(statuses.items())},
            ingest_retries=retries,
            p50_ms=percentile(lat, 0.50) * 1000,
            p95_ms=percentile(lat, 0.95) * 1000,
            p99_ms=percentile(lat, 0.99) * 1000,
            body_kib=statistics.mean(len(b) for b in bodies) / 1024,
            raw_kib=raw_kib,
        )
        print(
            f"ingest: {ok:,}/{hosts:,} acknowledged in {wall:.1f} s = {ok / wall:.0f}/s; "
            f"p50 {r['p50_ms']:.0f} ms p95 {r['p95_ms']:.0f} ms p99 {r['p99_ms']:.0f} ms; "
            f"statuses {statuses}, {retries} retries",
            flush=True,
        )

        secs, rss, out = run_cli(["process", "--workers", str(PROCESS_WORKERS)], env, log)
        done = int(m.group(1)) if (m := re.search(r"(\d+) processed", out)) else 0
        r.update(process_seconds=secs, process_rate=done / secs, process_rss=rss, processed=done)
        print(f"process: {out.strip()} in {secs:.1f} s = {done / secs:.0f}/s, {rss:.0f} MB")

        secs, rss, out = run_cli(["refresh"], env, log)
        packages = sum(int(n) for n in re.findall(r"^changed .*?: (\d+) packages", out, re.M))
        failed = len(re.findall(r"^failed", out, re.M))
        r.update(refresh_seconds=secs, refresh_rss=rss, refresh_packages=packages)
        r["refresh_mirrors"] = len(re.findall(r"^(?:changed|unchanged|failed)", out, re.M))
        r["refresh_failed"] = failed
        print(f"refresh: {packages:,} packages in {secs:.1f} s, {rss:.0f} MB\n{out.strip()}")

        secs, rss, out = run_cli(["updates"], env, log)
        r.update(updates_seconds=secs, updates_rss=rss, updates_detail=out.strip())
        print(f"updates: {out.strip()} in {secs:.1f} s, {rss:.0f} MB")

        if feed is not None:
            venv = {**env, "PATCHWATCH_VULNS_OSV_SOURCES": str(feed),
                    "PATCHWATCH_VULNS_KEV_SOURCE": str(KEV),
                    "PATCHWATCH_VULNS_DEBIAN_TRACKER_SOURCE": ""}  # fmt: skip
            secs, rss, out = run_cli(["vulns", "refresh"], venv, log)
            load = seconds_in(r"^changed +osv: .* in ([0-9.]+) s", out)
            compute = seconds_in(r"computed in ([0-9.]+) s", out)
            r.update(vulns_seconds=secs, vulns_rss=rss, vulns_load_seconds=load,
                     vulns_compute_seconds=compute)  # fmt: skip
            print(f"vulns: {secs:.1f} s (feed {load:.1f} s, hosts {compute:.1f} s), {rss:.0f} MB\n"
                  f"{out.strip()}")  # fmt: skip
            secs, _rss, out = run_cli(["vulns", "refresh"], venv, log)
            again = seconds_in(r"computed in ([0-9.]+) s", out)
            r.update(again_vulns_cli_seconds=secs, again_vulns_seconds=again)
            print(f"vulns again: {secs:.1f} s (hosts {again:.2f} s)\n{out.strip()}", flush=True)

        times, size, series = scrape(base)
        r.update(scrape_first=times[0], scrape_best=min(times), scrape_kib=size / 1024)
        r["scrape_series"] = series
        print(f"scrape: {', '.join(f'{t:.2f}' for t in times)} s, {size / 1024:.0f} KiB")

        # the steady state: every host reports again with nothing changed, as a fleet
        # does between patch days; processing finds every package set known
        wall, _lat, statuses, _retries = send_all(base, tokens, bodies, senders)
        again = sum(v for k, v in statuses.items() if 200 <= k < 300)
        secs, _rss, out = run_cli(["process", "--workers", str(PROCESS_WORKERS)], env, log)
        done = int(m.group(1)) if (m := re.search(r"(\d+) processed", out)) else 0
        r.update(again_ingest_rate=again / wall, again_process_seconds=secs)
        r["again_process_rate"] = done / secs
        secs, _rss, out = run_cli(["updates"], env, log)
        r.update(again_updates_seconds=secs)
        print(
            f"again: ingest {again / wall:.0f}/s, process {r['again_process_rate']:.0f}/s, "
            f"updates {secs:.1f} s ({out.strip()})",
            flush=True,
        )

        pids = tree_pids(server.pid)
        peaks = [peak_rss_mb(p) for p in pids]
        r.update(server_rss_sum=sum(peaks), server_rss_max=max(peaks), server_procs=len(pids))
        if pg:
            r["db_bytes"] = pg.size(url)
        else:
            r["db_bytes"] = sum(
                p.stat().st_size for p in data.glob("patchwatch.db*") if p.is_file()
            )
        r.update(store_counts(url))
        print(
            f"server peak RSS {r['server_rss_sum']:.0f} MB over {len(pids)} processes "
            f"(largest {r['server_rss_max']:.0f}); database {r['db_bytes'] / 2**20:.0f} MB; "
            f"{r['package_sets']} package sets, {r['host_updates']:,} pending updates",
            flush=True,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if keep is not None:
            keep_store(backend, hosts, url, pg, keep)
        shutil.rmtree(tmp, ignore_errors=True)
    return r


# ---------------------------------------------------------------- the doc


ROWS: list[tuple[str, str]] = [
    ("reports acknowledged (2xx) / sent", "{ingest_ok:,} / {hosts:,}"),
    ("report size, gzip (raw)", "{body_kib:.0f} KiB ({raw_kib:.0f} KiB)"),
    ("ingest: reports/s, 50 senders", "{ingest_rate:.0f} ({ingest_seconds:.1f} s)"),
    ("ingest latency p50 / p95 / p99", "{p50_ms:.0f} / {p95_ms:.0f} / {p99_ms:.0f} ms"),
    ("process: reports/s (aim 200)", "{process_rate:.0f} ({process_seconds:.1f} s)"),
    ("distinct package sets stored", "{package_sets:,}"),
    ("sets written as differences; member rows", "{difference_sets:,}; {member_rows:,}"),
    ("refresh: seconds (aim 3 s)", "{refresh_seconds:.1f} s"),
    ("refresh: packages, mirrors", "{refresh_packages:,}, {refresh_mirrors}"),
    ("updates, all hosts: seconds (aim 10 s at 10,000)", "{updates_seconds:.1f} s"),
    ("pending updates (security)", "{host_updates:,} ({security_updates:,})"),
    ("again, nothing changed: ingest / process reports/s", "{again_ingest_rate:.0f} / {again_process_rate:.0f}"),  # noqa: E501
    ("again, nothing changed: updates, all hosts", "{again_updates_seconds:.1f} s"),
    ("vulns: feed load (50,000 records) / first computation, all hosts (aim 10 s)", "{vulns_load_seconds:.1f} / {vulns_compute_seconds:.1f} s"),  # noqa: E501
    ("vulns again, nothing changed: computation (aim 1 s) / whole command", "{again_vulns_seconds:.2f} / {again_vulns_cli_seconds:.1f} s"),  # noqa: E501
    ("scrape /metrics: first / best (aim < 1 s)", "{scrape_first:.2f} / {scrape_best:.2f} s"),
    ("scrape size, series", "{scrape_kib:,.0f} KiB, {scrape_series:,}"),
    ("server peak RSS: sum (largest process)", "{server_rss_sum:.0f} MB ({server_rss_max:.0f} MB)"),
    ("peak RSS process / refresh / updates", "{process_rss:.0f} / {refresh_rss:.0f} / {updates_rss:.0f} MB"),  # noqa: E501
    ("peak RSS vulns refresh", "{vulns_rss:.0f} MB"),
    ("database size", "{db_mb:,.0f} MB"),
]  # fmt: skip


def cell(fmt: str, r: dict[str, Any]) -> str:
    try:
        return fmt.format(**r, db_mb=r.get("db_bytes", 0) / 2**20)
    except (KeyError, ValueError):
        return "—"


def render_table(results: list[dict[str, Any]]) -> str:
    cols = sorted(results, key=lambda r: (r["backend"] != "sqlite", r["hosts"]))
    head = "| | " + " | ".join(f"{r['backend']}, {r['hosts']:,} hosts" for r in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for label, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(fmt, r) for r in cols) + " |")
    return "\n".join(lines)


def render_growth(results: list[dict[str, Any]]) -> str:
    """Ratios 10,000 / 1,000 hosts per backend: how each cost grows with the fleet."""
    out = []
    by = {(r["backend"], r["hosts"]): r for r in results}
    for backend in ("sqlite", "postgresql"):
        sizes = sorted(h for b, h in by if b == backend)
        if len(sizes) < 2:
            continue
        a, b = by[(backend, sizes[0])], by[(backend, sizes[-1])]
        k = b["hosts"] / a["hosts"]

        def ratio(key: str, a: dict[str, Any] = a, b: dict[str, Any] = b) -> str:
            try:
                return f"x{b[key] / a[key]:.1f}"
            except (KeyError, ZeroDivisionError):
                return "—"

        out.append(
            f"- {backend}, {sizes[0]:,} → {sizes[-1]:,} hosts (x{k:.0f}): ingest time "
            f"{ratio('ingest_seconds')}, p99 latency {ratio('p99_ms')}, processing time "
            f"{ratio('process_seconds')}, refresh {ratio('refresh_seconds')}, updates "
            f"{ratio('updates_seconds')}, scrape {ratio('scrape_best')} (size "
            f"{ratio('scrape_kib')}), server RSS {ratio('server_rss_sum')}, database "
            f"{ratio('db_bytes')}, package sets {ratio('package_sets')}."
        )
    return "\n".join(out)


def render_block(results: list[dict[str, Any]]) -> str:
    dates = sorted({r["date"] for r in results})
    cpu = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    data = json.dumps(results, sort_keys=True)
    growth = render_growth(results)
    return "\n".join(
        [
            START,
            f"Measured {', '.join(dates)} on {platform.node() or 'this machine'}: {cpu} cores"
            f"{f' ({model})' if model else ''}, Linux {platform.release()}, Python "
            f"{platform.python_version()}; `patchwatch serve` with its defaults (2 gunicorn "
            "workers x 8 threads), senders on the same machine.",
            "",
            render_table(results),
            "",
            *(["Growth, largest / smallest fleet of each backend:", "", growth, ""] if growth else []),  # noqa: E501
            f"<!-- pipeline-data: {data} -->",
            END,
        ]
    )  # fmt: skip


def write_doc(results: list[dict[str, Any]], path: Path, keep_old: bool) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if keep_old and (m := DATA_RE.search(text)):
        fresh = {(r["backend"], r["hosts"]) for r in results}
        old = [r for r in json.loads(m.group(1)) if (r["backend"], r["hosts"]) not in fresh]
        results = old + results
    block = render_block(results)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = (text or "# Performance\n") + "\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
    print(f"\nwrote {path}")


# ---------------------------------------------------------------- main


def render_bodies(fleet: Fleet, count: int) -> tuple[list[bytes], float]:
    """gzip every report as the agent does (level 6); return bodies and mean raw KiB."""
    bodies, raw = [], 0
    for i in range(count):
        text = fleet.report_json(i)
        raw += len(text)
        bodies.append(gzip.compress(text, 6, mtime=0))
    return bodies, raw / count / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--packages", type=int, default=1500, help="packages per image, about")
    parser.add_argument("--seed", type=int, default=20260711)
    parser.add_argument("--drift", type=float, default=0.7, help="share of hosts that drift")
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/patchwatch-bench-indexes"))
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--no-vulns", action="store_true", help="skip the vulnerability step")
    parser.add_argument("--vuln-records", type=int, default=50_000)
    parser.add_argument("--fresh", action="store_true", help="drop earlier results from the doc")
    parser.add_argument(
        "--keep-store", type=Path, metavar="DIR",
        help="save each cell's final store in DIR (SQLite file, PostgreSQL pg_dump archive)",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = [int(s) for s in args.hosts.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        raise SystemExit(f"unknown backends: {', '.join(sorted(unknown))}")
    started = time.perf_counter()

    t = time.perf_counter()
    fleet = build_fleet(
        args.cache_dir, max(sizes), args.images, args.packages, args.seed, args.drift
    )
    bodies, raw_kib = render_bodies(fleet, max(sizes))
    print(
        f"fleet: {json.dumps(fleet.summary())}; {len(bodies):,} reports rendered and "
        f"compressed in {time.perf_counter() - t:.1f} s (not timed below)",
        flush=True,
    )

    feed: Path | None = None
    if not args.no_vulns:
        from bench_vulns import debian_feed

        t = time.perf_counter()
        feed_dir = Path(tempfile.mkdtemp(prefix="pw-pipeline-feed-"))
        feed, _ = debian_feed(feed_dir / "debian-all.zip", args.vuln_records)
        print(f"vulnerability feed: {args.vuln_records:,} records generated in "
              f"{time.perf_counter() - t:.1f} s (not timed below)", flush=True)  # fmt: skip

    pg = Postgres() if "postgresql" in backends else None
    results = []
    try:
        for backend in backends:
            for n in sizes:
                res = run_one(
                    backend,
                    bodies[:n],
                    raw_kib,
                    args.senders,
                    pg if backend == "postgresql" else None,
                    args.keep_store,
                    feed,
                )
                res["fleet"] = {
                    "images": args.images,
                    "packages": args.packages,
                    "seed": args.seed,
                    "drift": args.drift,
                }
                results.append(res)
    finally:
        if pg:
            pg.stop()
    print()
    print(render_table(results))
    growth = render_growth(results)
    if growth:
        print("\n" + growth)
    print(f"\nwhole command: {time.perf_counter() - started:.0f} s")
    if not args.no_doc:
        write_doc(results, args.doc, keep_old=not args.fresh)


if __name__ == "__main__":
    main()
