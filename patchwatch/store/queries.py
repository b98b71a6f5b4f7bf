"""Named reads shared by the exporter, the API and the CLI.

Each returns plain rows (tuples or dicts), built with few queries whatever the fleet size:
one grouped query per concern, never one query per host.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from typing import Any

from peewee import JOIN
from peewee import fn

from patchwatch.domain.reboot import reboot_required
from patchwatch.domain.updates import decode_holds
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import JobRun
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Report
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.package_sets import packages_in
from patchwatch.store.package_sets import sets_holding
from patchwatch.store.shards import HostSelection
from patchwatch.store.update_status import CURRENT
from patchwatch.store.update_status import NOT_COMPUTED
from patchwatch.store.update_status import STALE
from patchwatch.store.update_status import STALE_REASON
from patchwatch.store.update_status import UNKNOWN
from patchwatch.store.update_status import unknown_reasons
from patchwatch.store.update_status import update_state


def as_flag(value: object) -> bool | None:
    """A nullable flag as the driver gives it (0/1 on SQLite) as a bool or None."""
    return None if value is None else bool(value)


def _column(select: Any, convert: Callable[[Any], Any] | None = None, **default: Any) -> Any:
    """A field of :class:`HostRow` with what :func:`load_host_tuples` selects for it and
    how :func:`load_host_rows` turns the driver's value into the field's (``None``: as
    it is). The field's place in the class is its place in the tuples."""
    return field(metadata={"select": select, "convert": convert}, **default)


@dataclass(frozen=True)
class HostRow:
    """One host as the listings read it. ``security`` and ``other`` are the stored
    counts, which mean something only when :attr:`updates_state` is not unknown.

    The fields are the one declaration of a host row's columns: the query, the tuples'
    order (:data:`HOST_TUPLE_FIELDS`, which the exporter reads by name) and the rows
    all follow from them, so a new column is one field here."""

    name: str = _column(Host.name)
    os: str = _column(fn.COALESCE(OSRelease.name, ""))
    os_family: str = _column(fn.COALESCE(OSRelease.family, ""))
    arch: str = _column(Host.arch)
    kernel: str = _column(Host.kernel)
    tags: str = _column(Host.tags)
    reboot_reported: bool | None = _column(Host.reboot_reported, as_flag)
    reboot_kernel: bool | None = _column(Host.reboot_kernel, as_flag)
    last_report_at: float | None = _column(Host.last_report_at)
    packages: int = _column(fn.COALESCE(PackageSet.size, 0))
    security: int = _column(fn.COALESCE(Host.security_updates, 0))
    other: int = _column(fn.COALESCE(Host.other_updates, 0))
    oldest_security_first_seen: float | None = _column(Host.oldest_security_at)
    maintenance_until: float | None = _column(Host.maintenance_until)
    packages_without_repository: int | None = _column(
        Host.packages_without_repository, default=None
    )
    updates_complete: bool = _column(Host.updates_complete, bool, default=False)
    updates_computed_at: float | None = _column(Host.updates_computed_at, default=None)
    inputs_changed_at: float | None = _column(Host.inputs_changed_at, default=None)
    updates_inputs_at: float | None = _column(Host.updates_inputs_at, default=None)
    check_updates: bool = _column(Host.check_updates, bool, default=True)
    # updates of held packages; not in ``security`` nor ``other``
    held: int = _column(fn.COALESCE(Host.held_updates, 0), default=0)

    @property
    def reboot_required(self) -> bool | None:
        return reboot_required(self.reboot_reported, self.reboot_kernel)

    @property
    def updates_state(self) -> str:
        return update_state(
            self.updates_complete, self.updates_computed_at, self.inputs_changed_at,
            self.updates_inputs_at,
        )  # fmt: skip


# Columns of load_host_tuples(), in HostRow's field order.
HOST_TUPLE_FIELDS = tuple(f.name for f in fields(HostRow))
_HOST_SELECT = tuple(f.metadata["select"] for f in fields(HostRow))
_HOST_CONVERSIONS = tuple(
    (i, f.metadata["convert"]) for i, f in enumerate(fields(HostRow)) if f.metadata["convert"]
)


def load_host_tuples(hosts: HostSelection | None = None) -> list[tuple[Any, ...]]:
    """Every host (of ``hosts`` if given: a scrape shard's) with its update counts, as
    plain tuples ordered by name, in one query.

    The columns are :data:`HOST_TUPLE_FIELDS`, selected as :class:`HostRow` declares.
    The update counts are those kept on the host row (``patchwatch.store.host_counts``),
    so a listing reads one row per host, not every pending update. Rows come straight
    from the database cursor's ``fetchall``, without peewee's row-by-row iteration and
    per-column conversion (``.tuples()``), which alone cost as much as SQLite's own
    work (docs/performance.md). Values are therefore the
    driver's: flags are 0/1 on SQLite and bools on PostgreSQL, missing OS and package
    set read as ``""`` and 0, hosts without counts (never computed) as 0, 0 and ``None``:
    :attr:`HostRow.updates_state` says whether they mean anything.

    The three counts are disjoint: an update of a held package counts as ``held``
    only, whether or not it is a security update, and is never the oldest security
    update (an upgrade would not install it, so no alert should wait for it).
    """
    query = (
        Host.select(*_HOST_SELECT)
        .join(OSRelease, JOIN.LEFT_OUTER, on=(Host.os_release == OSRelease.id))
        .switch(Host)
        .join(PackageSet, JOIN.LEFT_OUTER, on=(Host.package_set == PackageSet.id))
        .order_by(Host.name)
    )
    if hosts is not None:
        query = query.where(hosts.condition(Host.id))
    cursor = database.execute(query)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def load_host_rows() -> list[HostRow]:
    """Every host with its update counts (see :func:`load_host_tuples`), in one query."""
    out = []
    for r in load_host_tuples():
        values = list(r)
        for i, convert in _HOST_CONVERSIONS:
            values[i] = convert(values[i])
        out.append(HostRow(*values))
    return out


def load_host_tags(hosts: HostSelection | None = None) -> list[tuple[str, str]]:
    """Every (host, tag) pair (of ``hosts`` if given), by host name then tag: one row
    per tag of each host.

    Tags are stored sorted and without repeats; rows come from the cursor's
    ``fetchall`` as in :func:`load_host_tuples` (half the time of ``.tuples()``).
    """
    query = Host.select(Host.name, Host.tags).where(Host.tags != "").order_by(Host.name)
    if hosts is not None:
        query = query.where(hosts.condition(Host.id))
    cursor = database.execute(query)
    try:
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return [(name, tag) for name, tags in rows for tag in tags.split()]


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
    skipped_packages: int | None = None  # None: not known (see Mirror)
    skipped_advisories: int | None = None


def load_mirror_rows() -> list[MirrorRow]:
    query = (
        Mirror.select(
            Repository.key, Repository.kind, Mirror.url, Mirror.enabled,
            Mirror.last_attempt_at, Mirror.last_success_at, Mirror.failures_total,
            Mirror.consecutive_failures, Mirror.package_count, Mirror.skipped_packages,
            Mirror.skipped_advisories,
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


# --- the read API and the operator CLI -------------------------------------------------


@dataclass(frozen=True)
class HostFilter:
    os: str | None = None  # substring of the OS name, case-insensitive
    tag: str | None = None
    domain: str | None = None
    security: bool | None = None  # True: only hosts with pending security updates
    reboot: bool | None = None
    stale_days: float | None = None  # only hosts not reporting for this many days
    name: str | None = None  # glob pattern (* and ?)
    repository: int | None = None  # only hosts using this repository (own or OS group's)
    maintenance: bool | None = None  # True: only hosts in a maintenance window now


# The two ways a host uses a repository, one row each: (membership table, its join to
# Host, the host's use_os_repositories). A host uses the repositories it reported (its
# repository set) unless it uses its OS group's; every query of "who uses what" walks
# both rows, so that the rule is written once.
REPOSITORY_MEMBERSHIPS = (
    (RepositorySetMember, RepositorySetMember.repository_set == Host.repository_set, False),
    (OSReleaseRepository, OSReleaseRepository.os_release == Host.os_release, True),
)


def hosts_using_repository(repo_id: int) -> set[str]:
    """Names of the hosts that use a repository: reported it (and do not use their OS
    group's instead) or use their OS group's, which holds it. Two queries."""
    names: set[str] = set()
    for member, on, use_os in REPOSITORY_MEMBERSHIPS:
        query = (
            Host.select(Host.name)
            .join(member, on=on)
            .where((member.repository == repo_id) & (Host.use_os_repositories == use_os))
        )
        names.update(name for (name,) in query.tuples())
    return names


def host_summaries(flt: HostFilter, now: float) -> list[dict[str, object]]:
    """Hosts with their counts, filtered; a few grouped queries whatever the fleet size."""
    out = []
    using = hosts_using_repository(flt.repository) if flt.repository is not None else None
    for h in load_host_rows():
        state = h.updates_state
        if flt.os and flt.os.lower() not in h.os.lower():
            continue
        if flt.tag and flt.tag not in h.tags.split():
            continue
        if flt.security is not None and (state == UNKNOWN or (h.security > 0) != flt.security):
            continue
        if flt.reboot is not None and h.reboot_required != flt.reboot:
            continue
        if flt.stale_days is not None and (
            h.last_report_at is not None and h.last_report_at > now - flt.stale_days * 86400
        ):
            continue
        if flt.name and not fnmatch.fnmatchcase(h.name, flt.name.lower()):
            continue
        if flt.domain and not h.name.endswith("." + flt.domain.lower()):
            continue
        in_maintenance = h.maintenance_until is not None and h.maintenance_until > now
        if flt.maintenance is not None and in_maintenance != flt.maintenance:
            continue
        if using is not None and h.name not in using:
            continue
        known = state != UNKNOWN
        out.append(
            {
                "name": h.name, "os": h.os, "os_family": h.os_family, "arch": h.arch,
                "kernel": h.kernel, "tags": h.tags.split(), "packages": h.packages,
                "security_updates": h.security if known else None,
                "other_updates": h.other if known else None,
                "updates_state": state, "updates_reason": STALE_REASON if state == STALE else "",
                "updates_computed_at": h.updates_computed_at if known else None,
                "reboot_required": h.reboot_required, "last_report_at": h.last_report_at,
                "oldest_security_first_seen_at": h.oldest_security_first_seen if known else None,
                "held_updates": h.held if known else None,
                "maintenance_until": h.maintenance_until if in_maintenance else None,
            }
        )  # fmt: skip
    _explain_unknown(out)
    return out


def _explain_unknown(items: list[dict[str, object]]) -> None:
    """Fill in ``updates_reason`` of the unknown hosts among ``items`` (few queries)."""
    unknown = [i for i in items if i["updates_state"] == UNKNOWN]
    if not unknown:
        return
    names = [str(i["name"]) for i in unknown]
    ids: dict[str, int] = {}
    for chunk in chunks(names):
        ids.update(Host.select(Host.name, Host.id).where(Host.name.in_(list(chunk))).tuples())
    reasons = unknown_reasons(list(ids.values()))
    for item in unknown:
        host_id = ids.get(str(item["name"]))
        item["updates_reason"] = reasons.get(host_id, NOT_COMPUTED) if host_id else NOT_COMPUTED


def _package_dict(p: Package) -> dict[str, str]:
    return {"name": p.name, "epoch": p.epoch, "version": p.version, "release": p.release,
            "arch": p.arch, "type": p.kind}  # fmt: skip


def host_detail(host: Host) -> dict[str, object]:
    """One host with its packages, repositories and pending updates.

    Takes the row the caller found (by exact name for the API, as the operator typed
    it for the CLI) rather than a name, so that a host is looked up once.
    """
    packages = []
    if host.package_set_id:
        query = packages_in(host.package_set_id).order_by(Package.name, Package.arch)
        packages = [_package_dict(p) for p in query]
    repositories = []
    if host.repository_set_id:
        query = (
            RepositorySetMember.select(RepositorySetMember, Repository)
            .join(Repository)
            .where(RepositorySetMember.repository_set == host.repository_set_id)
            .order_by(Repository.key)
        )
        repositories = [
            {"key": m.repository.key, "name": m.repository.name, "kind": m.repository.kind,
             "priority": m.priority, "enabled": m.enabled,
             "security": m.repository.is_security}
            for m in query
        ]  # fmt: skip
    Installed = Package.alias()
    updates = [
        {"name": u.installed.name, "arch": u.installed.arch,
         "installed": u.installed.version_string, "available": u.available.version_string,
         "security": u.security, "held": u.held, "first_seen_at": u.first_seen_at,
         "repository": u.repository.key if u.repository_id else None}
        for u in HostUpdate.select(HostUpdate, Installed, Package, Repository)
        .join(Installed, on=(HostUpdate.installed == Installed.id))
        .switch(HostUpdate)
        .join(Package, on=(HostUpdate.available == Package.id))
        .switch(HostUpdate)
        .join(Repository, JOIN.LEFT_OUTER)
        .where(HostUpdate.host == host)
        .order_by(Installed.name)
    ]  # fmt: skip
    state = update_state(
        host.updates_complete, host.updates_computed_at, host.inputs_changed_at,
        host.updates_inputs_at,
    )  # fmt: skip
    # "" for current updates: ``or`` took it for missing and gave an unknown host's reason
    reason = unknown_reasons([host.id])[host.id] if state == UNKNOWN else STALE_REASON
    reason = reason if state != CURRENT else ""
    return {
        "name": host.name, "domain": host.domain,
        "os": host.os_release.name if host.os_release_id else "",
        "kernel": host.kernel, "arch": host.arch, "tags": host.tags.split(),
        "updates_state": state, "updates_reason": reason,
        "updates_computed_at": host.updates_computed_at if state != UNKNOWN else None,
        "reboot_required": host.reboot_required, "reboot_reported": host.reboot_reported,
        "reboot_kernel": host.reboot_kernel,
        "last_report_at": host.last_report_at, "protocol": host.protocol,
        "use_os_repositories": host.use_os_repositories,
        "packages": packages, "repositories": repositories, "updates": updates,
        "held_packages": [{"name": n, "arch": a} for n, a in sorted(decode_holds(host.held))],
    }  # fmt: skip


def version_matches(text: str, p: Package) -> bool:
    """Whether ``text`` names the version of package ``p`` as users write versions.

    ``1:1.2-3`` (as dpkg and rpm print it), ``1.2-3`` (the epoch left out: any epoch)
    or ``1.2`` (the upstream version alone); an epoch of 0 may be written or not.
    """
    text = text.strip()
    epoch, sep, rest = text.partition(":")
    if not (sep and epoch.isdigit()):
        epoch, rest = "", text
    elif int(epoch) != int(p.epoch or 0):
        return False
    full = f"{p.version}-{p.release}" if p.release else p.version
    return rest in (full, p.version)


def hosts_with_package(
    name: str, version: str | None = None, arch: str | None = None
) -> list[dict[str, object]]:
    """Which hosts have this package (version, arch), and from which repositories."""
    query = Package.select().where(Package.name == name)
    if arch:
        query = query.where(Package.arch == arch)
    packages = [p for p in query if version is None or version_matches(version, p)]
    out: list[dict[str, object]] = []
    for pkg in packages:
        psets = sets_holding(pkg.id)
        if not psets:
            continue
        mirror_repos = {
            m.repository_id
            for m in Mirror.select(Mirror.repository).where(Mirror.package_set.in_(psets))
        }
        hosts = Host.select().where(Host.package_set.in_(psets)).order_by(Host.name)
        repos_by_set: dict[int, list[str]] = defaultdict(list)  # one query, not one per host
        if mirror_repos:
            query = (
                RepositorySetMember.select(RepositorySetMember.repository_set, Repository.key)
                .join(Repository)
                .where(RepositorySetMember.repository.in_(list(mirror_repos)))
                .order_by(Repository.key)
                .tuples()
            )
            for rset_id, key in query:
                repos_by_set[rset_id].append(key)
        for host in hosts:
            repos = list(repos_by_set.get(host.repository_set_id, []))
            out.append({"host": host.name, **_package_dict(pkg),
                        "version_string": pkg.version_string, "repositories": repos})  # fmt: skip
    return out


def repository_summaries() -> list[dict[str, object]]:
    """Repositories with their mirrors' refresh state and how many hosts use them."""
    users: dict[int, int] = defaultdict(int)  # hosts using it: own repositories or OS group's
    for member, on, use_os in REPOSITORY_MEMBERSHIPS:
        counts = (
            member.select(member.repository, fn.COUNT(Host.id))
            .join(Host, on=on)
            .where(Host.use_os_repositories == use_os)
            .group_by(member.repository)
            .tuples()
        )
        for repo_id, count in counts:
            users[repo_id] += count
    mirrors: dict[int, list[dict[str, object]]] = {}
    for m in Mirror.select().order_by(Mirror.url):
        mirrors.setdefault(m.repository_id, []).append(
            {"url": m.url, "kind": m.kind, "enabled": m.enabled,
             "last_attempt_at": m.last_attempt_at, "last_success_at": m.last_success_at,
             "failures_total": m.failures_total, "consecutive_failures": m.consecutive_failures,
             "last_error": m.last_error, "packages": m.package_count}
        )  # fmt: skip
    return [
        {"id": r.id, "key": r.key, "kind": r.kind, "name": r.name, "arch": r.arch,
         "security": r.is_security, "enabled": r.enabled, "hosts": users.get(r.id, 0),
         "mirrors": mirrors.get(r.id, [])}
        for r in Repository.select().order_by(Repository.key)
    ]  # fmt: skip


def pending_update_summary() -> list[dict[str, object]]:
    """Every pending update (installed -> available) with the number of hosts needing it.

    Hosts holding the package are counted in a row of their own (``held``).
    """
    Installed = Package.alias()
    query = (
        HostUpdate.select(
            Installed.name, Installed.arch, Installed.epoch, Installed.version,
            Installed.release, Package.epoch, Package.version, Package.release,
            HostUpdate.security, HostUpdate.held, fn.COUNT(HostUpdate.id),
            fn.MIN(HostUpdate.first_seen_at),
        )
        .join(Installed, on=(HostUpdate.installed == Installed.id))
        .switch(HostUpdate)
        .join(Package, on=(HostUpdate.available == Package.id))
        .group_by(Installed.name, Installed.arch, Installed.epoch, Installed.version,
                  Installed.release, Package.epoch, Package.version, Package.release,
                  HostUpdate.security, HostUpdate.held)
        .order_by(fn.COUNT(HostUpdate.id).desc(), Installed.name)
        .tuples()
    )  # fmt: skip

    def evr(e: str, v: str, r: str) -> str:
        s = f"{e}:{v}" if e not in ("", "0") else v
        return f"{s}-{r}" if r else s

    return [
        {"name": n, "arch": a, "installed": evr(ie, iv, ir), "available": evr(ae, av, ar),
         "security": bool(sec), "held": bool(held), "hosts": count, "first_seen_at": first}
        for n, a, ie, iv, ir, ae, av, ar, sec, held, count, first in query
    ]  # fmt: skip
