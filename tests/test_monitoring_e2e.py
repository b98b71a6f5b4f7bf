"""The monitoring chain for real: patchwatch serve → Prometheus → Alertmanager → webhook.

Everything runs on loopback: ``patchwatch serve`` on SQLite, Debian's ``prometheus``
loading the real alert rules (only every ``for:`` cut to 1 s, so the test does not wait
an hour), Debian's ``prometheus-alertmanager`` running the example configuration
(receivers pointed at a webhook served by this test, timings shortened, the weekly mute
window removed so the result does not depend on the day), and a tiny HTTP server that
records what Alertmanager delivers.

Host state is written directly as rows (Host, Package, HostUpdate ...) into the
server's SQLite file after it has migrated it: that is how a 10-day-old update, a
host in maintenance and a silent host can all exist in one short test. The real path
(report -> mirror refresh -> update computation -> alert) is proven by
tests/test_monitoring_realpath.py. The seeded hosts are marked
``check_updates=False`` so that the scheduler's update computation leaves their rows
alone. The exporter reads the store at scrape time, so rows written here are what
Prometheus sees.

The servers and the seeding are tests/support/monitoring.py's, shared with
tests/test_dashboards.py.
A missing prometheus, prometheus-alertmanager or promtool skips with the reason, or
fails when ``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchwatch.store.db import database
from patchwatch.store.db import write_transaction
from patchwatch.store.host_counts import recount
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import OSRelease
from patchwatch.store.models import PackageSet
from tests.support.monitoring import Alertmanager
from tests.support.monitoring import PatchwatchServer
from tests.support.monitoring import Prometheus
from tests.support.monitoring import Webhook
from tests.support.monitoring import derive_test_alertmanager
from tests.support.monitoring import derive_test_rules
from tests.support.monitoring import finite_values
from tests.support.monitoring import seed_host
from tests.support.monitoring import seed_mirror
from tests.support.monitoring import store
from tests.support.paths import ROOT
from tests.support.tools import require_tool
from tests.support.tools import require_yaml
from tests.support.web import wait_until

pytestmark = pytest.mark.slow  # real servers; about 13 s for the module


# ---------------------------------------------------------------------------- tools


# ----------------------------------------------------------------------- patchwatch


def seed_unknown_host(name: str, now: float, *, reported_hours_ago: float = 2.0) -> Host:
    """Write a host that reported, with no repositories and no reboot signal of its own:
    patchwatch knows nothing of its updates or its reboot. (The scheduler computes it,
    and finds nothing to compute from: it stays unknown.)"""
    at = now - reported_hours_ago * 3600
    release, _ = OSRelease.get_or_create(
        name="Debian GNU/Linux 12 (bookworm)", defaults={"family": "debian"}
    )
    package_set = PackageSet.create(
        digest=hashlib.sha256(name.encode()).hexdigest(), size=400, created_at=now
    )
    return Host.create(
        name=name, os_release=release, kernel="6.1.0-28-amd64", arch="x86_64",
        package_set=package_set, created_at=at, last_report_at=at, last_processed_at=at,
        inputs_changed_at=at,
    )  # fmt: skip


def delete_updates(db_url: str, host_name: str) -> int:
    """Remove a host's pending updates, as a processed report without them would."""
    with store(db_url):
        host = Host.get(Host.name == host_name)
        with write_transaction():
            deleted = int(HostUpdate.delete().where(HostUpdate.host == host).execute())
            recount(database, [host.id])  # and its counts, as the update computation does
        return deleted


# ----------------------------------------------------------- prometheus, alertmanager


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PatchwatchServer]:
    """A running patchwatch with three hosts whose security updates are 10 days old.

    web-1 reports normally, db-1 is in maintenance, old-1 stopped reporting 5 days ago:
    only web-1's alert may reach a human. held-1's 10-day-old security update is of a
    package it holds: no alert at all. clean-1 has nothing pending; new-1 reported two
    hours ago and its updates were never computed; the mirror deb-never never succeeded.
    """
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    server = PatchwatchServer(tmp_path_factory.mktemp("e2e"))
    server.start()
    try:
        now = time.time()
        with store(server.db_url):
            seed_host("web-1", now, security_ages_days=(10, 2), other_updates=3)
            seed_host("db-1", now, security_ages_days=(10,), maintenance=True)
            seed_host("old-1", now, security_ages_days=(10,), report_age_days=5)
            seed_host("held-1", now, security_ages_days=(10,), held=True)
            seed_host("clean-1", now)
            seed_unknown_host("new-1", now)
            seed_mirror("deb-never", "http://deb.example/never", now, success_age_hours=None,
                        consecutive_failures=1, failures_total=1)  # fmt: skip
            seed_mirror(
                "deb-main", "http://deb.example/debian", now, success_age_hours=0.5, packages=9
            )
            JobRun.create(
                job="refresh_mirrors", started_at=now - 60, finished_at=now - 59,
                duration_seconds=1.0, outcome="success",
            )  # fmt: skip
        yield server
    finally:
        server.stop()


def test_promtool_check_metrics_finds_nothing_in_a_real_scrape(fleet: PatchwatchServer) -> None:
    promtool = require_tool("promtool")
    text = fleet.scrape()
    assert 'patchwatch_host_updates_pending{host="web-1",kind="security"} 2.0' in text
    out = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_openmetrics_scrape_ends_with_eof(fleet: PatchwatchServer) -> None:
    text = fleet.scrape(openmetrics=True)
    assert text.endswith("# EOF\n")
    assert "patchwatch_host_oldest_security_update_first_seen_timestamp_seconds" in text


def test_security_alert_reaches_the_webhook_and_resolves(
    fleet: PatchwatchServer, tmp_path: Path
) -> None:
    webhook = Webhook()
    webhook.start()
    alertmanager = Alertmanager(tmp_path / "am", derive_test_alertmanager(webhook.url))
    prometheus = Prometheus(
        tmp_path / "prom",
        [fleet.address],
        rules=derive_test_rules(),
        alertmanager=alertmanager.address,
    )
    name = "PatchwatchSecurityUpdatesPending"
    try:
        alertmanager.start()
        prometheus.start()

        firing = wait_until(
            lambda: webhook.alerts(name, "web-1", "firing"),
            40,
            f"{name} for web-1 at the webhook\n{prometheus.log_tail()}\n{alertmanager.log_tail()}",
        )[0]
        assert firing["labels"]["severity"] == "warning"
        assert firing["annotations"]["runbook_url"].endswith(
            "docs/runbook.md#patchwatchsecurityupdatespending"
        )
        assert firing["annotations"]["description"].startswith(
            "web-1 has had a security update pending for 10d"
        )

        def suppressed(host: str) -> bool:
            for alert in alertmanager.alerts():
                if alert["labels"].get("alertname") == name and alert["labels"]["host"] == host:
                    status = alert["status"]
                    return status["state"] == "suppressed" and bool(status["inhibitedBy"])
            return False

        # The maintenance host and the silent host are held back by the inhibitions.
        wait_until(lambda: suppressed("db-1"), 20, "db-1's alert inhibited (maintenance)")
        wait_until(lambda: suppressed("old-1"), 20, "old-1's alert inhibited (not reporting)")

        assert delete_updates(fleet.db_url, "web-1") == 5
        wait_until(
            lambda: webhook.alerts(name, "web-1", "resolved"),
            30,
            f"the resolved {name} for web-1 at the webhook",
        )
        assert webhook.alerts(name, "db-1") == []
        assert webhook.alerts(name, "old-1") == []
        # a held security update: counted as held, and no alert, not even a silenced one
        held = prometheus.query('patchwatch_host_updates_pending{host="held-1"}')
        assert {r["metric"]["kind"]: r["value"][1] for r in held} == {
            "security": "0", "other": "0", "held": "1",
        }  # fmt: skip
        assert prometheus.query(f'ALERTS{{alertname="{name}",host="held-1"}}') == []
        assert not any(a["labels"].get("host") == "held-1" for a in alertmanager.alerts())
        assert webhook.alerts(name, "held-1") == []
        # the silent host's own alert does reach a human
        assert webhook.alerts("PatchwatchHostNotReporting", "old-1", "firing")
    finally:
        prometheus.stop()
        alertmanager.stop()
        webhook.stop()


def test_unknown_is_absent_not_zero_on_a_real_prometheus_scrape(
    fleet: PatchwatchServer, tmp_path: Path
) -> None:
    """What patchwatch does not know, Prometheus does not see as 0: new-1's updates and
    reboot, deb-never's package count. A "fully patched" share never counts new-1, and
    the shipped rule finds the host whose updates stay unknown."""
    prometheus = Prometheus(tmp_path / "prom", [fleet.address], rules=derive_test_rules())
    try:
        prometheus.start()
        prometheus.wait_for_samples(2)
        query = prometheus.query

        def hosts(expr: str) -> set[str]:
            return {series["metric"]["host"] for series in query(expr)}

        everyone = {"web-1", "db-1", "old-1", "clean-1", "held-1", "new-1"}
        assert hosts("patchwatch_host_info") == everyone
        assert query('patchwatch_host_updates_pending{host="new-1"}') == []
        assert query('patchwatch_host_reboot_required{host="new-1"}') == []
        assert hosts("patchwatch_host_updates_computed_timestamp_seconds") == everyone - {"new-1"}
        # (web-1 joins clean-1 once the alert test above has deleted its updates; held-1's
        # only security update is held, which an upgrade leaves alone)
        patched = hosts('patchwatch_host_updates_pending{kind="security"} == 0')
        assert {"clean-1", "held-1"} <= patched <= {"clean-1", "held-1", "web-1"}
        share = 'count(patchwatch_host_updates_pending{kind="security"} == 0)'
        assert finite_values(query(f"{share} / count(patchwatch_host_info)")) == [
            len(patched) / len(everyone)
        ]
        unknown = "patchwatch_host_info unless on (host) patchwatch_host_updates_computed_timestamp_seconds"  # noqa: E501
        assert hosts(unknown) == {"new-1"}
        assert query('patchwatch_host_reboot_required{host="clean-1"}') != []  # it said no

        never = '{repository="deb-never"}'
        assert query(f"patchwatch_mirror_packages{never}") == []
        assert finite_values(query(f"patchwatch_mirror_consecutive_failures{never}")) == [1.0]
        assert finite_values(query('patchwatch_mirror_packages{repository="deb-main"}')) == [9.0]

        firing = 'ALERTS{alertname="PatchwatchHostUpdatesUnknown", alertstate="firing"}'
        found = wait_until(lambda: hosts(firing), 30, f"{firing}\n{prometheus.log_tail()}")
        assert found == {"new-1"}
    finally:
        prometheus.stop()


def documented_sharded_scrape(address: str) -> dict[str, Any]:
    """The sharded scrape configuration of docs/deploy.md, cut to two shards of the
    server at ``address``, scraped every second (its timeout must fit the interval)."""
    yaml = require_yaml()
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    (block,) = [b for b in blocks if "__param_shard" in b]
    (job,) = yaml.safe_load(block)["scrape_configs"]
    job.pop("scrape_timeout")
    assert job["params"] == {"shards": [str(len(job["static_configs"]))]}
    job["params"] = {"shards": ["2"]}
    job["static_configs"] = [
        {"targets": [address], "labels": static["labels"]} for static in job["static_configs"][:2]
    ]
    return job


def test_prometheus_scrapes_two_shards_each_host_once(tmp_path: Path) -> None:
    """The documented sharded scrape on a real Prometheus: two shard targets, every host
    in exactly one, in the shard Prometheus's own ``hashmod`` gives its name (a
    ``metric_relabel_configs`` rule computes it beside ours), and the fleet-level
    series once, in shard 0."""
    server = PatchwatchServer(tmp_path / "pw")
    server.start()
    prometheus = None
    try:
        now = time.time()
        names = [f"host-{i:02d}.example.org" for i in range(40)]
        with store(server.db_url):
            for i, name in enumerate(names):
                seed_host(name, now, security_ages_days=(1,) * (i % 3), other_updates=i % 2)
            seed_mirror("deb-main", "http://deb.example/debian", now, success_age_hours=0.5,
                        packages=9)  # fmt: skip
        job = documented_sharded_scrape(server.address)
        job["metric_relabel_configs"] = [
            {"source_labels": ["host"], "modulus": 2, "action": "hashmod",
             "target_label": "hashmod_shard"},
        ]  # fmt: skip
        prometheus = Prometheus(tmp_path / "prom", [], scrape_configs=[job])
        prometheus.start()
        prometheus.wait_for_samples(2)
        query = prometheus.query
        up = {s["metric"]["shard"]: s["value"][1] for s in query('up{job="patchwatch"}')}
        assert up == {"0": "1", "1": "1"}

        info = query("patchwatch_host_info")
        assert sorted(s["metric"]["host"] for s in info) == names  # each once
        by_shard = {s["metric"]["host"]: s["metric"]["shard"] for s in info}
        assert set(by_shard.values()) == {"0", "1"}
        for series in info:
            assert series["metric"]["shard"] == series["metric"]["hashmod_shard"], series
        pending = query('patchwatch_host_updates_pending{kind="security"}')
        assert sorted(s["metric"]["host"] for s in pending) == names
        assert all(by_shard[s["metric"]["host"]] == s["metric"]["shard"] for s in pending)

        fleet_families = ("patchwatch_build_info", "patchwatch_mirror_packages",
                          "patchwatch_reports_stored", "process_resident_memory_bytes")  # fmt: skip
        for fleet_series in fleet_families:
            shards = {s["metric"]["shard"] for s in query(fleet_series)}
            assert shards == {"0"}, fleet_series
        assert finite_values(query("count(patchwatch_build_info)")) == [1.0]
        assert finite_values(query("count(patchwatch_database_up == 1)")) == [2.0]
        assert finite_values(query("count(patchwatch_host_info)")) == [float(len(names))]
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()
