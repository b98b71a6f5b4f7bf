"""The scheduler loop: periodic jobs on a ``schedule.Scheduler``, one scheduler at a time.

A job that raises is logged and recorded as a failed run; it never stops the loop. The
loop works only while it holds the database lease, so a second scheduler started by
mistake (or for failover) waits instead of doubling the work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import schedule
from peewee import Database
from peewee import PeeweeException

from patchwatch import rdns
from patchwatch.db import database
from patchwatch.fetch import HttpFetcher
from patchwatch.hostupdates import refresh_host_updates
from patchwatch.jobs import finish_job_run
from patchwatch.jobs import prune_job_runs
from patchwatch.jobs import start_job_run
from patchwatch.locks import acquire_lease
from patchwatch.locks import release_lease
from patchwatch.processing import process_pending
from patchwatch.processing import prune_reports
from patchwatch.refresh import refresh_all
from patchwatch.refresh import summarize_results
from patchwatch.settings import Settings

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
LEASE_TTL_SECONDS = 60.0
JOB_RUN_RETENTION_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: int
    run: Callable[[float], str]  # returns a short detail for the job run row


def guarded(job: Job, clock: Callable[[], float] = time.time) -> Callable[[], None]:
    """Wrap a job so that it records its run and never raises into the loop."""

    def wrapper() -> None:
        with database.connection_context():
            run = start_job_run(job.name, clock())
            try:
                detail = job.run(clock())
            except Exception as exc:  # boundary: one failing job must not stop the others
                log.exception("job %s failed", job.name)
                finish_job_run(run, clock(), "failure", f"{type(exc).__name__}: {exc}")
            else:
                log.info("job %s done: %s", job.name, detail)
                finish_job_run(run, clock(), "success", detail)

    return wrapper


def prune_runs(now: float) -> str:
    return f"pruned {prune_job_runs(now - JOB_RUN_RETENTION_SECONDS)} job runs"


def refresh_mirrors(settings: Settings) -> Callable[[float], str]:
    """The mirror refresh job: every enabled mirror, one fresh HTTP session per run."""

    def run(now: float) -> str:
        with HttpFetcher.from_settings(settings) as fetcher:
            return summarize_results(refresh_all(fetcher, now, settings))

    return run


def compute_updates(now: float) -> str:
    """Recompute updates whose inputs (package set, repositories, mirror data) changed."""
    ctx = refresh_host_updates(now)
    return f"{ctx.computed} update sets computed, {ctx.reused} reused"


def check_reverse_dns(settings: Settings) -> Callable[[float], str]:
    """The reverse DNS job: hosts with the check on whose address changed, or is due
    again (``patchwatch.rdns``); nothing to do, and no lookup, while the check is off."""

    def run(now: float) -> str:
        outcome = rdns.check_hosts(now, timeout=settings.reverse_dns_timeout_seconds)
        return ", ".join(f"{v} {k}" for k, v in sorted(outcome.items())) or "nothing due"

    return run


def default_jobs(settings: Settings) -> list[Job]:
    """The jobs a scheduler runs, at the intervals the settings give."""

    def process_reports(now: float) -> str:
        outcome = process_pending(
            now, limit=5000, claim_timeout=settings.report_claim_timeout_seconds
        )
        return ", ".join(f"{v} {k}" for k, v in sorted(outcome.items())) or "nothing queued"

    def prune(now: float) -> str:
        return f"pruned {prune_reports(settings.reports_keep)} reports; " + prune_runs(now)

    return [
        Job("process_reports", settings.process_interval_seconds, process_reports),
        Job("refresh_mirrors", settings.refresh_interval_minutes * 60, refresh_mirrors(settings)),
        Job("compute_updates", settings.updates_interval_minutes * 60, compute_updates),
        Job("prune", settings.prune_interval_minutes * 60, prune),
        Job(
            "check_reverse_dns",
            settings.updates_interval_minutes * 60,
            check_reverse_dns(settings),
        ),
    ]


def build_scheduler(jobs: list[Job]) -> schedule.Scheduler:
    """Put each guarded job on a fresh scheduler (never the module-level default)."""
    sched = schedule.Scheduler()
    for job in jobs:
        sched.every(job.every_seconds).seconds.do(guarded(job)).tag(job.name)
    return sched


def run_forever(
    db: Database,
    jobs: list[Job],
    stop: threading.Event,
    tick: float = 1.0,
    holder: str | None = None,
    lease_ttl: float = LEASE_TTL_SECONDS,
) -> None:
    """Run jobs until ``stop`` is set; run each once at start, then on its interval."""
    holder = holder or f"{socket.gethostname()}:{os.getpid()}"
    sched = build_scheduler(jobs)
    had_lease = False
    try:
        while not stop.is_set():
            try:
                with db.connection_context():
                    has_lease = acquire_lease(LEASE_NAME, holder, time.time(), lease_ttl)
            except PeeweeException as exc:
                log.warning("cannot reach the database for the scheduler lease: %s", exc)
                has_lease = False
            if has_lease and not had_lease:
                log.info("scheduler lease taken by %s; running jobs", holder)
                sched.run_all()
            elif had_lease and not has_lease:
                log.warning("scheduler lease lost; pausing jobs")
            elif not has_lease and not had_lease:
                log.debug("another scheduler holds the lease; waiting")
            had_lease = has_lease
            if has_lease:
                sched.run_pending()
            stop.wait(tick)
    finally:
        if had_lease:
            try:
                with db.connection_context():
                    release_lease(LEASE_NAME, holder)
            except PeeweeException:
                log.warning("could not release the scheduler lease")
        log.info("scheduler stopped")
