"""Prometheus, Alertmanager and a webhook on loopback, for end-to-end alert tests.

Debian's ``prometheus`` loads the shipped rules with every ``for:`` cut to 1 s and
scrapes every second; Debian's ``prometheus-alertmanager`` runs the example
configuration with its receivers pointed at a webhook served by the test, waits cut to
a second and clock-based mutes removed (so the result does not depend on the day).
Every process is stopped by its own PID. A missing tool skips with the reason, or fails
when ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``.
"""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import TypeVar

from tests.support.network import free_port
from tests.support.paths import ROOT
from tests.support.tools import require_or_skip

ORACLES_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"
RULES = ROOT / "alerts" / "patchwatch.rules.yml"
ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager.example.yml"

T = TypeVar("T")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_or_skip(
            ORACLES_ENV,
            f"{name} not found (Debian: apt-get install "
            "--no-install-recommends prometheus prometheus-alertmanager)",
        )
    return str(path)


def require_yaml() -> Any:
    try:
        import yaml
    except ImportError:
        require_or_skip(ORACLES_ENV, "PyYAML not installed (pip install pyyaml)")
    return yaml


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as exc:
            last, value = exc, None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last!r})")


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Process:
    """A child process on a free loopback port, logged to a file, stopped by its PID."""

    def __init__(self, workdir: Path, name: str, binary: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.name, self.binary = workdir, name, binary
        self.address = f"127.0.0.1:{free_port()}"
        self.base = f"http://{self.address}"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, args: list[str], ready: str) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, *args], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            return http_get(self.base + ready)[0] == 200

        wait_until(up, 30, f"{self.name} to be ready")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rules_for_test() -> dict[str, Any]:
    """The shipped rules with every ``for`` cut to 1 s: same expressions and texts."""
    doc = require_yaml().safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    return dict(doc)


def alertmanager_for_test(webhook_url: str) -> dict[str, Any]:
    """The example configuration delivering to ``webhook_url`` at test speed."""
    doc = dict(require_yaml().safe_load(ALERTMANAGER_EXAMPLE.read_text()))

    def shorten(route: dict[str, Any]) -> None:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        route.pop("mute_time_intervals", None)
        route.pop("active_time_intervals", None)
        for child in route.get("routes", []):
            shorten(child)

    shorten(doc["route"])
    doc["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        if any(k.endswith("_configs") for k in r)
        else r
        for r in doc["receivers"]
    ]
    return doc


class Prometheus(Process):
    """Prometheus scraping ``target`` every second with the test rules."""

    def __init__(self, workdir: Path, target: str, alertmanager: str) -> None:
        super().__init__(workdir, "prometheus", require_tool("prometheus"))
        yaml = require_yaml()
        rules = workdir / "rules.yml"
        rules.write_text(yaml.safe_dump(rules_for_test(), sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": "patchwatch", "static_configs": [{"targets": [target]}]}
            ],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.spawn(
            [
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address={self.address}",
                "--log.level=warn",
            ],
            "/-/ready",
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = http_get(
            f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        )
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", doc
        return list(doc["data"]["result"])


class Alertmanager(Process):
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        super().__init__(workdir, "alertmanager", require_tool("prometheus-alertmanager"))
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(require_yaml().safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.spawn(
            [
                f"--config.file={self.config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            "/-/ready",
        )


class Webhook:
    """Records every JSON body Alertmanager posts."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        payloads, lock = self.payloads, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        return [
            a
            for p in list(self.payloads)
            for a in p.get("alerts", [])
            if a.get("labels", {}).get("alertname") == alertname
        ]
