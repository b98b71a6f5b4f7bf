"""Faults a real fleet brings, on loopback and bounded in time.

- the server killed with SIGKILL in a burst: every report answered 2xx survives and
  is processed after a restart;
- PostgreSQL stopped and started: 503 with Retry-After meanwhile, the agent's spool
  delivers later, nothing lost;
- two schedulers: never the same job twice at once, and takeover when one dies;
- slow-loris clients and a flood of oversized bodies do not starve real agents.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from patchwatch.store.db import open_database
from patchwatch.store.models import Host
from patchwatch.store.models import JobRun
from patchwatch.store.models import Report
from patchwatch.store.models import SchedulerLock
from tests.conftest import ROOT
from tests.conftest import PostgresServer
from tests.conftest import require_or_skip
from tests.test_receiver_ingest import native_doc

pytestmark = pytest.mark.slow


def post(base: str, token: str, doc: dict, timeout: float = 30) -> tuple[int, dict, dict]:
    req = urllib.request.Request(
        base + "/api/v1/reports", data=json.dumps(doc).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def process_tree(pid: int) -> list[int]:
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            out += process_tree(int(child))
    return out


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_in_a_burst_loses_no_acknowledged_report(server_factory) -> None:
    env = {
        "PATCHWATCH_PROCESS_INTERVAL_SECONDS": "1",
        "PATCHWATCH_SCHEDULER_LEASE_SECONDS": "3",  # the killed scheduler's lease
    }
    srv = server_factory(env)
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    acked: list[int] = []
    stop = threading.Event()

    def sender(i: int) -> None:
        while not stop.is_set():
            try:
                code, body, _ = post(srv.base, token, native_doc(f"h{i}-{len(acked)}", n=60), 5)
            except (OSError, http.client.HTTPException):
                return  # the server is gone: this report was never acknowledged
            if code == 202:
                acked.append(body["report"])

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 60, 60, "a burst of acknowledged reports")
    for pid in process_tree(srv.proc.pid):
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    srv.proc.wait(10)
    assert len(acked) >= 60

    again = server_factory(env)  # same data folder
    db = open_database(again.database_url)

    def all_processed() -> bool:
        with db.connection_context():
            rows = {r.id: r.state for r in Report.select(Report.id, Report.state)}
        assert set(acked) <= set(rows), "an acknowledged report is missing"
        return all(rows[i] == "processed" for i in acked)

    wait_until(all_processed, 60, "every acknowledged report to be processed")


def test_database_outage_gives_503_and_the_agent_spool_delivers_later(
    server_factory, tmp_path
) -> None:
    pg = PostgresServer()
    try:
        pg.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        require_or_skip("PATCHWATCH_TEST_REQUIRE_POSTGRES", f"cannot start PostgreSQL: {exc}")
    try:
        srv = server_factory({"PATCHWATCH_DATABASE_URL": pg.create_database()})
        token = srv.cli("token", "create", "--enroll").stdout.strip()
        agent_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PATCHWATCH_SERVER": srv.base,
                     "PATCHWATCH_TOKEN": token, "HOME": str(tmp_path)}  # fmt: skip
        agent = [sys.executable, str(ROOT / "agent/patchwatch_agent.py"),
                 "--spool-dir", str(tmp_path / "spool"), "--retries", "0"]  # fmt: skip

        pg.pause()
        code, body, headers = post(srv.base, token, native_doc("during-outage"))
        assert code == 503, body
        assert int(headers["Retry-After"]) > 0
        out = subprocess.run(agent, env=agent_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr  # nothing sent, report spooled
        assert [f for f in (tmp_path / "spool").iterdir() if not f.name.startswith(".")]

        pg.resume()
        out = subprocess.run(agent, env=agent_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert not [f for f in (tmp_path / "spool").iterdir() if not f.name.startswith(".")]
        db = open_database(srv.database_url)

        def delivered() -> bool:
            with db.connection_context():
                return Report.select().where(Report.state == "processed").count() == 2

        wait_until(delivered, 30, "the spooled and the new report to be processed")
        with db.connection_context():
            assert Host.select().count() == 1
    finally:
        pg.stop()


def start_scheduler(url: str, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PATCHWATCH_DATABASE_URL": url,
           "PATCHWATCH_DATA_DIR": str(tmp_path / name), "PATCHWATCH_SCHEDULER_LEASE_SECONDS": "2",
           "PATCHWATCH_PROCESS_INTERVAL_SECONDS": "1"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "patchwatch", "scheduler"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_two_schedulers_never_run_a_job_twice_at_once(tmp_path, database_url) -> None:
    first = start_scheduler(database_url, tmp_path, "a")
    second = start_scheduler(database_url, tmp_path, "b")
    db = open_database(database_url)
    try:

        def runs(n: int) -> bool:
            with db.connection_context():
                if not db.table_exists("job_run"):
                    return False
                return JobRun.select().where(JobRun.job == "process_reports").count() >= n

        wait_until(lambda: runs(4), 30, "scheduled runs")
        with db.connection_context():
            holder = SchedulerLock.get().holder
        active = first if holder.endswith(f":{first.pid}") else second
        waiting = second if active is first else first
        active.kill()  # dies without releasing its lease
        active.wait(10)
        killed_at = time.time()
        wait_until(lambda: SchedulerLock.get().holder.endswith(f":{waiting.pid}"), 30, "takeover")
        with db.connection_context():
            count = JobRun.select().where(JobRun.job == "process_reports").count()
        wait_until(lambda: runs(count + 2), 30, "runs by the new scheduler")
        with db.connection_context():
            rows = list(JobRun.select().where(JobRun.job == "process_reports")
                        .order_by(JobRun.started_at))  # fmt: skip
        finished = [r for r in rows if r.finished_at is not None]
        for a, b in itertools.pairwise(finished):
            assert a.finished_at <= b.started_at, "two runs of one job overlapped"
        assert any(r.started_at > killed_at for r in finished)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)


def test_slow_loris_and_oversized_floods_do_not_starve_agents(server_factory) -> None:
    srv = server_factory({"PATCHWATCH_WORKERS": "2", "PATCHWATCH_THREADS": "4",
                          "PATCHWATCH_MAX_REPORT_BYTES": "100000"})  # fmt: skip
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    host, port = "127.0.0.1", srv.port
    stop = threading.Event()
    loris: list[socket.socket] = []

    def trickle() -> None:  # 24 clients, three times the server's 8 threads
        for _ in range(24):
            try:
                s = socket.create_connection((host, port))
                s.sendall(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                continue  # refused or cut: one attacker fewer
            loris.append(s)
        while not stop.is_set():
            for s in loris:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            time.sleep(0.5)

    def flood() -> None:
        big = b"x" * 2_000_000
        while not stop.is_set():
            try:
                req = urllib.request.Request(
                    srv.base + "/api/v1/reports", data=big, method="POST",
                    headers={"Authorization": f"Bearer {token}"},
                )  # fmt: skip
                urllib.request.urlopen(req, timeout=10)
            except (urllib.error.HTTPError, OSError):
                pass

    attackers = [threading.Thread(target=trickle)] + [threading.Thread(target=flood)
                                                     for _ in range(4)]  # fmt: skip
    for t in attackers:
        t.start()
    try:
        time.sleep(2)
        started = time.monotonic()
        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(
                lambda i: post(srv.base, token, native_doc(f"real{i}"), timeout=60)[0],
                range(20)))  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for t in attackers:
            t.join(30)
        for s in loris:
            s.close()
    print(f"\n20 real reports under attack took {elapsed:.1f} s")
    assert results == [202] * 20  # each within its 60 s timeout: not starved
