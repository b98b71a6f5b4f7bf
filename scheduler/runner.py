"""The scheduler loop: periodic jobs on a ``schedule.Scheduler``, one scheduler at a time.

A job that raises is logged and recorded as a failed run; it never stops the loop. The
loop works only while it holds the database lease, so a second scheduler started by
mistake (or for failover) waits instead of doubling the work.

The lease is renewed while a job runs, not only between jobs: a refresh of a large
fleet's mirrors takes longer than the lease, and a lease that expires under a running
job lets a second scheduler start the same work. When a renewal finds the lease taken
(or the database unreachable until it expired), the running job is told to stop
(:func:`current_stop`; the refresh ends its requests in flight) and no further job
starts. The same happens on SIGTERM: the job in progress stops, and the jobs due after
it are not started.
"""

from __future__ import annotations

import contextvars
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

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.fetch import fetch_scope
from patchwatch.pipeline.followup import FollowUp
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.hostvulns import refresh_host_vulns
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import prune_reports
from patchwatch.pipeline.processor import STRAGGLER_SECONDS
from patchwatch.pipeline.refresh import refresh_all
from patchwatch.pipeline.refresh import summarize_results
from patchwatch.pipeline.securityfeeds import refresh_security_feeds
from patchwatch.pipeline.vulnfeeds import refresh_vulns
from patchwatch.pipeline.vulnfeeds import summarize_feeds
from patchwatch.store import rdns
from patchwatch.store.db import database
from patchwatch.store.jobs import finish_job_run
from patchwatch.store.jobs import prune_job_runs
from patchwatch.store.jobs import start_job_run
from patchwatch.store.locks import acquire_lease
from patchwatch.store.locks import release_lease

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
LEASE_TTL_SECONDS = 60.0
FOLLOW_UP_SECONDS = 1  # the loop's tick: new hosts get their numbers within seconds
JOB_RUN_RETENTION_SECONDS = 30 * 86400
#: While a job runs the lease is renewed this many times per lease period.
RENEWALS_PER_LEASE = 3
#: How often the renewal thread looks at the stop event, in seconds.
STOP_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: int
    run: Callable[[float], str]  # returns a short detail for the job run row
    # asked first, when given: a job that runs every tick records a run only with work
    has_work: Callable[[], bool] | None = None


class JobStop:
    """Set when running jobs must stop: the scheduler is stopping, or lost its lease."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def clear(self) -> None:
        self.reason = ""
        self.event.clear()

    def is_set(self) -> bool:
        return self.event.is_set()


_CURRENT_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "patchwatch_job_stop", default=None
)


def current_stop() -> threading.Event | None:
    """The event a running job watches to stop early (None outside a scheduled job)."""
    return _CURRENT_STOP.get()


def guarded(
    job: Job, clock: Callable[[], float] = time.time, stop: JobStop | None = None
) -> Callable[[], None]:
    """Wrap a job so that it records its run and never raises into the loop.

    With ``stop``: a job is not started once it is set, and one that was running when
    it was set is recorded as a failure that says why it stopped.
    """

    def wrapper() -> None:
        if stop is not None and stop.is_set():
            log.info("job %s not started: %s", job.name, stop.reason)
            return
        with database.connection_context():
            if job.has_work is not None and not _has_work(job.name, job.has_work):
                return
            run = start_job_run(job.name, clock())
            token = _CURRENT_STOP.set(stop.event if stop is not None else None)
            try:
                detail = job.run(clock())
            except Exception as exc:  # boundary: one failing job must not stop the others
                log.exception("job %s failed", job.name)
                finish_job_run(run, clock(), "failure", f"{type(exc).__name__}: {exc}")
            else:
                if stop is not None and stop.is_set():
                    log.warning("job %s stopped: %s (%s)", job.name, stop.reason, detail)
                    finish_job_run(run, clock(), "failure", f"stopped: {stop.reason}; {detail}")
                else:
                    log.info("job %s done: %s", job.name, detail)
                    finish_job_run(run, clock(), "success", detail)
            finally:
                _CURRENT_STOP.reset(token)

    return wrapper


def _has_work(name: str, has_work: Callable[[], bool]) -> bool:
    """Ask a job whether it has work; a look that fails (the store away) says no."""
    try:
        return has_work()
    except Exception as exc:  # boundary: the loop must go on; the next tick looks again
        log.warning("job %s could not look for work: %s", name, exc)
        return False


def prune_runs(now: float) -> str:
    return f"pruned {prune_job_runs(now - JOB_RUN_RETENTION_SECONDS)} job runs"


def refresh_mirrors(settings: Settings) -> Callable[[float], str]:
    """The mirror refresh job: every enabled mirror, one fresh HTTP session per run."""

    def run(now: float) -> str:
        with HttpFetcher.from_settings(settings) as fetcher:
            return summarize_results(refresh_all(fetcher, now, settings, stop=current_stop()))

    return run


def refresh_security_feed_copies(settings: Settings) -> Callable[[float], str]:
    """The security feeds job: Arch's tracker and Alpine's secdb, the last good copy kept;
    the next mirror refresh classifies with a new copy."""

    def run(now: float) -> str:
        with fetch_scope(stop=current_stop()):
            return summarize_feeds(refresh_security_feeds(settings, now=now))

    return run


def compute_updates(now: float) -> str:
    """Recompute updates whose inputs (package set, repositories, mirror data) changed."""
    ctx = refresh_host_updates(now)
    return f"{ctx.computed} update sets computed, {ctx.reused} reused"


def refresh_vuln_feeds(settings: Settings) -> Callable[[float], str]:
    """The feeds job: every vulnerability feed, then the findings of what changed."""

    def run(now: float) -> str:
        with fetch_scope(stop=current_stop()):
            outcomes = refresh_vulns(settings)
        vulns = refresh_host_vulns(
            now, first_seen_at_publication=settings.vulns_first_seen_at_publication
        )
        detail = f"{summarize_feeds(outcomes)}; {vulns.computed} vulnerability sets computed"
        return detail + _updates_after(vulns.computed, now)

    return run


def compute_vulns(settings: Settings) -> Callable[[float], str]:
    """The findings job: recompute findings whose inputs (package set, mirror data,
    feeds) changed."""

    def run(now: float) -> str:
        found = refresh_host_vulns(
            now, first_seen_at_publication=settings.vulns_first_seen_at_publication
        )
        detail = f"{found.computed} vulnerability sets computed, {found.reused} reused"
        return detail + _updates_after(found.computed, now)

    return run


def _updates_after(computed: int, now: float) -> str:
    """Recompute updates after findings changed: an update that fixes a vulnerability is a
    security update (``hostupdates._resolve``), so counts and alerts follow at once
    rather than at the next updates run. Only the update sets whose fixes changed are
    computed; the others are reused."""
    if not computed:
        return ""
    ctx = refresh_host_updates(now)
    return f"; {ctx.computed} update sets computed"


def follow_up_job(settings: Settings) -> Job:
    """Every tick: read new repositories, compute updates of hosts whose report changed."""
    follow = FollowUp(settings)
    return Job("follow_up", FOLLOW_UP_SECONDS, follow.run, has_work=follow.has_work)


def check_reverse_dns(settings: Settings) -> Callable[[float], str]:
    """The reverse DNS job: hosts with the check on whose address changed, or is due
    again (``patchwatch.store.rdns``); nothing to do, and no lookup, while the check is off."""

    def run(now: float) -> str:
        outcome = rdns.check_hosts(now, timeout=settings.reverse_dns_timeout_seconds)
        return ", ".join(f"{v} {k}" for k, v in sorted(outcome.items())) or "nothing due"

    return run


def default_jobs(settings: Settings) -> list[Job]:
    """The jobs a scheduler runs, at the intervals the settings give."""

    def process_reports(now: float) -> str:
        # with processing on, fresh reports are the processing process's (or the
        # receiver's feed's): this job takes those left behind, a failed batch's
        before = now - STRAGGLER_SECONDS if settings.process_inline else None
        outcome = process_pending(now, limit=5000, received_before=before)
        return ", ".join(f"{v} {k}" for k, v in sorted(outcome.items())) or "nothing queued"

    def prune(now: float) -> str:
        return f"pruned {prune_reports(settings.reports_keep)} reports; " + prune_runs(now)

    security_feeds = settings.arch_security_tracker or settings.apk_secdb
    return [
        Job("process_reports", settings.process_interval_seconds, process_reports),
        # before the mirrors: a scheduler's first run classifies with fresh copies
        *(
            [
                Job(
                    "refresh_security_feeds",
                    settings.security_feeds_refresh_interval_minutes * 60,
                    refresh_security_feed_copies(settings),
                )
            ]
            if security_feeds
            else []
        ),
        Job("refresh_mirrors", settings.refresh_interval_minutes * 60, refresh_mirrors(settings)),
        Job("compute_updates", settings.updates_interval_minutes * 60, compute_updates),
        Job("prune", settings.prune_interval_minutes * 60, prune),
        *([follow_up_job(settings)] if settings.follow_reports else []),
        Job(
            "check_reverse_dns",
            settings.updates_interval_minutes * 60,
            check_reverse_dns(settings),
        ),
        *(
            [
                Job(
                    "refresh_vulns",
                    settings.vulns_refresh_interval_minutes * 60,
                    refresh_vuln_feeds(settings),
                ),
                Job(
                    "compute_vulns",
                    settings.updates_interval_minutes * 60,
                    compute_vulns(settings),
                ),
            ]
            if settings.vulns_enabled
            else []
        ),
    ]


def build_scheduler(
    jobs: list[Job], stop: JobStop | None = None, clock: Callable[[], float] = time.time
) -> schedule.Scheduler:
    """Put each guarded job on a fresh scheduler (never the module-level default)."""
    sched = schedule.Scheduler()
    for job in jobs:
        sched.every(job.every_seconds).seconds.do(guarded(job, clock, stop)).tag(job.name)
    return sched


class LeaseKeeper:
    """Takes and renews the scheduler's lease, and knows when it is no longer ours.

    ``clock`` gives the lease's timestamps (wall-clock seconds, shared through the
    database with the other schedulers). When the database cannot be reached the lease
    is still ours until the time it was last renewed for, and lost after that: another
    scheduler may take it then.
    """

    def __init__(
        self, db: Database, holder: str, ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.expires_at: float | None = None
        self._lock = threading.Lock()

    def renew(self) -> bool:
        """Take or renew the lease; return whether it is ours now."""
        with self._lock:
            now = self.clock()
            try:
                with self.db.connection_context():
                    ours = acquire_lease(LEASE_NAME, self.holder, now, self.ttl)
            except PeeweeException as exc:
                log.warning("cannot reach the database for the scheduler lease: %s", exc)
                return self.expires_at is not None and now < self.expires_at
            self.expires_at = now + self.ttl if ours else None
            return ours

    def release(self) -> None:
        with self._lock:
            self.expires_at = None
            try:
                with self.db.connection_context():
                    release_lease(LEASE_NAME, self.holder)
            except PeeweeException:
                log.warning("could not release the scheduler lease")


class _KeepLease:
    """While jobs run: renew the lease, and stop the jobs when it is lost or on SIGTERM."""

    def __init__(
        self, keeper: LeaseKeeper, stop: threading.Event, jobs_stop: JobStop, every: float
    ) -> None:
        self.keeper = keeper
        self.stop = stop
        self.jobs_stop = jobs_stop
        self.every = every
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> _KeepLease:
        self.jobs_stop.clear()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        next_renewal = time.monotonic() + self.every
        while not self._done.wait(min(STOP_POLL_SECONDS, self.every)):
            if self.stop.is_set():
                self.jobs_stop.set("the scheduler is stopping")
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + self.every
            if not self.keeper.renew():
                log.warning("scheduler lease lost while a job runs; stopping it")
                self.lost = True
                self.jobs_stop.set("the scheduler lost its lease to another scheduler")
                return


def run_forever(
    db: Database,
    jobs: list[Job],
    stop: threading.Event,
    tick: float = 1.0,
    holder: str | None = None,
    lease_ttl: float = LEASE_TTL_SECONDS,
    clock: Callable[[], float] = time.time,
    renew_every: float | None = None,
    sleep: Callable[[float], object] | None = None,
) -> None:
    """Run jobs until ``stop`` is set; run each once at start, then on its interval.

    While jobs run the lease is renewed every ``renew_every`` seconds (a third of
    ``lease_ttl`` by default, the tests' injected ``clock`` apart); see the module
    docstring for what a lost lease and ``stop`` do to them. Between ticks the loop
    waits with ``sleep`` (by default on ``stop``, which ends the wait at once): a test
    passes one that moves its ``clock`` instead, and drives the loop tick by tick.
    """
    wait = sleep if sleep is not None else stop.wait
    holder = holder or f"{socket.gethostname()}:{os.getpid()}"
    keeper = LeaseKeeper(db, holder, lease_ttl, clock)
    every = renew_every if renew_every is not None else lease_ttl / RENEWALS_PER_LEASE
    jobs_stop = JobStop()
    sched = build_scheduler(jobs, jobs_stop, clock)
    had_lease = False
    try:
        while not stop.is_set():
            has_lease = keeper.renew()
            if had_lease and not has_lease:
                log.warning("scheduler lease lost; pausing jobs")
            elif not has_lease and not had_lease:
                log.debug("another scheduler holds the lease; waiting")
            if has_lease:
                first = not had_lease
                if first:
                    log.info("scheduler lease taken by %s; running jobs", holder)
                with _KeepLease(keeper, stop, jobs_stop, every) as keeping:
                    if first:
                        sched.run_all()
                    else:
                        sched.run_pending()
                if keeping.lost:
                    has_lease = False
                    log.warning("scheduler lease lost; pausing jobs")
            had_lease = has_lease
            wait(tick)
    finally:
        if had_lease or keeper.expires_at is not None:
            keeper.release()
        log.info("scheduler stopped")
