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

Each set also stores the installed packages whose pending update fixes a vulnerability
(``VulnSet.fixing``) with the earliest publication of what each fixes: the update
computation (``patchwatch.pipeline.hostupdates``) counts those updates as security and
may start their first-seen there.

Status (``patchwatch.domain.vulns.match``): ``fixable`` names the offered version that
carries the fix; ``fixed_upstream``, ``no_fix``. A host whose OS maps to no ecosystem is
stored with no set (not matched), never as free of vulnerabilities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from patchwatch.domain.records import OSInfo
from patchwatch.domain.vulns.ecosystems import HostEcosystem
from patchwatch.domain.vulns.ecosystems import host_ecosystem
from patchwatch.domain.vulns.feeds import UPDATEINFO_PREFIX
from patchwatch.domain.vulns.match import FeedIndex
from patchwatch.domain.vulns.match import Finding
from patchwatch.domain.vulns.match import FixStatus
from patchwatch.domain.vulns.match import assess_host
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import OSRelease
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.package_sets import package_ids_of
from patchwatch.store.package_sets import set_differences
from patchwatch.store.vuln_models import VulnAffected
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnSet
from patchwatch.store.vulns import FindingRow
from patchwatch.store.vulns import Meta
from patchwatch.store.vulns import SetWrite
from patchwatch.store.vulns import assign_hosts
from patchwatch.store.vulns import feeds_digest
from patchwatch.store.vulns import load_records
from patchwatch.store.vulns import prune_sets
from patchwatch.store.vulns import record_names
from patchwatch.store.vulns import save_sets
from patchwatch.store.vulns import store_findings
from patchwatch.store.vulns import summarize
from patchwatch.store.vulns import vulnerability_meta

log = logging.getLogger(__name__)

__all__ = ["VulnRun", "refresh_host_vulns"]

SetKey = tuple[int, int | None, str]  # package set, repository set, ecosystem label
_SEVERE = ("critical", "high")  # the severities whose oldest fixable one is served
_RANK = {"fixable": 0, "fixed_upstream": 1, "no_fix": 2}  # worst is highest
_UNKNOWN: tuple[str, bool, float | None] = ("unknown", False, None)
_STATUS = {s: s.value for s in FixStatus}  # plain text: an enum's .value is a slow lookup


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

    def offered(self, offering: _Offering) -> dict[str, set[str]]:
        """Name -> the versions these mirrors offer (a pinned one: only its names)."""
        merged: dict[str, set[str]] = {}
        for ms, only in offering:
            if ms not in self.offers:
                self.offers[ms] = self.names(ms)
            offers = self.offers[ms]
            items = (
                offers.items() if only is None else ((n, offers[n]) for n in only if n in offers)
            )
            for name, versions in items:
                merged.setdefault(name, set()).update(versions)
        return merged


class _Findings:
    """The run's distinct findings, numbered as first met (a set is a tuple of numbers)."""

    def __init__(self) -> None:
        self.rows: list[FindingRow] = []
        self._numbers: dict[FindingRow, int] = {}

    def number(self, row: FindingRow) -> int:
        n = self._numbers.get(row)
        if n is None:
            n = self._numbers[row] = len(self.rows)
            self.rows.append(row)
        return n


# The package sets of the mirrors a repository set is served from, each with the names
# it may offer: None for every name, else the names pinned to an apk tagged repository.
# (A frozenset: contexts are dict keys, and a frozenset keeps its hash.)
_Offering = tuple[tuple[int, frozenset[str] | None], ...]
_Context = tuple[HostEcosystem, _Offering]  # ecosystems read, mirrors offering


class _Matcher:
    """Findings per installed package, decided once per run for each (ecosystems read,
    name, version, versions offered for that name).

    Hosts are drifting copies of a few images: their package sets differ but share
    nearly all their packages, and a source's binaries share its name and version.
    A package version's findings depend only on the ecosystems the host reads, the
    versions its repositories offer for that name and the feeds, so each is decided
    once, whatever packages, sets and mirror sets carry it (with and without
    backports, most names are offered the same versions), and remembered per package
    id and context. The feeds are read only when a set must be computed, and only
    the entries about names some set to compute has installed.
    """

    def __init__(self, ecosystems: set[str], cache: _Cache, found: _Findings) -> None:
        self.ecosystems = ecosystems
        self.cache = cache
        self.found = found
        self.index = FeedIndex(())
        self._decided: dict[tuple[HostEcosystem, str, str, frozenset[str]], tuple[int, ...]] = {}
        self._by_package: dict[_Context, dict[int, tuple[int, ...]]] = {}
        self._offered: dict[_Offering, dict[str, frozenset[str]]] = {}
        self._versions: dict[str, set[str]] = {}  # name -> versions installed in the run

    def load(self, package_ids: Iterable[int]) -> None:
        """Read the packages' names and the feeds' entries about them."""
        ids = set(package_ids)
        self.cache.ensure(ids)
        for pid in ids:
            name, version = self.cache.rows[pid]
            self._versions.setdefault(name, set()).add(version)
        if self.ecosystems and self._versions:
            self.index = FeedIndex(load_records(self.ecosystems, self._versions))

    def of_context(self, ctx: _Context) -> dict[int, tuple[int, ...]]:
        """Package id -> its findings' numbers in this context, filled as asked."""
        return self._by_package.setdefault(ctx, {})

    def package(self, ctx: _Context, pid: int) -> tuple[int, ...]:
        """The numbers of an installed package's findings in this context, ascending."""
        eco, offering = ctx
        name, version = self.cache.rows[pid]
        if name not in self.index.for_host(eco):
            return ()
        offers = self._offered.get(offering)
        if offers is None:
            merged = self.cache.offered(offering)
            offers = self._offered[offering] = {n: frozenset(v) for n, v in merged.items()}
        offered = offers.get(name, frozenset())
        key = (eco, name, version, offered)
        found = self._decided.get(key)
        if found is None:
            # every version of the name the run has met at once: the name's records
            # are grouped by vulnerability once, not once per version
            versions = self._versions.get(name) or {version}
            decided = assess_host(eco, {name: sorted(versions)}, self.index, {name: offered})
            per_version: dict[str, set[int]] = {v: set() for v in versions}
            for row in _rows(decided):
                per_version[row.installed].add(self.found.number(row))
            for v, numbers in per_version.items():
                self._decided[(eco, name, v, offered)] = tuple(sorted(numbers))
            found = self._decided[key]
        return found


# A set's findings as its anchor's (its base's, or its own when it is written whole)
# changed by the numbers it adds and those it lacks: (context, anchor, added, removed).
_Result = tuple[_Context, int, frozenset[int], frozenset[int]]
_NONE: frozenset[int] = frozenset()


class _Assembler:
    """Each set's findings from its base's and its difference (``set_differences``).

    A difference lists the few packages a host's set has in exactly one of it and its
    base (a whole set, usually its image's). The base's findings are counted once
    per context (how many of its packages give each), and a set's are the base's
    changed by its difference's packages: a few dict lookups for most sets, whose
    drifted packages have no finding at all. Sets written whole cost their packages.
    """

    def __init__(self, matcher: _Matcher, parts: dict[int, tuple[int | None, set[int]]]) -> None:
        self.matcher = matcher
        self.parts = parts
        self.anchors: dict[tuple[_Context, int], tuple[dict[int, int], tuple[int, ...]]] = {}
        self._fixes: dict[_Context, dict[int, tuple[str, ...]]] = {}
        self._anchor_fixing: dict[tuple[_Context, int], dict[int, tuple[str, ...]]] = {}

    def _fixed_by(self, ctx: _Context, pid: int) -> tuple[str, ...]:
        """The vulnerabilities an installed package's pending update fixes (its fixable
        findings), in this context."""
        known = self._fixes.setdefault(ctx, {})
        got = known.get(pid)
        if got is None:
            rows = self.matcher.found.rows
            got = known[pid] = tuple(
                rows[n].vulnerability for n in self._found(ctx, pid) if rows[n].status == "fixable"
            )
        return got

    def fixing(self, ctx: _Context, pset: int) -> dict[int, tuple[str, ...]]:
        """A set's packages whose update fixes something, and what: its anchor's, changed
        by its difference (the packages it lacks, those it adds)."""
        base, own = self.parts[pset]
        anchor = pset if base is None else base
        fixes = self._anchor_fixing.get((ctx, anchor))
        if fixes is None:
            fixes = {}
            for pid in self.parts[anchor][1]:
                fixed = self._fixed_by(ctx, pid)
                if fixed:
                    fixes[pid] = fixed
            self._anchor_fixing[(ctx, anchor)] = fixes
        if base is None:
            return fixes
        out = dict(fixes)
        in_base = self.parts[base][1]
        for pid in own:
            if pid in in_base:
                out.pop(pid, None)
            elif fixed := self._fixed_by(ctx, pid):
                out[pid] = fixed
        return out

    def _found(self, ctx: _Context, pid: int) -> tuple[int, ...]:
        known = self.matcher.of_context(ctx)
        found = known.get(pid)
        if found is None:
            found = known[pid] = self.matcher.package(ctx, pid)
        return found

    def anchor(self, ctx: _Context, pset: int) -> tuple[dict[int, int], tuple[int, ...]]:
        """A whole set's findings: how many of its packages give each, and the numbers."""
        got = self.anchors.get((ctx, pset))
        if got is None:
            counts: dict[int, int] = {}
            known = self.matcher.of_context(ctx)
            for pid in self.parts[pset][1]:
                found = known.get(pid)
                if found is None:
                    found = known[pid] = self.matcher.package(ctx, pid)
                for n in found:
                    counts[n] = counts.get(n, 0) + 1
            got = self.anchors[(ctx, pset)] = (counts, tuple(sorted(counts)))
        return got

    def findings(self, ctx: _Context, pset: int) -> _Result:
        base, own = self.parts[pset]
        if base is None:
            self.anchor(ctx, pset)
            return ctx, pset, _NONE, _NONE
        counts, _ = self.anchor(ctx, base)
        in_base = self.parts[base][1]
        delta: dict[int, int] = {}
        for pid in own:
            found = self._found(ctx, pid)
            if found:
                sign = -1 if pid in in_base else 1
                for n in found:
                    delta[n] = delta.get(n, 0) + sign
        added = frozenset(n for n, d in delta.items() if d > 0 and n not in counts)
        removed = frozenset(n for n, d in delta.items() if d < 0 and counts.get(n, 0) + d <= 0)
        return ctx, base, added, removed


def _mirror_sets(
    rset: int | None,
    memo: dict[int | None, _Offering],
    repos_of: dict[int | None, tuple[int, ...]] | None = None,
) -> _Offering:
    """The package sets of the mirrors serving a repository set's enabled repositories,
    each with the names it may offer (and, into ``repos_of``, the repositories offering
    every name).

    An apk tagged repository (a member with pinned names) offers only the names the
    host's world file pins to its tag (``pkg@edge``): a fix it carries for one of those
    is one upgrade away, as apk installs it; for any other name it is not in the host's
    repositories. A tagged repository that pins nothing offers nothing.
    """
    if rset in memo:
        return memo[rset]
    if rset is None:
        memo[rset] = ()
        if repos_of is not None:
            repos_of[rset] = ()
        return ()
    members: dict[int, frozenset[str] | None] = {}
    for repo, pinned in (
        RepositorySetMember.select(RepositorySetMember.repository, RepositorySetMember.pinned)
        .where((RepositorySetMember.repository_set == rset) & RepositorySetMember.enabled)
        .tuples()
    ):
        if pinned is None:
            members[repo] = None
        elif names := frozenset(pinned.split()):
            members[repo] = names
    best: dict[int, tuple[float, int]] = {}
    if members:
        query = Mirror.select(Mirror.repository, Mirror.package_set, Mirror.last_success_at).where(
            Mirror.repository.in_(list(members))
            & Mirror.enabled
            & Mirror.package_set.is_null(False)
        )
        for repo, pset, success in query.tuples():
            if repo not in best or (success or 0) > best[repo][0]:
                best[repo] = (success or 0, pset)
    # sorted by mirror set (one listed twice when two repositories share it, as before
    # pins were read, so that the sets of hosts with no tagged repository keep their digests)
    memo[rset] = tuple(
        sorted(
            ((pset, members[repo]) for repo, (_, pset) in best.items()),
            key=lambda item: (item[0], item[1] is not None, sorted(item[1] or ())),
        )
    )
    if repos_of is not None:
        repos_of[rset] = tuple(sorted(r for r, only in members.items() if only is None))
    return memo[rset]


def _with_errata(eco: HostEcosystem, repos: tuple[int, ...], errata: set[str]) -> HostEcosystem:
    """The host's ecosystems plus the updateinfo of the repositories it uses."""
    extra = {f"{UPDATEINFO_PREFIX}{r}" for r in repos} & errata
    return dataclasses.replace(eco, names=eco.names | extra) if extra else eco


# what a set stores beyond its findings: a set computed by rules that stored less
# (before ``VulnSet.fixing``) is computed again
_RULES = "fixing-2"


def _digest(feeds: str, eco: str, offering: _Offering, since: bool = True) -> str:
    h = hashlib.sha256(f"{_RULES}\0{feeds}\0{eco}\0{since}\0".encode())
    # a mirror offering every name is written as before pins were read (its sets keep
    # their digests); a pinned one with its names
    h.update(
        ",".join(
            str(ms) if only is None else f"{ms}@{' '.join(sorted(only))}" for ms, only in offering
        ).encode()
    )
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
    ecosystems: dict[tuple[str, str, str, str, str, str], HostEcosystem | None] = {}
    for hid, pset, rset, family, os_id, name, version, codename, override in query:
        os_key = (family, os_id, name, version, codename, override)
        if os_key not in ecosystems:
            # the OS group's override when an operator set one, else os-release's mapping
            ecosystems[os_key] = host_ecosystem(OSInfo(*os_key[:5]), override)
        out.append((hid, pset, rset, ecosystems[os_key]))
    return out


def _rows(findings: list[Finding]) -> list[FindingRow]:
    return [
        FindingRow(
            f.vulnerability, p.name, p.installed, _STATUS[p.status], p.fixed_version or "",
            p.candidate or "", " ".join(p.records),
        )
        for f in findings
        for p in f.packages
    ]  # fmt: skip


@dataclass
class _Todo:
    """A set to compute: what it reads and its stored row, if any."""

    context: _Context
    digest: str
    existing: int | None


class _Writer:
    """Each distinct result's packed finding ids and summary, from its anchor's.

    An anchor's (a base's) findings are packed and summarized once (``summarize``);
    a set that differs from it by a few findings copies those and changes them for
    the vulnerabilities its findings touch, instead of going over its 1,500 findings
    again. Results are remembered: many sets differ from their base only by packages
    with no finding at all.
    """

    def __init__(self, found: _Findings, anchors: dict, stored: list[int], meta: Meta) -> None:
        self.rows = found.rows
        self.anchors = anchors
        self.stored = stored  # finding number -> its row id
        self.meta = meta
        self._anchor: dict[tuple[_Context, int], tuple[array[int], _Summary]] = {}
        self._done: dict[_Result, tuple[array[int], str]] = {}

    def _anchor_of(self, ctx: _Context, anchor: int) -> tuple[array[int], _Summary]:
        got = self._anchor.get((ctx, anchor))
        if got is None:
            _, numbers = self.anchors[(ctx, anchor)]
            ids = array("i", [self.stored[n] for n in numbers])
            got = self._anchor[(ctx, anchor)] = (ids, _Summary(self.rows, numbers, self.meta))
        return got

    def write(self, result: _Result) -> tuple[array[int], str]:
        done = self._done.get(result)
        if done is None:
            ctx, anchor, added, removed = result
            ids, summary = self._anchor_of(ctx, anchor)
            if added or removed:
                ids = array("i", ids)
                for n in removed:
                    ids.remove(self.stored[n])
                ids.extend(self.stored[n] for n in sorted(added))
            done = self._done[result] = (
                ids,
                json.dumps(summary.changed(added, removed), separators=(",", ":")),
            )
        return done


class _Summary:
    """An anchor's summary (``store.vulns.summarize``) and what changing it needs: each
    vulnerability's findings and worst status, and the fixable critical/high ones by
    publication."""

    def __init__(self, rows: list[FindingRow], numbers: tuple[int, ...], meta: Meta) -> None:
        self.rows = rows
        self.meta = meta
        self.by_vuln: dict[str, list[int]] = {}
        self.worst: dict[str, str | None] = {}
        for n in numbers:
            row = rows[n]
            vid = row.vulnerability
            self.by_vuln.setdefault(vid, []).append(n)
            old = self.worst.get(vid)
            if old is None or _RANK[row.status] > _RANK[old]:
                self.worst[vid] = row.status
        self.summary = summarize([rows[n] for n in numbers], meta)
        self.severe: dict[str, list[tuple[float, str]]] = {}
        for vid, status in self.worst.items():
            severity, _, published = meta.get(vid, _UNKNOWN)
            if status == "fixable" and severity in _SEVERE and published is not None:
                self.severe.setdefault(severity, []).append((published, vid))
        for entries in self.severe.values():
            entries.sort()

    def _worst(self, numbers: Iterable[int]) -> str | None:
        statuses = {self.rows[n].status for n in numbers}
        return max(statuses, key=_RANK.__getitem__) if statuses else None

    def changed(self, added: frozenset[int], removed: frozenset[int]) -> dict[str, object]:
        """The summary of the anchor's findings plus ``added`` less ``removed``."""
        if not added and not removed:
            return self.summary
        touched: dict[str, list[int]] = {}
        for n in added:
            touched.setdefault(self.rows[n].vulnerability, []).append(n)
        for n in removed:
            touched.setdefault(self.rows[n].vulnerability, [])
        cells = dict(cast(dict[str, int], self.summary["cells"]))
        kev = dict(cast(dict[str, str], self.summary["kev"]))
        kev_fixable = cast(int, self.summary["kev_fixable"])
        now: dict[str, str | None] = {}
        for vid, extra in touched.items():
            kept = [n for n in self.by_vuln.get(vid, ()) if n not in removed]
            before, after = self.worst.get(vid), self._worst(kept + extra)
            now[vid] = after
            if before == after:
                continue
            severity, is_kev, _ = self.meta.get(vid, _UNKNOWN)
            for status, step in ((before, -1), (after, 1)):
                if status is None:
                    continue
                cell = f"{severity}/{status}"
                cells[cell] = cells.get(cell, 0) + step
                if not cells[cell]:
                    del cells[cell]
                if status == "fixable":
                    kev_fixable += step * is_kev
            if is_kev:
                if after is None:
                    kev.pop(vid, None)
                else:
                    kev[vid] = after
        oldest: dict[str, float] = {}
        for severity in _SEVERE:
            candidates = [
                published for published, vid in self.severe.get(severity, ())[:1]
            ] if not now else [
                next((p for p, vid in self.severe.get(severity, ()) if vid not in now), None)
            ]  # fmt: skip
            for vid, status in now.items():
                sev, _, published = self.meta.get(vid, _UNKNOWN)
                if status == "fixable" and sev == severity and published is not None:
                    candidates.append(published)
            found = [c for c in candidates if c is not None]
            if found:
                oldest[severity] = min(found)
        return {"cells": cells, "kev_fixable": kev_fixable, "oldest": oldest, "kev": kev}


def _since(fixing: dict[int, tuple[str, ...]], meta: Meta, wanted: bool) -> dict[int, float | None]:
    """Per package whose update fixes something, the earliest publication of what it
    fixes: when its update's first-seen may start (``vulns_first_seen_at_publication``;
    None when not wanted or no publication is known)."""
    out: dict[int, float | None] = {}
    for pid, vulns in fixing.items():
        times = [t for v in vulns if (t := meta.get(v, _UNKNOWN)[2]) is not None]
        out[pid] = min(times) if wanted and times else None
    return out


def _compute(
    todo: dict[SetKey, _Todo], ecosystems: set[str], now: float, first_seen: bool = True
) -> dict[SetKey, int]:
    """Compute and store the findings of these sets; their ids.

    In steps that each cost what the fleet's distinct parts cost: the sets' packages
    are read as bases and differences, and the feeds' entries about their names; each
    (ecosystems, name, version, offers) is decided once (``_Matcher``); each set's
    findings follow from its base's and its difference (``_Assembler``), and so do its
    packed ids and summary (``_Writer``). Then one write: the distinct findings,
    every set, in one transaction.
    """
    psets = {key[0] for key in todo}
    parts = set_differences(sorted(psets))
    bases = {base for base, _ in parts.values() if base is not None} - psets
    parts.update(set_differences(sorted(bases)))
    found = _Findings()
    matcher = _Matcher(ecosystems, _Cache(), found)
    matcher.load(pid for _, own in parts.values() for pid in own)
    assembler = _Assembler(matcher, parts)
    results = {key: assembler.findings(job.context, key[0]) for key, job in todo.items()}
    used: set[int] = set()
    for ctx, anchor in {(r[0], r[1]) for r in results.values()}:
        used.update(assembler.anchors[(ctx, anchor)][1])
    for r in results.values():
        used.update(r[2])
    meta = vulnerability_meta({found.rows[n].vulnerability for n in used})
    with write_transaction():
        numbers = sorted(used)
        ids = store_findings([found.rows[n] for n in numbers])
        stored = [0] * len(found.rows)
        for n, fid in zip(numbers, ids, strict=True):
            stored[n] = fid
        writer = _Writer(found, assembler.anchors, stored, meta)
        writes = [
            SetWrite(key[0], key[1], key[2], job.digest, *writer.write(results[key]),
                     job.existing,
                     _since(assembler.fixing(job.context, key[0]), meta, first_seen))
            for key, job in todo.items()
        ]  # fmt: skip
        return save_sets(writes, now)


def refresh_host_vulns(
    now: float | None = None, *, force: bool = False, first_seen_at_publication: bool = True
) -> VulnRun:
    """Compute the findings of every (package set, repository set, ecosystem) that changed.

    ``force`` recomputes every set (after a change of the matching rules themselves).
    ``first_seen_at_publication``: the setting ``vulns_first_seen_at_publication``,
    stored with each set for the update computation (``store.vulns.fixing_sets``).
    Sets no host uses any more are deleted, and then the findings no set holds.
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
    feeds = feeds_digest()
    memo: dict[int | None, _Offering] = {}
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
    set_of: dict[SetKey, int] = {}
    todo: dict[SetKey, _Todo] = {}
    placed: list[tuple[int, SetKey | None, str]] = []
    for hid, pset, rset, eco in hosts:
        if eco is None or pset is None:
            run.unmatched += 1
            placed.append((hid, None, ""))
            continue
        key: SetKey = (pset, rset, eco.label)
        placed.append((hid, key, eco.label))
        if key in set_of or key in todo:
            run.reused += 1
            continue
        offering = _mirror_sets(rset, memo, repos_of)
        # every ecosystem it reads, not only the label: an OS group's override may add
        # one under the same label
        read_names = f"{eco.label}|{','.join(sorted(eco.names))}|{','.join(eco.prefixes)}"
        digest = _digest(feeds, read_names, offering, first_seen_at_publication)
        found = existing.get(key)
        if found is not None and found[1] == digest and not force:
            set_of[key] = found[0]
            run.reused += 1
        else:
            reads = _with_errata(eco, repos_of.get(rset, ()), errata)
            todo[key] = _Todo((reads, offering), digest, found[0] if found else None)
    if todo:
        set_of.update(_compute(todo, wanted, now, first_seen_at_publication))
        run.computed = len(todo)
    assignments = [(h, set_of[k] if k is not None else None, label) for h, k, label in placed]
    changed = [(h, s, label) for h, s, label in assignments if current.get(h) != (s, label)]
    used = {sid for _, sid, _ in assignments if sid is not None}
    unused = [sid for sid, _ in existing.values() if sid not in used]
    with write_transaction():
        assign_hosts(changed, now)
        if run.computed or unused:
            prune_sets(unused)
    run.hosts_changed = len(changed)
    run.seconds = time.monotonic() - started
    return run
