"""The security alert end to end through the real path: report → refresh → updates → alert.

tests/test_monitoring_e2e.py proves the monitoring chain with HostUpdate rows written
straight into the database. This module removes that shortcut: nothing here touches the
store. A real rpm-md repository (scripts/make_rpm_repo.sh: ``hello`` 1.0-1, and 1.1-1
fixed by the security advisory PWTEST-2026:0001) is served on loopback; a Rocky-like
host posts a native report with hello 1.0-1 installed and that repository configured;
the scheduler's follow-up (and ``patchwatch refresh``, ``patchwatch updates`` after it)
reads the mirror and finds the pending security update; the exporter shows its
first-seen time; Debian's Prometheus evaluates
the shipped rule and Debian's Alertmanager, running the example configuration, delivers
the alert to a webhook in this test. The host then reports hello 1.1-1, ``patchwatch
updates`` clears the update, and the resolved notification arrives.

The only liberty taken with the shipped rules is time: a real update is first seen *now*,
so the rule's 7-day age threshold is rewritten to a few seconds (and every ``for:`` cut
to 1 s, as the e2e test does). The expression, labels and annotations stay as shipped, so
the alert that fires is the production one, fed by the production pipeline.

A missing prometheus, prometheus-alertmanager, rpmbuild or createrepo_c skips with the
reason, or fails when ``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mirrors import MirrorServer
from tests.support.monitoring import Alertmanager
from tests.support.monitoring import Prometheus
from tests.support.monitoring import Webhook
from tests.support.monitoring import derive_test_alertmanager
from tests.support.monitoring import derive_test_rules
from tests.support.paths import ROOT
from tests.support.servers import Server
from tests.support.tools import ORACLES_ENV
from tests.support.tools import require_or_skip
from tests.support.tools import require_tool
from tests.support.web import http_get
from tests.support.web import http_post
from tests.support.web import wait_until

pytestmark = pytest.mark.slow  # real servers and an rpmbuild; about 20 s

ALERT = "PatchwatchSecurityUpdatesPending"
HOST = "rocky1.example.com"
#: The shipped age threshold, exactly as it appears in the rule's expression.
SHIPPED_AGE = "> 7 * 86400"
#: Seconds an update must have been pending here before the rule considers it old.
#: Long enough that the test can see the update pending *before* the alert fires
#: (so it is the age that fires it, not mere presence), short enough to keep it quick.
TEST_AGE_SECONDS = 4


def derive_fast_security_rules(age_seconds: int = TEST_AGE_SECONDS) -> dict[str, Any]:
    """The shipped rules (``for:`` at 1 s) with the security-age threshold in seconds.

    Fails loudly if the shipped expression no longer contains the threshold this test
    rewrites: silently keeping 7 days would make the test wait out its timeout instead of
    saying why.
    """
    doc = derive_test_rules()
    rewritten = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == ALERT:
                assert SHIPPED_AGE in rule["expr"], f"{ALERT}'s threshold changed: {rule['expr']}"
                rule["expr"] = rule["expr"].replace(SHIPPED_AGE, f"> {age_seconds}")
                rewritten += 1
    assert rewritten == 1, f"expected one {ALERT} rule, rewrote {rewritten}"
    return doc


def build_rpm_repo(out: Path) -> Path:
    """Build the fixture repository with the project's script; skip when tools are missing."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "make_rpm_repo.sh"), str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode == 2:  # the script's "tool missing" status
        require_or_skip(ORACLES_ENV, proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def rocky_report(hello_release: str, hello_version: str, repo_url: str) -> dict[str, Any]:
    """A native report (patchwatch/domain/schemas/report-v1.json) of a Rocky 9 host on
    ``repo_url``.

    Only ``hello`` comes from the test repository; bash is there so that the host has a
    package no repository offers, as real hosts do.
    """
    return {
        "version": 1,
        "host": HOST,
        "os": {
            "id": "rocky", "id_like": "rhel centos fedora", "version_id": "9.4",
            "name": "Rocky Linux", "pretty_name": "Rocky Linux 9.4 (Blue Onyx)",
        },
        "kernel": "5.14.0-427.42.1.el9_4.x86_64",
        "arch": "x86_64",
        "tags": ["web"],
        "reboot_required": False,
        "packages": [
            {"name": "bash", "version": "5.1.8", "release": "9.el9", "arch": "x86_64",
             "type": "rpm"},
            {"name": "hello", "version": hello_version, "release": hello_release,
             "arch": "noarch", "type": "rpm"},
        ],
        "repositories": [
            {"type": "rpm", "id": "t", "name": "patchwatch test repository",
             "urls": [repo_url], "arch": "x86_64", "priority": -99, "enabled": True},
        ],
        "agent": {"name": "patchwatch-agent", "version": "0.1.0", "collected_at": time.time()},
    }  # fmt: skip


def post_report(srv: Server, token: str, doc: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    status = http_post(srv.base + "/api/v1/reports", json.dumps(doc).encode(), headers)
    assert status == 202, f"report refused with HTTP {status}\n{srv.log()[-2000:]}"


def host_state(srv: Server, admin: str) -> dict[str, Any]:
    status, body = http_get(f"{srv.base}/api/v1/hosts/{HOST}", {"Authorization": f"Bearer {admin}"})
    if status == 404:  # not processed yet
        return {}
    assert status == 200, body[:500]
    return dict(json.loads(body))


def cli_ok(srv: Server, *args: str) -> str:
    """Run a ``patchwatch`` verb against the server's store; fail with its output if it fails."""
    proc = srv.cli(*args)
    assert proc.returncode == 0, f"patchwatch {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[MirrorServer]:
    """The built repository on a loopback mirror."""
    server = MirrorServer(build_rpm_repo(tmp_path / "rpm-repo")).start()
    yield server
    server.stop()


def test_security_alert_fires_and_resolves_through_reports_refresh_and_updates(
    server_factory: Callable[..., Server], repo: MirrorServer, tmp_path: Path
) -> None:
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    # the test mirror is on loopback: reachable by setting, read once approved
    srv = server_factory(
        {"PATCHWATCH_LOG_LEVEL": "WARNING", "PATCHWATCH_MIRROR_ALLOWED_NETWORKS": "127.0.0.1/32"}
    )
    host_token = cli_ok(srv, "token", "create", "--host", HOST).strip()
    admin = cli_ok(srv, "token", "create", "--admin").strip()

    # 1. The host reports hello 1.0-1 and the repository that offers 1.1-1.
    post_report(srv, host_token, rocky_report("1", "1.0", repo.url("")))
    wait_until(lambda: host_state(srv, admin).get("packages"), 20, f"{HOST}'s report processed")

    # 2. The operator approves the repository the host reported; the server reads the
    #    mirror and computes updates. The scheduler's follow-up does it by itself within
    #    seconds of the approval; the operator's verbs then find the mirror unchanged and
    #    the updates computed, or do it first.
    pending = cli_ok(srv, "refresh")
    assert "skipped" in pending and "waiting for approval" in pending, pending
    cli_ok(srv, "repos", "approve", repo.url("").rstrip("/"))
    refreshed = cli_ok(srv, "refresh")
    assert "1 mirrors: 1 " in refreshed and "failed" not in refreshed, refreshed
    cli_ok(srv, "updates")
    computed_at = time.time()
    updates = host_state(srv, admin)["updates"]
    assert [(u["name"], u["installed"], u["available"], u["security"]) for u in updates] == [
        ("hello", "1.0-1", "1.1-1", True)
    ], updates
    first_seen = float(updates[0]["first_seen_at"])
    assert computed_at - 60 < first_seen <= computed_at  # new: the age is the test's to wait

    # 3. Prometheus with the shipped rules (age threshold in seconds), Alertmanager with
    # the example configuration, a webhook for the notifications.
    webhook = Webhook()
    webhook.start()
    alertmanager: Alertmanager | None = None
    prometheus: Prometheus | None = None

    def logs() -> str:
        return "".join(f"\n{p.log_tail()}" for p in (prometheus, alertmanager) if p)

    try:
        alertmanager = Alertmanager(tmp_path / "am", derive_test_alertmanager(webhook.url))
        prometheus = Prometheus(
            tmp_path / "prom",
            [f"127.0.0.1:{srv.port}"],
            rules=derive_fast_security_rules(),
            alertmanager=alertmanager.address,
        )
        alertmanager.start()
        prometheus.start()

        # The exporter carries the first-seen time the update computation stored.
        prom = prometheus
        oldest = "patchwatch_host_oldest_security_update_first_seen_timestamp_seconds"
        selector = f'{{host="{HOST}"}}'
        series = wait_until(lambda: prom.query(oldest + selector), 20, f"{oldest} in Prometheus")
        assert float(series[0]["value"][1]) == pytest.approx(first_seen, abs=1e-3)
        pending = prom.query(f'patchwatch_host_updates_pending{{host="{HOST}"}}')
        assert {s["metric"]["kind"]: float(s["value"][1]) for s in pending} == {
            "security": 1.0, "other": 0.0, "held": 0.0,
        }  # fmt: skip

        firing = wait_until(
            lambda: webhook.alerts(ALERT, HOST, "firing"), 40, f"{ALERT} for {HOST}{logs()}"
        )[0]
        # It fired on age, not on presence: the rule became true only once the update
        # computed above was TEST_AGE_SECONDS old (startsAt is when it became true).
        started = dt.datetime.fromisoformat(firing["startsAt"]).timestamp()
        assert started >= first_seen + TEST_AGE_SECONDS, (firing["startsAt"], first_seen)
        assert firing["labels"]["severity"] == "warning"
        assert firing["annotations"]["description"].startswith(
            f"{HOST} has had a security update pending for"
        )
        assert webhook.alerts(ALERT, HOST, "resolved") == []

        # 4. The host installs the update and reports; the update computation clears it.
        post_report(srv, host_token, rocky_report("1", "1.1", repo.url("")))
        wait_until(
            lambda: any(
                p["name"] == "hello" and p["version"] == "1.1"
                for p in host_state(srv, admin)["packages"]
            ),
            20,
            f"{HOST}'s second report processed",
        )
        cli_ok(srv, "updates")
        assert host_state(srv, admin)["updates"] == []

        wait_until(lambda: webhook.alerts(ALERT, HOST, "resolved"), 40, f"resolved {ALERT}{logs()}")
    finally:
        for process in (prometheus, alertmanager):
            if process is not None:
                process.stop()
        webhook.stop()
