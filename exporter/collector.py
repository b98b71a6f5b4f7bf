"""Read the store at scrape time and turn it into metric families.

Nothing is cached between scrapes: what Prometheus sees is what the database holds at
that moment. A database that cannot be read gives ``patchwatch_database_up 0`` and no
store-derived series, rather than a failed scrape. Every known host gets its samples,
zeros included, so "no updates" and "unknown" are never confused. Per-package detail
stays out (it lives in the API); labels are bounded by hosts, repositories and jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from peewee import Database
from peewee import PeeweeException
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import patchwatch
from patchwatch.queries import count_reports_by_state
from patchwatch.queries import load_host_rows
from patchwatch.queries import load_last_job_runs
from patchwatch.queries import load_mirror_rows

log = logging.getLogger(__name__)

REPORT_STATES = ("pending", "processing", "processed", "failed")


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


class StoreCollector(Collector):
    """Collect patchwatch's state from the database on each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        info = _gauge("patchwatch_build_info", "patchwatch version, always 1.", ["version"])
        info.add_metric([patchwatch.__version__], 1)
        yield info
        up = _gauge("patchwatch_database_up", "1 when the store could be read in this scrape.")
        try:
            with self.db.connection_context():
                families = list(self._store_families())
            up.add_metric([], 1)
        except (PeeweeException, OSError) as exc:
            log.warning("store unreadable during scrape: %s", type(exc).__name__)
            families = []
            up.add_metric([], 0)
        yield up
        yield from families
        duration = _gauge(
            "patchwatch_scrape_collect_duration_seconds",
            "Time spent reading the store for this scrape.",
        )
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def _store_families(self) -> Iterator[Metric]:
        yield from self._host_families()
        yield from self._report_families()
        yield from self._mirror_families()
        yield from self._job_families()

    def _host_families(self) -> Iterator[Metric]:
        host_info = _gauge(
            "patchwatch_host_info",
            "Host metadata as labels, always 1.",
            ["host", "os", "os_family", "arch", "kernel", "tags"],
        )
        pending = _gauge(
            "patchwatch_host_updates_pending",
            "Pending updates by kind; kinds are disjoint, so their sum is all updates.",
            ["host", "kind"],
        )
        reboot = _gauge(
            "patchwatch_host_reboot_required", "1 when the host needs a reboot.", ["host"]
        )
        last = _gauge(
            "patchwatch_host_last_report_timestamp_seconds",
            "When the host's last report was received.",
            ["host"],
        )
        oldest = _gauge(
            "patchwatch_host_oldest_security_update_first_seen_timestamp_seconds",
            "When the oldest pending security update of the host was first seen.",
            ["host"],
        )
        installed = _gauge(
            "patchwatch_host_packages_installed", "Packages installed on the host.", ["host"]
        )
        without_repo = _gauge(
            "patchwatch_host_packages_without_repository",
            "Installed packages that none of the host's repositories offers (absent until "
            "the host's repositories have been read).",
            ["host"],
        )
        maintenance = _gauge(
            "patchwatch_host_maintenance",
            "1 while an operator has put the host in maintenance (alerts may be silenced).",
            ["host"],
        )
        now = time.time()
        for h in load_host_rows():
            host_info.add_metric(
                [h.name, h.os, h.os_family, h.arch, h.kernel, h.tags.replace(" ", ",")], 1
            )
            pending.add_metric([h.name, "security"], h.security)
            pending.add_metric([h.name, "other"], h.other)
            reboot.add_metric([h.name], 1 if h.reboot_required else 0)
            if h.last_report_at is not None:
                last.add_metric([h.name], h.last_report_at)
            if h.oldest_security_first_seen is not None and h.security:
                oldest.add_metric([h.name], h.oldest_security_first_seen)
            installed.add_metric([h.name], h.packages)
            if h.packages_without_repository is not None:
                without_repo.add_metric([h.name], h.packages_without_repository)
            in_maintenance = h.maintenance_until is not None and h.maintenance_until > now
            maintenance.add_metric([h.name], 1 if in_maintenance else 0)
        yield from (host_info, pending, reboot, last, oldest, installed, without_repo, maintenance)

    def _report_families(self) -> Iterator[Metric]:
        stored = _gauge(
            "patchwatch_reports_stored",
            "Raw reports kept in the store, by processing state.",
            ["state"],
        )
        counts = count_reports_by_state()
        for state in sorted(set(REPORT_STATES) | set(counts)):
            stored.add_metric([state], counts.get(state, 0))
        yield stored

    def _mirror_families(self) -> Iterator[Metric]:
        labels = ["repository", "mirror"]
        attempt = _gauge(
            "patchwatch_mirror_last_refresh_attempt_timestamp_seconds",
            "When the mirror was last fetched, successfully or not.",
            labels,
        )
        success = _gauge(
            "patchwatch_mirror_last_refresh_success_timestamp_seconds",
            "When the mirror was last fetched successfully.",
            labels,
        )
        failures = CounterMetricFamily(
            "patchwatch_mirror_refresh_failures",
            "Failed refreshes of the mirror since it was first seen.",
            labels=labels,
        )
        consecutive = _gauge(
            "patchwatch_mirror_consecutive_failures",
            "Failed refreshes since the last success (0 when healthy).",
            labels,
        )
        packages = _gauge(
            "patchwatch_mirror_packages", "Packages in the mirror's last good index.", labels
        )
        for m in load_mirror_rows():
            key = [m.repository, m.url]
            if m.last_attempt_at is not None:
                attempt.add_metric(key, m.last_attempt_at)
            if m.last_success_at is not None:
                success.add_metric(key, m.last_success_at)
            failures.add_metric(key, m.failures_total)
            consecutive.add_metric(key, m.consecutive_failures)
            packages.add_metric(key, m.packages)
        yield from (attempt, success, failures, consecutive, packages)

    def _job_families(self) -> Iterator[Metric]:
        last_success = _gauge(
            "patchwatch_job_last_success_timestamp_seconds",
            "When the job last finished successfully.",
            ["name"],
        )
        last_ok = _gauge(
            "patchwatch_job_last_run_success", "1 when the job's last run succeeded.", ["name"]
        )
        duration = _gauge(
            "patchwatch_job_last_run_duration_seconds", "Duration of the job's last run.", ["name"]
        )
        for job, run in sorted(load_last_job_runs().items()):
            if run["last_success_at"] is not None:
                last_success.add_metric([job], float(run["last_success_at"]))  # type: ignore[arg-type]
            last_ok.add_metric([job], 1 if run["outcome"] == "success" else 0)
            if run["duration"] is not None:
                duration.add_metric([job], float(run["duration"]))  # type: ignore[arg-type]
        yield from (last_success, last_ok, duration)
