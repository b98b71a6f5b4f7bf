"""One large report at a time per worker, and memory given back after it.

What a report costs a worker is bounded per report (``max_report_bytes``,
``max_report_decompressed_bytes``, ``max_report_values``), but not what several cost
at once: eight reports of 100,000 packages in parallel took one worker past a gigabyte.
Reports are therefore told apart by size before they are parsed: a *small* one
(the usual few hundred kilobytes) goes through at once, whatever else is running; a
*large* one (more than :data:`LARGE_REPORT_BYTES` decompressed, or more than
:data:`LARGE_REPORT_VALUES` JSON values) first takes the worker's one large-report
slot, and holds it through parsing, storing and inline processing. A large report
that cannot have the slot within :data:`LARGE_REPORT_WAIT_SECONDS` gets 503 with
``Retry-After`` (agents spool and send it later). So a worker holds at most one large
report and ``threads`` small ones, and no host's large report makes another host's
report wait at all, nor another large report longer than the bound.

After a large report the worker hands freed memory back to the system
(:func:`release_memory`): CPython returns its own small-object arenas when they empty,
but glibc keeps freed heap pages (in every thread's arena) until asked to trim.
"""

from __future__ import annotations

import logging
import threading

from patchwatch.pipeline.memory import release_memory

log = logging.getLogger(__name__)

__all__ = ["GATE", "Busy", "LargeReportGate", "ReportSlot", "release_memory"]

LARGE_REPORT_BYTES = 4 * 1024 * 1024  # decompressed; a 1,500-package report is ~250 kB
LARGE_REPORT_VALUES = 100_000  # about 14,000 packages; 1,500 packages are ~11,000 values
LARGE_REPORT_WAIT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 30


class Busy(Exception):
    """The worker is busy with another large report: answer 503 with Retry-After."""

    def __init__(self) -> None:
        super().__init__(
            "the server is busy with another large report; retry later "
            f"(reports over {LARGE_REPORT_BYTES // (1024 * 1024)} MiB or "
            f"{LARGE_REPORT_VALUES} values are taken one at a time)"
        )


class LargeReportGate:
    """The worker's one large-report slot (a process-wide semaphore)."""

    def __init__(self, wait_seconds: float = LARGE_REPORT_WAIT_SECONDS) -> None:
        self.wait_seconds = wait_seconds
        self._slot = threading.BoundedSemaphore(1)
        self.released = 0  # large reports done with: the worker's memory check looks then

    def acquire(self) -> bool:
        return self._slot.acquire(timeout=self.wait_seconds)

    def release(self) -> None:
        self._slot.release()
        self.released += 1


GATE = LargeReportGate()


class ReportSlot:
    """One request's claim on the gate: taken once the report proves large, released once."""

    def __init__(self, gate: LargeReportGate | None = None) -> None:
        self.gate = gate or GATE
        self.held = False
        self.large = False

    def take(self) -> None:
        """Take the large-report slot (no-op when held). :raises Busy: when it stays taken."""
        if self.held:
            return
        self.large = True
        if not self.gate.acquire():
            raise Busy()
        self.held = True

    def release(self) -> None:
        """Give the slot back (once), then the large report's memory."""
        if not self.held:
            return
        self.held = False
        self.gate.release()
        release_memory()
