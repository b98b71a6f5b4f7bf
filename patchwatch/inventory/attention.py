"""What needs an operator, as Patchman's dashboard lists it, one row per problem.

Hosts, repositories, mirrors, OS groups and the report queue are each read with a few
queries; the rows come out grouped by issue in the order of :data:`ISSUES`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC
from datetime import datetime

from peewee import JOIN
from peewee import fn

from patchwatch.inventory.common import DAY
from patchwatch.inventory.common import chunks
from patchwatch.inventory.repositories import repository_label
from patchwatch.inventory.repositories import used_repositories
from patchwatch.store import rdns
from patchwatch.store.db import database
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Report
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySet
from patchwatch.store.queries import load_host_rows
from patchwatch.store.update_status import NOT_COMPUTED
from patchwatch.store.update_status import UNKNOWN
from patchwatch.store.update_status import unknown_reasons

PENDING_REPORT_AGE = 3600.0  # a report queued this long means processing is stuck


ISSUES = (
    "not_reporting",
    "no_repositories",
    "updates_unknown",
    "security_updates",
    "reboot_required",
    "in_maintenance",
    "updates_off",
    "reverse_dns_mismatch",
    "mirror_failing",
    "repo_no_data",
    "repo_no_mirrors",
    "repo_unused",
    "os_group_empty",
    "report_failed",
    "reports_stuck",
)


def _item(issue: str, subject: str, detail: str, since: float | None) -> dict[str, object]:
    return {"issue": issue, "subject": subject, "detail": detail, "since": since}


def _since(item: dict[str, object], default: float) -> float:
    since = item["since"]
    return float(since) if isinstance(since, int | float) else default


def _fmt_time(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):  # stored before times were bounded
        return f"{ts:g} (out of range)"


def attention(now: float, stale_days: float = 2.0) -> list[dict[str, object]]:
    """What needs an operator, as Patchman's dashboard lists it, one row per problem.

    Rows are ``issue`` (one of :data:`ISSUES`), ``subject`` (a host, a repository,
    a mirror), ``detail`` and ``since`` (when it started, when known). Hosts in
    maintenance are listed once as such and their other problems are left out, as the
    alerts are inhibited. The default of 2 days matches the
    ``PatchwatchHostNotReporting`` alert.
    """
    items: list[dict[str, object]] = []
    rows = load_host_rows()
    query = Host.select(
        Host.name, Host.use_os_repositories, Host.check_updates, Host.repository_set,
        RepositorySet.size, Host.os_release,
    ).join(
        RepositorySet, JOIN.LEFT_OUTER, on=(Host.repository_set == RepositorySet.id)
    )  # fmt: skip
    # straight from the cursor, as load_host_tuples reads: peewee's row conversion cost
    # more than the query at 10,000 hosts; the flags are only tested for truth
    cursor = database.execute(query)
    try:
        flags = {name: (use_os, check, rset, size, os_id)
                 for name, use_os, check, rset, size, os_id in cursor.fetchall()}  # fmt: skip
    finally:
        cursor.close()
    os_with_repos = {
        r for (r,) in OSReleaseRepository.select(OSReleaseRepository.os_release).distinct().tuples()
    }
    stale_before = now - stale_days * DAY
    by_issue: dict[str, list[dict[str, object]]] = defaultdict(list)
    unknown: dict[str, float | None] = {}  # host -> since when its updates are due
    for h in rows:
        if h.name not in flags:  # created between the two reads: next time
            continue
        use_os, check, _rset, size, os_id = flags[h.name]
        if h.maintenance_until is not None and h.maintenance_until > now:
            by_issue["in_maintenance"].append(
                _item("in_maintenance", h.name,
                      f"until {_fmt_time(h.maintenance_until)} UTC", None)
            )  # fmt: skip
            continue
        if h.last_report_at is not None and h.last_report_at < stale_before:
            days = (now - h.last_report_at) / DAY
            by_issue["not_reporting"].append(
                _item("not_reporting", h.name, f"no report for {days:.1f} days",
                      h.last_report_at)
            )  # fmt: skip
        no_repos = (os_id not in os_with_repos) if use_os else not size
        if no_repos:
            why = "its OS group has no repositories" if use_os else "it reported no repositories"
            by_issue["no_repositories"].append(
                _item("no_repositories", h.name, f"updates cannot be computed: {why}",
                      None)
            )  # fmt: skip
        elif check and h.updates_state == UNKNOWN:
            unknown[h.name] = h.inputs_changed_at
        if h.security and h.updates_state != UNKNOWN:
            by_issue["security_updates"].append(
                _item("security_updates", h.name,
                      f"{h.security} security, {h.other} other updates",
                      h.oldest_security_first_seen)
            )  # fmt: skip
        if h.reboot_required:
            by_issue["reboot_required"].append(
                _item("reboot_required", h.name, f"running kernel {h.kernel or '?'}", None)
            )
        if not check:
            by_issue["updates_off"].append(
                _item("updates_off", h.name, "an operator turned update checks off",
                      None)
            )  # fmt: skip
    _unknown_attention(by_issue, unknown)
    by_issue["security_updates"].sort(key=lambda i: _since(i, now))
    in_maintenance = {str(i["subject"]) for i in by_issue["in_maintenance"]}
    for name, status, address, found, _at in rdns.mismatches():
        if name not in in_maintenance:
            by_issue["reverse_dns_mismatch"].append(
                _item("reverse_dns_mismatch", name, rdns.describe(status, address, found), None)
            )
    _repository_attention(by_issue, now)
    using_os = (
        Host.select(OSRelease.id, OSRelease.name, fn.COUNT(Host.id))
        .join(OSRelease, on=(Host.os_release == OSRelease.id))
        .where(Host.use_os_repositories == True)  # noqa: E712 (SQL expression)
        .group_by(OSRelease.id, OSRelease.name)
        .tuples()
    )
    for os_id, name, count in using_os:
        if os_id in os_with_repos:
            continue
        by_issue["os_group_empty"].append(
            _item("os_group_empty", name,
                  f"{count} hosts use its repositories; add some with 'os add-repo'", None)
        )  # fmt: skip
    _report_attention(by_issue, now)
    for issue in ISSUES:
        items.extend(by_issue.get(issue, []))
    return items


def _unknown_attention(
    by_issue: dict[str, list[dict[str, object]]], unknown: dict[str, float | None]
) -> None:
    """List the hosts whose pending updates are unknown, with the reason."""
    ids: dict[str, int] = {}
    for chunk in chunks(sorted(unknown)):
        ids.update(Host.select(Host.name, Host.id).where(Host.name.in_(list(chunk))).tuples())
    reasons = unknown_reasons(list(ids.values()))
    for name, since in unknown.items():
        reason = reasons.get(ids.get(name, 0), NOT_COMPUTED)
        by_issue["updates_unknown"].append(
            _item("updates_unknown", name, f"pending updates unknown: {reason}", since)
        )


def _repository_attention(by_issue: dict[str, list[dict[str, object]]], now: float) -> None:
    used = used_repositories()
    mirrors: dict[int, list[Mirror]] = defaultdict(list)
    for m in Mirror.select().order_by(Mirror.url):
        mirrors[m.repository_id].append(m)
    for r in Repository.select().order_by(Repository.id):
        subject = f"{r.id} {repository_label(r)}"
        ms = mirrors.get(r.id, [])
        if not ms:
            by_issue["repo_no_mirrors"].append(
                _item("repo_no_mirrors", subject, "no URL to read it from", None)
            )
        if r.id not in used:
            by_issue["repo_unused"].append(
                _item("repo_unused", subject, "no host uses it", r.created_at)
            )
        if not r.enabled:
            continue
        failing = [m for m in ms if m.enabled and m.consecutive_failures > 0]
        for m in failing:
            by_issue["mirror_failing"].append(
                _item("mirror_failing", f"{r.id} {m.url}",
                      f"{m.consecutive_failures} failures in a row: {m.last_error[:200]}",
                      m.last_success_at)
            )  # fmt: skip
        has_data = any(m.package_set_id is not None for m in ms)
        if ms and not has_data and not failing and not r.auth_required:
            by_issue["repo_no_data"].append(
                _item("repo_no_data", subject,
                      "never refreshed: its updates are unknown", r.created_at)
            )  # fmt: skip


def _report_attention(by_issue: dict[str, list[dict[str, object]]], now: float) -> None:
    failed: dict[str, list[Report]] = defaultdict(list)
    query = (
        Report.select(Report.id, Report.host_name, Report.received_at, Report.error)
        .where(Report.state == "failed")
        .order_by(Report.received_at.desc())
    )
    for row in query:
        failed[row.host_name].append(row)
    for host_name in sorted(failed):
        latest = failed[host_name][0]
        count = len(failed[host_name])
        by_issue["report_failed"].append(
            _item("report_failed", host_name,
                  f"{count} failed report{'s' if count > 1 else ''}; last: {latest.error[:200]}",
                  latest.received_at)
        )  # fmt: skip
    stuck = (
        Report.select(fn.COUNT(Report.id), fn.MIN(Report.received_at))
        .where((Report.state == "pending") & (Report.received_at < now - PENDING_REPORT_AGE))
        .tuples()
        .first()
    )
    if stuck and stuck[0]:
        by_issue["reports_stuck"].append(
            _item("reports_stuck", "reports",
                  f"{stuck[0]} reports queued for over an hour: is the scheduler running?",
                  stuck[1])
        )  # fmt: skip
