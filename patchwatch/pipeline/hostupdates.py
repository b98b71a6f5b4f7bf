"""Compute updates once per (package set, repository set, kernel) and give them to hosts.

Fleets are homogeneous, so many hosts share the same inputs; the computation runs once
per distinct triple and is stored as an :class:`UpdateSet`. Its ``inputs_digest``
records which mirror data it used, so a refresh that changed nothing recomputes
nothing, and a changed mirror recomputes only the sets that use it. Per host, only the
first-seen time of each pending update is kept, so patch age is a fact, not a guess.

A run over a fleet is built for drift. Hosts are drifting copies of a few images, so
almost every host is a distinct package set, but the sets share nearly all their
packages: a run decides each installed (name, arch) once per set of sources (the
repositories, their priorities and security flags, the mirror data they serve) and
remembers the decision, so a new package set costs dict lookups for what it shares
with sets already computed. Mirror indexes, advisories and package rows are read once
per run, set members as plain ids, and results are written in bulk, many hosts per
transaction.

An update of a package with a fixable vulnerability is a security update whatever
repository offers it: the findings of the same (package set, repository set) name
those packages (``store.vulns.fixing_sets``), and the set's digest covers them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import operator
import queue
import threading
from collections import Counter
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from functools import reduce

from peewee import JOIN
from peewee import Select

from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.updates import HoldKey
from patchwatch.domain.updates import Offer
from patchwatch.domain.updates import compute_newer_kernel_installed
from patchwatch.domain.updates import decide_update
from patchwatch.domain.updates import decode_holds
from patchwatch.domain.updates import has_newer
from patchwatch.domain.updates import is_held
from patchwatch.domain.updates import match_arch
from patchwatch.domain.versions import Key
from patchwatch.domain.versions import sort_key
from patchwatch.store.db import ARRAY_PARAMETER_SIZE
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import execute_many
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import placeholders
from patchwatch.store.db import raw_sql
from patchwatch.store.db import update_many
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSReleaseRepository
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import ReportedUpdate
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.models import UpdateSet
from patchwatch.store.models import UpdateSetItem
from patchwatch.store.package_sets import WHOLE_MEMBER_ROWS
from patchwatch.store.package_sets import matching_members
from patchwatch.store.package_sets import package_ids_of
from patchwatch.store.vulns import Fixing
from patchwatch.store.vulns import FixingBlobs
from patchwatch.store.vulns import decode_fixing
from patchwatch.store.vulns import fixing_sets

log = logging.getLogger(__name__)

#: (repository id, priority, enabled, the only names it offers: None for all of them,
#: the pinned names for an apk tagged repository)
Membership = list[tuple[int, int, bool, frozenset[str] | None]]
PackageRow = tuple[str, str, str, str, str, str]  # kind, name, epoch, version, release, arch
NameArch = tuple[str, str]  # name, arch as match_arch gives it ("" for pacman: by name)
Item = tuple[int, bool, int | None]  # available package id, security, repository id
Items = dict[int, Item]  # installed package id -> its update
UpdateSetKey = tuple[int, int | None, str]  # package set, repository set, kernel (+ OS)
# a stored pending update: row id, available package id, security, repository id, first
# seen, held
CurrentUpdate = tuple[int, int, bool, int | None, float, bool]

LAZY_HOSTS = 20  # below this many hosts, read only their packages from mirror indexes
WRITE_HOSTS = 500  # most hosts written per transaction
WRITE_ROWS = 50_000  # most pending updates compared or written per transaction
WRITE_AHEAD = 2  # batches computed and waiting for the writer thread, at most

_KINDS = {k.value: k for k in PackageKind}
_PACMAN = PackageKind.ARCH.value


_T_PACKAGE = Package._meta.table_name
_T_MEMBER = WHOLE_MEMBER_ROWS  # mirrors' sets: always whole (patchwatch.store.package_sets)
_T_PACKAGE_SET = PackageSet._meta.table_name
_T_HOST = Host._meta.table_name
_T_HOST_UPDATE = HostUpdate._meta.table_name
_T_ITEM = UpdateSetItem._meta.table_name
_T_UPDATE_SET = UpdateSet._meta.table_name
_PACKAGE_COLUMNS = "p.id, p.kind, p.name, p.epoch, p.version, p.release, p.arch"


@dataclass(frozen=True)
class Sources:
    """What updates are computed from for one repository membership, for every set using it.

    ``offering`` has (repository id, priority, security, mirror package set, the only
    names it offers or None) for each enabled repository with mirror data, in the
    host's order: between equal versions
    and priorities the first repository wins, as in ``compute_updates``.
    ``advisory_repositories`` are the enabled repositories whose security advisories
    count. ``decisions`` numbers the pair of them: memberships that differ only in what
    the digest covers but no decision depends on share their decisions.
    """

    digest: str
    offering: tuple[tuple[int, int, bool, int, frozenset[str] | None], ...]
    advisory_repositories: tuple[int, ...]
    has_mirror_data: bool  # False: nothing can be said about packages without repository
    decisions: int
    # every enabled repository the server can read has mirror data (and there is one):
    # without it the host's counts are not known, only partial
    complete: bool = False


@dataclass
class Decisions:
    """What a run decided about installed packages, for one :class:`Sources` number.

    Each id is decided as if it were the newest installed version of its name and
    arch (the decision depends on nothing else), so the same decision serves every
    package set that has it, whatever else the set has.
    """

    seen: set[int] = field(default_factory=set)  # installed ids decided
    updates: dict[int, Item] = field(default_factory=dict)  # those with an update
    not_offered: set[int] = field(default_factory=set)  # those no offering mirror has


@dataclass
class UpdateContext:
    """Caches for one run, shared by every host and update set it touches.

    ``lazy``: for a run over a few hosts (one new report), read only the packages
    those hosts have from each mirror's index instead of loading whole indexes.

    Everything cached here is immutable for the run: a package row never changes, a
    package set (a mirror's index, a host's packages) is replaced, never edited.
    """

    lazy: bool = False
    written_aside: bool = False  # batches written by a thread of their own
    computed: int = 0
    reused: int = 0
    hosts_changed: int = 0
    membership: dict[tuple[int | None, int | None, bool], Membership] = field(default_factory=dict)
    sources: dict[tuple[tuple[int, int, bool, frozenset[str] | None], ...], Sources] = field(
        default_factory=dict
    )
    rows: dict[int, PackageRow] = field(default_factory=dict)
    name_arch: dict[int, NameArch] = field(default_factory=dict)
    # installed ids by (name, arch), and those sharing theirs with another installed id
    installed_versions: dict[NameArch, list[int]] = field(default_factory=dict)
    multi_version: set[int] = field(default_factory=set)
    keys: dict[int, Key] = field(default_factory=dict)
    records: dict[int, PackageRecord] = field(default_factory=dict)
    # mirror package set -> (name, arch) -> package ids (ascending), and all its ids
    indexes: dict[int, dict[NameArch, list[int]]] = field(default_factory=dict)
    index_ids: dict[int, set[int]] = field(default_factory=dict)
    index_keys: dict[int, set[NameArch]] = field(default_factory=dict)  # lazy: what was read
    full_indexes: set[int] = field(default_factory=set)
    decisions: dict[int, Decisions] = field(default_factory=dict)  # by Sources.decisions
    decision_numbers: dict[tuple[object, ...], int] = field(default_factory=dict)
    advisories: dict[tuple[int, ...], dict[NameArch, list[Key]]] = field(default_factory=dict)
    kernel_members: dict[int, set[int]] | None = None  # package set -> kernel package ids
    kernels: dict[int, list[PackageRecord]] = field(default_factory=dict)
    newer_kernel: dict[tuple[str, int], bool | None] = field(default_factory=dict)

    # --- packages -------------------------------------------------------------------

    def add_row(self, pid: int, row: PackageRow) -> None:
        """Remember a package row read by any query of the run."""
        if pid not in self.rows:
            self.rows[pid] = row
            self.name_arch[pid] = (row[1], match_arch(row[0], row[5]))

    def ensure_rows(self, ids: Iterable[int]) -> None:
        """Read the rows of the packages not read yet, a few hundred per query."""
        missing = sorted((ids if isinstance(ids, set) else set(ids)).difference(self.rows))
        for chunk in chunks(missing):
            sql = (
                f"SELECT {_PACKAGE_COLUMNS} FROM {_T_PACKAGE} p "
                f"WHERE p.id IN ({placeholders(len(chunk))})"
            )
            for pid, *row in database.execute_sql(raw_sql(sql), list(chunk)).fetchall():
                self.add_row(pid, tuple(row))

    def key(self, pid: int) -> Key:
        """The version sort key of a package, computed once per run."""
        key = self.keys.get(pid)
        if key is None:
            kind, _name, epoch, version, release, _arch = self.rows[pid]
            key = self.keys[pid] = sort_key(_KINDS[kind], epoch, version, release)
        return key

    def record(self, pid: int) -> PackageRecord:
        """The package as a record, built only for what the decisions look at."""
        rec = self.records.get(pid)
        if rec is None:
            kind, name, epoch, version, release, arch = self.rows[pid]
            rec = self.records[pid] = PackageRecord(
                name, epoch, version, release, arch, _KINDS[kind]
            )
        return rec

    # --- mirror indexes ---------------------------------------------------------------

    def load_indexes(self, psets: Iterable[int], keys: set[NameArch] | None) -> None:
        """Read mirror indexes: whole ones, or (lazy) only these names and archs of them."""
        todo = [ps for ps in dict.fromkeys(psets) if ps not in self.full_indexes]
        if not todo:
            return
        if keys is None:
            for ps in todo:
                self._load_whole_index(ps)
            return
        wanted = {ps: keys - self.index_keys.setdefault(ps, set()) for ps in todo}
        missing = sorted({name for ps in todo for name, _arch in wanted[ps]})
        targets = [ps for ps in todo if wanted[ps]]
        for chunk in chunks(missing):
            sql = (
                # CROSS JOIN: SQLite then looks the names up first and probes each
                # package's membership; it would otherwise read the whole indexes
                f"SELECT m.package_set_id, {_PACKAGE_COLUMNS} FROM {_T_PACKAGE} p "
                f"CROSS JOIN {_T_MEMBER} m WHERE m.package_id = p.id "
                f"AND p.name IN ({placeholders(len(chunk))}) "
                f"AND m.package_set_id IN ({placeholders(len(targets))}) ORDER BY p.id"
            )
            for ps, pid, *row in database.execute_sql(raw_sql(sql), [*chunk, *targets]).fetchall():
                na = (row[1], match_arch(row[0], row[5]))
                if na in wanted[ps]:
                    self.add_row(pid, tuple(row))
                    self.indexes.setdefault(ps, {}).setdefault(na, []).append(pid)
                    self.index_ids.setdefault(ps, set()).add(pid)
        for ps in targets:
            self.index_keys[ps] |= wanted[ps]

    def _load_whole_index(self, ps: int) -> None:
        """Read one mirror's index once per run, grouped by (name, arch), by package id."""
        index: dict[NameArch, list[int]] = defaultdict(list)
        sql = (
            f"SELECT {_PACKAGE_COLUMNS} FROM {_T_MEMBER} m "
            f"JOIN {_T_PACKAGE} p ON p.id = m.package_id "
            "WHERE m.package_set_id = ? ORDER BY m.package_id"
        )
        rows = self.rows
        for pid, *row in database.execute_sql(raw_sql(sql), (ps,)).fetchall():
            if pid not in rows:
                self.add_row(pid, tuple(row))
            index[(row[1], row[5] if row[0] != _PACMAN else "")].append(pid)  # match_arch
        self.indexes[ps] = dict(index)
        self.index_ids[ps] = {pid for ids in index.values() for pid in ids}
        self.full_indexes.add(ps)

    def note_installed(self, pids: Iterable[int]) -> None:
        """Remember which installed ids share a name and arch with another installed id."""
        for pid in pids:
            versions = self.installed_versions.setdefault(self.name_arch[pid], [])
            if pid not in versions:
                versions.append(pid)
                if len(versions) > 1:
                    self.multi_version.update(versions)

    # --- advisories -------------------------------------------------------------------

    def advisory_keys(self, repo_ids: tuple[int, ...]) -> dict[NameArch, list[Key]]:
        """Sort keys of the versions security advisories of these repositories fix."""
        if repo_ids in self.advisories:
            return self.advisories[repo_ids]
        out: dict[NameArch, list[Key]] = defaultdict(list)
        if repo_ids:
            query = (
                Package.select(Package.kind, Package.name, Package.epoch,
                               Package.version, Package.release, Package.arch)
                .join(AdvisoryPackage, on=(AdvisoryPackage.package == Package.id))
                .join(Advisory, JOIN.INNER, on=(AdvisoryPackage.advisory == Advisory.id))
                .where(Advisory.repository.in_(list(repo_ids)) & (Advisory.type == "security"))
                .tuples()
            )  # fmt: skip
            for kind, name, epoch, version, release, arch in query:
                out[(name, match_arch(kind, arch))].append(
                    sort_key(_KINDS[kind], epoch, version, release)
                )
        self.advisories[repo_ids] = dict(out)
        return self.advisories[repo_ids]

    # --- kernels ----------------------------------------------------------------------

    def installed_kernels(self, psets: Iterable[int]) -> None:
        """Read the kernel packages of these package sets (for the reboot signal)."""
        todo = [ps for ps in dict.fromkeys(psets) if ps not in self.kernels]
        if not todo:
            return
        if not self.lazy and self.kernel_members is None:
            # a whole fleet: find the kernel packages once, then the sets holding them
            kernel_ids = []
            for pid, *row in _kernel_packages().tuples():
                self.add_row(pid, tuple(row))
                kernel_ids.append(pid)
            self.kernel_members = matching_members(None, kernel_ids) if kernel_ids else {}
        if self.kernel_members is not None:
            for ps in todo:
                ids = sorted(self.kernel_members.get(ps, ()))
                self.kernels[ps] = [self.record(pid) for pid in ids]
            return
        found = matching_members(todo, package_where=_KERNEL_WHERE)
        missing = sorted({pid for ids in found.values() for pid in ids} - set(self.rows))
        for chunk in chunks(missing):
            for pid, *row in _kernel_packages().where(Package.id.in_(list(chunk))).tuples():
                self.add_row(pid, tuple(row))
        for ps in todo:
            self.kernels[ps] = [self.record(pid) for pid in sorted(found.get(ps, ()))]


_KERNEL_PREFIXES = ("linux-image-", "kernel")  # names of packages that may be kernels
# the same test in SQL on a package row "p", for reads that join no model: peewee's
# startswith is a case-insensitive LIKE on both backends, hence LOWER
_KERNEL_WHERE = " OR ".join(f"LOWER(p.name) LIKE '{prefix}%'" for prefix in _KERNEL_PREFIXES)


def _kernel_packages() -> Select:
    """Packages that may be kernels: the reboot signal looks among these."""
    may_be_kernel = reduce(operator.or_, (Package.name.startswith(p) for p in _KERNEL_PREFIXES))
    return Package.select(
        Package.id, Package.kind, Package.name, Package.epoch,
        Package.version, Package.release, Package.arch,
    ).where(may_be_kernel)  # fmt: skip


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
        group = (
            OSReleaseRepository.select(Repository.id, Repository.kind, Repository.repo_id)
            .join(Repository, on=(OSReleaseRepository.repository == Repository.id))
            .where(OSReleaseRepository.os_release == host.os_release_id)
            .tuples()
        )
        # an OS group's apk tagged repository offers nothing: pins are per host
        return [(rid, 500, True, _tagged(kind, repo_id)) for rid, kind, repo_id in group]
    if host.repository_set_id is None:
        return []
    rows = RepositorySetMember.select().where(
        RepositorySetMember.repository_set == host.repository_set_id
    )
    return [(r.repository_id, r.priority, r.enabled, _pinned(r.pinned)) for r in rows]


def _pinned(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(text.split())


def _tagged(kind: str, repo_id: str) -> frozenset[str] | None:
    """Nothing for an apk repository reported with a tag (id ``@edge URL``), else None."""
    return frozenset() if kind == "apk" and repo_id.startswith("@") else None


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
    for repo_id, prio, enabled, only in sorted(membership, key=lambda m: m[0]):
        m = mirrors.get(repo_id)
        r = repos.get(repo_id)
        security = r.is_security if r else False
        data = f"{m.package_set_id}/{m.metadata_checksum}" if m else None
        line = f"{repo_id}:{prio}:{enabled}:{data}:{security}"
        if only is not None:
            line += ":" + " ".join(sorted(only))
        h.update(f"{line}:{r.enabled if r else 0};".encode())
    return h.hexdigest()


def sources_for(membership: Membership, ctx: UpdateContext) -> Sources:
    """The sources of a membership, read once per run."""
    cache_key = tuple(membership)
    if cache_key in ctx.sources:
        return ctx.sources[cache_key]
    repo_ids = [r for r, _p, e, _o in membership if e]
    repos = (
        {r.id: r for r in Repository.select().where(Repository.id.in_(repo_ids))}
        if repo_ids
        else {}
    )
    mirrors = _serving_mirrors(repo_ids) if repo_ids else {}
    offering = []
    missing = False  # a repository the server could read but has no data of
    for repo_id, priority, enabled, only in membership:
        repo = repos.get(repo_id)
        mirror = mirrors.get(repo_id)
        if not enabled or repo is None or not repo.enabled or mirror is None:
            missing = missing or bool(
                enabled and repo is not None and repo.enabled and not repo.auth_required
            )
            continue
        offering.append((repo_id, priority, repo.is_security, mirror.package_set_id, only))
    advisory_repositories = tuple(sorted(set(repo_ids)))
    decided_by = (tuple(offering), advisory_repositories)
    number = ctx.decision_numbers.setdefault(decided_by, len(ctx.decision_numbers))
    sources = Sources(
        digest=inputs_digest(membership, mirrors, repos),
        offering=tuple(offering),
        advisory_repositories=advisory_repositories,
        has_mirror_data=bool(mirrors),
        decisions=number,
        complete=bool(offering) and not missing,
    )
    ctx.sources[cache_key] = sources
    return sources


def compute_items(ctx: UpdateContext, sources: Sources, pset_id: int) -> tuple[Items, int | None]:
    """Compute one package set's pending updates; return them and the count of packages
    no repository offers (None when no repository has mirror data).

    Only the ids no set computed before in this run had are decided; the rest are a
    few set operations, in C, over the set's 1,500 ids. Several installed versions of
    one name and arch (kernels, installonly rpms) are narrowed to the newest, as
    ``newest_installed`` does.
    """
    installed = package_ids_of(pset_id)
    decisions = ctx.decisions.setdefault(sources.decisions, Decisions())
    new = installed.difference(decisions.seen)
    if new:
        ctx.ensure_rows(new)
        psets = [o[3] for o in sources.offering]
        ctx.load_indexes(psets, {ctx.name_arch[p] for p in new} if ctx.lazy else None)
        index_ids = [(ctx.index_ids.get(o[3], set()), o[4]) for o in sources.offering]
        for pid in sorted(new):
            if not any(
                pid in ids and (only is None or ctx.name_arch[pid][0] in only)
                for ids, only in index_ids
            ):
                decisions.not_offered.add(pid)
            item = _decide(ctx, sources, pid)
            if item is not None:
                decisions.updates[pid] = item
        decisions.seen |= new
        ctx.note_installed(sorted(new))
    older = _older_versions(ctx, installed.intersection(ctx.multi_version))
    newest = installed - older if older else installed
    items = {pid: decisions.updates[pid] for pid in decisions.updates.keys() & newest}
    orphans = None
    if sources.has_mirror_data:
        orphans = len(installed.intersection(decisions.not_offered))
    return items, orphans


def _older_versions(ctx: UpdateContext, several: set[int]) -> set[int]:
    """Of these installed ids, those with a newer installed version of their name and arch.

    ``several`` are the ids that share their name and arch with another id *somewhere
    in the run*: in a drifting fleet some hundreds per set (one host's older curl, the
    next one's newer), of which only a few (the kernels) share it within this set. Those
    few are found by counting, in C, before any version is compared (docs/performance.md
    has what comparing all of them cost).
    """
    if len(several) < 2:
        return set()
    pids = list(several)
    name_arch = list(map(ctx.name_arch.__getitem__, pids))
    if len(set(name_arch)) == len(name_arch):
        return set()
    counts = Counter(name_arch)
    shared = sorted(pid for pid, na in zip(pids, name_arch, strict=True) if counts[na] > 1)
    best: dict[NameArch, int] = {}
    for pid in shared:  # ascending ids: between equal versions the lowest id stays
        na = ctx.name_arch[pid]
        cur = best.get(na)
        if cur is None or ctx.key(pid) > ctx.key(cur):
            best[na] = pid
    return set(shared).difference(best.values())


def _decide(ctx: UpdateContext, sources: Sources, pid: int) -> Item | None:
    """Decide one installed package as the newest installed of its name and arch.

    The offers are gathered in the order ``compute_updates`` sees them (repositories in
    the host's order, each index by package id), which decides ties. Most packages are
    offered at exactly their installed version or not at all, and need no version key.
    """
    na = ctx.name_arch[pid]
    offer_ids = [
        (repo_id, priority, security, offered)
        for repo_id, priority, security, ps, only in sources.offering
        if only is None or na[0] in only  # apk: a tagged repository, a pinned name
        for offered in ctx.indexes.get(ps, {}).get(na, ())
    ]
    if all(o[3] == pid for o in offer_ids):  # offered at exactly its version, or not at all
        return None
    installed_key = ctx.key(pid)
    if not has_newer(installed_key, (ctx.key(o[3]) for o in offer_ids)):
        return None
    offers = [
        (ctx.key(offered), Offer(ctx.record(offered), str(repo_id), priority, security))
        for repo_id, priority, security, offered in offer_ids
    ]
    advisories = ctx.advisory_keys(sources.advisory_repositories).get(na, ())
    decided = decide_update(ctx.record(pid), installed_key, offers, advisories)
    if decided is None:
        return None
    offer, security = decided
    available = next(o[3] for o, (_k, off) in zip(offer_ids, offers, strict=True) if off is offer)
    return available, security, int(offer.repository)


@dataclass
class _SetWork:
    """One update set in a run: reused as stored, or computed and to be written."""

    key: UpdateSetKey
    sources: Sources
    id: int | None
    items: Items | None  # None: stored items, read when its hosts are written
    orphans: int | None
    computed: bool  # computed and not written yet
    # the findings' fixing packages as stored (``store.vulns.fixing_sets``), decoded
    # only for hosts a run writes: an unchanged run never decodes them
    fix_blobs: FixingBlobs = ()
    fresh: bool = False  # computed in this run: kept rows may need moving back
    _since: dict[int, float] | None = None

    def since(self) -> dict[int, float]:
        """Installed id -> the time its update's first-seen may start at: the earliest
        publication of the vulnerabilities it fixes (``vulns_first_seen_at_publication``)."""
        if self._since is None:
            decoded = decode_fixing(self.fix_blobs) if self.fix_blobs else {}
            self._since = {p: t for p, t in decoded.items() if t is not None}
        return self._since


def _existing_sets(psets: list[int] | None) -> dict[UpdateSetKey, tuple[int, str, int | None]]:
    """Stored update sets (id, digest, packages without repository) by their inputs."""
    out: dict[UpdateSetKey, tuple[int, str, int | None]] = {}
    query = UpdateSet.select(
        UpdateSet.id, UpdateSet.package_set, UpdateSet.repository_set, UpdateSet.kernel,
        UpdateSet.inputs_digest, UpdateSet.packages_without_repository,
    ).order_by(UpdateSet.id.desc())  # fmt: skip
    parts = [None] if psets is None else list(chunks(psets))
    for chunk in parts:
        q = query if chunk is None else query.where(UpdateSet.package_set.in_(list(chunk)))
        for us_id, pset, rset, kernel, digest, orphans in q.tuples():
            out[(pset, rset, kernel)] = (us_id, digest, orphans)  # lowest id wins
    return out


def _read_items(set_ids: Sequence[int]) -> dict[int, Items]:
    """The stored items of update sets, as plain tuples."""
    out: dict[int, Items] = defaultdict(dict)
    for chunk in chunks(set_ids):
        sql = (
            "SELECT update_set_id, installed_id, available_id, security, repository_id "
            f"FROM {_T_ITEM} WHERE update_set_id IN ({placeholders(len(chunk))})"
        )
        for us_id, installed, available, security, repo in database.execute_sql(
            raw_sql(sql), list(chunk)
        ).fetchall():
            out[us_id][installed] = (available, bool(security), repo)
    return out


def _write_sets(now: float, sets: list[_SetWork]) -> None:
    """Store computed update sets: rows created or updated, items replaced if changed."""
    new = [s for s in sets if s.id is None]
    for chunk in chunks(new, 100):
        UpdateSet.insert_many(
            [(s.key[0], s.key[1], s.key[2], now, s.sources.digest, s.orphans) for s in chunk],
            fields=[UpdateSet.package_set, UpdateSet.repository_set, UpdateSet.kernel,
                    UpdateSet.computed_at, UpdateSet.inputs_digest,
                    UpdateSet.packages_without_repository],
        ).on_conflict_ignore().execute()  # fmt: skip
    inserted: set[int] = set()
    if new:
        ids = _existing_sets(sorted({s.key[0] for s in new}))
        for s in new:
            s.id, digest, orphans = ids[s.key]
            if digest == s.sources.digest and orphans == s.orphans:
                inserted.add(s.id)  # or an equal row another run wrote meanwhile
    stored = _read_items([s.id for s in sets if s.id is not None])
    changed = [s for s in sets if stored.get(s.id, {}) != s.items]
    for chunk in chunks([s.id for s in changed if stored.get(s.id)]):
        UpdateSetItem.delete().where(UpdateSetItem.update_set.in_(list(chunk))).execute()
    execute_many(
        f"INSERT INTO {_T_ITEM} (update_set_id, installed_id, available_id, security, "
        "repository_id) VALUES (?, ?, ?, ?, ?)",
        [(s.id, inst, *item) for s in changed for inst, item in s.items.items()],
    )
    update_many(
        f"UPDATE {_T_UPDATE_SET} SET computed_at = ?, inputs_digest = ?, "
        "packages_without_repository = ? WHERE id = ?",
        [(now, s.sources.digest, s.orphans, s.id) for s in sets if s.id not in inserted],
    )


def _current_updates(host_ids: Sequence[int]) -> dict[int, dict[int, CurrentUpdate]]:
    """Pending updates per host and installed package, read as plain tuples (fast)."""
    out: dict[int, dict[int, CurrentUpdate]] = defaultdict(dict)
    for chunk in chunks(host_ids):
        sql = (
            "SELECT id, host_id, installed_id, available_id, security, repository_id, "
            f"first_seen_at, held FROM {_T_HOST_UPDATE} "
            f"WHERE host_id IN ({placeholders(len(chunk))})"
        )
        rows = database.execute_sql(raw_sql(sql), list(chunk)).fetchall()
        for row_id, host_id, installed, available, security, repo, first, held in rows:
            out[host_id][installed] = (row_id, available, bool(security), repo, first, bool(held))
    return out


def _host_holds(host_ids: Sequence[int]) -> dict[int, frozenset[HoldKey]]:
    """The packages each of these hosts holds (only hosts holding some)."""
    out: dict[int, frozenset[HoldKey]] = {}
    for chunk in chunks(host_ids):
        sql = (
            f"SELECT id, held FROM {_T_HOST} "
            f"WHERE id IN ({placeholders(len(chunk))}) AND held <> ''"
        )
        for host_id, text in database.execute_sql(raw_sql(sql), list(chunk)).fetchall():
            holds = decode_holds(text)
            if holds:
                out[host_id] = holds
    return out


def _reported_security(host_ids: Sequence[int]) -> dict[int, set[NameArch]]:
    """(name, arch) the hosts' own package managers called security updates."""
    out: dict[int, set[NameArch]] = defaultdict(set)
    for chunk in chunks(host_ids):
        query = ReportedUpdate.select(
            ReportedUpdate.host, ReportedUpdate.name, ReportedUpdate.arch
        ).where(ReportedUpdate.host.in_(list(chunk)) & ReportedUpdate.security)
        for host_id, name, arch in query.tuples():
            out[host_id].add((name, arch))
    return out


def _write_hosts(ctx: UpdateContext, now: float, batch: list[tuple[Host, _SetWork | None]]) -> None:
    """Make the hosts' pending updates match their update sets; keep first-seen times.

    Host-reported security updates raise the security flag of a matching update, and
    an update of a package the host holds is marked held. A changed update is
    replaced by a row with the same first-seen time; a hold put or lifted only flips
    the flag. Nothing is written for a host where nothing changed, which is the
    common case. The host row records the kernel's part of the reboot flag
    (``patchwatch.domain.reboot``), whether the counts are complete, and which inputs they
    were computed from.
    """
    host_ids = [h.id for h, _w in batch]
    current = _current_updates(host_ids)
    reported = _reported_security(host_ids)
    holds = _host_holds(host_ids)
    reused = {w.id: w for _h, w in batch if w is not None and w.items is None}
    for us_id, items in _read_items(sorted(reused)).items():
        reused[us_id].items = items
    for w in reused.values():
        if w.items is None:
            w.items = {}
    ctx.installed_kernels(h.package_set_id for h, w in batch if w is not None)
    gone: list[int] = []
    new_rows: list[tuple[object, ...]] = []
    copies: list[tuple[int, int]] = []  # (host id, update set id): rows copied in SQL
    flips: dict[bool, list[int]] = defaultdict(list)  # held flag -> rows to set it on
    stamps: list[tuple[object, ...]] = []  # the host rows to write, one statement each
    earlier_rows: list[tuple[float, int]] = []  # (first seen, row id): kept rows backdated
    earlier_copies: list[tuple[float, int, int, float]] = []  # copied rows backdated
    for host, work in batch:
        desired: Items = work.items if work is not None and work.items is not None else {}
        fixes = work if work is not None and work.fix_blobs else None

        written: dict[int, float] = {}  # installed id -> the first-seen time written

        def start(
            inst: int,
            base: float,
            fixes: _SetWork | None = fixes,
            written: dict[int, float] = written,
        ) -> float:
            """A first-seen time: ``base``, or the publication of what it fixes if earlier."""
            t = fixes.since().get(inst) if fixes is not None else None
            written[inst] = t if t is not None and t < base else base
            return written[inst]

        security_names = reported.get(host.id)
        held: set[int] = set()  # installed ids of desired updates the host holds
        host_holds = holds.get(host.id)
        if host_holds and desired:
            ctx.ensure_rows(desired)
            held = {i for i in desired if is_held(host_holds, ctx.rows[i][1], ctx.rows[i][5])}
        if security_names and desired:
            ctx.ensure_rows(desired)
            desired = {
                inst: (avail, True, repo)
                if not sec and (ctx.rows[inst][1], ctx.rows[inst][5]) in security_names
                else (avail, sec, repo)
                for inst, (avail, sec, repo) in desired.items()
            }
        cur = current.get(host.id)
        changed = False
        if not (cur or security_names or held) and desired and work is not None and work.id:
            copies.append((host.id, work.id))  # exactly its update set's stored items
            changed = True
            for inst in fixes.since().keys() & desired.keys() if fixes is not None else ():
                t = start(inst, now)
                earlier_copies.append((t, host.id, inst, t))
        elif not cur:
            new_rows.extend(
                (host.id, inst, *item, start(inst, now), inst in held)
                for inst, item in desired.items()
            )
            changed = bool(desired)
        else:
            for inst, (row_id, *_rest) in cur.items():
                if inst not in desired:
                    gone.append(row_id)
                    changed = True
            for inst, item in desired.items():
                old = cur.get(inst)
                if old is None:
                    new_rows.append((host.id, inst, *item, start(inst, now), inst in held))
                    changed = True
                elif old[1:4] != item:
                    gone.append(old[0])
                    new_rows.append((host.id, inst, *item, start(inst, old[4]), inst in held))
                    changed = True
                else:
                    if old[5] != (inst in held):
                        flips[inst in held].append(old[0])
                        changed = True
                    # only when the set's fixes changed in this run (else done before)
                    if fixes is not None and fixes.fresh and start(inst, old[4]) < old[4]:
                        earlier_rows.append((written[inst], old[0]))
                        changed = True
        newer_kernel = None
        if host.package_set_id is not None:
            nk_key = (host.kernel or "", host.package_set_id)
            if nk_key not in ctx.newer_kernel:
                ctx.newer_kernel[nk_key] = compute_newer_kernel_installed(
                    host.kernel, ctx.kernels[host.package_set_id]
                )
            newer_kernel = ctx.newer_kernel[nk_key]
        orphans = work.orphans if work is not None else None
        complete = work is not None and work.sources.complete
        stored = (host.security_updates, host.other_updates, host.held_updates,
                  host.oldest_security_at)  # fmt: skip
        # rows unchanged: so are their counts (dbcheck compares them), unless never written
        recount = changed or stored[0] is None
        counts = _counts(desired, held, cur, now, written) if recount else stored
        seen = host.inputs_changed_at  # the inputs as this run read them
        if (
            changed
            or host.reboot_kernel != newer_kernel
            or host.packages_without_repository != orphans
            or host.updates_computed_at is None
            or bool(host.updates_complete) != complete
            or host.updates_inputs_at != seen
            or stored != counts
        ):
            ctx.hosts_changed += 1
            # never older than the inputs it reflects: a report processed just after
            # this run began must not look newer than the numbers computed from it
            computed_at = seen if seen is not None and seen > now else now
            stamps.append((computed_at, newer_kernel, orphans, complete, seen, *counts, host.id))
    for chunk in chunks(gone):
        HostUpdate.delete().where(HostUpdate.id.in_(list(chunk))).execute()
    execute_many(
        f"INSERT INTO {_T_HOST_UPDATE} (host_id, installed_id, available_id, security, "
        "repository_id, first_seen_at, held) VALUES (?, ?, ?, ?, ?, ?, ?)",
        new_rows,
    )
    for flag, row_ids in flips.items():
        for chunk in chunks(row_ids):
            HostUpdate.update(held=flag).where(HostUpdate.id.in_(list(chunk))).execute()
    _copy_set_items(copies, now)
    update_many(f"UPDATE {_T_HOST_UPDATE} SET first_seen_at = ? WHERE id = ?", earlier_rows)
    update_many(
        f"UPDATE {_T_HOST_UPDATE} SET first_seen_at = ? WHERE host_id = ? AND installed_id = ? "
        "AND first_seen_at > ?",
        earlier_copies,
    )
    update_many(
        f"UPDATE {_T_HOST} SET updates_computed_at = ?, reboot_kernel = ?, "
        "packages_without_repository = ?, updates_complete = ?, updates_inputs_at = ?, "
        "security_updates = ?, other_updates = ?, held_updates = ?, oldest_security_at = ? "
        "WHERE id = ?",
        stamps,
    )


def _counts(
    desired: Items,
    held: set[int],
    current: dict[int, CurrentUpdate] | None,
    now: float,
    written: dict[int, float] | None = None,
) -> tuple[int, int, int, float | None]:
    """The host's counts (``patchwatch.store.host_counts``) once its updates are written:
    security, other, held, and the first-seen time of its oldest security update.

    Counted from what is written rather than read back, in the same transaction: a
    kept or replaced update keeps its first-seen time, a new one is seen ``now``, unless
    ``written`` says the time written (one that fixes a vulnerability may start at its
    publication).
    """
    security = other = held_count = 0
    oldest: float | None = None
    for inst, (_avail, sec, _repo) in desired.items():
        if inst in held:
            held_count += 1
        elif not sec:
            other += 1
        else:
            security += 1
            old = current.get(inst) if current else None
            seen = old[4] if old is not None else now
            if written and inst in written:
                seen = written[inst]
            if oldest is None or seen < oldest:
                oldest = seen
    return security, other, held_count, oldest


def _copy_set_items(copies: Sequence[tuple[int, int]], now: float) -> None:
    """Give hosts with no pending updates yet their update sets' items, in the database.

    Why: a host's first computation (a new host, or a fleet's first run) is a copy of
    its update set's items with one first-seen time. Copied by ``INSERT ... SELECT``,
    the rows never pass through Python: no tuple built, bound or sent per row
    (SQLite: one statement per host; PostgreSQL: one per 10,000 hosts, their ids as
    two arrays).
    """
    if not copies:
        return
    columns = "installed_id, available_id, security, repository_id"
    head = f"INSERT INTO {_T_HOST_UPDATE} (host_id, {columns}, first_seen_at) "
    if is_sqlite():
        rows = [(host_id, now, us_id) for host_id, us_id in copies]
        execute_many(f"{head}SELECT ?, {columns}, ? FROM {_T_ITEM} WHERE update_set_id = ?", rows)
        return
    sql = (
        f"{head}SELECT h.host_id, {columns}, %s FROM unnest(%s::int[], %s::int[]) "
        f"AS h(host_id, update_set_id) JOIN {_T_ITEM} i ON i.update_set_id = h.update_set_id"
    )
    for chunk in chunks(copies, ARRAY_PARAMETER_SIZE):
        host_ids, set_ids = zip(*chunk, strict=True)
        database.execute_sql(sql, (now, list(host_ids), list(set_ids)))


def refresh_host_updates(
    now: float, host_names: list[str] | None = None, force: bool = False
) -> UpdateContext:
    """Recompute (where inputs changed) and apply updates for all or some hosts.

    Hosts with the same inputs (package set, repositories, kernel) share one update
    set; the stored sets are looked up in one query. Computing happens outside any
    transaction; writes go in batches of hosts (:data:`WRITE_HOSTS`,
    :data:`WRITE_ROWS`), each one transaction that first reads those hosts' current
    pending updates, so a run over an unchanged fleet reads a few queries per batch
    and writes nothing. On PostgreSQL a fleet's batches are written by a thread of
    their own while the next ones are computed (:class:`_BatchWriter`).
    """
    query = Host.select(
        Host.id, Host.package_set, Host.repository_set, Host.kernel, Host.os_release,
        Host.use_os_repositories, Host.reboot_kernel, Host.packages_without_repository,
        Host.updates_computed_at, Host.updates_complete, Host.inputs_changed_at,
        Host.updates_inputs_at, Host.security_updates, Host.other_updates, Host.held_updates,
        Host.oldest_security_at,
    ).where(Host.check_updates)  # fmt: skip
    if host_names:
        query = query.where(Host.name.in_(host_names))
    hosts = list(query.order_by(Host.id))  # no open cursor while writing
    ctx = UpdateContext(lazy=len(hosts) < LAZY_HOSTS)
    groups: dict[tuple[object, ...], list[Host]] = defaultdict(list)
    for host in hosts:
        key = (host.package_set_id, host.repository_set_id, host.kernel,
               bool(host.use_os_repositories), host.os_release_id)  # fmt: skip
        groups[key].append(host)
    psets = sorted({h.package_set_id for h in hosts if h.package_set_id is not None})
    existing = _existing_sets(psets if host_names else None)
    fixes = fixing_sets(psets if host_names else None)
    works: dict[UpdateSetKey, _SetWork] = {}
    ctx.written_aside = _may_write_aside(ctx)
    writer = _BatchWriter(ctx, now, threaded=ctx.written_aside)
    try:
        batch: list[tuple[Host, _SetWork | None]] = []
        batch_rows = 0
        for members in groups.values():
            computed = ctx.computed
            work = _resolve(ctx, members[0], existing, works, force, fixes)
            fresh = work is None or ctx.computed > computed  # the first host is not reused
            ctx.reused += len(members) - (1 if fresh else 0)
            for host in members:
                batch.append((host, work))
                batch_rows += len(work.items or ()) if work is not None else 0
                if len(batch) >= WRITE_HOSTS or batch_rows >= WRITE_ROWS:
                    writer.put(batch)
                    batch, batch_rows = [], 0
        if batch:
            writer.put(batch)
    finally:
        writer.close()
    return ctx


def _resolve(
    ctx: UpdateContext,
    host: Host,
    existing: dict[UpdateSetKey, tuple[int, str, int | None]],
    works: dict[UpdateSetKey, _SetWork],
    force: bool,
    fixes: dict[tuple[int, int | None], Fixing] | None = None,
) -> _SetWork | None:
    """The update set of a group of hosts with one host's inputs: reused or computed.

    An update of an installed package with a fixable vulnerability (``fixes``: from the
    findings of the same package and repository set, ``store.vulns.fixing_sets``) is a
    security update whatever repository offers it; the set's digest covers those
    packages, so it is computed again when they change, and only then.
    """
    if host.package_set_id is None:
        return None
    kernel = host.kernel or ""
    if host.use_os_repositories:  # other inputs than the host's own repositories
        kernel = f"{kernel}|os-release:{host.os_release_id}"
    key: UpdateSetKey = (host.package_set_id, host.repository_set_id, kernel)
    if key in works:  # another group with the same inputs (e.g. a different OS release)
        return works[key]
    sources = sources_for(repository_membership(host, ctx), ctx)
    fix = (fixes or {}).get((host.package_set_id, host.repository_set_id))
    blobs = fix[1] if fix is not None else ()
    if fix is not None:
        digest = hashlib.sha256(f"{sources.digest}|fixes:{fix[0]}".encode()).hexdigest()
        sources = dataclasses.replace(sources, digest=digest)
    stored = existing.get(key)
    if stored is not None and stored[1] == sources.digest and not force:
        work = _SetWork(key, sources, stored[0], None, stored[2], computed=False, fix_blobs=blobs)
    else:
        items, orphans = compute_items(ctx, sources, host.package_set_id)
        work = _SetWork(key, sources, stored[0] if stored else None, items, orphans, True,
                        fix_blobs=blobs, fresh=True)  # fmt: skip
        if blobs:
            fixing = decode_fixing(blobs)
            work.items = {
                pid: (avail, True, repo) if not sec and pid in fixing else (avail, sec, repo)
                for pid, (avail, sec, repo) in items.items()
            }
        ctx.computed += 1
    works[key] = work
    return work


def _flush(ctx: UpdateContext, now: float, batch: list[tuple[Host, _SetWork | None]]) -> None:
    """Write one batch of hosts (and the update sets computed for them) in one transaction.

    Afterwards the batch's items are dropped: a set whose hosts continue in the next
    batch reads its stored items again, so a run over 10,000 hosts holds a few batches
    of items in memory, not the fleet's.
    """
    works = {w.key: w for _h, w in batch if w is not None}
    own_transaction = not database.in_transaction()
    with write_transaction():
        if own_transaction and not is_sqlite():
            _prefer_indexes()
        _write_sets(now, [w for w in works.values() if w.computed])
        _write_hosts(ctx, now, batch)
    for w in works.values():
        w.computed = False
        w.items = None


def _prefer_indexes() -> None:
    """Tell PostgreSQL's planner to read by index for the rest of this transaction.

    Why: a run writes the tables it reads (pending updates by host, update set items
    by set), and a fleet's first run starts them empty. Until autovacuum analyzes
    them again the planner works from the statistics of a nearly empty table and,
    for a few hundred ids, scans the whole table, once per batch and longer as the
    run fills it (a measurable share of the writer's time, see docs/performance.md,
    spent reading nothing). Every statement of a batch looks rows up by an indexed key, so no
    scan of a whole table is ever the better plan here. ``SET LOCAL`` ends with the
    transaction, which is why only a batch's own transaction sets it.
    """
    for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
        database.execute_sql(f"SET LOCAL {setting} = off")


def _may_write_aside(ctx: UpdateContext) -> bool:
    """Whether a fleet's batches are written by a thread of their own (PostgreSQL only).

    On PostgreSQL the writing is the server's work, in its own process, and the
    driver gives up the GIL for a whole COPY or query: computing the next batches
    overlaps it (figures in docs/performance.md).
    SQLite writes in this process, row by row, taking the GIL back after each row;
    beside a computing thread each take waits for its turn, so a thread wrote no
    faster than inline. Not for a few hosts
    (nothing to overlap), nor inside the caller's transaction (the writer would wait
    for its locks, or miss its rows).
    """
    return not (ctx.lazy or is_sqlite() or database.in_transaction())


class _BatchWriter:
    """Writes batches of hosts in order, on a thread of its own when ``threaded``.

    The thread has its own connection (peewee's are per thread) and a queue of at
    most :data:`WRITE_AHEAD` batches, so memory stays bounded. The first error stops
    the writing; it is raised in the caller at its next batch or at :meth:`close`, and
    the batches written before it stay written, as when writing inline.
    """

    def __init__(self, ctx: UpdateContext, now: float, threaded: bool) -> None:
        self.ctx = ctx
        self.now = now
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if threaded:
            self.queue: queue.Queue[list[tuple[Host, _SetWork | None]] | None] = queue.Queue(
                WRITE_AHEAD
            )
            self.thread = threading.Thread(target=self._run, name="updates-writer", daemon=True)
            self.thread.start()

    def put(self, batch: list[tuple[Host, _SetWork | None]]) -> None:
        if self.thread is None:
            _flush(self.ctx, self.now, batch)
            return
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def close(self) -> None:
        """Wait for every batch to be written; raise the writer's error if it had one."""
        if self.thread is None:
            return
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                if self.error is None:
                    try:
                        _flush(self.ctx, self.now, batch)
                    except BaseException as exc:  # handed to the caller
                        self.error = exc
        finally:
            database.close()  # this thread's connection (back to the pool on PostgreSQL)
