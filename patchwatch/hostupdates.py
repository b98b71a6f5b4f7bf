"""Compute updates once per (package set, repository set, kernel) and give them to hosts.

Fleets are homogeneous, so many hosts share the same inputs; the computation runs once
per distinct triple and is stored as an :class:`UpdateSet`. Its ``inputs_digest``
records which mirror data it used, so a refresh that changed nothing recomputes
nothing, and a changed mirror recomputes only the sets that use it. Per host, only the
first-seen time of each pending update is kept, so patch age is a fact, not a guess.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field

from peewee import JOIN

from patchwatch.db import execute_many
from patchwatch.db import write_transaction
from patchwatch.models import Advisory
from patchwatch.models import AdvisoryPackage
from patchwatch.models import Host
from patchwatch.models import HostUpdate
from patchwatch.models import Mirror
from patchwatch.models import OSReleaseRepository
from patchwatch.models import Package
from patchwatch.models import PackageSetMember
from patchwatch.models import ReportedUpdate
from patchwatch.models import Repository
from patchwatch.models import RepositorySetMember
from patchwatch.models import UpdateSet
from patchwatch.models import UpdateSetItem
from patchwatch.records import Package as PackageRecord
from patchwatch.records import PackageKind
from patchwatch.updates import Offer
from patchwatch.updates import compute_newer_kernel_installed
from patchwatch.updates import compute_updates
from patchwatch.updates import count_packages_without_repository

log = logging.getLogger(__name__)

Membership = list[tuple[int, int, bool]]  # (repository id, priority, enabled)


def _record(row: tuple[int, str, str, str, str, str, str]) -> PackageRecord:
    _id, kind, name, epoch, version, release, arch = row
    return PackageRecord(name, epoch, version, release, arch, PackageKind(kind))


def _package_rows(where: object) -> list[tuple[int, str, str, str, str, str, str]]:
    return list(
        Package.select(
            Package.id, Package.kind, Package.name, Package.epoch,
            Package.version, Package.release, Package.arch,
        )
        .join(PackageSetMember, on=(PackageSetMember.package == Package.id))
        .where(where)
        .tuples()
    )  # fmt: skip


@dataclass
class UpdateContext:
    """Caches for one run, shared by every host and update set it touches.

    ``lazy``: for a run over a few hosts (one new report), read only the packages
    those hosts have from each mirror's index instead of loading whole indexes.
    """

    lazy: bool = False
    index_by_pset: dict[int, dict[tuple[str, str], list[tuple[int, PackageRecord]]]] = field(
        default_factory=dict
    )
    package_ids: dict[PackageRecord, int] = field(default_factory=dict)
    membership: dict[tuple[int | None, int | None, bool], Membership] = field(default_factory=dict)
    items: dict[int, dict[int, tuple[int, bool, int | None]]] = field(default_factory=dict)
    kernels: dict[int, list[PackageRecord]] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0
    hosts_changed: int = 0

    def index(
        self, pset_id: int, names: set[tuple[str, str]] | None = None
    ) -> dict[tuple[str, str], list[tuple[int, PackageRecord]]]:
        if pset_id in self.index_by_pset:
            return self.index_by_pset[pset_id]
        idx: dict[tuple[str, str], list[tuple[int, PackageRecord]]] = defaultdict(list)
        if self.lazy and names is not None:
            wanted = sorted({n for n, _a in names})
            for i in range(0, len(wanted), 400):
                where = (PackageSetMember.package_set == pset_id) & Package.name.in_(
                    wanted[i : i + 400]
                )
                for row in _package_rows(where):
                    rec = _record(row)
                    idx[(rec.name, rec.arch)].append((row[0], rec))
                    self.package_ids[rec] = row[0]
            return idx  # partial: not cached for other names
        for row in _package_rows(PackageSetMember.package_set == pset_id):
            rec = _record(row)
            idx[(rec.name, rec.arch)].append((row[0], rec))
            self.package_ids[rec] = row[0]
        self.index_by_pset[pset_id] = idx
        return idx

    def installed_kernels(self, pset_id: int) -> list[PackageRecord]:
        if pset_id not in self.kernels:
            self.kernels[pset_id] = [
                _record(r)
                for r in _package_rows(
                    (PackageSetMember.package_set == pset_id)
                    & (Package.name.startswith("linux-image-") | Package.name.startswith("kernel"))
                )
            ]
        return self.kernels[pset_id]

    def update_items(self, update_set: UpdateSet) -> dict[int, tuple[int, bool, int | None]]:
        if update_set.id not in self.items:
            self.items[update_set.id] = {
                installed: (available, bool(security), repo)
                for installed, available, security, repo in UpdateSetItem.select(
                    UpdateSetItem.installed, UpdateSetItem.available,
                    UpdateSetItem.security, UpdateSetItem.repository,
                )
                .where(UpdateSetItem.update_set == update_set)
                .tuples()
            }  # fmt: skip
        return self.items[update_set.id]


def repository_membership(host: Host, ctx: UpdateContext | None = None) -> Membership:
    """The repositories a host's updates come from: its own, or its OS release's."""
    key = (host.repository_set_id, host.os_release_id, bool(host.use_os_repositories))
    if ctx is not None and key in ctx.membership:
        return ctx.membership[key]
    result = _membership(host)
    if ctx is not None:
        ctx.membership[key] = result
    return result


def _membership(host: Host) -> Membership:
    if host.use_os_repositories and host.os_release_id:
        rows = OSReleaseRepository.select(OSReleaseRepository.repository).where(
            OSReleaseRepository.os_release == host.os_release_id
        )
        return [(r.repository_id, 500, True) for r in rows]
    if host.repository_set_id is None:
        return []
    rows = RepositorySetMember.select().where(
        RepositorySetMember.repository_set == host.repository_set_id
    )
    return [(r.repository_id, r.priority, r.enabled) for r in rows]


def _serving_mirrors(repo_ids: list[int]) -> dict[int, Mirror]:
    """Per repository, the mirror whose last good data is newest."""
    best: dict[int, Mirror] = {}
    query = Mirror.select().where(
        Mirror.repository.in_(repo_ids) & Mirror.enabled & Mirror.package_set.is_null(False)
    )
    for m in query:
        cur = best.get(m.repository_id)
        if cur is None or (m.last_success_at or 0) > (cur.last_success_at or 0):
            best[m.repository_id] = m
    return best


def inputs_digest(
    membership: Membership, mirrors: dict[int, Mirror], repos: dict[int, Repository]
) -> str:
    h = hashlib.sha256()
    for repo_id, prio, enabled in sorted(membership):
        m = mirrors.get(repo_id)
        r = repos.get(repo_id)
        security = (
            r.security_override
            if r and r.security_override is not None
            else (r.security if r else False)
        )
        data = f"{m.package_set_id}/{m.metadata_checksum}" if m else None
        line = f"{repo_id}:{prio}:{enabled}:{data}:{security}"
        h.update(f"{line}:{r.enabled if r else 0};".encode())
    return h.hexdigest()


def _same_inputs(pset_id: int, rset_id: int | None, kernel: str) -> object:
    rset = (
        UpdateSet.repository_set.is_null()
        if rset_id is None
        else UpdateSet.repository_set == rset_id
    )
    return (UpdateSet.package_set == pset_id) & rset & (UpdateSet.kernel == kernel)


def compute_update_set(
    host: Host, now: float, ctx: UpdateContext, force: bool = False
) -> UpdateSet | None:
    """Return the (possibly reused) update set for a host's inputs."""
    if host.package_set_id is None:
        return None
    membership = repository_membership(host, ctx)
    repo_ids = [r for r, _p, e in membership if e]
    repos = (
        {r.id: r for r in Repository.select().where(Repository.id.in_(repo_ids))}
        if repo_ids
        else {}
    )
    mirrors = _serving_mirrors(repo_ids) if repo_ids else {}
    digest = inputs_digest(membership, mirrors, repos)
    rset_id = host.repository_set_id
    kernel = host.kernel or ""
    if host.use_os_repositories:  # other inputs than the host's own repositories
        kernel = f"{kernel}|os-release:{host.os_release_id}"
    existing = UpdateSet.get_or_none(_same_inputs(host.package_set_id, rset_id, kernel))
    if existing is not None and existing.inputs_digest == digest and not force:
        ctx.reused += 1
        return existing

    installed_rows = _package_rows(PackageSetMember.package_set == host.package_set_id)
    installed = [_record(r) for r in installed_rows]
    for row, rec in zip(installed_rows, installed, strict=True):
        ctx.package_ids[rec] = row[0]
    names = (
        {(p.name, p.arch) for p in installed}
        | {(p.name, "all") for p in installed}
        | {(p.name, "noarch") for p in installed}
    )
    offers: list[Offer] = []
    for repo_id, priority, enabled in membership:
        repo = repos.get(repo_id)
        mirror = mirrors.get(repo_id)
        if not enabled or repo is None or not repo.enabled or mirror is None:
            continue
        security = repo.security_override if repo.security_override is not None else repo.security
        idx = ctx.index(mirror.package_set_id, names)
        for key in names:
            for _pid, rec in idx.get(key, ()):
                offers.append(Offer(rec, str(repo_id), priority, bool(security)))
    advisories: dict[tuple[str, str], list[PackageRecord]] = defaultdict(list)
    if repo_ids:
        query = (
            Package.select(Package.id, Package.kind, Package.name, Package.epoch,
                           Package.version, Package.release, Package.arch)
            .join(AdvisoryPackage, on=(AdvisoryPackage.package == Package.id))
            .join(Advisory, JOIN.INNER, on=(AdvisoryPackage.advisory == Advisory.id))
            .where(Advisory.repository.in_(repo_ids) & (Advisory.type == "security"))
            .tuples()
        )  # fmt: skip
        for row in query:
            rec = _record(row)
            advisories[(rec.name, rec.arch)].append(rec)
    pending = compute_updates(installed, offers, advisories)
    without_repo = count_packages_without_repository(installed, offers) if mirrors else None
    with write_transaction():
        if existing is None:
            UpdateSet.insert(
                package_set=host.package_set_id, repository_set=rset_id, kernel=kernel,
                computed_at=now, inputs_digest=digest,
            ).on_conflict_ignore().execute()  # fmt: skip
            existing = UpdateSet.get(_same_inputs(host.package_set_id, rset_id, kernel))
        UpdateSetItem.delete().where(UpdateSetItem.update_set == existing).execute()
        rows = [
            (existing.id, ctx.package_ids[u.installed], ctx.package_ids[u.available],
             u.security, int(u.repository) if u.repository else None)
            for u in pending
        ]  # fmt: skip
        for i in range(0, len(rows), 500):
            UpdateSetItem.insert_many(
                rows[i : i + 500],
                fields=[UpdateSetItem.update_set, UpdateSetItem.installed,
                        UpdateSetItem.available, UpdateSetItem.security,
                        UpdateSetItem.repository],
            ).execute()  # fmt: skip
        UpdateSet.update(
            computed_at=now, inputs_digest=digest, packages_without_repository=without_repo
        ).where(UpdateSet.id == existing.id).execute()
        existing.packages_without_repository = without_repo
    ctx.computed += 1
    return existing


def apply_host_updates(
    host: Host,
    update_set: UpdateSet | None,
    now: float,
    ctx: UpdateContext | None = None,
    current: dict[int, CurrentUpdate] | None = None,
) -> tuple[int, int]:
    """Make the host's pending updates match its update set; keep first-seen times.

    Host-reported security updates raise the security flag of a matching update.
    Nothing is written when nothing changed, which is the common case. Returns
    (security, other) counts.
    """
    ctx = ctx or UpdateContext()
    desired = dict(ctx.update_items(update_set)) if update_set is not None else {}
    reported = ReportedUpdate.select(ReportedUpdate.name, ReportedUpdate.arch).where(
        (ReportedUpdate.host == host) & ReportedUpdate.security
    )
    reported_security = {(r.name, r.arch) for r in reported}
    if reported_security and desired:
        name_arch = {
            pid: (name, arch)
            for pid, name, arch in Package.select(Package.id, Package.name, Package.arch)
            .where(Package.id.in_(list(desired)))
            .tuples()
        }
        for inst_id, (avail, sec, repo) in list(desired.items()):
            if not sec and name_arch[inst_id] in reported_security:
                desired[inst_id] = (avail, True, repo)
    if current is None:
        current = _current_updates([host.id]).get(host.id, {})
    gone = [row_id for k, (row_id, *_rest) in current.items() if k not in desired]
    new_rows = []
    changed = []
    for inst_id, (avail, sec, repo) in desired.items():
        cur = current.get(inst_id)
        if cur is None:
            new_rows.append((host.id, inst_id, avail, sec, repo, now))
        elif cur[1:] != (avail, sec, repo):
            changed.append((cur[0], avail, sec, repo))
    newer_kernel = None
    if host.package_set_id is not None:
        newer_kernel = compute_newer_kernel_installed(
            host.kernel, ctx.installed_kernels(host.package_set_id)
        )
    reboot = bool(host.reboot_reported) or bool(newer_kernel)
    orphans = update_set.packages_without_repository if update_set is not None else None
    host_changed = (
        host.reboot_required != reboot
        or host.packages_without_repository != orphans
        or host.updates_computed_at is None
    )
    if gone or new_rows or changed or host_changed:
        ctx.hosts_changed += 1
        with write_transaction():
            if gone:
                HostUpdate.delete().where(HostUpdate.id.in_(gone)).execute()
            for row_id, avail, sec, repo in changed:
                HostUpdate.update(available=avail, security=sec, repository=repo).where(
                    HostUpdate.id == row_id
                ).execute()
            execute_many(
                f"INSERT INTO {HostUpdate._meta.table_name} (host_id, installed_id, "
                "available_id, security, repository_id, first_seen_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                new_rows,
            )
            Host.update(
                updates_computed_at=now,
                reboot_required=reboot,
                packages_without_repository=orphans,
            ).where(Host.id == host.id).execute()
    security = sum(1 for _a, s, _r in desired.values() if s)
    return security, len(desired) - security


CurrentUpdate = tuple[int, int, bool, int | None]  # row id, available, security, repository


def _current_updates(host_ids: list[int] | None) -> dict[int, dict[int, CurrentUpdate]]:
    """Pending updates per host and installed package, read as plain tuples (fast)."""
    query = HostUpdate.select(
        HostUpdate.id, HostUpdate.host, HostUpdate.installed, HostUpdate.available,
        HostUpdate.security, HostUpdate.repository,
    )  # fmt: skip
    if host_ids is not None:
        query = query.where(HostUpdate.host.in_(host_ids))
    out: dict[int, dict[int, CurrentUpdate]] = defaultdict(dict)
    for row_id, host_id, installed, available, security, repo in query.tuples():
        out[host_id][installed] = (row_id, available, bool(security), repo)
    return out


LAZY_HOSTS = 20
WRITE_BATCH = 200  # below this many hosts, read only their packages from mirror indexes


def refresh_host_updates(
    now: float, host_names: list[str] | None = None, force: bool = False
) -> UpdateContext:
    """Recompute (where inputs changed) and apply updates for all or some hosts.

    Hosts with the same inputs (package set, repositories, kernel) share one update
    set, looked up once; the current pending updates of all hosts are read in one
    query, so a run over an unchanged fleet reads a few queries and writes nothing.
    """
    query = Host.select().where(Host.check_updates)
    if host_names:
        query = query.where(Host.name.in_(host_names))
    hosts = list(query.order_by(Host.id))  # no open cursor while writing
    ctx = UpdateContext(lazy=len(hosts) < LAZY_HOSTS)
    current = _current_updates([h.id for h in hosts] if host_names else None)
    groups: dict[tuple[object, ...], list[Host]] = defaultdict(list)
    for host in hosts:
        key = (host.package_set_id, host.repository_set_id, host.kernel,
               bool(host.use_os_repositories), host.os_release_id)  # fmt: skip
        groups[key].append(host)
    for members in groups.values():
        update_set = compute_update_set(members[0], now, ctx, force=force)
        ctx.reused += len(members) - 1
        for i in range(0, len(members), WRITE_BATCH):
            # one transaction per batch of hosts: a commit per host costs more than
            # the writes themselves on a large fleet
            with write_transaction():
                for host in members[i : i + WRITE_BATCH]:
                    apply_host_updates(host, update_set, now, ctx, current.get(host.id, {}))
    return ctx
