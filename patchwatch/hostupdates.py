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
    """Caches for one run: mirror indexes and package ids, loaded once, shared by all sets."""

    index_by_pset: dict[int, dict[tuple[str, str], list[tuple[int, PackageRecord]]]] = field(
        default_factory=dict
    )
    package_ids: dict[PackageRecord, int] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0

    def index(self, pset_id: int) -> dict[tuple[str, str], list[tuple[int, PackageRecord]]]:
        if pset_id not in self.index_by_pset:
            idx: dict[tuple[str, str], list[tuple[int, PackageRecord]]] = defaultdict(list)
            for row in _package_rows(PackageSetMember.package_set == pset_id):
                rec = _record(row)
                idx[(rec.name, rec.arch)].append((row[0], rec))
                self.package_ids[rec] = row[0]
            self.index_by_pset[pset_id] = idx
        return self.index_by_pset[pset_id]


def repository_membership(host: Host) -> Membership:
    """The repositories a host's updates come from: its own, or its OS release's."""
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
        line = f"{repo_id}:{prio}:{enabled}:{m.package_set_id if m else None}:{security}"
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
    membership = repository_membership(host)
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
        idx = ctx.index(mirror.package_set_id)
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


def apply_host_updates(host: Host, update_set: UpdateSet | None, now: float) -> tuple[int, int]:
    """Make the host's pending updates match its update set; keep first-seen times.

    Host-reported security updates raise the security flag of a matching update.
    Returns (security, other) counts.
    """
    desired: dict[int, tuple[int, bool, int | None]] = {}
    if update_set is not None:
        for item in UpdateSetItem.select().where(UpdateSetItem.update_set == update_set):
            desired[item.installed_id] = (item.available_id, item.security, item.repository_id)
    reported = ReportedUpdate.select().where(
        (ReportedUpdate.host == host) & ReportedUpdate.security
    )
    reported_security = {(r.name, r.arch) for r in reported}
    if reported_security and desired:
        names = dict(
            Package.select(Package.id, Package.name).where(Package.id.in_(list(desired))).tuples()
        )
        arches = dict(
            Package.select(Package.id, Package.arch).where(Package.id.in_(list(desired))).tuples()
        )
        for inst_id, (avail, sec, repo) in list(desired.items()):
            if not sec and (names[inst_id], arches[inst_id]) in reported_security:
                desired[inst_id] = (avail, True, repo)
    with write_transaction():
        current = {u.installed_id: u for u in HostUpdate.select().where(HostUpdate.host == host)}
        gone = [u.id for k, u in current.items() if k not in desired]
        if gone:
            HostUpdate.delete().where(HostUpdate.id.in_(gone)).execute()
        new_rows = []
        for inst_id, (avail, sec, repo) in desired.items():
            cur = current.get(inst_id)
            if cur is None:
                new_rows.append((host.id, inst_id, avail, sec, repo, now))
            elif (cur.available_id, cur.security, cur.repository_id) != (avail, sec, repo):
                HostUpdate.update(available=avail, security=sec, repository=repo).where(
                    HostUpdate.id == cur.id
                ).execute()
        for i in range(0, len(new_rows), 500):
            HostUpdate.insert_many(
                new_rows[i : i + 500],
                fields=[HostUpdate.host, HostUpdate.installed, HostUpdate.available,
                        HostUpdate.security, HostUpdate.repository, HostUpdate.first_seen_at],
            ).execute()  # fmt: skip
        newer_kernel = None
        if host.package_set_id is not None:
            installed = [_record(r) for r in _package_rows(
                (PackageSetMember.package_set == host.package_set_id)
                & (Package.name.startswith("linux-image-") | Package.name.startswith("kernel"))
            )]  # fmt: skip
            newer_kernel = compute_newer_kernel_installed(host.kernel, installed)
        reboot = bool(host.reboot_reported) or bool(newer_kernel)
        Host.update(
            updates_computed_at=now,
            reboot_required=reboot,
            packages_without_repository=(
                update_set.packages_without_repository if update_set is not None else None
            ),
        ).where(Host.id == host.id).execute()
    security = sum(1 for _a, s, _r in desired.values() if s)
    return security, len(desired) - security


def refresh_host_updates(
    now: float, host_names: list[str] | None = None, force: bool = False
) -> UpdateContext:
    """Recompute (where inputs changed) and apply updates for all or some hosts."""
    ctx = UpdateContext()
    query = Host.select().where(Host.check_updates)
    if host_names:
        query = query.where(Host.name.in_(host_names))
    for host in list(query.order_by(Host.id)):  # no open cursor while writing
        update_set = compute_update_set(host, now, ctx, force=force)
        apply_host_updates(host, update_set, now)
    return ctx
