"""Processing beside other writers on PostgreSQL: no deadlock, and a victim runs again.

SQLite has one writer at a time, so these orderings only arise on PostgreSQL, where
receivers (inline processing), the scheduler's queue job and ``patchwatch process
--workers`` write at once.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from playhouse.pool import PooledDatabase

from patchwatch.cli.main import main
from patchwatch.pipeline import backlog
from patchwatch.pipeline import processing
from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import queued_report_ids
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import make_database
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Host
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Report
from patchwatch.store.sets import forget_cached_ids
from tests.conftest import ROOT
from tests.test_receiver_ingest import native_doc

pytestmark = pytest.mark.slow


@pytest.fixture
def pg(postgres):
    url = postgres.create_database()
    handle = make_database(url)
    database.initialize(handle)
    handle.connect()
    migrate(handle)
    forget_cached_ids()
    yield url
    handle.close_all() if isinstance(handle, PooledDatabase) else handle.close()


def waiting_on_locks(url: str) -> int:
    probe = make_database(url.replace("postgresql://", "postgres://"))
    probe.connect()
    try:
        return probe.execute_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()[0]
    finally:
        probe.close()


def test_a_batch_chosen_as_deadlock_victim_is_applied_again(pg) -> None:
    """A batch holds host 1 and waits for host 2 while another writer holds host 2 and
    waits for host 1: PostgreSQL aborts the batch (the other side's detector waits
    longer); the batch runs again once the other writer commits, and nothing fails."""
    for name in ("h1.example.com", "h2.example.com"):
        store_report(name, NATIVE, native_doc(name), time.time())
    assert process_pending(time.time()) == Counter(processed=2)
    for name in ("h1.example.com", "h2.example.com"):
        store_report(name, NATIVE, native_doc(name, n=7), time.time())

    other = make_database(pg.replace("postgresql://", "postgres://"))
    other.connect()
    other.execute_sql("SET deadlock_timeout = '60s'")  # so that the batch is the victim
    outcome: list[object] = []

    def process() -> None:
        with database.connection_context():
            try:
                outcome.append(process_pending(time.time()))
            except Exception as exc:  # the failure the test is about
                outcome.append(exc)

    with other.atomic():
        other.execute_sql("UPDATE host SET kernel = 'x' WHERE name = 'h2.example.com'")
        worker = threading.Thread(target=process)
        worker.start()
        deadline = time.monotonic() + 20
        while waiting_on_locks(pg) == 0:  # the batch has host 1 and waits for host 2
            assert time.monotonic() < deadline, "the batch never waited on host 2"
            time.sleep(0.05)
        # waits for the batch until PostgreSQL aborts the batch (deadlock_timeout, 1 s)
        other.execute_sql("UPDATE host SET kernel = 'y' WHERE name = 'h1.example.com'")
    worker.join(30)
    other.close()
    assert outcome == [Counter(processed=2)]
    states = Counter(r.state for r in Report.select(Report.state))
    assert states == Counter(processed=4)
    # the batch was applied after the other writer: its state is the report's
    assert {h.name: h.kernel for h in Host.select()} == {
        "h1.example.com": "6.1.0-28-amd64",
        "h2.example.com": "6.1.0-28-amd64",
    }


def drifting_docs(count: int, seed: int) -> list[dict]:
    """Reports that each bring new packages, most of them shared with other reports."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        doc = native_doc(f"d{i}.example.com", n=0)
        names = rng.sample(range(600), 150)
        doc["packages"] = [
            {"name": f"lib{n}", "epoch": "", "version": f"{rng.randint(1, 4)}.0",
             "release": "1", "arch": "amd64", "type": "deb"}
            for n in names
        ]  # fmt: skip
        docs.append(doc)
    return docs


def test_workers_bringing_the_same_new_packages_do_not_deadlock(pg, monkeypatch) -> None:
    """Two processing workers at once, each with every other queued report, every
    report with new packages shared with the other worker's: with no retries allowed,
    a single deadlock fails the run."""
    monkeypatch.setattr(processing, "BATCH_RETRIES", 0)
    monkeypatch.setattr(processing, "BATCH_REPORTS", 5)
    docs = drifting_docs(80, seed=7)
    for doc in docs:
        store_report(doc["host"], NATIVE, doc, time.time())
    results: list[object] = [None, None]
    start = threading.Barrier(2)

    queued = queued_report_ids()

    def worker(index: int) -> None:
        with database.connection_context():
            start.wait()
            try:
                results[index] = process_pending(time.time(), ids=queued[index::2])
            except Exception as exc:  # the failure the test is about
                results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [Counter(processed=40), Counter(processed=40)]
    # each host points at a set holding exactly its packages
    for doc in docs:
        host = Host.get(Host.name == doc["host"])
        stored = {
            (p.name, p.version)
            for p in Package.select(Package.name, Package.version)
            .join(PackageSetMember)
            .where(PackageSetMember.package_set == host.package_set_id)
        }
        assert stored == {(p["name"], p["version"]) for p in doc["packages"]}


def test_process_workers_share_the_queue(database_url, tmp_path) -> None:
    handle = make_database(database_url)
    database.initialize(handle)
    handle.connect()
    migrate(handle)
    docs = drifting_docs(30, seed=3)
    for doc in docs:
        store_report(doc["host"], NATIVE, doc, time.time())
    handle.close()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path),
        "PATCHWATCH_DATABASE_URL": database_url, "PATCHWATCH_DATA_DIR": str(tmp_path / "d"),
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "patchwatch", "process", "--workers", "3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "30 processed"
    handle.connect()
    assert Counter(r.state for r in Report.select(Report.state)) == Counter(processed=30)
    assert Host.select().count() == 30
    handle.close()


def test_process_workers_take_runs_as_they_come_free(
    db, database_url, tmp_path, monkeypatch, capsys
) -> None:
    """``process --workers 2``: a spawned worker takes runs of the queue while this
    process holds back, and a report that arrives during the round is taken in the
    next one."""
    docs = drifting_docs(31, seed=11)
    for doc in docs[:30]:
        store_report(doc["host"], NATIVE, doc, time.time())
    monkeypatch.setattr(backlog, "RUN_REPORTS", 4)  # 8 runs
    rounds: list[list[int]] = []

    def queued(*args: object) -> list[int]:
        rounds.append(queued_report_ids(*args))  # type: ignore[arg-type]
        if len(rounds) == 1:
            store_report(docs[30]["host"], NATIVE, docs[30], time.time())  # arrives now
        return rounds[-1]

    done_by_others: list[int] = []

    def after_a_worker(*args: object, **kwargs: object) -> Counter[str]:
        # this process's first run waits until the other process has committed one
        if not done_by_others:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if n := Report.select().where(Report.state == "processed").count():
                    break
                time.sleep(0.05)
            done_by_others.append(n)
        return process_pending(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backlog, "queued_report_ids", queued)
    monkeypatch.setattr(backlog, "process_pending", after_a_worker)
    monkeypatch.setenv("PATCHWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("PATCHWATCH_DATA_DIR", str(tmp_path / "d"))
    assert main(["process", "--workers", "2"]) == 0
    assert capsys.readouterr().out.strip() == "31 processed"
    assert done_by_others[0] >= 1
    assert [len(ids) for ids in rounds] == [30, 1, 0]  # the late one, then nothing
    assert Counter(r.state for r in Report.select(Report.state)) == Counter(processed=31)
    assert Host.select().count() == 31


def test_a_worker_that_cannot_open_the_store_fails_the_command_with_its_error(db, tmp_path) -> None:
    """The pool's worker opens the store itself; its error reaches the caller as it is
    (the CLI prints it as one line), not as a broken pool after a logged traceback."""
    from peewee import OperationalError

    from patchwatch.domain.settings import load_settings

    for doc in drifting_docs(3, seed=13):
        store_report(doc["host"], NATIVE, doc, time.time())
    unreachable = load_settings(
        {"PATCHWATCH_DATABASE_URL": "postgresql://patchwatch@127.0.0.1:1/none",
         "PATCHWATCH_DATA_DIR": str(tmp_path / "d")}, None, {}
    )  # fmt: skip
    with pytest.raises(OperationalError, match=r"127\.0\.0\.1"):
        backlog._process_in_parallel(unreachable, None, False, 2)


def test_process_force_runs_every_kept_report_again(
    db, database_url, tmp_path, monkeypatch, capsys
) -> None:
    """--force reads processed reports too: page by host, or it would stop at one page."""
    for doc in drifting_docs(12, seed=5):
        store_report(doc["host"], NATIVE, doc, time.time())
    assert process_pending(time.time()) == Counter(processed=12)
    monkeypatch.setattr(backlog, "PROCESS_PAGE", 5)
    monkeypatch.setenv("PATCHWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("PATCHWATCH_DATA_DIR", str(tmp_path / "d"))
    assert main(["process", "--force"]) == 0
    assert capsys.readouterr().out.strip() == "12 processed"


def test_packages_another_process_is_inserting_are_waited_for_not_inserted_twice(pg) -> None:
    """Package inserts take turns: a second inserter waits for the first to commit,
    then inserts only the packages still missing, with the first one's ids for the
    rest."""
    from patchwatch.domain.records import Package as PackageRecord
    from patchwatch.domain.records import PackageKind
    from patchwatch.store.sets import PACKAGE_INSERT_LOCK
    from patchwatch.store.sets import ensure_packages

    shared = PackageRecord("shared", "", "1.0", "1", "amd64", PackageKind.DEB)
    mine = PackageRecord("mine", "", "2.0", "1", "amd64", PackageKind.DEB)
    other = make_database(pg.replace("postgresql://", "postgres://"))
    other.connect()
    result: list[object] = []

    def insert() -> None:
        with database.connection_context():
            try:
                result.append(ensure_packages([shared, mine]))
            except Exception as exc:  # the failure the test is about
                result.append(exc)

    with other.atomic():
        other.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PACKAGE_INSERT_LOCK,))
        (shared_id,) = other.execute_sql(
            "INSERT INTO package (kind, name, epoch, version, release, arch) "
            "VALUES ('deb', 'shared', '', '1.0', '1', 'amd64') RETURNING id"
        ).fetchone()
        worker = threading.Thread(target=insert)
        worker.start()
        deadline = time.monotonic() + 20
        while waiting_on_locks(pg) == 0:  # the second inserter waits for the lock
            assert time.monotonic() < deadline, "the second inserter never waited"
            time.sleep(0.05)
    worker.join(30)
    other.close()
    assert len(result) == 1 and isinstance(result[0], dict), result
    assert result[0][shared] == shared_id
    stored = {(p.name, p.id) for p in Package.select()}
    assert stored == {("shared", shared_id), ("mine", result[0][mine])}


def test_the_pipeline_works_through_the_queue_page_by_page_without_the_cli(
    db, database_url, tmp_path, monkeypatch
) -> None:
    """``process_queue`` is the pipeline's: the CLI only parses and prints. One process
    takes page after page until a short one; a second call finds nothing left."""
    from patchwatch.domain.settings import load_settings

    for doc in drifting_docs(7, seed=17):
        store_report(doc["host"], NATIVE, doc, time.time())
    pages: list[int] = []

    def counted(*args: object, **kwargs: object) -> Counter[str]:
        outcome = process_pending(*args, **kwargs)  # type: ignore[arg-type]
        pages.append(sum(outcome.values()))
        return outcome

    monkeypatch.setattr(backlog, "PROCESS_PAGE", 3)
    monkeypatch.setattr(backlog, "process_pending", counted)
    settings = load_settings(
        {"PATCHWATCH_DATABASE_URL": database_url, "PATCHWATCH_DATA_DIR": str(tmp_path / "d")},
        None, {},
    )  # fmt: skip
    assert backlog.process_queue(settings) == Counter(processed=7)
    assert pages == [3, 3, 1]
    assert backlog.process_queue(settings) == Counter()
    assert Counter(r.state for r in Report.select(Report.state)) == Counter(processed=7)
