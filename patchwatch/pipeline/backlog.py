"""Work through the queue of stored reports, in one process or in several side by side.

What ``patchwatch process`` does: the CLI parses its arguments, opens (and migrates) the
store and prints the outcome; deciding which reports go to which process is here, next
to :func:`patchwatch.pipeline.processing.process_pending`, which does each run's work.
"""

from __future__ import annotations

import gc
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.util import Finalize

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import queued_report_ids
from patchwatch.store.db import database
from patchwatch.store.db import open_database
from patchwatch.store.models import Report

PROCESS_PAGE = 500  # reports read (bodies included) per round of process_pending
RUN_REPORTS = 50  # reports a worker of process --workers takes at a time


def process_queue(
    settings: Settings, host: str | None = None, force: bool = False, workers: int = 1
) -> Counter[str]:
    """Process the queued reports (of ``host`` only, if given; kept ones too with
    ``force``) in ``workers`` processes, this one among them; the outcomes counted.

    The store must be open and migrated in this process; the others open their own
    connection from ``settings``.
    """
    if workers == 1:
        return _process_serially(settings, host, force)
    return _process_in_parallel(settings, host, force, workers)


def _process_serially(settings: Settings, host: str | None, force: bool) -> Counter[str]:
    total = Counter[str]()
    if force and host is None:
        # --force takes processed reports too, so "the next page" never runs out:
        # host by host instead (each keeps only its last few reports)
        names = Report.select(Report.host_name).distinct().order_by(Report.host_name)
        for (name,) in names.tuples():
            total.update(_process_serially(settings, name, force))
        return total
    while True:
        outcome = process_pending(
            time.time(),
            limit=PROCESS_PAGE,
            host_name=host,
            force=force,
        )
        total.update(outcome)
        if force or sum(outcome.values()) < PROCESS_PAGE:
            return total


def _process_in_parallel(
    settings: Settings, host: str | None, force: bool, workers: int
) -> Counter[str]:
    """``process --workers N``: the queue cut into runs of :data:`RUN_REPORTS` reports
    in arrival order, each taken by whichever of N processes (this one among them)
    comes free first.

    Why processes: parsing a report (JSON, 1,500 package records) holds the GIL and
    is most of the work; the database writes of one worker wait for the other's on
    SQLite, but the parsing overlaps. Why runs rather than fixed shares (id modulo N
    before): the other processes start later than this one (a fresh interpreter),
    and runs differ in cost (the first ones store the fleet's packages), so one share
    could still be at work long after the other had finished (docs/performance.md).
    Reports that arrive meanwhile are taken in a further round; each report is
    offered once per command.
    """
    context = multiprocessing.get_context("spawn")  # fresh connections, no fork of one
    tickets = context.Value("i", 0)  # the next run to take, shared by all
    offered: set[int] = set()
    total = Counter[str]()
    with ProcessPoolExecutor(
        workers - 1, mp_context=context, initializer=_start_worker, initargs=(settings, tickets)
    ) as pool:
        while True:
            ids = [i for i in queued_report_ids(host, force)
                   if i not in offered]  # fmt: skip
            if not ids:
                return total
            offered.update(ids)
            runs = [ids[i : i + RUN_REPORTS] for i in range(0, len(ids), RUN_REPORTS)]
            tickets.value = 0
            futures = [pool.submit(_take_runs, runs, force) for _ in range(workers - 1)]
            total.update(_take_runs(runs, force, tickets))
            for future in futures:
                total.update(future.result())
            if force:
                return total


_TICKETS: Synchronized[int] | None = None  # a worker's handle on the shared run counter
_START_ERROR: Exception | None = None  # why the worker could not open the store


def _start_worker(settings: Settings, tickets: Synchronized[int]) -> None:
    """Set up one worker of ``process --workers``: its own connection, the counter.

    A failure to open the store is kept and raised by the worker's task, so that the
    caller gets it as it is (one line: "database error: ..."); raised here, the pool
    would log a traceback and fail every task as "broken".
    """
    global _TICKETS, _START_ERROR
    _TICKETS = tickets
    try:  # the command checked and migrated the store: only connect here
        open_database(settings.resolved_database_url).connect(reuse_if_open=True)
    except Exception as exc:  # handed on to the caller by _take_runs
        _START_ERROR = exc
        return
    Finalize(None, database.close, exitpriority=10)  # at the worker's exit
    # then no last collection over its heap (which the caller would wait out): see
    # patchwatch.cli.main.run
    Finalize(None, gc.freeze, exitpriority=0)


def _take_runs(
    runs: list[list[int]],
    force: bool,
    tickets: Synchronized[int] | None = None,
) -> Counter[str]:
    """Process the next run not taken yet, and again, until none is left."""
    if _START_ERROR is not None:
        raise _START_ERROR
    counter = tickets if tickets is not None else _TICKETS
    assert counter is not None
    total = Counter[str]()
    while True:
        with counter.get_lock():
            taken = counter.value
            counter.value = taken + 1
        if taken >= len(runs):
            return total
        run = runs[taken]
        total.update(process_pending(time.time(), limit=len(run), force=force, ids=run))
