"""Processing right behind a receiver run alone: the reports a worker stored, in batches.

Under ``serve`` processing runs in processes of its own, which the workers only wake
(``patchwatch.pipeline.processor``): on a thread here it shared the worker's
interpreter lock with the answers. This feed is what a ``patchwatch receiver`` with
``process_inline`` on (or an application built without a processing process) uses.

Why not each report in the request that brought it (after the answer, as before): that
held one of the worker's threads per report being processed, so answers waited for
processing under load, and processed reports one at a time, without the batching that
makes processing several times faster (``patchwatch.pipeline.processing``). Here each
worker process has one thread that takes every report the worker stored since its last
batch and processes them together; while it works, the next batch gathers. A report
that cannot be processed now stays queued, and the scheduler's ``process_reports`` job
takes it up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from patchwatch.pipeline.processing import BATCH_REPORTS
from patchwatch.pipeline.processing import process_pending
from patchwatch.receiver.gate import ReportSlot
from patchwatch.receiver.metrics import PROCESSING_SECONDS
from patchwatch.store.db import database

log = logging.getLogger(__name__)


class ProcessingFeed:
    """The worker's queue of stored reports to process, and the thread that drains it."""

    def __init__(self, batch: int = BATCH_REPORTS) -> None:
        self.batch = batch
        self._cond = threading.Condition()
        self._queue: list[tuple[int, ReportSlot | None]] = []
        self._thread: threading.Thread | None = None
        self._busy = False
        # called after each batch, its large reports' slots released: the server's
        # memory check (``patchwatch.cli.gunicorn_app.recycle_above``), which after a request
        # alone would miss what processing took
        self.after_batch: Callable[[], None] | None = None

    def add(self, report_id: int, slot: ReportSlot | None = None) -> None:
        """Queue a stored report; ``slot``, a large report's, is released once it is
        processed (its records are in memory until then)."""
        with self._cond:
            self._queue.append((report_id, slot))
            if self._thread is None or not self._thread.is_alive():
                # started in the worker, on first use: never across gunicorn's fork
                self._thread = threading.Thread(target=self._run, name="processing-feed",
                                                 daemon=True)  # fmt: skip
                self._thread.start()
            self._cond.notify()

    def idle(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued is processed (or failed); for tests and shutdown."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                taken = self._queue[: self.batch]
                del self._queue[: self.batch]
                self._busy = True
            try:
                self._process([report_id for report_id, _ in taken])
            finally:
                for _, slot in taken:
                    if slot is not None:
                        slot.release()
                if self.after_batch is not None:
                    try:
                        self.after_batch()
                    except Exception:  # boundary: the feed must go on
                        log.exception("the check after a processing batch failed")
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    @staticmethod
    def _process(ids: list[int], clock: Callable[[], float] = time.time) -> None:
        started = time.perf_counter()
        try:
            with database.connection_context():
                process_pending(clock(), limit=len(ids), ids=ids)
        except Exception:  # boundary: the reports are stored; the scheduler will retry
            log.exception("processing reports %d-%d failed; left queued", ids[0], ids[-1])
        elapsed = time.perf_counter() - started
        for _ in ids:
            PROCESSING_SECONDS.observe(elapsed / len(ids))


FEED = ProcessingFeed()
