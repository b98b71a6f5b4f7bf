"""Security fixes by package version, turned into the advisories the update computation reads.

Arch's security tracker and Alpine's secdb say, per package name, which version fixes
which CVEs; neither names an architecture. The update computation marks an update as
security when an advisory of one of the host's repositories fixes a version between
the installed one and the candidate, matching by (name, arch). :func:`advisories_for`
therefore gives each fix the architectures the repository itself offers that name in,
so a fix for ``openssl`` reaches ``openssl`` x86_64 and aarch64 alike, and a fix for a
name the repository does not carry is not stored at all. Alpine's secdb and OSV records
name the source package (the APKBUILD's ``pkgname``): with ``origins`` a fix reaches
every binary package built from it too (``openssl`` fixes ``libcrypto3``), since
Alpine's subpackages share their origin's version. Pure.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import TypeVar

from patchwatch.domain.errors import ParseError
from patchwatch.domain.records import Advisory
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.vulns.feed import feed_json
from patchwatch.domain.vulns.model import FeedStats

__all__ = ["FixedIn", "Fixes", "advisories_for", "feed_items", "osv_fixes", "read_fixes"]


@dataclass(frozen=True, slots=True)
class FixedIn:
    """One fix: ``name`` is fixed from ``version`` (record fields) on, for ``cves``."""

    id: str  # the advisory or group id (AVG-2843, ALPINE-openssl-3.3.2-r1)
    name: str
    kind: PackageKind
    epoch: str
    version: str
    release: str
    cves: tuple[str, ...] = ()
    severity: str = ""
    title: str = ""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Fixes:
    """Every fix a security feed document lists, and what was read and skipped."""

    fixes: list[FixedIn]
    stats: FeedStats = field(default_factory=FeedStats)


def feed_items(data: bytes, what: str, max_bytes: int, shape: type[T], expected: str) -> T:
    """The JSON document of a fixes feed (``feed.feed_json``: bounded, maybe compressed),
    refused whole unless it is of ``shape`` (``ParseError``: "WHAT is not EXPECTED")."""
    doc = feed_json(data, what, max_bytes)
    if not isinstance(doc, shape):
        raise ParseError(f"{what} is not {expected}")
    return doc


def read_fixes(
    items: Iterable[object], one: Callable[[object, FeedStats], list[FixedIn] | None]
) -> Fixes:
    """The fixes of each item (``one`` skips and counts a malformed item, returning
    None), with the items read and the fixes kept counted."""
    stats = FeedStats()
    fixes: list[FixedIn] = []
    for item in items:
        stats.read += 1
        found = one(item, stats)
        if found is not None:
            fixes.extend(found)
    stats.kept = len(fixes)
    return Fixes(fixes, stats)


def advisories_for(
    fixes: Iterable[FixedIn],
    offered: Iterable[Package],
    origins: Mapping[str, Iterable[str]] | None = None,
) -> list[Advisory]:
    """Security advisories for the fixes of names the repository offers, one per fix,
    with one package per architecture it offers the name in (and, with ``origins``,
    source name -> binary names, per binary package built from the fixed source)."""
    arches: dict[str, set[str]] = defaultdict(set)
    for package in offered:
        arches[package.name].add(package.arch)
    out = []
    for fix in fixes:
        names = {fix.name, *(origins or {}).get(fix.name, ())}
        packages = tuple(
            Package(name, fix.epoch, fix.version, fix.release, arch, fix.kind)
            for name in sorted(names)
            for arch in sorted(arches.get(name, ()))
        )
        if not packages:
            continue
        out.append(
            Advisory(
                id=fix.id,
                type="security",
                severity=fix.severity,
                title=fix.title,
                cves=fix.cves,
                packages=packages,
            )
        )
    return out


def osv_fixes(
    entries: Iterable[tuple[str, str, str, str, str]],
    kind: PackageKind,
    valid: Callable[[str], bool],
) -> list[FixedIn]:
    """The ``fixed`` versions of stored OSV entries as fixes, like a secdb's.

    ``entries`` are (record id, identities, summary, package, ranges JSON) as
    ``patchwatch.store.osv_fixes`` reads them (ranges as ``feeds.ranges_to_json``
    wrote them). A record that speaks for no vulnerability (no identities: a bug-fix
    erratum) fixes nothing here; a version ``valid`` refuses is left out.
    """
    out: dict[tuple[str, str, str], FixedIn] = {}
    for record_id, idents, summary, package, ranges in entries:
        cves = tuple(idents.split())
        if not cves:
            continue
        for _range_kind, events in json.loads(ranges):
            for event, version in events:
                if event != "fixed" or not valid(version) or version == "0":
                    continue
                out.setdefault(
                    (record_id, package, version),
                    FixedIn(record_id, package, kind, "", version, "", cves, title=summary[:500]),
                )
    return list(out.values())
