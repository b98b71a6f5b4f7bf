"""A new host is right within seconds: new repositories read and changed hosts computed at once.

The follow-up (``patchwatch.pipeline.followup``, the scheduler's ``follow_up`` job, every tick)
against a real rpm-md repository served on loopback (the fixture scripts/make_rpm_repo.sh
built: hello 1.0-1, and 1.1-1 fixed by the security advisory PWTEST-2026:0001), with
reports stored and processed as the receiver does. Nothing here calls the hourly
refresh or the periodic update computation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.followup import FollowUp
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import NATIVE
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.scheduler.runner import Job
from patchwatch.scheduler.runner import default_jobs
from patchwatch.scheduler.runner import guarded
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Repository
from tests.conftest import Server
from tests.test_fetch import MirrorServer
from tests.test_monitoring_e2e import http_get
from tests.test_monitoring_e2e import http_post
from tests.test_monitoring_e2e import wait_until
from tests.test_refresh import NOW
from tests.test_refresh import build_rpm_tree
from tests.test_refresh import make_fetcher
from tests.test_refresh import make_settings
from tests.test_refresh import sqlite_only

REPOMD = "/rpm/repodata/repomd.xml"


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[MirrorServer]:
    root = tmp_path / "www"
    root.mkdir()
    build_rpm_tree(root)
    srv = MirrorServer(root).start()
    yield srv
    srv.stop()


def rpm_report(host: str, url: str, hello: str = "1.0", kernel: str = "5.14.0-1.el9.x86_64",
               tags: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """A native report of an EL9 host with ``hello-<hello>-1`` and one repository."""
    return {
        "version": 1, "host": host,
        "os": {"id": "rocky", "id_like": "rhel", "version_id": "9.4", "name": "Rocky Linux",
               "pretty_name": "Rocky Linux 9.4 (Blue Onyx)"},
        "kernel": kernel, "arch": "x86_64", "tags": list(tags), "reboot_required": False,
        "packages": [
            {"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64",
             "type": "rpm"},
            {"name": "hello", "version": hello, "release": "1", "arch": "noarch", "type": "rpm"},
        ],
        "repositories": [
            {"type": "rpm", "id": "t", "name": "test", "urls": [url], "arch": "x86_64",
             "priority": -99, "enabled": True},
        ],
    }  # fmt: skip


def report(doc: dict[str, Any], at: float) -> None:
    store_report(doc["host"], NATIVE, doc, at)
    process_pending(at)


def pending(host: str) -> set[tuple[str, str, bool]]:
    query = HostUpdate.select().join(Host).where(Host.name == host)
    return {(u.installed.name, u.available.version, u.security) for u in query}


def follow_up() -> FollowUp:
    """The scheduler's follow-up, with the tests' quick HTTP settings."""
    return FollowUp(make_settings(), fetcher=make_fetcher)


@sqlite_only
def test_a_new_repository_is_read_once_at_the_next_tick_for_a_thousand_hosts(
    db: object, mirror: MirrorServer
) -> None:
    """A thousand hosts bring one new repository at once: one refresh, every host computed."""
    url = mirror.url("rpm")
    for i in range(1000):
        doc = rpm_report(f"web{i:04d}.example.com", url)
        store_report(doc["host"], NATIVE, doc, NOW + i / 1000)
    assert sum(process_pending(NOW + 1, limit=5000).values()) == 1000
    assert mirror.log == []  # processing reads no mirror

    follow = follow_up()
    assert follow.has_work()
    detail = follow.run(NOW + 2)
    assert detail.startswith("1 new mirrors read (1 changed); 1000 hosts due: 1 update sets")
    assert mirror.paths().count(REPOMD) == 1
    assert Host.select().where(Host.updates_complete == False).count() == 0  # noqa: E712
    assert pending("web0999.example.com") == {("hello", "1.1", True)}
    assert not follow.has_work()  # everything done: the next ticks record nothing


def test_a_changed_report_queues_only_its_host(db: object, mirror: MirrorServer) -> None:
    url = mirror.url("rpm")
    report(rpm_report("a.example.com", url), NOW)
    report(rpm_report("b.example.com", url), NOW)
    follow = follow_up()
    follow.run(NOW + 1)
    b_before = Host.get(Host.name == "b.example.com")
    assert pending("a.example.com") == {("hello", "1.1", True)}
    assert not follow.has_work()

    # the same packages, repositories and kernel (tags changed): nothing to compute
    report(rpm_report("a.example.com", url, tags=("web",)), NOW + 10)
    assert not follow.has_work()

    report(rpm_report("a.example.com", url, hello="1.1"), NOW + 20)  # a.example.com updated
    assert follow.has_work()
    detail = follow.run(NOW + 21)
    assert detail == "1 hosts due: 1 update sets computed, 0 reused, 1 hosts written"
    assert pending("a.example.com") == set()
    b_after = Host.get(Host.name == "b.example.com")
    assert b_after.updates_computed_at == b_before.updates_computed_at  # not touched

    report(rpm_report("b.example.com", url, kernel="5.14.0-2.el9.x86_64"), NOW + 30)
    assert follow.has_work()  # a new kernel: the reboot signal may change
    assert follow.run(NOW + 31).startswith("1 hosts due")
    assert not follow.has_work()


@pytest.mark.parametrize("os_group", [False, True])
def test_hosts_computed_before_their_mirror_was_read_follow_its_first_data(
    db: object, mirror: MirrorServer, os_group: bool
) -> None:
    """A host computed while its repository (its own, or its OS group's) had no data is
    unknown; when the mirror is read (here by the hourly refresh), the follow-up
    computes it again."""
    report(rpm_report("a.example.com", mirror.url("rpm")), NOW)
    if os_group:
        host = Host.get(Host.name == "a.example.com")
        OSReleaseRepository.create(os_release=host.os_release_id, repository=Repository.get())
        Host.update(use_os_repositories=True, repository_set=None).execute()
    refresh_host_updates(NOW + 1)  # the periodic computation, before any refresh
    host = Host.get(Host.name == "a.example.com")
    assert (host.updates_computed_at, host.updates_complete) == (NOW + 1, False)
    follow = follow_up()
    follow.tried.update(m.id for m in Mirror.select())  # as if it had failed to start
    follow.run(NOW + 2)  # first look: nothing has data yet
    assert not follow.has_work()

    with make_fetcher() as fetcher:
        assert refresh_mirror(Mirror.get(), fetcher, NOW + 3, make_settings()).outcome == "changed"
    assert follow.has_work()
    assert follow.run(NOW + 4).startswith("1 hosts due")
    assert Host.get(Host.name == "a.example.com").updates_complete
    assert pending("a.example.com") == {("hello", "1.1", True)}


def test_a_host_whose_mirror_fails_is_unknown_and_not_retried_every_tick(
    db: object, mirror: MirrorServer
) -> None:
    report(rpm_report("a.example.com", mirror.url("missing")), NOW)
    follow = follow_up()
    assert follow.run(NOW + 1).startswith("1 new mirrors read (1 failed); 1 hosts due")
    host = Host.get(Host.name == "a.example.com")
    assert host.updates_computed_at is not None and not host.updates_complete
    assert Mirror.get().consecutive_failures == 1
    assert not follow.has_work()  # the failure is recorded; the hourly refresh retries


def test_the_job_records_a_run_only_when_there_is_work(db: object, mirror: MirrorServer) -> None:
    follow = follow_up()
    job = Job("follow_up", 1, follow.run, has_work=follow.has_work)
    db.close()  # type: ignore[attr-defined]
    guarded(job)()
    guarded(job)()
    assert JobRun.select().count() == 0
    report(rpm_report("a.example.com", mirror.url("rpm")), NOW)
    guarded(job)()
    guarded(job)()
    (run,) = JobRun.select()
    assert (run.job, run.outcome) == ("follow_up", "success")
    assert run.detail.startswith("1 new mirrors read (1 changed); 1 hosts due")
    assert Repository.select().count() == 1


def metric(server: Server, name: str, host: str, **labels: str) -> float | None:
    """One sample of a real scrape of ``server``'s /metrics."""
    status, body = http_get(server.base + "/metrics")
    assert status == 200
    wanted = {"host": host, **labels}
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            text, value = line.rsplit(" ", 1)
            pairs = dict(p.split("=", 1) for p in text[len(name) + 1 : -1].split(","))
            if {k: v.strip('"') for k, v in pairs.items()} == wanted:
                return float(value)
    return None


def test_serve_gives_a_new_host_its_numbers_without_any_operator_step(
    server_factory: Any, mirror: MirrorServer
) -> None:
    """patchwatch serve, one report over HTTP, nothing else: the host's numbers appear in
    /metrics once the scheduler read the new repository; a second host follows."""
    srv: Server = server_factory(
        {
            "PATCHWATCH_LOG_LEVEL": "WARNING",
            # the loopback mirror is trusted and reachable: no operator step either
            "PATCHWATCH_MIRROR_URL_PATTERNS": "http://127.0.0.1:*",
            "PATCHWATCH_MIRROR_ALLOWED_NETWORKS": "127.0.0.1/32",
        }
    )
    proc = srv.cli("token", "create", "--enroll")
    assert proc.returncode == 0, proc.stderr
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {proc.stdout.strip()}"}
    for name in ("first.example.com", "second.example.com"):
        body = json.dumps(rpm_report(name, mirror.url("rpm"))).encode()
        assert http_post(srv.base + "/api/v1/reports", body, headers) == 202
        wait_until(
            lambda name=name: metric(
                srv, "patchwatch_host_updates_pending", name, kind="security"
            ) == 1.0,
            60,
            f"{name}'s security update in /metrics\n{srv.log()[-2000:]}",
        )  # fmt: skip
        assert metric(srv, "patchwatch_host_updates_pending", name, kind="other") == 0.0
    assert mirror.paths().count(REPOMD) == 1  # the second host's repository was known


def test_follow_reports_off_leaves_it_to_the_periodic_jobs() -> None:
    names = {job.name for job in default_jobs(Settings())}
    assert {"follow_up", "refresh_mirrors", "compute_updates"} <= names
    off = {job.name for job in default_jobs(Settings(follow_reports=False))}
    assert off == names - {"follow_up"}


def test_a_failed_run_pauses_then_runs_once_more_to_record_success(
    db: object, mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure (here the store refusing a computation) is not retried every tick, and
    the run after the pause records the job's outcome even when nothing is due any more:
    a failure must not stay the job's last word."""
    clock = [100.0]
    follow = follow_up()
    follow.clock = lambda: clock[0]
    report(rpm_report("a.example.com", mirror.url("rpm")), NOW)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("database is locked")

    monkeypatch.setattr("patchwatch.pipeline.followup.refresh_host_updates", broken)
    with pytest.raises(RuntimeError):
        follow.run(NOW + 1)
    assert not follow.has_work()  # paused
    clock[0] += 61
    monkeypatch.undo()
    refresh_host_updates(NOW + 2)  # the periodic computation did it meanwhile
    assert follow.has_work()
    assert follow.run(NOW + 2) == "nothing due"
    assert not follow.has_work()


def test_a_look_that_fails_is_no_work_and_never_stops_the_loop(db: object) -> None:
    def broken() -> bool:
        raise RuntimeError("store away")

    db.close()  # type: ignore[attr-defined]
    guarded(Job("follow_up", 1, lambda now: "ran", has_work=broken))()
    assert JobRun.select().count() == 0
