"""Alert rules and the example Alertmanager configuration, checked by the real tools.

promtool (Debian's prometheus package) checks the rules and runs the unit tests in
alerts/tests/, which must show every alert both firing and staying quiet; amtool
(prometheus-alertmanager) checks the example configuration and resolves its routes.
The conventions (names, severities, annotations, a runbook section per alert) are
checked here in plain Python. A missing promtool or amtool skips with the reason, or
fails when ``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT
from tests.support.tools import require_tool
from tests.support.tools import require_yaml

ALERTS = ROOT / "alerts"
RULES = ALERTS / "patchwatch.rules.yml"
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))
ALERTMANAGER = ALERTS / "alertmanager.example.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"info", "warning", "critical"}


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    doc = require_yaml().safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules_passes() -> None:
    out = run(require_tool("promtool"), "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_promtool_check_rules_passes_on_the_node_exporter_recording_rules() -> None:
    out = run(
        require_tool("promtool"), "check", "rules", str(ALERTS / "node-exporter-compat.rules.yml")
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS
    out = run(require_tool("promtool"), "test", "rules", *map(str, UNIT_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests are not vacuous: moving one threshold by a day breaks them."""
    promtool = require_tool("promtool")
    shutil.copytree(ALERTS, tmp_path / "alerts")
    rules = tmp_path / "alerts" / "patchwatch.rules.yml"
    text = rules.read_text()
    assert "> 7 * 86400" in text
    rules.write_text(text.replace("> 7 * 86400", "> 8 * 86400"))
    out = run(promtool, "test", "rules", "hosts.test.yml", cwd=tmp_path / "alerts" / "tests")
    assert out.returncode == 1
    assert "PatchwatchSecurityUpdatesPending" in out.stdout + out.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    yaml = require_yaml()
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        files = (["../patchwatch.rules.yml"], ["../node-exporter-compat.rules.yml"])
        assert doc["rule_files"] in files, path.name
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_alerts_follow_the_conventions() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "one rule per alert name"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Patchwatch(?:[A-Z][a-z]+)+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        # an alert about one host or one mirror links its page in the web console
        expected = {"summary", "description", "runbook_url"}
        if "$labels.host" in annotations["description"]:
            expected.add("console_url")
            assert "/ui/hosts/{{ $labels.host }}" in annotations["console_url"], name
        if "$labels.mirror" in annotations["description"]:
            expected.add("console_url")
            assert "/ui/mirrors?url={{ $labels.mirror | urlquery }}" in annotations["console_url"]
        assert set(annotations) == expected, name
        assert annotations["summary"].endswith("."), name
        assert annotations["runbook_url"].endswith(f"/docs/runbook.md#{name.lower()}"), name


def test_every_alert_has_a_runbook_section_and_no_section_is_orphaned() -> None:
    headings = re.findall(r"^## (\S+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert sorted(headings) == sorted(rule["alert"] for rule in alert_rules())


def test_amtool_accepts_the_example_configuration() -> None:
    out = run(require_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "PatchwatchDatabaseDown", "severity": "critical"}, "ops-pager"),
        ({"alertname": "PatchwatchExporterDown", "severity": "critical"}, "ops-pager"),
        (
            {"alertname": "PatchwatchSecurityUpdatesPending", "severity": "warning"},
            "patching-team",
        ),
        ({"alertname": "PatchwatchHostRebootRequired", "severity": "warning"}, "patching-team"),
        ({"alertname": "PatchwatchMirrorRefreshFailing", "severity": "warning"}, "ops-tickets"),
        ({"alertname": "PatchwatchHostInMaintenance", "severity": "info"}, "blackhole"),
    ],
)
def test_example_routes_by_severity(labels: dict[str, str], receiver: str) -> None:
    amtool = require_tool("amtool")
    pairs = [f"{k}={v}" for k, v in labels.items()]
    out = run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}", *pairs,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver


def test_example_configuration_names_only_alerts_that_exist() -> None:
    """Routes and inhibitions name alerts by regex; a renamed alert must not slip by."""
    known = {rule["alert"] for rule in alert_rules()}
    text = ALERTMANAGER.read_text()
    mentioned = set(re.findall(r"\bPatchwatch[A-Za-z]+\b", text))
    assert mentioned, "the example should route and inhibit patchwatch alerts"
    assert mentioned - known == set()
    config = require_yaml().safe_load(text)
    assert config["inhibit_rules"], "the example must show inhibitions"
    assert any("host" in rule.get("equal", []) for rule in config["inhibit_rules"])
    assert config["time_intervals"], "the example must show a clock-based maintenance mute"
