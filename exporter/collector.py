"""Read the store at scrape time and turn it into metric families.

Nothing is cached between scrapes: what Prometheus sees is what the database holds at
that moment. A database that cannot be read gives ``patchwatch_database_up 0`` and no
store-derived series, rather than a failed scrape. "Nothing pending" and "unknown" are
never confused: a host whose updates are known gets its zeros, a host whose updates
are not (never computed, or computed without the data of one of its repositories) gets
no update series at all, nor a reboot flag when nothing says anything about it, and a
mirror that never succeeded no package count. Per-package detail stays out (it lives in
the API); labels are bounded by hosts, repositories and jobs.

The per-host families, about eleven series a host and nearly all of a scrape, are read
with one query into plain tuples and handed out as
:class:`patchwatch.exporter.exposition.RowFamily`, which the ``/metrics`` app writes as
text itself; the few other families are ordinary prometheus_client families.

A scrape may ask for one shard of the fleet (:data:`SCRAPE_SHARD`,
:mod:`patchwatch.domain.shards`): the per-host families then hold that shard's hosts,
read from the database with the shard's condition, and the fleet-level families
(build info, reports, mirrors, jobs) come in shard 0 only. Every shard has its own
``patchwatch_database_up`` and ``patchwatch_scrape_collect_duration_seconds``: they
describe the scrape, not the fleet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

from peewee import Database
from peewee import PeeweeException
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import patchwatch
from patchwatch.domain.reboot import reboot_required
from patchwatch.domain.shards import Shard
from patchwatch.domain.shards import shard_of
from patchwatch.exporter.exposition import Row
from patchwatch.exporter.exposition import RowFamily
from patchwatch.store import rdns
from patchwatch.store.queries import HOST_TUPLE_FIELDS
from patchwatch.store.queries import as_flag
from patchwatch.store.queries import count_reports_by_state
from patchwatch.store.queries import load_host_tags
from patchwatch.store.queries import load_host_tuples
from patchwatch.store.queries import load_last_job_runs
from patchwatch.store.queries import load_mirror_rows
from patchwatch.store.security_feeds import SecurityFeed
from patchwatch.store.shards import HostSelection
from patchwatch.store.shards import shard_hosts
from patchwatch.store.vulns import scrape_rows

log = logging.getLogger(__name__)

REPORT_STATES = ("pending", "processed", "failed")

# The shard the scrape being answered asks for; None: the whole fleet. Set by the
# ``/metrics`` app around one collection (a registry's ``collect`` takes no arguments),
# per thread and per request, since each request runs in its own context.
SCRAPE_SHARD: ContextVar[Shard | None] = ContextVar("patchwatch_scrape_shard", default=None)

# The families that are not per host yet belong in every shard: they say how this
# scrape went. Every other non-per-host family is in shard 0 only.
PER_SCRAPE_FAMILIES = frozenset(
    {"patchwatch_database_up", "patchwatch_scrape_collect_duration_seconds"}
)


def in_every_shard(family: Metric) -> bool:
    """Whether ``family`` belongs in a shard other than 0: a per-host family (already
    holding that shard's hosts) or one of :data:`PER_SCRAPE_FAMILIES`."""
    return isinstance(family, RowFamily) or family.name in PER_SCRAPE_FAMILIES


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


class _Fetched(Protocol):
    """What the store keeps of every source read over the network (mirror, feed)."""

    @property
    def last_attempt_at(self) -> float | None: ...
    @property
    def last_success_at(self) -> float | None: ...
    @property
    def failures_total(self) -> int: ...
    @property
    def consecutive_failures(self) -> int: ...


class _FetchHealth:
    """The four series of a source read over the network (a mirror, a vulnerability
    feed), so that every such source is exposed by one rule, which alerts and dashboards
    rely on: a time not reached yet is absent (unknown), never 0; the failure counts are
    always there. Each argument after ``labels`` is a family's (name, help)."""

    def __init__(
        self,
        labels: list[str],
        attempt: tuple[str, str],
        success: tuple[str, str],
        failures: tuple[str, str],
        consecutive: tuple[str, str],
    ) -> None:
        self.attempt = _gauge(*attempt, labels)
        self.success = _gauge(*success, labels)
        self.failures = CounterMetricFamily(*failures, labels=labels)
        self.consecutive = _gauge(*consecutive, labels)

    def add(self, key: list[str], row: _Fetched) -> None:
        if row.last_attempt_at is not None:
            self.attempt.add_metric(key, row.last_attempt_at)
        if row.last_success_at is not None:
            self.success.add_metric(key, row.last_success_at)
        self.failures.add_metric(key, row.failures_total)
        self.consecutive.add_metric(key, row.consecutive_failures)

    def families(self) -> tuple[Metric, ...]:
        return (self.attempt, self.success, self.failures, self.consecutive)


def _feed_health(prefix: str, what: str) -> _FetchHealth:
    """The fetch-health families of a kind of feed (vulnerability feeds, security feeds),
    labelled ``feed``."""
    return _FetchHealth(
        ["feed"],
        (f"{prefix}_last_attempt_timestamp_seconds",
         f"When the {what} was last read, successfully or not."),
        (f"{prefix}_last_success_timestamp_seconds",
         f"When the {what} was last read successfully (changed or not)."),
        (f"{prefix}_failures", f"Failed reads of the {what} since it was first read."),
        (f"{prefix}_consecutive_failures",
         f"Failed reads of the {what} since its last success (0 when healthy)."),
    )  # fmt: skip


class StoreCollector(Collector):
    """Collect patchwatch's state from the database on each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        shard = SCRAPE_SHARD.get()
        fleet = shard is None or shard.has_fleet
        if fleet:
            info = _gauge("patchwatch_build_info", "patchwatch version, always 1.", ["version"])
            info.add_metric([patchwatch.__version__], 1)
            yield info
        up = _gauge("patchwatch_database_up", "1 when the store could be read in this scrape.")
        try:
            with self.db.connection_context():
                families = list(self._store_families(shard))
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

    def _store_families(self, shard: Shard | None) -> Iterator[Metric]:
        hosts = shard_hosts(shard) if shard is not None else None
        yield from self._host_families(hosts)
        yield from self._tag_families(hosts)
        yield from self._reverse_dns_families(hosts)
        if shard is None or shard.has_fleet:
            yield from self._report_families()
            yield from self._mirror_families()
            yield from self._security_feed_families()
            yield from self._job_families()
        yield from self._vuln_families(shard)

    def _host_families(self, selection: HostSelection | None) -> Iterator[Metric]:
        """The per-host families: about eleven samples a host, most of a scrape.

        They are :class:`RowFamily` families, filled from the plain tuples of one query:
        the exporter's fast path writes them as text without building a prometheus_client
        ``Sample`` per series, and anything else reading them still gets the samples.
        """
        rows = load_host_tuples(selection)
        # by name, as HostRow declares the columns: a new one needs no edit here
        column = dict(
            zip(
                HOST_TUPLE_FIELDS,
                zip(*rows, strict=True) if rows else [()] * len(HOST_TUPLE_FIELDS),
                strict=True,
            )
        )
        names, os_names, os_families = column["name"], column["os"], column["os_family"]
        arches, kernels, tags = column["arch"], column["kernel"], column["tags"]
        reboots_reported, reboots_kernel = column["reboot_reported"], column["reboot_kernel"]
        last_reports, packages = column["last_report_at"], column["packages"]
        security, other, held = column["security"], column["other"], column["held"]
        oldest_security = column["oldest_security_first_seen"]
        maintenance_until = column["maintenance_until"]
        orphans = column["packages_without_repository"]
        complete, computed_at = column["updates_complete"], column["updates_computed_at"]
        inputs_changed_at, checked = column["inputs_changed_at"], column["check_updates"]
        # known: computed with the data of every repository the server can read
        known = [
            bool(done) and at is not None for done, at in zip(complete, computed_at, strict=True)
        ]
        # One list comprehension per family over the columns: about half the time of
        # one loop appending to nine lists (docs/performance.md).
        hosts = [(name,) for name in names]
        info: list[Row] = [
            ((name, os_name, family, arch, kernel, tag.replace(" ", ",")), 1)
            for name, os_name, family, arch, kernel, tag in zip(
                names, os_names, os_families, arches, kernels, tags, strict=True
            )
        ]
        pending: list[Row] = [
            row
            for name, sec, oth, hld, ok in zip(names, security, other, held, known, strict=True)
            if ok
            for row in (((name, "security"), sec), ((name, "other"), oth), ((name, "held"), hld))
        ]
        reboot: list[Row] = [
            (host, 1 if flag else 0)
            for host, reported, kernel in zip(hosts, reboots_reported, reboots_kernel, strict=True)
            if (flag := reboot_required(as_flag(reported), as_flag(kernel))) is not None
        ]
        computed: list[Row] = [
            (host, at) for host, at, ok in zip(hosts, computed_at, known, strict=True) if ok
        ]
        changed: list[Row] = [  # none where checks are off: nothing is due there
            (host, at)
            for host, at, check in zip(hosts, inputs_changed_at, checked, strict=True)
            if at is not None and check
        ]
        last: list[Row] = [
            (host, at) for host, at in zip(hosts, last_reports, strict=True) if at is not None
        ]
        oldest: list[Row] = [
            (host, at)
            for host, at, sec, ok in zip(hosts, oldest_security, security, known, strict=True)
            if at is not None and sec and ok
        ]
        installed: list[Row] = list(zip(hosts, packages, strict=True))
        without_repo: list[Row] = [
            (host, n) for host, n in zip(hosts, orphans, strict=True) if n is not None
        ]
        now = time.time()
        maintenance: list[Row] = [
            (host, 1 if until is not None and until > now else 0)
            for host, until in zip(hosts, maintenance_until, strict=True)
        ]
        yield RowFamily(
            "patchwatch_host_info",
            "Host metadata as labels, always 1.",
            ["host", "os", "os_family", "arch", "kernel", "tags"],
            info,
        )
        yield RowFamily(
            "patchwatch_host_updates_pending",
            "Pending updates by kind (security, other, held: of packages on hold, which an "
            "upgrade leaves alone); kinds are disjoint, so their sum is all updates "
            "(absent while the host's updates are unknown).",
            ["host", "kind"],
            pending,
        )
        yield RowFamily(
            "patchwatch_host_updates_computed_timestamp_seconds",
            "When the host's pending updates were last computed with the data of every "
            "repository it uses (absent while they are unknown).",
            ["host"],
            computed,
        )
        yield RowFamily(
            "patchwatch_host_updates_inputs_changed_timestamp_seconds",
            "When a report last changed what the host's updates are computed from "
            "(packages, repositories, kernel, OS); newer than the computation: stale "
            "(absent while the host's update checks are off).",
            ["host"],
            changed,
        )
        yield RowFamily(
            "patchwatch_host_reboot_required",
            "1 when the host needs a reboot: its own signal or a newer kernel installed "
            "(absent when neither says anything).",
            ["host"],
            reboot,
        )
        yield RowFamily(
            "patchwatch_host_last_report_timestamp_seconds",
            "When the host's last report was received.",
            ["host"],
            last,
        )
        yield RowFamily(
            "patchwatch_host_oldest_security_update_first_seen_timestamp_seconds",
            "When the oldest pending security update of the host was first seen.",
            ["host"],
            oldest,
        )
        yield RowFamily(
            "patchwatch_host_packages_installed",
            "Packages installed on the host.",
            ["host"],
            installed,
        )
        yield RowFamily(
            "patchwatch_host_packages_without_repository",
            "Installed packages that none of the host's repositories offers (absent until "
            "the host's repositories have been read).",
            ["host"],
            without_repo,
        )
        yield RowFamily(
            "patchwatch_host_maintenance",
            "1 while an operator has put the host in maintenance (alerts may be silenced).",
            ["host"],
            maintenance,
        )

    def _tag_families(self, hosts: HostSelection | None) -> Iterator[Metric]:
        """``patchwatch_host_tag{host,tag}``: one series per tag, so that a matcher
        (``{tag="prod"}``) selects hosts, instead of a regex on a comma-joined label.

        Bounded: a report carries at most 64 tags (``patchwatch.domain.reports``).
        """
        rows: list[Row] = [((host, tag), 1) for host, tag in load_host_tags(hosts)]
        yield RowFamily(
            "patchwatch_host_tag",
            "1 for each tag of the host; join on host to select hosts by tag.",
            ["host", "tag"],
            rows,
        )

    def _reverse_dns_families(self, hosts: HostSelection | None) -> Iterator[Metric]:
        """``patchwatch_host_reverse_dns_match{host}``: only for hosts with the reverse
        DNS check on and a definite answer (``patchwatch.store.rdns``); absent otherwise,
        never a 0 for "not checked" or "the resolver did not answer"."""
        rows: list[Row] = [((host,), match) for host, match in rdns.match_rows(hosts)]
        yield RowFamily(
            "patchwatch_host_reverse_dns_match",
            "1 when the host's reporting address resolves back to its name, 0 when it "
            "resolves to another name or to none (hosts with the reverse DNS check on).",
            ["host"],
            rows,
        )

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
        health = _FetchHealth(
            labels,
            ("patchwatch_mirror_last_refresh_attempt_timestamp_seconds",
             "When the mirror was last fetched, successfully or not."),
            ("patchwatch_mirror_last_refresh_success_timestamp_seconds",
             "When the mirror was last fetched successfully."),
            ("patchwatch_mirror_refresh_failures",
             "Failed refreshes of the mirror since it was first seen."),
            ("patchwatch_mirror_consecutive_failures",
             "Failed refreshes since the last success (0 when healthy)."),
        )  # fmt: skip
        packages = _gauge(
            "patchwatch_mirror_packages", "Packages in the mirror's last good index.", labels
        )
        skipped = _gauge(
            "patchwatch_mirror_skipped_entries",
            "Entries of the mirror's last good index left out for a field over its bound "
            "(index: packages or advisories); absent when not known.",
            [*labels, "index"],
        )
        for m in load_mirror_rows():
            key = [m.repository, m.url]
            health.add(key, m)
            if m.last_success_at is not None:  # never read: unknown, not empty
                packages.add_metric(key, m.packages)
            for index, count in (("packages", m.skipped_packages),
                                 ("advisories", m.skipped_advisories)):  # fmt: skip
                if count is not None:
                    skipped.add_metric([*key, index], count)
        yield from (*health.families(), packages, skipped)

    def _security_feed_families(self) -> Iterator[Metric]:
        """Arch's tracker and Alpine's secdb copies (``patchwatch.store.security_feeds``)."""
        feeds = list(SecurityFeed.select().order_by(SecurityFeed.name))
        health = _feed_health("patchwatch_security_feed", "security feed")
        for f in feeds:
            health.add([f.name], f)
        yield from health.families()
        fixes = _gauge(
            "patchwatch_security_feed_fixes",
            "Fixed versions listed in the feed's last good copy (absent before one).",
            ["feed"],
        )
        skipped = _gauge(
            "patchwatch_security_feed_skipped_entries",
            "Entries of the feed's last good copy skipped as malformed.",
            ["feed"],
        )
        for f in feeds:
            if f.fixes is not None:
                fixes.add_metric([f.name], f.fixes)
                skipped.add_metric([f.name], f.skipped or 0)
        yield from (fixes, skipped)

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
                last_success.add_metric([job], float(run["last_success_at"]))
            last_ok.add_metric([job], 1 if run["outcome"] == "success" else 0)
            if run["duration"] is not None:
                duration.add_metric([job], float(run["duration"]))
        yield from (last_success, last_ok, duration)

    def _vuln_families(self, shard: Shard | None) -> Iterator[Metric]:
        """Vulnerabilities: per host counts (no per-CVE label per host), KEV per CVE
        present in the fleet (bounded by the catalogue), and each feed's health.

        Per-host series exist only once a feed of records has good data and the host's
        findings are computed; a host whose OS maps to no ecosystem has none (not
        matched is not "no vulnerabilities"). Counts are written for the (severity,
        status) cells that are not zero: a host with findings computed
        (``patchwatch_host_vulnerabilities_computed_timestamp_seconds``) and no series
        for a cell has none there.
        """
        state = scrape_rows()
        counts: list[Row] = []
        kev_fixable: list[Row] = []
        oldest: list[Row] = []
        computed: list[Row] = []
        kev_hosts: dict[str, int] = {}
        kev_fixable_hosts: dict[str, int] = {}
        fleet = shard is None or shard.has_fleet
        for name, at, summary in state.hosts:
            if fleet:  # the whole fleet's exposure, written by shard 0 only
                for cve, status in summary.kev.items():
                    kev_hosts[cve] = kev_hosts.get(cve, 0) + 1
                    kev_fixable_hosts[cve] = kev_fixable_hosts.get(cve, 0) + (status == "fixable")
            if shard is not None and shard_of(name, shard.count) != shard.index:
                continue
            computed.append(((name,), at))
            kev_fixable.append(((name,), summary.kev_fixable))
            counts.extend(
                ((name, sev, status), n) for (sev, status), n in sorted(summary.counts.items())
            )
            oldest.extend(((name, sev), t) for sev, t in sorted(summary.oldest_fixable.items()))
        yield RowFamily(
            "patchwatch_host_vulnerabilities",
            "Vulnerabilities of the host by severity (CVSS level when scored, else the "
            "distribution's rating) and fix status (fixable, fixed_upstream, no_fix); only "
            "cells that are not zero (absent while the host's findings are unknown).",
            ["host", "severity", "status"],
            counts,
        )
        yield RowFamily(
            "patchwatch_host_vulnerabilities_computed_timestamp_seconds",
            "When the host's vulnerabilities were last computed (absent: unknown, no feed "
            "loaded or the host's OS maps to no ecosystem).",
            ["host"],
            computed,
        )
        yield RowFamily(
            "patchwatch_host_vulnerabilities_kev_fixable",
            "Known-exploited (CISA KEV) vulnerabilities of the host whose fix its "
            "repositories offer.",
            ["host"],
            kev_fixable,
        )
        yield RowFamily(
            "patchwatch_host_oldest_fixable_vulnerability_published_timestamp_seconds",
            "Publication time of the host's oldest fixable vulnerability, by severity "
            "(critical, high).",
            ["host", "severity"],
            oldest,
        )
        hosts = _gauge(
            "patchwatch_kev_vulnerability_hosts",
            "Hosts exposed to a known-exploited vulnerability, for those present in the "
            "fleet (status fixable: the fix is in their repositories; all: every host).",
            ["cve", "status"],
        )
        if not fleet:
            return  # the fleet's KEV exposure and the feeds' health are in shard 0 only
        for cve in sorted(kev_hosts):
            hosts.add_metric([cve, "all"], kev_hosts[cve])
            hosts.add_metric([cve, "fixable"], kev_fixable_hosts[cve])
        yield hosts
        labels = ["feed"]
        health = _feed_health("patchwatch_vuln_feed", "vulnerability feed")
        records = _gauge(
            "patchwatch_vuln_feed_records",
            "Records (KEV: entries; EPSS: scores kept) in the feed's last good data.",
            labels,
        )
        skipped = _gauge(
            "patchwatch_vuln_feed_skipped_records",
            "Records of the feed's last good data skipped as malformed.",
            labels,
        )
        changed = _gauge(
            "patchwatch_vuln_feed_changed_too_much",
            "1 when the feed's record count moved by more than vulns_change_share at its "
            "last change (kept, but worth a look: a truncated feed?).",
            labels,
        )
        for f in state.feeds:
            key = [f.name]
            health.add(key, f)
            if f.records is not None:
                records.add_metric(key, f.records)
                skipped.add_metric(key, f.skipped or 0)
                changed.add_metric(key, 1 if f.changed_too_much else 0)
        yield from (*health.families(), records, skipped, changed)
