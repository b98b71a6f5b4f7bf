"""Processing in its own process, fed as reports arrive (``patchwatch.pipeline.processor``).

- woken through its pipe, it processes what is queued, in arrival order, in batches
  bounded by count and by body size;
- a batch that fails stays queued, is not retried by the processor, and the
  scheduler's ``process_reports`` job picks it up once it is a straggler (and leaves
  fresh reports to the processor);
- the end of the pipe (the server gone) stops it;
- under ``serve`` ``process_workers`` processing children do the processing, not the
  workers, each its share, and they go when their server is killed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.settings import Settings
from patchwatch.pipeline import processor as processor_module
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.processor import STRAGGLER_SECONDS
from patchwatch.pipeline.processor import Processor
from patchwatch.pipeline.processor import Waker
from patchwatch.pipeline.processor import make_pipe
from patchwatch.pipeline.processor import next_batch
from patchwatch.scheduler.runner import default_jobs
from patchwatch.store.db import open_database
from patchwatch.store.models import Host
from patchwatch.store.models import Report
from tests.support.reports import native_doc
from tests.support.web import post_native_reports
from tests.support.web import wait_until


def _store(host: str, at: float | None = None) -> int:
    return int(store_report(host, NATIVE, native_doc(host), at or time.time()).id)


def _states() -> dict[int, str]:
    return {r.id: r.state for r in Report.select(Report.id, Report.state)}


class Running:
    """A processor on a thread of the test, fed through a real pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = make_pipe()
        self.stop = threading.Event()
        self.processor = Processor(self.stop, self.read_fd, poll_seconds=30)
        self.thread = threading.Thread(target=self.processor.run, daemon=True)
        self.waker = Waker([self.write_fd])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def running(db) -> Iterator[Running]:
    run = Running()
    yield run
    run.close()


def test_a_wakeup_gets_the_queue_processed_in_arrival_order(running, monkeypatch):
    calls: list[list[int]] = []
    real = processor_module.process_pending

    def recording(now, limit=1000, ids=None, **kw):
        calls.append(list(ids))
        return real(now, limit=limit, ids=ids, **kw)

    monkeypatch.setattr(processor_module, "process_pending", recording)
    running.thread.start()
    wait_until(lambda: running.processor.rounds, 20, "the processor to find the queue empty")
    ids = [_store(f"h{i}.example.com", at=1000.0 + i) for i in range(5)]
    time.sleep(0.3)
    assert calls == [], "nothing before the wake-up (the poll is 30 s here)"
    running.waker.wake()
    wait_until(lambda: set(_states().values()) == {"processed"}, 20, "the batch to be processed")
    assert calls == [ids]
    assert Host.select().count() == 5
    # the next report, the next wake-up
    later = _store("h9.example.com")
    running.waker.wake()
    wait_until(lambda: _states()[later] == "processed", 20, "the next report")
    assert calls[-1] == [later]


def test_a_batch_is_bounded_by_count_and_by_body_size(db, monkeypatch):
    ids = [_store(f"h{i}.example.com", at=1000.0 + i) for i in range(6)]
    size = Report.get_by_id(ids[0]).size
    monkeypatch.setattr(processor_module, "BATCH_REPORTS", 4)
    assert next_batch(set()) == ids[:4]
    assert next_batch({ids[0], ids[2]}) == [ids[1], *ids[3:6]]
    monkeypatch.setattr(processor_module, "BATCH_BYTES", 2 * size + size // 2)
    assert next_batch(set()) == ids[:2]
    monkeypatch.setattr(processor_module, "BATCH_BYTES", 1)
    assert next_batch(set()) == ids[:1], "one report at least, however large"
    monkeypatch.setattr(processor_module, "BATCH_BYTES", 10 * size)
    shares = [next_batch(set(), (k, 3)) for k in range(3)]
    assert sorted(i for share in shares for i in share) == ids[:4] + ids[4:], "each once"
    assert all(i % 3 == k for k, share in enumerate(shares) for i in share)


def test_a_failed_batch_is_left_to_the_schedulers_job(running, monkeypatch, caplog, tmp_path):
    attempts: list[list[int]] = []

    def failing(now, limit=1000, ids=None, **kw):
        attempts.append(list(ids))
        raise OSError("the store went away")

    monkeypatch.setattr(processor_module, "process_pending", failing)
    monkeypatch.setattr(processor_module, "FAILURE_PAUSE_SECONDS", 0.01)
    old = _store("old.example.com", at=time.time() - 10)
    running.thread.start()
    running.waker.wake()
    wait_until(lambda: attempts, 20, "the processor to try")
    running.waker.wake()  # woken again: the failed reports are not taken again
    time.sleep(0.5)
    assert attempts == [[old]]
    assert _states()[old] == "pending"
    assert "left queued for the scheduler" in caplog.text

    fresh = _store("fresh.example.com")
    jobs = {job.name: job for job in default_jobs(Settings(data_dir=str(tmp_path)))}
    process_reports = jobs["process_reports"].run
    process_reports(time.time())
    assert _states() == {old: "pending", fresh: "pending"}, "both still new to the job"
    process_reports(time.time() + STRAGGLER_SECONDS - 5)  # the old one queued 10 s longer
    assert _states()[old] == "processed", "the straggler is the scheduler's"
    # the fresh report, received after the old one, is left to the processor
    assert _states()[fresh] == "pending"


def test_the_end_of_the_pipe_stops_the_processor(running):
    running.thread.start()
    os.close(running.write_fd)
    running.write_fd = -1
    running.thread.join(10)
    assert not running.thread.is_alive()
    assert running.stop.is_set()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def _command(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode() for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def test_serve_processes_in_its_processing_child_and_takes_it_down(server_factory):
    srv = server_factory({"PATCHWATCH_PROCESS_INTERVAL_SECONDS": "3600"})
    children = {pid: _command(pid) for pid in _children(srv.proc.pid)}
    processors = [pid for pid, cmd in children.items() if "processor" in cmd]
    assert len(processors) == 2, children  # process_workers
    assert sorted(children[pid][-1] for pid in processors) == ["0/2", "1/2"]
    token = srv.cli("token", "create", "--enroll").stdout.strip()
    ids = post_native_reports(srv.base, token, [f"s{i}.example.com" for i in range(6)])
    db = open_database(srv.database_url)

    def processed() -> bool:
        with db.connection_context():
            return all(_states()[i] == "processed" for i in ids)

    # the scheduler's job looks once an hour here, and only at stragglers
    wait_until(processed, 30, "the processing children to process the reports")
    with db.connection_context():
        assert Host.select().count() == 6
    os.kill(srv.proc.pid, signal.SIGKILL)  # the server alone: its workers and children stay
    srv.proc.wait(10)

    def gone() -> bool:
        for processor in processors:
            try:
                os.kill(processor, 0)
            except ProcessLookupError:
                continue
            # a zombie until reaped by init counts as gone
            with open(f"/proc/{processor}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        return True

    # its workers notice their master is gone within gunicorn's timeout, then the
    # pipe has no writer left
    try:
        wait_until(gone, 60, "the processing children to stop once their server is gone")
    finally:
        for pid in children:  # the scheduler child is left behind by a killed server
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
