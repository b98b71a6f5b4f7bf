"""Dashboards: generated, structurally sound, and every query works on real data.

Grafana itself cannot be installed here, so the dashboards are checked three ways:
they round-trip through grafana-foundation-sdk's typed models (every target decodes as
a Prometheus query, every panel's options as its plugin's options), they follow the
project's conventions (uid == file stem, tag, ``${datasource}`` everywhere, units and
descriptions, a sane grid), and every query runs against Debian's Prometheus scraping a
real ``patchwatch serve`` that holds data, where it must parse and return a number.
The same live scrape proves that every metric named in the alert rules and the panels
is one the server really exposes.

Host state is written as rows into the server's SQLite file (see
tests/test_monitoring_e2e.py for why); receiver counters come from real reports posted
to the receiver: one accepted (then processed inline) and one without a token.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchwatch.store.models import Host
from patchwatch.store.models import JobRun
from patchwatch.store.security_feeds import SecurityFeed
from patchwatch.store.tokens import create_token
from patchwatch.store.vuln_models import Vulnerability
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnSource
from patchwatch.store.vulns import FindingRow
from patchwatch.store.vulns import save_set
from patchwatch.store.vulns import vulnerability_meta
from tests.support.monitoring import PatchwatchServer
from tests.support.monitoring import Prometheus
from tests.support.monitoring import PromQLError
from tests.support.monitoring import finite_values
from tests.support.monitoring import sample_names
from tests.support.monitoring import seed_host
from tests.support.monitoring import seed_mirror
from tests.support.monitoring import store
from tests.support.paths import FIXTURES
from tests.support.paths import ROOT
from tests.support.tools import ORACLES_ENV
from tests.support.tools import require_or_skip
from tests.support.tools import require_tool
from tests.support.tools import require_yaml
from tests.support.web import http_post

DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
BUILDER = ROOT / "grafana" / "build_dashboards.py"
RULES = ROOT / "alerts" / "patchwatch.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

# What Grafana would substitute, chosen to select seeded data.
VARIABLES = {
    "$__rate_interval": "30s",
    "$os": ".*",
    "$host": "web-01",
    "$repository": ".*",
    "$instance": ".*",
}
# Series Prometheus makes itself rather than scraping them from patchwatch.
PROMETHEUS_MADE = {"up", "scrape_duration_seconds"}
METRIC_NAME = re.compile(r"\b((?:patchwatch|process|python)_[a-zA-Z0-9_]+)\b")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def metric_names(expr: str) -> list[str]:
    """Metric names in a PromQL expression (label values in quotes are not names)."""
    return METRIC_NAME.findall(QUOTED.sub('""', expr))


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target


def variable_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield variable["name"], query["query"] if isinstance(query, dict) else query


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def label_values_to_promql(query: str) -> str:
    """Grafana's ``label_values(metric, label)`` as the PromQL it amounts to."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"unsupported variable query {query!r}"
    return f"group by ({match.group(2)}) ({match.group(1)})"


def rule_expressions() -> list[str]:
    doc = require_yaml().safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def sdk() -> Any:
    try:
        import grafana_foundation_sdk
    except ImportError:
        require_or_skip(
            ORACLES_ENV,
            "grafana-foundation-sdk not installed (pip install 'grafana-foundation-sdk=="
            "1769699998!10.1.0')",
        )
    return grafana_foundation_sdk


# ------------------------------------------------------------------ static checks


def test_there_are_the_four_dashboards() -> None:
    assert [p.stem for p in dashboard_files()] == [
        "patchwatch-host",
        "patchwatch-mirrors",
        "patchwatch-overview",
        "patchwatch-service",
    ]


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    sdk()
    out = subprocess.run(
        [sys.executable, str(BUILDER), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    assert generated == [p.name for p in dashboard_files()]
    for name in generated:
        assert (tmp_path / name).read_bytes() == (DASHBOARD_DIR / name).read_bytes(), (
            f"{name} is stale: run .venv/bin/python grafana/build_dashboards.py"
        )


def test_check_mode_notices_a_stale_file(tmp_path: Path) -> None:
    sdk()
    for path in dashboard_files():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    cmd = [sys.executable, str(BUILDER), "--check", "--out", str(tmp_path)]
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    board = load(tmp_path / "patchwatch-host.json")
    board["title"] = "edited by hand"
    (tmp_path / "patchwatch-host.json").write_text(json.dumps(board))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "stale:" in out.stderr and "patchwatch-host.json" in out.stderr


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_round_trips_through_the_sdk_models(path: Path) -> None:
    sdk()
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import prometheus
    from grafana_foundation_sdk.models.dashboard import Dashboard
    from grafana_foundation_sdk.models.dashboard import Panel
    from grafana_foundation_sdk.models.dashboard import RowPanel

    register_default_plugins()
    raw = load(path)
    model = Dashboard.from_json(raw)
    assert json.loads(JSONEncoder().encode(model)) == raw
    assert model.panels
    for panel in model.panels:
        if isinstance(panel, RowPanel):
            continue
        assert isinstance(panel, Panel)
        assert not isinstance(panel.options, dict), f"{panel.title}: options not typed"
        assert panel.targets, f"{panel.title}: no query"
        for target in panel.targets:
            assert isinstance(target, prometheus.Dataquery), f"{panel.title}: {target!r}"


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.stem)
def test_dashboard_follows_the_conventions(path: Path) -> None:
    board = load(path)
    assert board["uid"] == path.stem
    assert "patchwatch" in board["tags"]
    assert board["title"].startswith("patchwatch / ")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, variable in variables.items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, name

    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel.get("description"), f"{panel['title']}: no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
            assert target["refId"], panel["title"]


def _field_links(panel: dict[str, Any], field: str) -> list[str]:
    for override in panel["fieldConfig"].get("overrides", []):
        if override["matcher"]["options"] == field:
            for prop in override["properties"]:
                if prop["id"] == "links":
                    return [link["url"] for link in prop["value"]]
    return []


def test_host_and_mirror_panels_link_to_the_web_console() -> None:
    """A panel about one host opens its console page, a mirror's opens the mirror's,
    under a dashboard variable holding the console's base URL (docs/console.md)."""
    boards = {p.stem: load(p) for p in dashboard_files()}
    for uid in ("patchwatch-overview", "patchwatch-host", "patchwatch-mirrors"):
        variables = {v["name"]: v for v in boards[uid]["templating"]["list"]}
        assert variables["console"]["type"] == "textbox", uid
        assert variables["console"]["query"].startswith("http"), uid
    host_page = "${console}/ui/hosts/${host}"
    board = boards["patchwatch-host"]
    assert [link["url"] for link in board["links"] if link["type"] == "link"] == [host_page]
    for panel in panels(board):
        if panel["type"] != "row":
            assert [link["url"] for link in panel.get("links", [])] == [host_page], panel["title"]
    (hosts,) = [p for p in panels(boards["patchwatch-overview"]) if p["type"] == "table"]
    assert "${console}/ui/hosts/${__value.raw}" in _field_links(hosts, "host")
    mirrors = boards["patchwatch-mirrors"]
    (table,) = [p for p in panels(mirrors) if p["type"] == "table"]
    assert _field_links(table, "mirror") == ["${console}/ui/mirrors?url=${__value.raw}"]
    assert _field_links(table, "repository") == ["${console}/ui/repositories?key=${__value.raw}"]
    series = [p for p in panels(mirrors) if p["type"] == "timeseries"]
    assert series
    for panel in series:
        urls = [link["url"] for link in panel["fieldConfig"]["defaults"]["links"]]
        assert urls == ["${console}/ui/mirrors?url=${__field.labels.mirror}"], panel["title"]


def test_uids_are_unique_across_dashboards() -> None:
    uids = [load(p)["uid"] for p in dashboard_files()]
    assert len(uids) == len(set(uids))


# -------------------------------------------------------------------- live checks


def seed_vulnerabilities(host: Host, now: float) -> None:
    """Feeds (one failing for 2 days, one flagged for a jump) and findings for ``host``:
    a known-exploited critical one, fixable, published 30 days ago; one with no fix."""
    day = 86400.0
    VulnSource.create(name="kev", records=1404, skipped=0, last_attempt_at=now,
                      last_success_at=now - 2 * day, consecutive_failures=2,
                      failures_total=2)  # fmt: skip
    VulnSource.create(name="osv:Debian:12", records=40, skipped=1, last_attempt_at=now,
                      last_success_at=now, changed_too_much=True)  # fmt: skip
    Vulnerability.create(id="CVE-2023-4911", severity="critical", published=now - 30 * day,
                         kev=True)  # fmt: skip
    Vulnerability.create(id="CVE-2099-0001", severity="high", published=now - 5 * day)
    found = [
        FindingRow("CVE-2023-4911", "glibc", "2.36-9", "fixable", "2.36-9+deb12u3",
                   "2.36-9+deb12u3"),
        FindingRow("CVE-2099-0001", "bash", "5.2.15-2", "no_fix"),
    ]  # fmt: skip
    vs = save_set(host.package_set_id, None, "Debian:12", "", now, found, vulnerability_meta())
    VulnHost.create(host=host, vuln_set=vs, ecosystem="Debian:12", computed_at=now)
    # Arch's tracker copy, failing since yesterday (PatchwatchSecurityFeedFailing reads it)
    SecurityFeed.create(name="arch_security_tracker",
                        fixes=120, skipped=0, last_attempt_at=now, last_success_at=now - day,
                        consecutive_failures=3, failures_total=3)  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PatchwatchServer, Prometheus]]:
    """A patchwatch with a small fleet, scraped every second by a real Prometheus."""
    require_tool("prometheus")
    workdir = tmp_path_factory.mktemp("dashboards")
    server = PatchwatchServer(workdir / "pw")
    prometheus = Prometheus(workdir / "prom", [server.address])
    server.start()
    try:
        now = time.time()
        with store(server.db_url):
            # ages of the oldest security update: one host in each patch-age bucket
            web01 = seed_host("web-01", now, security_ages_days=(10, 2), other_updates=3,
                              reboot=True, tags="web prod")  # fmt: skip
            seed_host("web-02", now, security_ages_days=(0.5,), other_updates=1)
            seed_host("app-02", now, security_ages_days=(3,))
            seed_host("db-01", now, os_name="Rocky Linux 9.4 (Blue Onyx)", family="redhat",
                      security_ages_days=(45,), maintenance=True)  # fmt: skip
            seed_host("app-01", now, os_name="Rocky Linux 9.4 (Blue Onyx)", family="redhat",
                      report_age_days=5)  # fmt: skip
            seed_mirror("deb-main", "http://deb.example/debian", now, success_age_hours=0.2,
                        packages=63440)  # fmt: skip
            seed_mirror("deb-security", "http://deb.example/debian-security", now,
                        success_age_hours=5, consecutive_failures=4, failures_total=7,
                        packages=3016)  # fmt: skip
            seed_mirror("epel", "http://rpm.example/epel", now, success_age_hours=None,
                        consecutive_failures=3, failures_total=3)  # fmt: skip
            JobRun.create(job="seeded_job", started_at=now - 62, finished_at=now - 60,
                          duration_seconds=2.0, outcome="failure", detail="seeded")  # fmt: skip
            seed_vulnerabilities(web01, now)
            _token, secret = create_token("host", now, "web01.example.com")
        prometheus.start()
        prometheus.wait_for_samples(1)
        # Reports after the first scrape, so that rates over the next scrapes see them.
        report = (FIXTURES / "reports" / "native_deb.json").read_bytes()
        url = server.base + "/api/v1/reports"
        headers = {"Content-Type": "application/json"}
        assert http_post(url, report, {**headers, "Authorization": f"Bearer {secret}"}) == 202
        assert http_post(url, report, headers) == 401
        prometheus.wait_for_samples(prometheus.scrapes_so_far() + 3)
        yield server, prometheus
    finally:
        prometheus.stop()
        server.stop()


@pytest.mark.slow
def test_every_metric_used_exists_in_a_real_scrape(
    live: tuple[PatchwatchServer, Prometheus],
) -> None:
    server, _ = live
    exposed = sample_names(server.scrape())
    used: dict[str, str] = {}
    for expr in rule_expressions():
        used.update({name: "alerts/patchwatch.rules.yml" for name in metric_names(expr)})
    for path in dashboard_files():
        board = load(path)
        for title, target in targets(board):
            used.update({n: f"{path.name}: {title}" for n in metric_names(target["expr"])})
        for name, query in variable_queries(board):
            used.update({n: f"{path.name}: ${name}" for n in metric_names(query)})
    assert len(used) > 20
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert missing == {}, "metrics used but not served by patchwatch"


@pytest.mark.slow
def test_every_panel_query_parses_and_returns_data(
    live: tuple[PatchwatchServer, Prometheus],
) -> None:
    _, prometheus = live
    checked = 0
    failures = []
    for path in dashboard_files():
        board = load(path)
        queries = [(title, t["expr"]) for title, t in targets(board)]
        queries += [(f"${n}", label_values_to_promql(q)) for n, q in variable_queries(board)]
        for title, expr in queries:
            # A fallback keeps a stat at 0 instead of "No data"; test the real part.
            promql = substitute(expr).removesuffix(" or vector(0)")
            result = prometheus.query(promql)
            checked += 1
            if not finite_values(result) and not (title.startswith("$") and result):
                failures.append(f"{path.name}: {title}: {promql} -> {result}")
    assert checked > 60
    assert not failures, "queries without data:\n" + "\n".join(failures)


@pytest.mark.slow
def test_a_broken_query_is_reported_by_prometheus(
    live: tuple[PatchwatchServer, Prometheus],
) -> None:
    """The live check above can fail: Prometheus rejects bad PromQL, a typo finds nothing."""
    _, prometheus = live
    with pytest.raises(PromQLError, match="bad_data"):
        prometheus.query("sum(patchwatch_host_updates_pending")
    assert prometheus.query("patchwatch_host_updates_pendin") == []


@pytest.mark.slow
def test_alert_rules_evaluate_on_real_data(live: tuple[PatchwatchServer, Prometheus]) -> None:
    """Every rule expression is valid PromQL for this Prometheus and its series line up.

    The seeded fleet is meant to trip the host and mirror rules (before their ``for``);
    the service rules must evaluate without error and stay empty on a healthy server.
    """
    _, prometheus = live
    doc = require_yaml().safe_load(RULES.read_text())
    firing = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            if prometheus.query(rule["expr"]):
                firing.add(rule["alert"])
    assert firing == {
        "PatchwatchHostInMaintenance",
        "PatchwatchSecurityUpdatesPending",
        "PatchwatchHostRebootRequired",
        "PatchwatchHostNotReporting",
        "PatchwatchMirrorRefreshFailing",
        "PatchwatchJobFailing",
        "PatchwatchKnownExploitedVulnerabilityFixable",
        "PatchwatchCriticalVulnerabilityUnpatched",
        "PatchwatchVulnerabilityFeedFailing",
        "PatchwatchSecurityFeedFailing",
        "PatchwatchVulnerabilityFeedChanged",
    }
