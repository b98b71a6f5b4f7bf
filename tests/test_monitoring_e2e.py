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

The helpers here (servers, seeding, polling) are shared with tests/test_dashboards.py.
A missing prometheus, prometheus-alertmanager or promtool skips with the reason, or
fails when ``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest

from patchwatch.store.db import open_database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Repository
from tests.conftest import NO_EGRESS_ENV
from tests.conftest import ROOT
from tests.conftest import free_port
from tests.conftest import require_or_skip

pytestmark = pytest.mark.slow  # real servers; about 13 s for the module

ORACLES_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"
RULES = ROOT / "alerts" / "patchwatch.rules.yml"
ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager.example.yml"
DAY = 86400.0

T = TypeVar("T")


# ---------------------------------------------------------------------------- tools


def require_tool(name: str) -> str:
    """Return the path of a real tool, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        require_or_skip(
            ORACLES_ENV,
            f"{name} not found (Debian: apt-get install --no-install-recommends "
            "prometheus prometheus-alertmanager)",
        )
    return str(path)


def require_yaml() -> Any:
    """Import PyYAML (a test dependency), or skip (fail in CI) without it."""
    try:
        import yaml
    except ImportError:
        require_or_skip(ORACLES_ENV, "PyYAML not installed (pip install pyyaml)")
    return yaml


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as exc:  # not up yet, half-written answer
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(0.1)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


class Process:
    """A child process on loopback that is always stopped by its own PID."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.address}"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_ready(self, path: str, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
            return http_get(self.base + path)[0] == 200

        wait_until(ready, timeout, f"{self.name} to answer {path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------- patchwatch


class PatchwatchServer(Process):
    """``patchwatch serve`` on SQLite in ``workdir`` (receiver, scheduler, /metrics)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, "patchwatch")
        self.data_dir = workdir / "data"
        self.db_url = "sqlite:///" + str(self.data_dir / "patchwatch.db")

    def start(self) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.workdir),
            "PATCHWATCH_WORKERS": "2",
            "PATCHWATCH_LOG_LEVEL": "WARNING",
            **NO_EGRESS_ENV,
        }
        cmd = [sys.executable, "-m", "patchwatch", "serve"]
        cmd += ["--bind", self.address, "--data-dir", str(self.data_dir)]
        self.spawn(cmd, env)
        self.wait_ready("/healthz")

    def scrape(self, openmetrics: bool = False) -> str:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        status, body = http_get(self.base + "/metrics", headers)
        assert status == 200, body[:500]
        return body.decode()


def sample_names(exposition: str) -> set[str]:
    """Names of every sample in a text-format scrape (``_bucket``/``_total`` included)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


@contextmanager
def store(db_url: str) -> Iterator[None]:
    """Bind the models to the server's database for a few writes in one transaction.

    A write transaction from the start (``BEGIN IMMEDIATE`` on SQLite): a deferred one
    that reads first fails at once with "database is locked" when the running server
    (its scheduler's job records) commits between the read and the first write.
    """
    db = open_database(db_url)
    db.connect(reuse_if_open=True)
    try:
        with write_transaction():
            yield
    finally:
        db.close()


def _package(name: str, version: str) -> Package:
    package, _ = Package.get_or_create(
        kind="deb", name=name, epoch="", version=version, release="1", arch="amd64"
    )
    return package


def seed_host(
    name: str,
    now: float,
    *,
    os_name: str = "Debian GNU/Linux 12 (bookworm)",
    family: str = "debian",
    security_ages_days: tuple[float, ...] = (),
    other_updates: int = 0,
    reboot: bool = False,
    report_age_days: float = 0.05,
    maintenance: bool = False,
    packages: int = 400,
    tags: str = "",
    held: bool = False,
) -> Host:
    """Write one host with pending updates first seen ``security_ages_days`` ago
    (of packages the host holds when ``held``).

    Its updates count as known (computed from every repository's data) and current;
    ``reboot`` is the host's own signal.
    """
    release, _ = OSRelease.get_or_create(name=os_name, defaults={"family": family})
    digest = hashlib.sha256(name.encode()).hexdigest()
    package_set = PackageSet.create(digest=digest, size=packages, created_at=now)
    host = Host.create(
        name=name,
        os_release=release,
        kernel="6.1.0-28-amd64",
        arch="x86_64",
        tags=tags,
        reboot_reported=reboot,
        package_set=package_set,
        maintenance_until=now + DAY if maintenance else None,
        created_at=now - 90 * DAY,
        last_report_at=now - report_age_days * DAY,
        last_processed_at=now - report_age_days * DAY,
        updates_computed_at=now,
        updates_complete=True,
        inputs_changed_at=now - report_age_days * DAY,
        updates_inputs_at=now - report_age_days * DAY,
        # Keep the scheduler's update computation away from these rows: it would
        # recompute them from the (empty) package set and delete the seeded updates.
        check_updates=False,
    )
    kinds = [(True, age) for age in security_ages_days] + [(False, 0.5)] * other_updates
    for i, (security, age) in enumerate(kinds):
        HostUpdate.create(
            host=host,
            installed=_package(f"{name}-lib{i}", "1.0"),
            available=_package(f"{name}-lib{i}", "1.1"),
            security=security,
            first_seen_at=now - age * DAY,
            held=held,
        )
    return host


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


def seed_mirror(
    repository: str,
    url: str,
    now: float,
    *,
    success_age_hours: float | None,
    consecutive_failures: int = 0,
    failures_total: int = 0,
    packages: int = 0,
) -> Mirror:
    """Write one repository with one mirror in the given refresh state."""
    repo, _ = Repository.get_or_create(
        key=repository, defaults={"kind": "deb", "name": repository, "created_at": now - 30 * DAY}
    )
    success = None if success_age_hours is None else now - success_age_hours * 3600
    return Mirror.create(
        repository=repo,
        url=url,
        last_attempt_at=now - 300,
        last_success_at=success,
        failures_total=failures_total,
        consecutive_failures=consecutive_failures,
        package_count=packages,
    )


def delete_updates(db_url: str, host_name: str) -> int:
    """Remove a host's pending updates, as a processed report without them would."""
    with store(db_url):
        host = Host.get(Host.name == host_name)
        return int(HostUpdate.delete().where(HostUpdate.host == host).execute())


# ----------------------------------------------------------- prometheus, alertmanager


class Prometheus(Process):
    """Debian's Prometheus scraping ``targets`` every second, evaluating every second."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        rules: dict[str, Any] | None = None,
        alertmanager: str | None = None,
    ) -> None:
        super().__init__(workdir, "prometheus")
        self.binary = require_tool("prometheus")
        yaml = require_yaml()
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "patchwatch", "static_configs": [{"targets": targets}]}
            ],
        }
        if rules is not None:
            rules_path = workdir / "rules.yml"
            rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
            config["rule_files"] = [str(rules_path)]
        if alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.spawn(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address={self.address}",
                "--log.level=warn",
            ]
        )
        self.wait_ready("/-/ready")

    def api(self, path: str, **params: str) -> Any:
        status, body = http_get(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise PromQLError(
                f"{params}: HTTP {status}: {doc.get('errorType')}: {doc.get('error')}"
            )
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now; return the result as a list of series."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_for_samples(self, count: int, timeout: float = 30) -> None:
        """Wait until the patchwatch target has been scraped ``count`` times (up == 1)."""
        expr = 'count_over_time(up{job="patchwatch"}[5m]) and up{job="patchwatch"} == 1'

        def enough() -> bool:
            result = self.query(expr)
            return bool(result) and float(result[0]["value"][1]) >= count

        wait_until(enough, timeout, f"{count} scrapes of patchwatch\n{self.log_tail()}")

    def scrapes_so_far(self) -> int:
        result = self.query('count_over_time(up{job="patchwatch"}[5m])')
        return int(float(result[0]["value"][1])) if result else 0


class PromQLError(AssertionError):
    """Prometheus refused a query (bad syntax, bad function use)."""


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The finite sample values of an instant-query result (NaN means no data)."""
    values = [float(series["value"][1]) for series in result]
    return [v for v in values if math.isfinite(v)]


class Alertmanager(Process):
    """Debian's prometheus-alertmanager with a given configuration, no clustering."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir, "alertmanager")
        self.binary = require_tool("prometheus-alertmanager")
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(require_yaml().safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.spawn(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address=",  # no gossip port: a lone instance
                "--log.level=warn",
            ]
        )
        self.wait_ready("/-/ready")

    def alerts(self) -> list[dict[str, Any]]:
        status, body = http_get(self.base + "/api/v2/alerts")
        assert status == 200, body[:300]
        return list(json.loads(body))


class Webhook:
    """An HTTP server that records every JSON body Alertmanager posts to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        lock = threading.Lock()
        payloads = self.payloads

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, alertname: str, host: str, status: str | None = None) -> list[dict[str, Any]]:
        """Delivered alerts with this name and host (and status, when given)."""
        found = []
        for payload in list(self.payloads):
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                if labels.get("alertname") != alertname or labels.get("host") != host:
                    continue
                if status is None or alert.get("status") == status:
                    found.append(alert)
        return found


def derive_test_rules(source: Path = RULES) -> dict[str, Any]:
    """The shipped rules with every ``for`` cut to 1 s: same expressions, labels, texts."""
    doc = require_yaml().safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    return dict(doc)


def derive_test_alertmanager(
    webhook_url: str, source: Path = ALERTMANAGER_EXAMPLE
) -> dict[str, Any]:
    """The example config delivering to ``webhook_url`` at test speed.

    Routes, grouping and inhibitions stay as shipped. Receivers that notify anyone are
    pointed at the webhook; receivers that notify no one stay silent. Waits shrink to a
    second, and clock-based mutes go, so that the outcome does not depend on the day.
    """
    doc = dict(require_yaml().safe_load(source.read_text()))

    def shorten(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        route["repeat_interval"] = "1h"
        route.pop("mute_time_intervals", None)
        route.pop("active_time_intervals", None)
        for child in route.get("routes", []):
            shorten(child)

    shorten(doc["route"])
    receivers = []
    for receiver in doc["receivers"]:
        if any(key.endswith("_configs") for key in receiver):
            receiver = {
                "name": receiver["name"],
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        receivers.append(receiver)
    doc["receivers"] = receivers
    return doc


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
