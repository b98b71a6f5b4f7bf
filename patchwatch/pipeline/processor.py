"""Processing right behind the receiver, in a process of its own, fed as reports arrive.

Why a process: with processing on a thread of each receiver worker (before), it
shared the worker's interpreter lock with the threads answering uploads, and held
SQLite's write lock for up to a second per batch, so answers waited for processing
(docs/performance.md, "Acknowledging reports"). ``serve`` now starts processing
processes beside the scheduler (:func:`run_processor`, setting ``process_workers``);
the receiver's workers only tell them that a report was stored (:class:`Waker`: one
byte written to each one's pipe, which ``serve`` created before forking them), and
each takes its share of what is queued (report id modulo their number: parsing is
CPU work, and one process is one core), in batches:

- a batch is what is queued when it looks, in arrival order, up to
  :data:`BATCH_REPORTS` reports and :data:`BATCH_BYTES` of report bodies (so that a
  burst of large reports is not all in memory at once);
- each batch's host writes are committed every :data:`HOLD_SECONDS` at most
  (``process_pending(hold_seconds=...)``) rather than the scheduler's second, so that
  the receiver's stores are not held behind it;
- with no wake-up it still looks every :data:`POLL_SECONDS` (reports stored by another
  receiver, or a wake-up lost to a full pipe).

A batch that fails is left queued, as a failed batch always was: this process does not
take those reports again (a fault that repeats would otherwise be retried in a loop),
and the scheduler's ``process_reports`` job picks them up (it takes reports queued for
longer than :data:`STRAGGLER_SECONDS` while processing runs continuously). The claim
on each report (``patchwatch.pipeline.processing.claim_report``) keeps two processes
from applying one report twice.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence

from patchwatch.pipeline.memory import release_memory
from patchwatch.pipeline.processing import process_pending
from patchwatch.store.db import database
from patchwatch.store.models import Report
from patchwatch.store.sets import limit_id_caches

log = logging.getLogger(__name__)

BATCH_REPORTS = 100
# report bodies decompressed: 32 usual reports of 250 kB, but never two of the reports
# the receiver calls large (over 4 MiB, ``patchwatch.receiver.gate``): those are
# processed one at a time, as the receiver takes them
BATCH_BYTES = 8 * 1024 * 1024
LARGE_BYTES = 4 * 1024 * 1024  # after a batch this large, freed memory is handed back
HOLD_SECONDS = 0.25
POLL_SECONDS = 1.0
STRAGGLER_SECONDS = 30.0  # queued longer than this: the scheduler's job takes it
SKIPPED_LIMIT = 10_000  # failed reports remembered (left to the scheduler)
FAILURE_PAUSE_SECONDS = 1.0


class Waker:
    """The receiver's side: one byte per stored report into each processing pipe.

    Never blocks and never fails a request: a full pipe means the processor has
    wake-ups enough already, a closed one that it is gone (the scheduler's job then
    takes the reports).
    """

    def __init__(self, fds: Sequence[int]) -> None:
        self.fds = tuple(fds)
        for fd in self.fds:
            os.set_blocking(fd, False)

    def wake(self) -> None:
        for fd in self.fds:
            try:
                os.write(fd, b"\0")
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.EBADF):
                    log.warning("cannot wake a processing process: %s", exc)


def make_pipe() -> tuple[int, int]:
    """The wake-up pipe: (read end for the processor, write end for the receiver's
    workers), both inherited by children (``serve`` passes the read end on)."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(read_fd, True)
    os.set_inheritable(write_fd, True)
    return read_fd, write_fd


def next_batch(skipped: set[int], share: tuple[int, int] = (0, 1)) -> list[int]:
    """The ids of the next batch: queued reports in arrival order, within
    :data:`BATCH_REPORTS` and :data:`BATCH_BYTES` (at least one), none of ``skipped``;
    ``share`` (k, n): those whose id is k modulo n."""
    return _next_batch(skipped, share)[0]


def _next_batch(skipped: set[int], share: tuple[int, int]) -> tuple[list[int], int]:
    """:func:`next_batch`, and the batch's bodies' size decompressed."""
    query = Report.select(Report.id, Report.size).where(Report.state == "pending")
    k, n = share
    if n > 1:
        # id modulo n, written with integer division: peewee's ``%`` is LIKE
        query = query.where(Report.id - Report.id / n * n == k)
    rows = (
        query.order_by(Report.received_at, Report.id).limit(BATCH_REPORTS + len(skipped)).tuples()
    )
    ids: list[int] = []
    size = 0
    for report_id, report_size in rows:
        if report_id in skipped:
            continue
        if ids and (len(ids) >= BATCH_REPORTS or size + report_size > BATCH_BYTES):
            break
        ids.append(report_id)
        size += report_size
    return ids, size


class Processor:
    """The processing loop (see the module docstring); ``wake_fd`` the pipe's read end."""

    def __init__(
        self,
        stop: threading.Event,
        wake_fd: int | None = None,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] = time.time,
        share: tuple[int, int] = (0, 1),
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.stop = stop
        self.share = share
        # called once per processed report with its share of the batch's seconds (the
        # server's processing-time histogram; this layer knows no metrics library)
        self.observe = observe
        self.wake_fd = wake_fd
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.skipped: set[int] = set()
        self.outcome: Counter[str] = Counter()
        self.rounds = 0  # looks at the queue, for tests
        if wake_fd is not None:
            os.set_blocking(wake_fd, False)

    def run(self) -> None:
        """Process what is queued, then every batch as it arrives, until ``stop``."""
        while not self.stop.is_set():
            try:
                self.drain()
            except Exception:  # boundary: the store away; the reports stay queued
                log.exception("processing failed; looking again in %.0f s", self.poll_seconds)
                self.stop.wait(FAILURE_PAUSE_SECONDS)
            self.rounds += 1
            self._wait()

    def drain(self) -> int:
        """Process batches until nothing is queued (but ``skipped``); return how many
        reports were processed or failed."""
        done = 0
        while not self.stop.is_set():
            with database.connection_context():
                ids, size = _next_batch(self.skipped, self.share)
                if not ids:
                    return done
                started = time.perf_counter()
                try:
                    outcome = process_pending(
                        self.clock(), limit=len(ids), ids=ids, hold_seconds=HOLD_SECONDS
                    )
                except Exception:  # boundary: left queued, for the scheduler's job
                    log.exception("processing reports %d-%d failed; left queued for the "
                                  "scheduler", ids[0], ids[-1])  # fmt: skip
                    self._skip(ids)
                    self.stop.wait(FAILURE_PAUSE_SECONDS)
                    continue
            handled = sum(outcome.values())
            if self.observe is not None and handled:
                each = (time.perf_counter() - started) / handled
                for _ in range(handled):
                    self.observe(each)
            if size > LARGE_BYTES:
                release_memory()  # a large report's records are gone: their pages too
            self.outcome.update(outcome)
            done += handled
        return done

    def _skip(self, ids: list[int]) -> None:
        if len(self.skipped) + len(ids) > SKIPPED_LIMIT:
            self.skipped.clear()  # bounded; the scheduler has had them long since
        self.skipped.update(ids)

    def _wait(self) -> None:
        """Until a wake-up, ``stop`` or :data:`POLL_SECONDS`; every wake-up read."""
        if self.wake_fd is None:
            self.stop.wait(self.poll_seconds)
            return
        deadline = time.monotonic() + self.poll_seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # short slices, so that ``stop`` is seen soon without a second descriptor
            ready, _, _ = select.select([self.wake_fd], [], [], min(left, 0.2))
            if ready:
                self._read_wakeups()
                return

    def _read_wakeups(self) -> None:
        assert self.wake_fd is not None
        try:
            while os.read(self.wake_fd, 65536):
                pass
        except BlockingIOError:
            return
        # the end of the pipe: ``serve`` and its workers are gone (killed, say), so
        # this process stops too rather than live on as an orphan
        log.warning("the server that fed this processing process is gone; stopping")
        self.stop.set()


# package and set ids remembered: a fleet's builds, not a hostile report's hundreds
# of thousands (as the receiver's workers: about 450 bytes each with its record)
ID_CACHE_ENTRIES = 100_000


def run_processor(
    stop: threading.Event,
    wake_fd: int | None = None,
    share: tuple[int, int] = (0, 1),
    observe: Callable[[float], None] | None = None,
) -> Counter[str]:
    """Run the processing loop in this process until ``stop``; the store is open."""
    limit_id_caches(ID_CACHE_ENTRIES)
    processor = Processor(stop, wake_fd, share=share, observe=observe)
    log.info("processing reports as they arrive (share %d of %d)%s", share[0], share[1],
             "" if wake_fd is not None else f", looking every {POLL_SECONDS:.0f} s")  # fmt: skip
    processor.run()
    return processor.outcome
