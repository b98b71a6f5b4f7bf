"""The scheduler loop: failures are recorded and never stop it; one scheduler works."""

from __future__ import annotations

import threading
import time

from patchwatch.db import database
from patchwatch.models import JobRun
from scheduler.runner import Job
from scheduler.runner import guarded
from scheduler.runner import run_forever


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
