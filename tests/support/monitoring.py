"""The monitoring chain on loopback: ``patchwatch serve``, Prometheus, Alertmanager, a webhook.

And the store seeded directly with host state (rows written into the server's SQLite
file after it migrated it): how a 10-day-old update, a host in maintenance and a silent
host can all exist in one short test. Missing tools skip, or fail under
``PATCHWATCH_TEST_REQUIRE_ORACLES=1``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from patchwatch.store.db import database
from patchwatch.store.db import open_database
from patchwatch.store.db import write_transaction
from patchwatch.store.host_counts import recount
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Repository
from tests.support.network import NO_EGRESS_ENV
from tests.support.network import free_port
from tests.support.paths import ROOT
from tests.support.tools import require_tool
from tests.support.tools import require_yaml
from tests.support.web import http_get
from tests.support.web import wait_until

RULES = ROOT / "alerts" / "patchwatch.rules.yml"


ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager.example.yml"


DAY = 86400.0


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
    recount(database, [host.id])  # written directly: counted as the computation counts them
    return host


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


class Prometheus(Process):
    """Debian's Prometheus scraping ``targets`` every second, evaluating every second."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        rules: dict[str, Any] | None = None,
        alertmanager: str | None = None,
        scrape_configs: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(workdir, "prometheus")
        self.binary = require_tool("prometheus")
        yaml = require_yaml()
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs
            or [{"job_name": "patchwatch", "static_configs": [{"targets": targets}]}],
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
