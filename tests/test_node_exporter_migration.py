"""Moving from node_exporter's textfile scripts: `host` meets `instance`, for real.

Debian's prometheus-node-exporter runs on loopback with its uname and textfile
collectors, the textfile holding what ``apt_info.py`` writes for this machine;
``patchwatch serve`` has a host named as the node_exporter's ``uname -n`` with the
same counts; Debian's Prometheus scrapes both, with the relabelling of docs/monitoring.md
on a second patchwatch job and alerts/node-exporter-compat.rules.yml loaded. The
join and the relabelling are the very snippets of docs/monitoring.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.monitoring import PatchwatchServer
from tests.support.monitoring import Process
from tests.support.monitoring import Prometheus
from tests.support.monitoring import seed_host
from tests.support.monitoring import store
from tests.support.paths import ROOT
from tests.support.tools import ORACLES_ENV
from tests.support.tools import require_or_skip
from tests.support.tools import require_tool
from tests.support.tools import require_yaml
from tests.support.web import wait_until

pytestmark = pytest.mark.slow

MONITORING = ROOT / "docs" / "monitoring.md"
COMPAT_RULES = ROOT / "alerts" / "node-exporter-compat.rules.yml"
# as apt_info.py (node-exporter-textfile-collector-scripts) writes it
APT_PROM = """\
# HELP apt_upgrades_pending Apt packages pending updates by origin.
# TYPE apt_upgrades_pending gauge
apt_upgrades_pending{origin="Debian:bookworm-security/bookworm-security",arch="amd64"} 2
apt_upgrades_pending{origin="Debian:bookworm/bookworm",arch="amd64"} 3
# HELP apt_upgrades_held Apt packages pending updates but held back.
# TYPE apt_upgrades_held gauge
# HELP apt_autoremove_pending Apt packages pending autoremoval.
# TYPE apt_autoremove_pending gauge
apt_autoremove_pending 0
# HELP node_reboot_required Node reboot is required for software updates.
# TYPE node_reboot_required gauge
node_reboot_required 1
"""


def documented(marker: str) -> str:
    """The fenced block after ``<!-- tested: MARKER -->`` in docs/monitoring.md."""
    text = MONITORING.read_text()
    after = text[text.index(f"<!-- tested: {marker} -->") :]
    match = re.search(r"```[a-z]*\n(.*?)```", after, re.S)
    assert match is not None
    return match.group(1)


NODENAME = "web-1.example.com"  # the node_exporter's `uname -n`, and the patchwatch host


class NodeExporter(Process):
    """Debian's node_exporter on a host named :data:`NODENAME`: in a UTS namespace of
    its own (``unshare -u``), so that its ``node_uname_info`` does not depend on the
    name of the machine the tests run on."""

    def start(self, textfiles: Path) -> None:
        unshare = shutil.which("unshare")
        if unshare is None or subprocess.run([unshare, "-u", "true"], check=False).returncode:
            require_or_skip(ORACLES_ENV, "unshare -u is not available (util-linux, root)")
        rename_then_exec = (
            "import os, socket, sys; socket.sethostname(sys.argv[1]); "
            "os.execv(sys.argv[2], sys.argv[2:])"
        )
        self.spawn([
            str(unshare), "-u", sys.executable, "-c", rename_then_exec, NODENAME,
            require_tool("prometheus-node-exporter"), f"--web.listen-address={self.address}",
            "--collector.disable-defaults", "--collector.uname", "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
        ])  # fmt: skip
        self.wait_ready("/metrics")


def value(result: list[dict[str, Any]]) -> float:
    (series,) = result
    return float(series["value"][1])


def test_host_meets_instance_by_join_recording_rules_and_relabelling(tmp_path: Path) -> None:
    yaml = require_yaml()
    require_tool("prometheus")
    host = NODENAME
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    (textfiles / "apt.prom").write_text(APT_PROM)
    server = PatchwatchServer(tmp_path / "pw")
    node = NodeExporter(tmp_path / "node", "node_exporter")
    relabel = yaml.safe_load(documented("relabel"))[0]["metric_relabel_configs"]
    prometheus = Prometheus(tmp_path / "prom", [server.address],
                            rules=yaml.safe_load(COMPAT_RULES.read_text()))  # fmt: skip
    node_job = {"job_name": "node", "static_configs": [{"targets": [node.address]}]}
    config = yaml.safe_load(prometheus.config_path.read_text())
    config["scrape_configs"].append(node_job)
    prometheus.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # a second Prometheus whose patchwatch job is relabelled as the docs say
    relabelling = Prometheus(tmp_path / "prom2", [server.address])
    config = yaml.safe_load(relabelling.config_path.read_text())
    config["scrape_configs"][0]["metric_relabel_configs"] = relabel
    config["scrape_configs"].append(node_job)
    relabelling.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        server.start()
        now = time.time()
        with store(server.db_url):
            seed_host(host, now, security_ages_days=(1, 1), other_updates=3, reboot=True,
                      tags="prod web")  # fmt: skip
            seed_host("web-2.example.com", now, other_updates=1, tags="web")
        node.start(textfiles)
        prometheus.start()
        relabelling.start()

        def scraped(prom: Prometheus) -> bool:
            return {s["metric"]["job"] for s in prom.query("up == 1")} == {"node", "patchwatch"}

        for prom in (prometheus, relabelling):
            wait_until(lambda p=prom: scraped(p), 30, f"both jobs scraped\n{prom.log_tail()}")
        ours = {"instance": node.address}

        # the join of docs/monitoring.md: patchwatch's count under node_exporter's instance
        joined = wait_until(lambda: prometheus.query(documented("join")), 20, "the join")
        assert [s["metric"] for s in joined] == [{"host": host, **ours}]
        apt = value(prometheus.query(f'sum(apt_upgrades_pending{{instance="{node.address}"}})'))
        assert value(joined) == apt == 5

        # the shipped recording rules: the same numbers as the textfile metrics
        def recorded(name: str) -> list[dict[str, Any]]:
            return prometheus.query(f'{name}{{instance="{node.address}"}}')

        pending = wait_until(lambda: recorded("instance:patchwatch_host_updates_pending:sum"),
                             20, "the recording rules evaluated")  # fmt: skip
        assert value(pending) == apt
        assert pending[0]["metric"]["host"] == host
        assert value(recorded("instance:patchwatch_host_security_updates_pending:sum")) == 2
        reboot = value(recorded("instance:patchwatch_host_reboot_required:max"))
        assert reboot == value(prometheus.query("node_reboot_required")) == 1
        assert prometheus.query('instance:patchwatch_host_updates_pending:sum{host="web-2"}') == []

        # the relabelling of docs/monitoring.md: instance is the host's node_exporter
        # target; the server's own series keep the patchwatch target's
        relabelled = relabelling.query("patchwatch_host_reboot_required")
        assert {s["metric"]["host"]: s["metric"]["instance"] for s in relabelled} == {
            host: f"{host}:9100", "web-2.example.com": "web-2.example.com:9100"}  # fmt: skip
        assert relabelling.query(f'node_uname_info{{nodename="{host}"}}')  # one name, two places
        up = relabelling.query('up{job="patchwatch"}')
        assert [s["metric"]["instance"] for s in up] == [server.address]
        assert [s["metric"]["instance"] for s in relabelling.query("patchwatch_database_up")] == [
            server.address]  # fmt: skip

        # tags as a matcher, not a regex on a joined label
        prod = prometheus.query(
            'patchwatch_host_reboot_required == 1 and on (host) patchwatch_host_tag{tag="prod"}'
        )
        assert [s["metric"]["host"] for s in prod] == [host]
    finally:
        relabelling.stop()
        prometheus.stop()
        node.stop()
        server.stop()
