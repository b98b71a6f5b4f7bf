"""The exporter reads the store at scrape time: zeros for quiet hosts, no stale cache."""

from __future__ import annotations

import time

from peewee import SqliteDatabase
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from exporter.collector import StoreCollector
from patchwatch.models import Host
from patchwatch.models import HostUpdate
from patchwatch.models import JobRun
from patchwatch.models import Package
from patchwatch.models import Report


def registry_for(db) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(db))
    return registry


def _pkg(name: str, version: str) -> Package:
    return Package.create(kind="deb", name=name, version=version, release="1", arch="amd64")


def test_host_metrics_follow_the_store(db) -> None:
    now = time.time()
    a = Host.create(name="a", kernel="6.1", arch="x86_64", created_at=now, last_report_at=now - 5,
                    packages_without_repository=4)  # fmt: skip
    Host.create(name="b", created_at=now, reboot_required=True)
    old, new = _pkg("openssl", "3.0.1"), _pkg("openssl", "3.0.2")
    HostUpdate.create(host=a, installed=old, available=new, security=True, first_seen_at=now - 99)
    old2, new2 = _pkg("vim", "9.0"), _pkg("vim", "9.1")
    HostUpdate.create(host=a, installed=old2, available=new2, security=False, first_seen_at=now)
    reg = registry_for(db)
    get = reg.get_sample_value
    assert get("patchwatch_database_up") == 1
    assert get("patchwatch_host_updates_pending", {"host": "a", "kind": "security"}) == 1
    assert get("patchwatch_host_updates_pending", {"host": "a", "kind": "other"}) == 1
    assert get("patchwatch_host_updates_pending", {"host": "b", "kind": "security"}) == 0
    assert get("patchwatch_host_reboot_required", {"host": "b"}) == 1
    assert get("patchwatch_host_reboot_required", {"host": "a"}) == 0
    assert (
        get("patchwatch_host_oldest_security_update_first_seen_timestamp_seconds", {"host": "a"})
        == now - 99
    )
    assert (
        get("patchwatch_host_oldest_security_update_first_seen_timestamp_seconds", {"host": "b"})
        is None
    )
    assert get("patchwatch_host_last_report_timestamp_seconds", {"host": "a"}) == now - 5
    assert get("patchwatch_host_packages_without_repository", {"host": "a"}) == 4
    assert get("patchwatch_host_packages_without_repository", {"host": "b"}) is None

    HostUpdate.delete().execute()  # read at scrape time: the next scrape sees the change
    assert get("patchwatch_host_updates_pending", {"host": "a", "kind": "security"}) == 0


def test_reports_and_jobs_are_exposed(db) -> None:
    now = time.time()
    Report.create(host_name="a", protocol="x", received_at=now, body=b"", size=0, state="failed")
    JobRun.create(job="refresh", started_at=now - 3, finished_at=now, duration_seconds=3,
                  outcome="success")  # fmt: skip
    JobRun.create(job="refresh", started_at=now, finished_at=now + 1, duration_seconds=1,
                  outcome="failure")  # fmt: skip
    get = registry_for(db).get_sample_value
    assert get("patchwatch_reports_stored", {"state": "failed"}) == 1
    assert get("patchwatch_reports_stored", {"state": "pending"}) == 0
    assert get("patchwatch_job_last_run_success", {"name": "refresh"}) == 0
    assert get("patchwatch_job_last_success_timestamp_seconds", {"name": "refresh"}) == now


def test_unreadable_store_gives_database_down_not_a_failed_scrape(tmp_path) -> None:
    broken = SqliteDatabase(str(tmp_path / "missing" / "nope.db"))
    reg = registry_for(broken)
    text = generate_latest(reg).decode()
    assert "patchwatch_database_up 0.0" in text
    assert "patchwatch_host_info" not in text


def test_metrics_token_protects_metrics_but_not_health(db) -> None:
    import base64

    from werkzeug.test import Client

    from exporter.app import make_app

    client = Client(make_app(db, registry=registry_for(db), token="s3cret"))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and b"patchwatch_database_up" in ok.data
    basic = base64.b64encode(b"prometheus:s3cret").decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/healthz").status_code == 200
