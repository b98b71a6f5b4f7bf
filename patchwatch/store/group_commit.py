"""Several threads' short writes in one transaction, each told only after its commit.

Why: with a report stored per transaction, the receiver's threads queued for the
database's write lock (SQLite has one writer; its busy handler sleeps in steps of up to
100 ms, PostgreSQL flushes its log at each commit), and that wait, not work, was most of
the time to answer under load (docs/performance.md, "Acknowledging reports"). Here the
first thread to arrive leads: it takes every write queued so far (up to
:data:`MAX_BATCH`), runs each in its own savepoint of one transaction, commits, and
wakes their threads with their results; writes that arrived meanwhile are led by the
first of their threads. So a write is answered only once it is committed (a 2xx still
means stored), one write's failure (a 403, a constraint) rolls back only its own
savepoint, and a failed commit fails every write of the batch.

Each process has its own :data:`GROUP` (gunicorn workers are processes); the writes run
on the leading thread's connection, so a write must not read the request (take what it
needs from it before).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from typing import Generic
from typing import TypeVar

from patchwatch.store.db import database
from patchwatch.store.db import write_transaction

_T = TypeVar("_T")

MAX_BATCH = 64


class _Write(Generic[_T]):
    __slots__ = ("done", "error", "fn", "lead", "result")

    def __init__(self, fn: Callable[[], _T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.lead = False
        self.result: _T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """The process's queue of writes waiting for a commit (see the module docstring)."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Write[Any]] = []
        self._leading = False
        self.batches = 0  # transactions committed (or failed), for tests and benchmarks
        self.writes = 0

    def run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` inside a committed transaction shared with other threads' writes;
        return its result once committed, or raise its error (or the commit's)."""
        write: _Write[_T] = _Write(fn)
        with self._lock:
            self._queue.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            write.done.wait()
            if write.lead:
                write.done.clear()
                lead = True
        if lead:
            self._lead()
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            with write_transaction():
                for write in batch:
                    try:
                        with database.atomic():
                            write.result = write.fn()
                    except Exception as exc:  # its own savepoint is rolled back
                        write.error = exc
        except BaseException as exc:
            for write in batch:
                if write.error is None:
                    write.error = exc
                    write.result = None
        finally:
            self.batches += 1
            self.writes += len(batch)
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].done.set()  # the next batch is led by its first writer
                else:
                    self._leading = False
            for write in batch:
                write.done.set()


GROUP = GroupCommit()
