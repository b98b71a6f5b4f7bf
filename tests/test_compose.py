"""The docker stack's files, checked as far as this machine can without a Docker engine.

``docker-compose config`` (Debian's docker-compose 1.29) validates and resolves the
compose file; promtool validates the Prometheus configuration; the Dockerfile and the
Grafana provisioning are checked against the repository they refer to. Nothing here
builds an image or starts a container (docker/README.md says what was and was not run).
A missing docker-compose or promtool skips with the reason, or fails when
``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.tools import ORACLES_ENV
from tests.support.tools import require_or_skip
from tests.support.tools import require_tool
from tests.support.tools import require_yaml

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
PROMETHEUS = DOCKER / "prometheus.yml"
PROVISIONING = DOCKER / "grafana" / "provisioning"


def compose_config() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors, defaults, paths)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        require_or_skip(
            ORACLES_ENV, "docker-compose not found (Debian: apt-get install docker-compose)"
        )
    out = subprocess.run(
        [str(binary), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no POSTGRES_PASSWORD etc.: the defaults apply
    )
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    return dict(require_yaml().safe_load(out.stdout))


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (named volumes skipped)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def test_compose_file_validates_and_has_the_whole_stack() -> None:
    config = compose_config()
    services = config["services"]
    assert set(services) == {
        "postgres",
        "receiver",
        "scheduler",
        "exporter",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    for name in ("receiver", "scheduler", "exporter"):
        service = services[name]
        assert service["command"] == [name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert Path(service["build"]["context"]) == ROOT
        url = service["environment"]["PATCHWATCH_DATABASE_URL"]
        assert url.startswith("postgresql://patchwatch:") and url.endswith(
            "@postgres:5432/patchwatch"
        )
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    # `disable: true`, which docker-compose normalises to the "NONE" test
    assert services["scheduler"]["healthcheck"].get("test") == ["NONE"]
    assert "test" in services["postgres"]["healthcheck"]


def test_compose_mounts_exist_and_feed_prometheus_and_grafana() -> None:
    services = compose_config()["services"]
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    prometheus = bind_mounts(services["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    assert prometheus["/etc/prometheus/alerts"] == ROOT / "alerts"
    alertmanager = bind_mounts(services["alertmanager"])
    assert alertmanager["/etc/alertmanager/alertmanager.yml"] == ROOT / "alerts" / (
        "alertmanager.example.yml"
    )
    grafana = bind_mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == PROVISIONING
    dashboards_target = next(t for t, s in grafana.items() if s == ROOT / "grafana" / "dashboards")

    yaml = require_yaml()
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "patchwatch.yml").read_text())
    assert [p["options"]["path"] for p in provider["providers"]] == [dashboards_target]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "patchwatch.yml").read_text())
    default = [d for d in sources["datasources"] if d.get("isDefault")]
    assert [(d["type"], d["url"]) for d in default] == [("prometheus", "http://prometheus:9090")]


def test_prometheus_configuration_is_valid_and_loads_the_rules() -> None:
    out = subprocess.run(
        [require_tool("promtool"), "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    config = require_yaml().safe_load(PROMETHEUS.read_text())
    # The rules are mounted at /etc/prometheus/alerts: the glob must match files there.
    patterns = [Path(p) for p in config["rule_files"]]
    assert [p.parent for p in patterns] == [Path("/etc/prometheus/alerts")]
    assert list((ROOT / "alerts").glob(patterns[0].name))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert all(name.startswith("patchwatch") for name in jobs if "8740" in str(jobs[name]))
    assert not any(job.get("honor_labels") for job in jobs.values())


def test_receiver_scrape_keeps_its_counters_and_drops_the_store_series() -> None:
    """The receiver's /metrics repeats the store's series: only the exporter job keeps them."""
    config = require_yaml().safe_load(PROMETHEUS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "patchwatch-receiver")
    (rule,) = job["metric_relabel_configs"]
    assert rule["action"] == "keep" and rule["source_labels"] == ["__name__"]
    keep = re.compile(f"^(?:{rule['regex']})$")  # Prometheus anchors relabel regexes
    for name in (
        "patchwatch_reports_received_total",
        "patchwatch_report_size_bytes_bucket",
        "patchwatch_report_processing_duration_seconds_count",
        "patchwatch_database_up",
        "process_resident_memory_bytes",
    ):
        assert keep.match(name), name
    for name in (
        "patchwatch_host_info",
        "patchwatch_host_updates_pending",
        "patchwatch_mirror_packages",
        "patchwatch_job_last_run_success",
        "patchwatch_reports_stored",
    ):
        assert not keep.match(name), name


def dockerfile_stages() -> list[list[str]]:
    """Instructions per build stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    final = dockerfile_stages()[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (healthcheck,) = [line for line in final if line.upper().startswith("HEALTHCHECK ")]
    assert "/healthz" in healthcheck
    entrypoint = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    assert entrypoint == ['ENTRYPOINT ["patchwatch"]']
    assert 'CMD ["serve"]' in final


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    build = dockerfile_stages()[0]
    copied = set()
    for line in build:
        if line.upper().startswith("COPY ") and "--from" not in line:
            sources = line.split()[1:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
                copied.add(source)
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    includes = setup["options.packages.find"]["include"].split()
    packages = {name for name in includes if "." not in name and "*" not in name}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    # the folders patchwatch/ links to (services installed as patchwatch.*, assets)
    linked = {
        link.resolve().relative_to(ROOT).as_posix()
        for folder in (ROOT / "patchwatch", ROOT / "patchwatch" / "assets")
        for link in folder.iterdir()
        if link.is_symlink()
    }
    assert {"receiver", "cli", "agent", "alerts", "deploy"} <= linked
    assert linked <= copied, f"linked but not copied into the image: {linked - copied}"
    assert {"setup.cfg", "pyproject.toml", "README.md"} <= copied
