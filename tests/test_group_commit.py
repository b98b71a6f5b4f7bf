"""Group commit: several threads' writes in one transaction, each told after its commit."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time

import pytest

from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import make_database
from patchwatch.store.group_commit import GroupCommit
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Report

THREADS = 12


def _in_threads(group: GroupCommit, fns: list, gate: threading.Event | None = None) -> list:
    """Run each of ``fns`` through ``group`` from its own thread (with its own
    connection, as a request has); return each result or exception."""
    out: list = [None] * len(fns)

    def run(i: int) -> None:
        database.connect(reuse_if_open=True)
        try:
            if gate is not None:
                gate.wait(10)
            out[i] = group.run(fns[i])
        except Exception as exc:
            out[i] = exc
        finally:
            database.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _store(i: int):
    return lambda: int(store_report(f"h{i}", NATIVE, {"n": i}, float(i)).id)


def test_writes_share_transactions_and_each_is_committed_when_answered(db) -> None:
    group = GroupCommit()
    seen_after_commit: list[bool] = []
    hold = threading.Event()

    def first() -> int:
        hold.wait(10)  # the others queue up behind this transaction meanwhile
        return int(store_report("h-first", NATIVE, {}, 0.0).id)

    def later(i: int):
        def write() -> int:
            return int(store_report(f"h{i}", NATIVE, {"n": i}, float(i)).id)

        return write

    results: list = [None] * (THREADS + 1)

    def run(i: int, fn) -> None:
        database.connect(reuse_if_open=True)
        try:
            results[i] = group.run(fn)
            # answered: the row is visible to another connection, i.e. committed
            seen_after_commit.append(_committed(results[i]))
        finally:
            database.close()

    threads = [threading.Thread(target=run, args=(0, first))]
    threads[0].start()
    while not group._leading:  # the first write leads and waits inside its transaction
        time.sleep(0.001)
    threads += [threading.Thread(target=run, args=(i, later(i))) for i in range(1, THREADS + 1)]
    for t in threads[1:]:
        t.start()
    while len(group._queue) < THREADS:
        time.sleep(0.001)
    hold.set()
    for t in threads:
        t.join(60)
    assert sorted(results) == sorted(r.id for r in Report.select(Report.id))
    assert len(set(results)) == THREADS + 1
    assert all(seen_after_commit)
    # the first alone, then everything that queued behind it in one transaction
    assert (group.batches, group.writes) == (2, THREADS + 1)


def _committed(report_id: int) -> bool:
    """Whether another connection (a new thread's) sees the report."""
    found: list[bool] = []

    def look() -> None:
        database.connect(reuse_if_open=True)
        try:
            found.append(Report.select().where(Report.id == report_id).exists())
        finally:
            database.close()

    t = threading.Thread(target=look)
    t.start()
    t.join(30)
    return found == [True]


def test_a_failing_write_fails_alone(db) -> None:
    group = GroupCommit()

    def bad() -> int:
        store_report("bad", NATIVE, {}, 0.0)
        raise PermissionError("refused")

    gate = threading.Event()
    fns = [_store(i) for i in range(THREADS)]
    fns[3] = bad
    timer = threading.Timer(0.2, gate.set)
    timer.start()
    results = _in_threads(group, fns, gate)
    assert isinstance(results[3], PermissionError)
    assert all(isinstance(r, int) for i, r in enumerate(results) if i != 3)
    names = {r.host_name for r in Report.select(Report.host_name)}
    assert "bad" not in names and len(names) == THREADS - 1


def test_a_failed_commit_fails_every_write_of_its_batch(db, monkeypatch) -> None:
    """Nothing is answered as stored that a failed transaction did not keep."""
    from patchwatch.store import group_commit

    group = GroupCommit()
    real = group_commit.write_transaction

    class Failing:
        def __enter__(self):
            self.tx = real()
            return self.tx.__enter__()

        def __exit__(self, *exc):
            self.tx.__exit__(RuntimeError, RuntimeError("disk full"), None)
            raise RuntimeError("disk full")

    monkeypatch.setattr(group_commit, "write_transaction", Failing)
    results = _in_threads(group, [_store(i) for i in range(4)])
    assert all(isinstance(r, RuntimeError) for r in results)
    assert Report.select().count() == 0
    monkeypatch.setattr(group_commit, "write_transaction", real)
    assert isinstance(group.run(_store(9)), int)  # and the group goes on


@pytest.fixture
def sqlite_db(tmp_path):
    """The store on SQLite only: what these tests check is SQLite's (PostgreSQL
    flushes its log at every commit, and has no single write lock)."""
    handle = make_database(f"sqlite:///{tmp_path / 'data' / 'patchwatch.db'}")
    database.initialize(handle)
    handle.connect()
    migrate(handle)
    yield handle
    handle.close()


def test_leaders_of_several_processes_take_turns_through_the_writers_lock(sqlite_db) -> None:
    """While another process (here: another open file description) holds the writers'
    lock file, a group's commit waits for it rather than polling SQLite's lock."""
    path = f"{sqlite_db.database}-writers"
    group = GroupCommit()
    group.run(_store(0))  # creates the lock file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    other = os.open(path, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    done = threading.Event()

    def write() -> None:
        database.connect(reuse_if_open=True)
        try:
            group.run(_store(1))
            done.set()
        finally:
            database.close()

    t = threading.Thread(target=write)
    t.start()
    try:
        assert not done.wait(0.5)  # held back while the other process holds the lock
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    assert done.wait(30)
    t.join(30)
    assert Report.select().count() == 2
