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

What "committed" survives: on PostgreSQL (``fsync`` and ``synchronous_commit`` on, its
defaults) a power cut too. On SQLite the store runs in WAL mode with
``synchronous=NORMAL``: a commit survives the process being killed (the SIGKILL test
in ``tests/test_faults.py``) and a crash of any of the server's processes, but a power
cut or a kernel crash may lose the commits since the log was last flushed
(checkpoints). ``synchronous=FULL`` for these commits (a log flush per batch) was
measured and left out: with a flush taking about 4 ms on this project's test machine
under load, it halved the acknowledged rate (about 190 against 310-420 reports/s,
docs/performance.md).

On SQLite, the worker processes' leaders also take turns through a lock file
(``<database>-writers``, ``flock``) before ``BEGIN IMMEDIATE``: SQLite's own wait
for its write lock polls, sleeping 1, 2, 5, 10 ... up to 100 ms between tries, so a
process whose leader found the lock taken fell behind one that came back at once,
and its reports waited for tens of milliseconds for nothing. A leader blocked on the
file lock wakes when it is released. (Processing and the scheduler do not take it;
against them SQLite's wait still applies.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any
from typing import Generic
from typing import TypeVar

from peewee import SqliteDatabase

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


class _WritersLock:
    """The lock file the processes' leaders take turns through (SQLite only); opened
    by each process for itself (a descriptor inherited across a fork would share one
    lock between parent and child)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = 0
        self._path = ""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        db = database.obj
        path = db.database if isinstance(db, SqliteDatabase) else ""
        if not path or path == ":memory:" or path.startswith("file:"):
            yield
            return
        if self._fd is None or self._pid != os.getpid() or self._path != path:
            self._fd = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid, self._path = os.getpid(), path
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class GroupCommit:
    """The process's queue of writes waiting for a commit (see the module docstring)."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._writers = _WritersLock()
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
            with self._writers.held(), write_transaction():
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
