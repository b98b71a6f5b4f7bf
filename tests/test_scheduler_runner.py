"""The scheduler loop: failures are recorded and never stop it; one scheduler works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from patchwatch.scheduler.runner import LEASE_NAME
from patchwatch.scheduler.runner import Job
from patchwatch.scheduler.runner import LeaseKeeper
from patchwatch.scheduler.runner import current_stop
from patchwatch.scheduler.runner import guarded
from patchwatch.scheduler.runner import run_forever
from patchwatch.store.db import database
from patchwatch.store.locks import acquire_lease
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from patchwatch.store.models import SchedulerLock
from tests.conftest import ROOT
from tests.test_fetch import Fault
from tests.test_fetch import MirrorServer


def test_failing_job_is_recorded_and_the_next_one_still_runs(db) -> None:
    def boom(now: float) -> str:
        raise RuntimeError("mirror exploded")

    db.close()
    guarded(Job("bad", 60, boom))()
    guarded(Job("good", 60, lambda now: "fine"))()
    database.connect(reuse_if_open=True)
    runs = {r.job: r for r in JobRun.select()}
    assert runs["bad"].outcome == "failure"
    assert "RuntimeError: mirror exploded" in runs["bad"].detail
    assert runs["good"].outcome == "success"
    assert runs["good"].detail == "fine"
    assert runs["good"].duration_seconds >= 0


def test_second_scheduler_waits_while_first_holds_the_lease(db) -> None:
    db.close()
    counts = {"a": 0, "b": 0}

    def counter(name: str) -> Job:
        def run(now: float) -> str:
            counts[name] += 1
            return name

        return Job(f"count-{name}", 1, run)

    stop_a, stop_b = threading.Event(), threading.Event()
    ta = threading.Thread(target=run_forever, args=(db, [counter("a")], stop_a, 0.05, "a"))
    ta.start()
    deadline = time.monotonic() + 10
    while counts["a"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    tb = threading.Thread(target=run_forever, args=(db, [counter("b")], stop_b, 0.05, "b"))
    tb.start()
    time.sleep(0.5)
    assert counts["a"] >= 1
    assert counts["b"] == 0  # b waits for a's lease
    stop_a.set()
    ta.join(10)  # a releases its lease on the way out
    deadline = time.monotonic() + 10
    while counts["b"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop_b.set()
    tb.join(10)
    assert counts["b"] >= 1


# ------------------------------------------------ the lease while jobs run, and stopping


class Clock:
    """The lease's wall clock, moved by the test: renewals are seen in stored expiry times."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


LIVENESS = 30.0  # generous bounds on waiting for threads; nothing is timed


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIVENESS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def lease_row() -> SchedulerLock:
    with database.connection_context():
        return SchedulerLock.get(SchedulerLock.name == LEASE_NAME)


def test_lease_keeper_renews_and_loses_with_an_injected_clock(db) -> None:
    db.close()
    clock = Clock(0.0)
    a = LeaseKeeper(db, "a", 10.0, clock)
    b = LeaseKeeper(db, "b", 10.0, clock)
    assert a.renew() and not b.renew()
    clock.now = 8.0
    assert a.renew()  # renewed: the lease now runs to 18
    clock.now = 12.0
    assert not b.renew()  # without the renewal it would have expired at 10
    clock.now = 19.0  # a stopped renewing (a job that never ends, a dead process)
    assert b.renew()
    clock.now = 20.0
    assert not a.renew()
    b.release()
    assert a.renew()


def test_a_long_job_keeps_the_lease_and_stops_when_it_loses_it(db) -> None:
    """The job outlives the lease: renewals keep it; when another holder takes it, it stops."""
    db.close()
    clock = Clock()
    started, stopped = threading.Event(), threading.Event()
    seen_stop: list[threading.Event | None] = []

    def long_job(now: float) -> str:
        event = current_stop()
        seen_stop.append(event)
        started.set()
        assert event is not None and event.wait(LIVENESS)  # until told to stop
        stopped.set()
        return "half done"

    others: list[str] = []
    jobs = [Job("long", 3600, long_job), Job("other", 3600, lambda now: others.append("x") or "")]
    stop = threading.Event()
    runner = threading.Thread(
        target=run_forever, args=(db, jobs, stop, 0.05, "a"),
        kwargs={"lease_ttl": 60.0, "clock": clock, "renew_every": 0.05},
    )  # fmt: skip
    runner.start()
    try:
        assert started.wait(LIVENESS)
        first_expiry = lease_row().expires_at
        assert first_expiry == clock.now + 60.0
        clock.now += 50.0  # the job has run for most of the lease: the keeper renews it
        wait_for(lambda: lease_row().expires_at == clock.now + 60.0, "the lease renewed")
        clock.now += 40.0  # past the first expiry: still ours, another scheduler waits
        with database.connection_context():
            assert not acquire_lease(LEASE_NAME, "b", clock.now, 60.0)
        assert not stopped.is_set()

        with database.connection_context():  # another scheduler takes it over
            SchedulerLock.update(holder="b", expires_at=clock.now + 600).execute()
        assert stopped.wait(LIVENESS), "the job was not told that the lease was lost"
        wait_for(lambda: JobRun.select().where(JobRun.outcome != "running").exists(), "the run")
    finally:
        stop.set()
        runner.join(LIVENESS)
    assert not runner.is_alive()
    with database.connection_context():
        (run,) = JobRun.select()
        assert (run.job, run.outcome) == ("long", "failure")
        assert run.detail == "stopped: the scheduler lost its lease to another scheduler; half done"
        assert lease_row().holder == "b"  # a leaves b's lease alone on its way out
    assert others == []  # no job started after the lease was lost


def test_no_job_starts_after_sigterm_and_the_running_one_stops(db) -> None:
    """SIGTERM (the stop event) during the first job: it ends early, the others never start."""
    db.close()
    stop = threading.Event()
    ran: list[str] = []

    def first(now: float) -> str:
        ran.append("first")
        stop.set()  # what the SIGTERM handler does, while this job runs
        event = current_stop()
        assert event is not None and event.wait(LIVENESS)
        return "interrupted"

    def later(name: str) -> Job:
        return Job(name, 1, lambda now: ran.append(name) or name)

    runner = threading.Thread(
        target=run_forever, args=(db, [Job("first", 1, first), later("b"), later("c")], stop),
        kwargs={"tick": 0.05, "holder": "a"},
    )  # fmt: skip
    runner.start()
    runner.join(LIVENESS)
    assert not runner.is_alive()
    assert ran == ["first"]
    with database.connection_context():
        (run,) = JobRun.select()
        assert run.outcome == "failure" and run.detail.startswith("stopped: the scheduler is")
        assert SchedulerLock.select().count() == 0  # released on the way out


def test_the_scheduler_process_stops_its_refresh_on_sigterm_and_starts_nothing_after(
    db, database_url: str, tmp_path: Path
) -> None:
    """``patchwatch scheduler`` for real: SIGTERM while a mirror hangs ends the round there."""
    never = threading.Event()
    fault = Fault(wait=never)
    mirror_server = MirrorServer(tmp_path).start()
    mirror_server.faults["/rpm/repodata/repomd.xml"] = fault
    repo = Repository.create(kind="rpm", key="rpm t x86_64 hanging", arch="x86_64", created_at=0)
    Mirror.create(repository=repo, url=mirror_server.url("rpm"), approved=True)
    db.close()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path),
        "PATCHWATCH_DATABASE_URL": database_url,
        "PATCHWATCH_DATA_DIR": str(tmp_path / "data"),
        "PATCHWATCH_MIRROR_ALLOWED_NETWORKS": "127.0.0.1/32",
        "PATCHWATCH_HTTP_TIMEOUT_SECONDS": str(LIVENESS * 4),  # only SIGTERM can end it
    }  # fmt: skip
    log = (tmp_path / "scheduler.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchwatch", "scheduler"], cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert fault.arrived.wait(LIVENESS * 2), "the refresh never reached the mirror"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(LIVENESS) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        never.set()
        mirror_server.stop()
    output = (tmp_path / "scheduler.log").read_text(errors="replace")
    with database.connection_context():
        runs = {r.job: r for r in JobRun.select()}
    assert set(runs) == {"process_reports", "refresh_mirrors"}, output  # nothing after
    assert runs["refresh_mirrors"].outcome == "failure"
    assert runs["refresh_mirrors"].detail == (
        "stopped: the scheduler is stopping; 1 mirrors: 1 skipped"
    ), output
    with database.connection_context():
        assert Mirror.get().failures_total == 0  # stopping is not the mirror's failure
