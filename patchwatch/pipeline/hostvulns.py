"""Each host's vulnerabilities, computed once per (package set, repository set, ecosystem).

Why this module exists: like updates (``patchwatch.pipeline.hostupdates``), findings
depend only on what is installed, what the host's repositories offer and the feeds, so
hosts that share those share one :class:`VulnSet`. Its ``inputs_digest`` covers the
feeds' stored data (``store.vulns.feeds_digest``) and the mirror package sets the
repository set is served from, so a run where nothing changed computes nothing, and a
changed record, set or mirror recomputes only the sets that read it.

Names matched: RPM distributions' records name binary packages, which hosts report.
Debian and Ubuntu records name *source* packages: a binary is matched under its
source's name and version as the agent reported them, else as a mirror's index gave
the name (``Source:``; both stored in ``package_source``, see
``store.vulns.record_names``), else under its own name (the many packages whose binary
and source names agree: bash, openssl, curl).

Status (``patchwatch.domain.vulns.match``): ``fixable`` names the offered version that
carries the fix; ``fixed_upstream``, ``no_fix``. A host whose OS maps to no ecosystem is
stored with no set (not matched), never as free of vulnerabilities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from patchwatch.domain.records import OSInfo
from patchwatch.domain.vulns.ecosystems import HostEcosystem
from patchwatch.domain.vulns.ecosystems import host_ecosystem
from patchwatch.domain.vulns.feeds import UPDATEINFO_PREFIX
from patchwatch.domain.vulns.match import FeedIndex
from patchwatch.domain.vulns.match import Finding
from patchwatch.domain.vulns.match import FixStatus
from patchwatch.domain.vulns.match import assess_host
from patchwatch.store.db import chunks
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.package_sets import package_ids_of
from patchwatch.store.vuln_models import VulnAffected
from patchwatch.store.vuln_models import VulnFinding
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnSet
from patchwatch.store.vulns import FindingRow
from patchwatch.store.vulns import Meta
from patchwatch.store.vulns import feeds_digest
from patchwatch.store.vulns import load_records
from patchwatch.store.vulns import record_names
from patchwatch.store.vulns import save_set
from patchwatch.store.vulns import vulnerability_meta

log = logging.getLogger(__name__)

__all__ = ["VulnRun", "refresh_host_vulns"]

SetKey = tuple[int, int | None, str]  # package set, repository set, ecosystem label
_Found = tuple[tuple[FindingRow, str], ...]  # a package's findings and their keys


@dataclass
class VulnRun:
    """What a run did: sets computed and reused, hosts whose set changed, unmatched."""

    computed: int = 0
    reused: int = 0
    hosts_changed: int = 0
    unmatched: int = 0
    seconds: float = 0.0


class _Cache:
    """Package rows and mirror offers read once per run."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[str, str]] = {}  # package id -> (name, evr)
        self.offers: dict[int, dict[str, set[str]]] = {}  # mirror set -> name -> versions

    def ensure(self, ids: Iterable[int]) -> None:
        """Read the names and versions records use for these packages
        (``store.vulns.record_names``: a deb under its source's name)."""
        self.rows.update(record_names(set(ids).difference(self.rows)))

    def names(self, pset: int) -> dict[str, set[str]]:
        ids = package_ids_of(pset)
        self.ensure(ids)
        out: dict[str, set[str]] = {}
        for pid in ids:
            name, evr = self.rows[pid]
            out.setdefault(name, set()).add(evr)
        return out

    def offered(self, mirror_sets: Iterable[int]) -> dict[str, set[str]]:
        merged: dict[str, set[str]] = {}
        for ms in mirror_sets:
            if ms not in self.offers:
                self.offers[ms] = self.names(ms)
            for name, versions in self.offers[ms].items():
                merged.setdefault(name, set()).update(versions)
        return merged


class _Matcher:
    """Findings per installed package, decided once per run and source of offers.

    Hosts are drifting copies of a few images: their package sets differ but share
    nearly all their packages. A package version's findings depend only on the host's
    ecosystem, the versions its repositories offer for that name and the feeds, so they
    are decided once per (ecosystem, mirror sets, package) and a new set costs
    dict lookups for what it shares with sets already computed. The feeds are read only
    when a set must be computed (a run where nothing changed never loads them).
    """

    def __init__(self, ecosystems: set[str]) -> None:
        self.ecosystems = ecosystems
        self._index: FeedIndex | None = None
        self._memo: dict[tuple[str, tuple[int, ...], int], _Found] = {}
        # memo key -> the vulnerabilities its update fixes (only those with some)
        self._fixable: dict[tuple[str, tuple[int, ...], int], tuple[str, ...]] = {}

    @property
    def index(self) -> FeedIndex:
        if self._index is None:
            self._index = FeedIndex(load_records(self.ecosystems) if self.ecosystems else ())
        return self._index

    def assess(
        self,
        eco: HostEcosystem,
        mirror_sets: tuple[int, ...],
        pids: Iterable[int],
        cache: _Cache,
    ) -> tuple[list[FindingRow], list[str], dict[int, tuple[str, ...]]]:
        """The findings of a set's packages (by id), their keys, and the packages with a
        fixable finding (whose pending update fixes a vulnerability) with the
        vulnerabilities it fixes, decided or remembered.

        One dict lookup per installed package once it was decided for these sources: a
        package no record names is remembered as having none.
        """
        view = self.index.for_host(eco)
        offered: dict[str, set[str]] | None = None
        rows: list[FindingRow] = []
        keys: list[str] = []
        fixing: dict[int, tuple[str, ...]] = {}
        label, memo, fixable = eco.label, self._memo, self._fixable
        missing = [pid for pid in pids if (label, mirror_sets, pid) not in memo]
        if missing:
            cache.ensure(missing)
        for pid in pids:
            memo_key = (label, mirror_sets, pid)
            found = memo.get(memo_key)
            if found is None:
                name, version = cache.rows[pid]
                if name not in view:
                    found = ()
                else:
                    if offered is None:
                        offered = cache.offered(mirror_sets)
                    decided = assess_host(
                        eco, {name: [version]}, self.index, {name: offered.get(name, set())}
                    )
                    found = tuple((row, row.key) for row in _rows(decided))
                    fixed = tuple(
                        row.vulnerability
                        for row, _k in found
                        if row.status == FixStatus.FIXABLE.value
                    )
                    if fixed:
                        fixable[memo_key] = fixed
                memo[memo_key] = found
            if found:
                for row, key in found:
                    rows.append(row)
                    keys.append(key)
                if memo_key in fixable:
                    fixing[pid] = fixable[memo_key]
        return rows, keys, fixing


def _mirror_sets(
    rset: int | None,
    memo: dict[int | None, tuple[int, ...]],
    repos_of: dict[int | None, tuple[int, ...]] | None = None,
) -> tuple[int, ...]:
    """The package sets of the mirrors serving a repository set's enabled repositories
    (and, into ``repos_of``, those repositories). An apk tagged repository (a member
    with pinned names) is left out: it offers only the names pinned to its tag, which
    these per-set offers cannot tell apart, and a fix apk would not install is not in
    the host's repositories."""
    if rset in memo:
        return memo[rset]
    if rset is None:
        memo[rset] = ()
        if repos_of is not None:
            repos_of[rset] = ()
        return ()
    repos = [
        r
        for (r,) in RepositorySetMember.select(RepositorySetMember.repository)
        .where(
            (RepositorySetMember.repository_set == rset)
            & RepositorySetMember.enabled
            & RepositorySetMember.pinned.is_null()
        )
        .tuples()
    ]
    best: dict[int, tuple[float, int]] = {}
    if repos:
        query = Mirror.select(Mirror.repository, Mirror.package_set, Mirror.last_success_at).where(
            Mirror.repository.in_(repos) & Mirror.enabled & Mirror.package_set.is_null(False)
        )
        for repo, pset, success in query.tuples():
            if repo not in best or (success or 0) > best[repo][0]:
                best[repo] = (success or 0, pset)
    memo[rset] = tuple(sorted(p for _, p in best.values()))
    if repos_of is not None:
        repos_of[rset] = tuple(sorted(repos))
    return memo[rset]


def _with_errata(eco: HostEcosystem, repos: tuple[int, ...], errata: set[str]) -> HostEcosystem:
    """The host's ecosystems plus the updateinfo of the repositories it uses."""
    extra = {f"{UPDATEINFO_PREFIX}{r}" for r in repos} & errata
    return dataclasses.replace(eco, names=eco.names | extra) if extra else eco


# what a set stores beyond its findings: a set computed by rules that stored less
# (before ``VulnSet.fixing``) is computed again
_RULES = "fixing-2"


def _digest(feeds: str, eco: str, mirror_sets: tuple[int, ...], since: bool = True) -> str:
    h = hashlib.sha256(f"{_RULES}\0{feeds}\0{eco}\0{since}\0".encode())
    h.update(",".join(map(str, mirror_sets)).encode())
    return h.hexdigest()


def _hosts() -> list[tuple[int, int | None, int | None, HostEcosystem | None]]:
    query = (
        Host.select(
            Host.id, Host.package_set, Host.repository_set, OSRelease.family, OSRelease.os_id,
            OSRelease.name, OSRelease.version, OSRelease.codename, OSRelease.vuln_ecosystem,
        )
        .join(OSRelease, on=(Host.os_release == OSRelease.id))
        .tuples()
    )  # fmt: skip
    out = []
    for hid, pset, rset, family, os_id, name, version, codename, override in query:
        # the OS group's override when an operator set one, else os-release's mapping
        eco = host_ecosystem(OSInfo(family, os_id, name, version, codename), override)
        out.append((hid, pset, rset, eco))
    return out


def _rows(findings: list[Finding]) -> list[FindingRow]:
    return [
        FindingRow(
            f.vulnerability, p.name, p.installed, p.status.value, p.fixed_version or "",
            p.candidate or "", " ".join(p.records),
        )
        for f in findings
        for p in f.packages
    ]  # fmt: skip


def _since(fixing: dict[int, tuple[str, ...]], meta: Meta, wanted: bool) -> dict[int, float | None]:
    """Per package whose update fixes something, the earliest publication of what it
    fixes: when its update's first-seen may start (``vulns_first_seen_at_publication``;
    None when not wanted or no publication is known)."""
    out: dict[int, float | None] = {}
    for pid, vulns in fixing.items():
        times = [t for v in vulns if (t := meta.get(v, ("", False, None))[2]) is not None]
        out[pid] = min(times) if wanted and times else None
    return out


def refresh_host_vulns(
    now: float | None = None, *, force: bool = False, first_seen_at_publication: bool = True
) -> VulnRun:
    """Compute the findings of every (package set, repository set, ecosystem) that changed.

    ``force`` recomputes every set (after a change of the matching rules themselves).
    ``first_seen_at_publication``: the setting ``vulns_first_seen_at_publication``,
    stored with each set for the update computation (``store.vulns.fixing_sets``).
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    run = VulnRun()
    hosts = _hosts()
    ecos = {e for *_, e in hosts if e is not None}
    stored = {e for (e,) in VulnAffected.select(VulnAffected.ecosystem).distinct().tuples()}
    wanted = {
        s for s in stored if s.startswith(UPDATEINFO_PREFIX) or any(h.accepts(s) for h in ecos)
    }
    errata = {s for s in stored if s.startswith(UPDATEINFO_PREFIX)}
    repos_of: dict[int | None, tuple[int, ...]] = {}
    matcher = _Matcher(wanted)
    feeds = feeds_digest()
    memo: dict[int | None, tuple[int, ...]] = {}
    existing = {
        (ps, rs, eco): (sid, dg)
        for sid, ps, rs, eco, dg in VulnSet.select(
            VulnSet.id, VulnSet.package_set, VulnSet.repository_set, VulnSet.ecosystem,
            VulnSet.inputs_digest,
        ).tuples()
    }  # fmt: skip
    current = {
        h: (s, e) for h, s, e in VulnHost.select(
            VulnHost.host, VulnHost.vuln_set, VulnHost.ecosystem
        ).tuples()
    }  # fmt: skip
    cache = _Cache()
    meta: Meta | None = None
    known: dict[str, int] = {}  # finding key -> id, filled as sets are written
    set_of: dict[SetKey, int] = {}
    assignments: list[tuple[int, int | None, str]] = []
    for hid, pset, rset, eco in hosts:
        if eco is None or pset is None:
            run.unmatched += 1
            assignments.append((hid, None, ""))
            continue
        key: SetKey = (pset, rset, eco.label)
        if key not in set_of:
            mirror_sets = _mirror_sets(rset, memo, repos_of)
            # every ecosystem it reads, not only the label: an OS group's override may
            # add one under the same label
            read_names = f"{eco.label}|{','.join(sorted(eco.names))}|{','.join(eco.prefixes)}"
            digest = _digest(feeds, read_names, mirror_sets, first_seen_at_publication)
            found = existing.get(key)
            if found is not None and found[1] == digest and not force:
                set_of[key] = found[0]
                run.reused += 1
            else:
                pids = package_ids_of(pset)
                reads = _with_errata(eco, repos_of.get(rset, ()), errata)
                rows, keys, fixing = matcher.assess(reads, mirror_sets, pids, cache)
                if meta is None:
                    meta = vulnerability_meta()
                since = _since(fixing, meta, first_seen_at_publication)
                with write_transaction():
                    set_of[key] = save_set(pset, rset, eco.label, digest, now, rows, meta,
                                           known, keys, found[0] if found else None,
                                           since)  # fmt: skip
                run.computed += 1
        else:
            run.reused += 1
        assignments.append((hid, set_of[key], eco.label))
    changed = [(h, s, label) for h, s, label in assignments if current.get(h) != (s, label)]
    with write_transaction():
        for hid, sid, label in changed:
            VulnHost.insert(host=hid, vuln_set=sid, ecosystem=label, computed_at=now).on_conflict(
                conflict_target=[VulnHost.host],
                update={
                    VulnHost.vuln_set: sid,
                    VulnHost.ecosystem: label,
                    VulnHost.computed_at: now,
                },
            ).execute()
        # sets no host uses any more
        used = {sid for _, sid, _ in assignments if sid is not None}
        stale = [sid for sid, _ in existing.values() if sid not in used]
        for part in chunks(stale):
            VulnSet.delete().where(VulnSet.id.in_(list(part))).execute()
        if run.computed and not run.reused:
            # every set was written in this run: findings none of them has are gone
            # (a run that reuses sets cannot tell cheaply, and leaves them)
            keep = set(known.values())
            gone = [f for (f,) in VulnFinding.select(VulnFinding.id).tuples() if f not in keep]
            for part in chunks(gone):
                VulnFinding.delete().where(VulnFinding.id.in_(list(part))).execute()
    run.hosts_changed = len(changed)
    run.seconds = time.monotonic() - started
    return run
