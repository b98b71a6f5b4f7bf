"""Security fixes by package version, turned into the advisories the update computation reads.

Arch's security tracker and Alpine's secdb say, per package name, which version fixes
which CVEs; neither names an architecture. The update computation marks an update as
security when an advisory of one of the host's repositories fixes a version between
the installed one and the candidate, matching by (name, arch). :func:`advisories_for`
therefore gives each fix the architectures the repository itself offers that name in,
so a fix for ``openssl`` reaches ``openssl`` x86_64 and aarch64 alike, and a fix for a
name the repository does not carry is not stored at all. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from patchwatch.domain.records import Advisory
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind

__all__ = ["FixedIn", "advisories_for"]


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


def advisories_for(fixes: Iterable[FixedIn], offered: Iterable[Package]) -> list[Advisory]:
    """Security advisories for the fixes of names the repository offers, one per fix,
    with one package per architecture it offers the name in."""
    arches: dict[str, set[str]] = defaultdict(set)
    for package in offered:
        arches[package.name].add(package.arch)
    out = []
    for fix in fixes:
        found = arches.get(fix.name)
        if not found:
            continue
        packages = tuple(
            Package(fix.name, fix.epoch, fix.version, fix.release, arch, fix.kind)
            for arch in sorted(found)
        )
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
