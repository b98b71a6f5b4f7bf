"""docs/monitoring.md's metric tables list exactly what the exporter serves.

As the README's settings table is tied to the settings, the metric tables are tied to
the collectors: every family the server's registry and the receiver's counters produce
is documented, and nothing documented is missing from them.
"""

from __future__ import annotations

import re
import time

import pytest

from patchwatch.exporter.app import make_registry
from patchwatch.receiver.metrics import PROCESSING_SECONDS
from patchwatch.receiver.metrics import PROCESSOR_RESTARTS
from patchwatch.receiver.metrics import REPORT_BYTES
from patchwatch.receiver.metrics import REPORTS_RECEIVED
from patchwatch.store.db import database
from patchwatch.store.host_counts import recount
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Repository
from patchwatch.store.security_feeds import SecurityFeed
from patchwatch.store.vuln_models import Vulnerability
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnSource
from patchwatch.store.vulns import FindingRow
from patchwatch.store.vulns import save_set
from patchwatch.store.vulns import vulnerability_meta
from tests.support.paths import ROOT

MONITORING = ROOT / "docs" / "monitoring.md"


def documented_metrics() -> dict[str, set[str] | None]:
    """Metric names in the first column of the tables under "## Metrics", with the
    labels written after them (None where the table gives none)."""
    text = MONITORING.read_text()
    section = text[text.index("## Metrics") : text.index("### Coming from node_exporter")]
    names: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for name, labels in re.findall(r"`([a-z_:]+)(\{[^}]*\})?`", first_cell):
            names[name] = set(labels.strip("{}").split(",")) if labels else None
    return names


def exported_metrics(db: object) -> dict[str, set[str]]:
    """Sample names (counters with ``_total``) of every family the server exports, with
    the labels of their samples (histograms' ``le`` left out)."""
    families = list(make_registry(db).collect())  # type: ignore[arg-type]
    REPORTS_RECEIVED.labels("patchwatch/1", "accepted")
    for metric in (REPORTS_RECEIVED, REPORT_BYTES, PROCESSING_SECONDS, PROCESSOR_RESTARTS):
        families.extend(metric.collect())
    return {
        (f.name + "_total" if f.type == "counter" else f.name): {
            label for sample in f.samples for label in sample.labels if label != "le"
        }
        for f in families
    }


def _seed() -> None:
    """One of everything that has labels, so that every family has a sample."""
    now = time.time()
    host = Host.create(name="web-1", tags="prod", created_at=now, last_report_at=now,
                       packages_without_repository=0, reverse_dns_check=True,
                       reverse_dns_status="match", reboot_reported=False,
                       updates_complete=True, updates_computed_at=now,
                       inputs_changed_at=now, updates_inputs_at=now)  # fmt: skip
    old = Package.create(kind="deb", name="a", version="1", arch="amd64")
    new = Package.create(kind="deb", name="a", version="2", arch="amd64")
    HostUpdate.create(host=host, installed=old, available=new, security=True, first_seen_at=now)
    recount(database)  # written directly: counted as the update computation counts them
    repo = Repository.create(kind="deb", key="deb http://m/debian bookworm main", created_at=now)
    Mirror.create(repository=repo, url="http://m/debian", last_attempt_at=now,
                  last_success_at=now, skipped_packages=0)  # fmt: skip
    JobRun.create(job="prune", started_at=now, finished_at=now, duration_seconds=0.1,
                  outcome="success")  # fmt: skip
    SecurityFeed.create(name="arch_tracker", last_attempt_at=now, last_success_at=now,
                        fixes=1, skipped=0)  # fmt: skip
    VulnSource.create(name="osv:Debian:12", last_attempt_at=now, last_success_at=now,
                      records=1, skipped=0)  # fmt: skip
    Vulnerability.create(id="CVE-2023-4911", severity="high", published=now, kev=True)
    pset = PackageSet.create(digest="0" * 64, size=0, created_at=now)
    found = [FindingRow("CVE-2023-4911", "glibc", "2.36-9", "fixable", "2.36-9+deb12u3")]
    vs = save_set(pset.id, None, "Debian:12", "", now, found, vulnerability_meta())
    VulnHost.create(host=host, vuln_set=vs, ecosystem="Debian:12", computed_at=now)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_metric_tables_match_what_the_exporter_serves(db) -> None:
    _seed()
    documented = documented_metrics()
    exported = exported_metrics(db)
    assert "patchwatch_host_updates_pending" in exported and "process_cpu_seconds_total" in exported
    assert set(exported) - set(documented) == set(), "exported but not in docs/monitoring.md"
    assert set(documented) - set(exported) == set(), "in docs/monitoring.md but not exported"
    for name, labels in documented.items():
        if labels is not None:  # written with its labels: they are the ones it has
            assert labels == exported[name], name
