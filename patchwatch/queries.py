"""Named reads shared by the exporter, the API and the CLI.

Each returns plain rows (tuples or dicts), built with few queries whatever the fleet size:
one grouped query per concern, never one query per host.
"""

from __future__ import annotations

from dataclasses import dataclass

from peewee import JOIN
from peewee import fn

from patchwatch.models import Host
from patchwatch.models import HostUpdate
from patchwatch.models import JobRun
from patchwatch.models import Mirror
from patchwatch.models import OSRelease
from patchwatch.models import PackageSet
from patchwatch.models import Report
from patchwatch.models import Repository


@dataclass(frozen=True)
class HostRow:
    name: str
    os: str
    os_family: str
    arch: str
    kernel: str
    tags: str
    reboot_required: bool
    last_report_at: float | None
    packages: int
    security: int
    other: int
    oldest_security_first_seen: float | None
    maintenance_until: float | None


def load_host_rows() -> list[HostRow]:
    """Every host with its update counts, in three queries."""
    counts: dict[int, list[int]] = {}
    query = HostUpdate.select(
        HostUpdate.host, HostUpdate.security, fn.COUNT(HostUpdate.id)
    ).group_by(HostUpdate.host, HostUpdate.security)
    for host_id, security, n in query.tuples():
        counts.setdefault(host_id, [0, 0])[0 if security else 1] = n
    oldest = dict(
        HostUpdate.select(HostUpdate.host, fn.MIN(HostUpdate.first_seen_at))
        .where(HostUpdate.security == True)  # noqa: E712 (SQL expression)
        .group_by(HostUpdate.host)
        .tuples()
    )
    rows = []
    query = (
        Host.select(
            Host.id, Host.name, OSRelease.name, OSRelease.family, Host.arch, Host.kernel,
            Host.tags, Host.reboot_required, Host.last_report_at, PackageSet.size,
            Host.maintenance_until,
        )
        .join(OSRelease, JOIN.LEFT_OUTER, on=(Host.os_release == OSRelease.id))
        .switch(Host)
        .join(PackageSet, JOIN.LEFT_OUTER, on=(Host.package_set == PackageSet.id))
        .order_by(Host.name)
        .tuples()
    )  # fmt: skip
    for hid, name, os, family, arch, kernel, tags, reboot, last, size, maint in query:
        sec, other = counts.get(hid, [0, 0])
        rows.append(
            HostRow(
                name=name, os=os or "", os_family=family or "", arch=arch, kernel=kernel,
                tags=tags, reboot_required=bool(reboot), last_report_at=last,
                packages=size or 0, security=sec, other=other,
                oldest_security_first_seen=oldest.get(hid), maintenance_until=maint,
            )
        )  # fmt: skip
    return rows


def count_reports_by_state() -> dict[str, int]:
    """Stored reports per state (pending, processed, failed)."""
    return dict(Report.select(Report.state, fn.COUNT(Report.id)).group_by(Report.state).tuples())


@dataclass(frozen=True)
class MirrorRow:
    repository: str
    kind: str
    url: str
    enabled: bool
    last_attempt_at: float | None
    last_success_at: float | None
    failures_total: int
    consecutive_failures: int
    packages: int


def load_mirror_rows() -> list[MirrorRow]:
    query = (
        Mirror.select(
            Repository.key, Repository.kind, Mirror.url, Mirror.enabled,
            Mirror.last_attempt_at, Mirror.last_success_at, Mirror.failures_total,
            Mirror.consecutive_failures, Mirror.package_count,
        )
        .join(Repository)
        .order_by(Repository.key, Mirror.url)
        .tuples()
    )  # fmt: skip
    return [MirrorRow(*row) for row in query]


def load_last_job_runs() -> dict[str, dict[str, float | str | None]]:
    """Per job: last finished run's outcome and duration, and the last success time."""
    out: dict[str, dict[str, float | str | None]] = {}
    last_success = dict(
        JobRun.select(JobRun.job, fn.MAX(JobRun.finished_at))
        .where(JobRun.outcome == "success")
        .group_by(JobRun.job)
        .tuples()
    )
    latest = (
        JobRun.select(JobRun.job, fn.MAX(JobRun.id).alias("id"))
        .where(JobRun.outcome != "running")
        .group_by(JobRun.job)
    )
    for run in JobRun.select().join(latest, on=(JobRun.id == latest.c.id)):
        out[run.job] = {
            "outcome": run.outcome,
            "duration": run.duration_seconds,
            "finished_at": run.finished_at,
            "last_success_at": last_success.get(run.job),
        }
    return out
