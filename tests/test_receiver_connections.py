"""A receiver thread keeps its database connection from one request to the next.

- on SQLite and PostgreSQL, a thread's requests share one connection (opened by that
  thread, in the worker), and see what other connections committed meanwhile;
- a kept SQLite connection pins no snapshot: the log can be checkpointed whole while
  it sits idle between requests;
- a request that fails on the server side (5xx) closes its thread's connection.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.receiver.app import create_app
from patchwatch.store.db import database
from patchwatch.store.db import sqlite_path
from patchwatch.store.tokens import create_token
from tests.support.reports import native_doc


class RequestThread:
    """One thread that runs the calls it is given, as a gunicorn worker's thread does."""

    def __init__(self) -> None:
        self.calls: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.results: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            try:
                self.results.put(call())
            except BaseException as exc:  # handed to the test
                self.results.put(exc)

    def run(self, call: Callable[[], Any]) -> Any:
        self.calls.put(call)
        result = self.results.get(timeout=60)
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        self.calls.put(None)
        self.thread.join(10)


@pytest.fixture
def worker_thread() -> Iterator[RequestThread]:
    thread = RequestThread()
    yield thread
    thread.stop()


def count_connects(db: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that opened (or took from the pool) a connection."""
    opened: list[str] = []
    real = db._connect

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(db, "_connect", counting)
    return opened


def test_a_thread_keeps_its_connection_across_requests(db, tmp_path, worker_thread, monkeypatch):
    client = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db).test_client()
    opened = count_connects(db, monkeypatch)
    _, first = create_token("enroll", time.time())

    def post(name: str, token: str) -> int:
        return client.post("/api/v1/reports", json=native_doc(name),
                           headers={"Authorization": f"Bearer {token}"}).status_code  # fmt: skip

    assert worker_thread.run(lambda: post("a.example.com", first)) == 202
    # a token created by another connection after the thread's first request: the
    # kept connection sees it (no snapshot kept from before)
    _, second = create_token("enroll", time.time())
    for i in range(4):
        assert worker_thread.run(lambda i=i: post(f"b{i}.example.com", second)) == 202
    assert opened == [worker_thread.thread.name], "one connection for the thread's five requests"
    assert worker_thread.run(lambda: not database.is_closed())


def test_a_kept_sqlite_connection_does_not_hold_the_log(tmp_path, worker_thread):
    """Between requests the thread's connection is idle: a checkpoint that must wait
    for every reader (TRUNCATE) completes at once."""
    from patchwatch.store.db import make_database
    from patchwatch.store.migrations import migrate

    url = f"sqlite:///{tmp_path / 'data' / 'patchwatch.db'}"
    handle = make_database(url)
    database.initialize(handle)
    with handle.connection_context():
        migrate(handle)
    client = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=handle)
    test_client = client.test_client()
    _, token = create_token("enroll", time.time())
    handle.close()
    for i in range(3):
        status = worker_thread.run(
            lambda i=i: test_client.post("/api/v1/reports", json=native_doc(f"h{i}.example.com"),
                                         headers={"Authorization": f"Bearer {token}"}).status_code
        )  # fmt: skip
        assert status == 202
        # reads too: the host's previous report is looked up with LIMIT 1
    assert worker_thread.run(lambda: not database.is_closed()), "the connection is kept"
    other = sqlite3.connect(str(sqlite_path(url)), timeout=1)
    try:
        other.execute("CREATE TABLE written_meanwhile (x)")
        busy, _log, _done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        other.close()
    assert busy == 0, "an idle receiver connection kept a read snapshot"


def test_a_request_failing_on_the_server_closes_its_connection(db, tmp_path, worker_thread):
    app = create_app(Settings(data_dir=str(tmp_path), process_inline=False), db=db)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("unanswered")

    client = app.test_client()
    assert worker_thread.run(lambda: client.get("/healthz").status_code) == 200
    assert worker_thread.run(lambda: not database.is_closed())
    assert worker_thread.run(lambda: client.get("/boom").status_code) == 500
    assert worker_thread.run(database.is_closed)
