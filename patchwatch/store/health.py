"""What every process answers on /healthz: is the database reachable, current and writable.

Reachable and current are a read; *writable* needs a write. With the disk full the
store still answered reads, so ``/healthz`` said ok while every report got 503. A
receiver therefore also checks that it can write (:func:`probe_write`): it commits one
row of ``health_probe`` (a real write, so a read-only PostgreSQL, a standby after a
failover, fails it), and on SQLite also looks at the free space where the database
lives, because a commit can still fit in the write-ahead log's old pages when
nothing else does. A write that waits for the lock is "busy", not broken: the
check waits at most :data:`LOCK_WAIT_SECONDS` and says so.

Each change of verdict is logged once per process with its cause, so that the log
names it (disk full, read-only) rather than only the 503s that follow.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peewee import Database
from peewee import OperationalError
from peewee import PeeweeException
from peewee import SqliteDatabase

from patchwatch.store.migrations import LATEST
from patchwatch.store.migrations import current_version
from patchwatch.store.models import HealthProbe

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 2.0
MIN_FREE_BYTES = 16 * 1024 * 1024  # below this the SQLite store counts as full

_last_problem: dict[str, str] = {}  # this process's last verdict, per probe name


def check_database(db: Database, writer: str | None = None) -> dict[str, object]:
    """Return a small JSON-able status; ``ok`` is false when the store cannot be used.

    ``writer``: the name under which this process proves it can write (the
    receiver's); None checks reading only (the exporter, which never writes).
    """
    started = time.perf_counter()
    # a full disk first: SQLite may then fail even to open, with "disk I/O error"
    full = _sqlite_space_problem(db) if writer and isinstance(db, SqliteDatabase) else ""
    try:
        db.connect(reuse_if_open=True)
        db.execute_sql("SELECT 1").fetchone()
        version = current_version(db)
    except (PeeweeException, OSError) as exc:
        cause = full or f"database down: {type(exc).__name__}: {_first_line(exc)}"
        _verdict(writer or "read", cause)
        status = {"ok": False, "database": "down", "error": type(exc).__name__}
        if full:
            status.update(writable=False, error=full)
        return status
    status = {
        "ok": version == LATEST,
        "database": "up",
        "backend": "postgresql" if "Postgres" in type(db).__name__ else "sqlite",
        "schema_version": version,
        "schema_expected": LATEST,
    }
    if writer is None:
        _verdict("read", "")
    elif version == LATEST:
        writable, problem = (False, full) if full else probe_write(db, writer)
        status["writable"] = writable
        if problem:
            status["error"] = problem
        if writable is False:
            status["ok"] = False
        _verdict(writer, problem if writable is False else "")
    status["latency_seconds"] = round(time.perf_counter() - started, 6)
    return status


def probe_write(db: Database, name: str, now: float | None = None) -> tuple[bool | str, str]:
    """Whether the store takes a write: (True, ""), ("busy", why) or (False, why)."""
    now = time.time() if now is None else now
    try:
        with _write_transaction(db):
            HealthProbe.insert(name=name, checked_at=now).on_conflict(
                conflict_target=[HealthProbe.name], update={HealthProbe.checked_at: now}
            ).execute()
    except OperationalError as exc:
        text = _first_line(exc)
        if "locked" in text or "lock timeout" in text:
            return "busy", f"the store is busy: {text}"
        return False, f"the store cannot be written: {text}"
    except (PeeweeException, OSError) as exc:
        return False, f"the store cannot be written: {type(exc).__name__}: {_first_line(exc)}"
    return True, ""


def _sqlite_space_problem(db: SqliteDatabase) -> str:
    """Why a SQLite store is full ("" when it is not): free space where the file lives."""
    path = db.database
    if not path or path == ":memory:":
        return ""
    folder = Path(path).resolve().parent
    try:
        stat = os.statvfs(folder)
    except OSError as exc:
        return f"cannot read the free space of {folder}: {exc.strerror}"
    free = stat.f_bavail * stat.f_frsize
    if free < MIN_FREE_BYTES:
        return f"disk full: {free // 1024} KiB free in {folder} (reports need room to be stored)"
    return ""


@contextmanager
def _write_transaction(db: Database) -> Iterator[None]:
    """A write transaction that waits at most :data:`LOCK_WAIT_SECONDS` for the lock.

    The connection's own SQLite busy timeout is 30 s, which a health check must not
    spend; PostgreSQL gets a lock timeout for the transaction.
    """
    wait_ms = int(LOCK_WAIT_SECONDS * 1000)
    if not isinstance(db, SqliteDatabase):
        with db.atomic():
            db.execute_sql(f"SET LOCAL lock_timeout = '{wait_ms}ms'")
            yield
        return
    (before,) = db.execute_sql("PRAGMA busy_timeout").fetchone()
    db.execute_sql(f"PRAGMA busy_timeout = {wait_ms}")
    try:
        with db.atomic("IMMEDIATE"):
            yield
    finally:
        db.execute_sql(f"PRAGMA busy_timeout = {int(before)}")


def _verdict(name: str, problem: str) -> None:
    """Log a change of verdict (a problem appears, changes or goes away) once."""
    last = _last_problem.get(name, "")
    if problem == last:
        return
    _last_problem[name] = problem
    if problem:
        log.warning("health check failed: %s", problem)
    else:
        log.info("health check passes again (was: %s)", last)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
