"""Is an installed version affected, which version fixes it, and is that fix on offer?

Why this module exists: this is the judgement every vulnerability count rests on, so it
follows the OSV specification's evaluation exactly, in the ecosystem's own version
ordering (``ecosystems.version_key``: dpkg, rpm or apk, the orderings the update
computation already uses), and it is tested against dpkg and rpm themselves.

Rules (OSV "Evaluation"):

- An installed version is affected by an ``Affected`` entry when any of its ECOSYSTEM
  ranges includes it, or it is in the entry's ``versions`` list (compared in the
  ordering, so ``0:1.2-3`` and ``1.2-3`` are one rpm version).
- A range's events are sorted by version (``introduced: "0"`` below everything; at one
  version, introduced before last_affected, fixed and limit) and walked: ``introduced``
  at or below the version opens, ``fixed`` at or below it closes, ``last_affected``
  strictly below it closes; a ``limit`` at or below it puts the version outside the range.
  Several ranges, several entries for one package (AlmaLinux module streams), and
  several records for one vulnerability are all "affected if any says so".
- The *fixed version* for an affected installed version is the ``fixed`` event that ends
  the span containing it; when several entries match, the highest of their fixes (all
  are needed). It is unknown (None) when any matching entry has no fix: an open range,
  ``last_affected``, or a ``versions`` list alone.

Fix status, for an affected (installed version, versions offered by the host's
repositories) pair:

- ``fixable``: the newest offered version above the installed one (what the package
  manager would install) is affected by none of the vulnerability's entries; the fix is
  one upgrade away and :attr:`Assessment.candidate` names it;
- ``fixed_upstream``: not fixable, but a fixed version is known: a mirror lags or the
  repository that carries it is missing;
- ``no_fix``: no fixed version is known.

:func:`assess_host` applies this to a host's installed packages (Debian and Ubuntu
records name *source* packages, RPM distributions binary ones: callers pass the names the
records use) and merges records about one vulnerability (``identity``), so that a DSA and
the DEBIAN-CVE entry for one CVE count once. A vulnerability that touches several
packages takes the worst of their statuses.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from patchwatch.domain.errors import VersionError
from patchwatch.domain.versions import Key
from patchwatch.domain.vulns.ecosystems import HostEcosystem
from patchwatch.domain.vulns.ecosystems import Ordering
from patchwatch.domain.vulns.ecosystems import version_key
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Range
from patchwatch.domain.vulns.model import Record

__all__ = [
    "Assessment",
    "FeedIndex",
    "Finding",
    "FixStatus",
    "PackageFinding",
    "assess",
    "assess_host",
    "entry_affects",
    "entry_fix",
]


class FixStatus(enum.StrEnum):
    """Where the fix for an affected package stands (metric label values)."""

    FIXABLE = "fixable"
    FIXED_UPSTREAM = "fixed_upstream"
    NO_FIX = "no_fix"

    @property
    def rank(self) -> int:
        """Order for "worst of": no fix is worst."""
        return _STATUS_RANK[self]


_STATUS_RANK = {FixStatus.FIXABLE: 0, FixStatus.FIXED_UPSTREAM: 1, FixStatus.NO_FIX: 2}

_BOTTOM: Key = (-1, "")  # below every real key (epochs are never negative)
_TIE = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}


@functools.lru_cache(maxsize=1 << 16)
def _sorted_events(ordering: Ordering, rng: Range) -> tuple[tuple[Key, int, str, str], ...]:
    """The range's events as (key, tie, kind, version), in evaluation order."""
    out = []
    for ev in rng.events:
        if ev.kind == "introduced" and ev.version == "0":
            key = _BOTTOM
        else:
            key = version_key(ordering, ev.version)
        out.append((key, _TIE[ev.kind], ev.kind, ev.version))
    out.sort()
    return tuple(out)


@functools.lru_cache(maxsize=1 << 16)
def _listed(ordering: Ordering, versions: tuple[str, ...]) -> frozenset[Key]:
    return frozenset(version_key(ordering, v) for v in versions)


def _in_range(ordering: Ordering, key: Key, rng: Range) -> bool:
    affected = False
    for ev_key, _, kind, _ in _sorted_events(ordering, rng):
        if ev_key > key:
            break
        if kind == "introduced":
            affected = True
        elif kind == "fixed":
            affected = False
        elif kind == "last_affected":
            if ev_key < key:
                affected = False
        else:  # limit: the version lies at or beyond the range's end
            return False
    return affected


def _range_fix(ordering: Ordering, key: Key, rng: Range) -> str | None:
    """The fixed event that ends the span holding ``key`` (None: open or last_affected)."""
    for ev_key, _, kind, version in _sorted_events(ordering, rng):
        if kind == "fixed" and ev_key > key:
            return version
        if kind == "last_affected" and ev_key >= key:
            return None
        if kind == "limit" and ev_key > key:
            return None
    return None


def entry_affects(ordering: Ordering, key: Key, entry: Affected) -> bool:
    """Whether the version with sort key ``key`` is affected by ``entry``."""
    if any(_in_range(ordering, key, r) for r in entry.ranges):
        return True
    return bool(entry.versions) and key in _listed(ordering, entry.versions)


def entry_fix(ordering: Ordering, key: Key, entry: Affected) -> str | None:
    """The version that fixes ``key`` by this entry (None when the entry names none)."""
    fixes = [
        fix
        for r in entry.ranges
        if _in_range(ordering, key, r) and (fix := _range_fix(ordering, key, r)) is not None
    ]
    if not fixes:
        return None
    return max(fixes, key=lambda v: version_key(ordering, v))


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict for one affected installed version (see the module docstring)."""

    status: FixStatus
    fixed_version: str | None
    candidate: str | None
    #: positions in ``entries`` of the entries that affect the installed version
    matched: tuple[int, ...] = ()


def assess(
    ordering: Ordering,
    installed: str,
    entries: Sequence[Affected],
    offered: Iterable[str] = (),
) -> Assessment | None:
    """Judge ``installed`` against one vulnerability's entries; None when not affected.

    ``offered`` are the versions the host's repositories offer for the package (versions
    the ordering refuses are ignored: they cannot be installed). Raises ``VersionError``
    when ``installed`` itself is refused.
    """
    key = version_key(ordering, installed)
    positions = tuple(i for i, e in enumerate(entries) if entry_affects(ordering, key, e))
    if not positions:
        return None
    matched = [entries[i] for i in positions]
    fixes = [entry_fix(ordering, key, e) for e in matched]
    fixed: str | None = None
    if all(f is not None for f in fixes):
        fixed = max((f for f in fixes if f is not None), key=lambda v: version_key(ordering, v))
    best: tuple[Key, str] | None = None
    for version in offered:
        try:
            k = version_key(ordering, version)
        except VersionError:
            continue
        if k > key and (best is None or k > best[0]):
            best = (k, version)
    if best is not None and not any(entry_affects(ordering, best[0], e) for e in entries):
        return Assessment(FixStatus.FIXABLE, fixed, best[1], positions)
    status = FixStatus.FIXED_UPSTREAM if fixed else FixStatus.NO_FIX
    return Assessment(status, fixed, None, positions)


# --- a host against a feed ---------------------------------------------------------------


class FeedIndex:
    """Records indexed by ecosystem and package name, for matching many hosts.

    Only records that speak for a vulnerability (non-empty ``identities``) are indexed.
    The per-host view (:meth:`for_host`) is built once per host ecosystem and reused.
    """

    def __init__(self, records: Iterable[Record]) -> None:
        self._by_ecosystem: dict[str, dict[str, list[tuple[Record, Affected]]]] = {}
        for rec in records:
            if not rec.identities:
                continue
            for entry in rec.affected:
                names = self._by_ecosystem.setdefault(entry.ecosystem, {})
                names.setdefault(entry.name, []).append((rec, entry))
        self._views: dict[HostEcosystem, dict[str, list[tuple[Record, Affected]]]] = {}

    @property
    def ecosystems(self) -> list[str]:
        return sorted(self._by_ecosystem)

    def for_host(self, host: HostEcosystem) -> dict[str, list[tuple[Record, Affected]]]:
        """Package name -> (record, entry) pairs from every ecosystem the host reads."""
        view = self._views.get(host)
        if view is None:
            view = {}
            for ecosystem, names in self._by_ecosystem.items():
                if host.accepts(ecosystem):
                    for name, pairs in names.items():
                        view.setdefault(name, []).extend(pairs)
            self._views[host] = view
        return view


@dataclass(frozen=True, slots=True)
class PackageFinding:
    """One installed package version affected by one vulnerability."""

    name: str
    installed: str
    status: FixStatus
    fixed_version: str | None
    candidate: str | None
    records: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """One vulnerability on one host, over every package it touches (worst status)."""

    vulnerability: str
    status: FixStatus
    packages: tuple[PackageFinding, ...]


def assess_host(
    host: HostEcosystem,
    installed: Mapping[str, Iterable[str]],
    index: FeedIndex,
    offered: Mapping[str, Iterable[str]] | None = None,
) -> list[Finding]:
    """Every vulnerability of a host, sorted by id.

    ``installed`` maps the package names the records use (source names for Debian and
    Ubuntu) to the installed versions (several for multi-version packages such as
    kernels); ``offered`` maps them to the versions the host's repositories offer.
    Installed versions the ordering refuses are left out (they cannot be judged).
    """
    view = index.for_host(host)
    offered = offered or {}
    per_vuln: dict[str, list[PackageFinding]] = {}
    for name, versions in installed.items():
        pairs = view.get(name)
        if not pairs:
            continue
        by_ident: dict[str, tuple[list[Affected], list[str]]] = {}
        for rec, entry in pairs:
            for ident in rec.identities:
                entries, ids = by_ident.setdefault(ident, ([], []))
                entries.append(entry)
                ids.append(rec.id)
        on_offer = tuple(offered.get(name, ()))
        for version in versions:
            for ident, (entries, ids) in by_ident.items():
                try:
                    verdict = assess(host.ordering, version, entries, on_offer)
                except VersionError:
                    break
                if verdict is None:
                    continue
                per_vuln.setdefault(ident, []).append(
                    PackageFinding(
                        name=name,
                        installed=version,
                        status=verdict.status,
                        fixed_version=verdict.fixed_version,
                        candidate=verdict.candidate,
                        records=tuple(sorted({ids[i] for i in verdict.matched})),
                    )
                )
    return [
        Finding(
            vulnerability=ident,
            status=max((p.status for p in found), key=lambda s: s.rank),
            packages=tuple(found),
        )
        for ident, found in sorted(per_vuln.items())
    ]
