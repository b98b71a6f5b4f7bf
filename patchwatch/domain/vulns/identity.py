"""One vulnerability, however many records speak of it.

Why this module exists: the same flaw reaches patchwatch under several names. Debian
publishes DSA-5514-1 (the advisory) and DEBIAN-CVE-2023-4911 (the tracker's entry), both
naming CVE-2023-4911 as their ``upstream``; Ubuntu has USN-6409-1 and
UBUNTU-CVE-2023-4911; AlmaLinux's ALSA-2023:5453 lists it under ``related``; the
tracker JSON and CISA's catalogue say CVE-2023-4911 itself. A host exposed to it must
count it once, and KEV and EPSS (keyed by CVE) must find it. The rules:

1. A record's *identities* are the CVE ids among its own id, ``aliases`` and
   ``upstream``; an id of the form ``PREFIX-CVE-YYYY-NNNN`` (``DEBIAN-CVE-…``,
   ``UBUNTU-CVE-…``, ``ALPINE-CVE-…``) counts as that CVE.
2. Else the CVE ids in ``related``: the RPM distributions' advisories (AlmaLinux, Rocky
   Linux) list the CVEs they fix there, and OSV gives them no other place.
3. Else, for an advisory whose id says it is not about security (bug-fix and enhancement
   errata: ``ALBA``, ``ALEA``, ``RHBA``, ``RHEA``, ``RLBA``, ``RLEA``, ``SUSE-RU``,
   ``SUSE-FU``, ``SUSE-OU``, ``openSUSE-RU``): none. It stays an advisory, not a
   vulnerability.
4. Else the record's own id, or the smallest of it and its ``aliases``, so that two
   records aliasing each other without a CVE agree (a security advisory with no CVE,
   such as AlmaLinux's kernel updates that name none, counts under its own id).

A multi-CVE advisory thus speaks for each of its CVEs, and :func:`merge` gathers every
record's view of one identity into a :class:`Vulnerability`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from patchwatch.domain.vulns.model import Record
from patchwatch.domain.vulns.severity import Cvss
from patchwatch.domain.vulns.severity import Rating
from patchwatch.domain.vulns.severity import preferred_cvss

__all__ = ["CVE", "NON_SECURITY_PREFIXES", "Vulnerability", "identities", "merge"]

CVE = re.compile(r"^CVE-[0-9]{4}-[0-9]{4,19}$")
_EMBEDDED_CVE = re.compile(r"^[A-Za-z]+-(CVE-[0-9]{4}-[0-9]{4,19})$")

NON_SECURITY_PREFIXES = (
    "ALBA-",
    "ALEA-",
    "RHBA-",
    "RHEA-",
    "RLBA-",
    "RLEA-",
    "SUSE-RU-",
    "SUSE-FU-",
    "SUSE-OU-",
    "openSUSE-RU-",
)


def _as_cve(name: str) -> str | None:
    if CVE.match(name):
        return name
    m = _EMBEDDED_CVE.match(name) if "-CVE-" in name else None
    return m.group(1) if m else None


def identities(
    record_id: str,
    aliases: Iterable[str] = (),
    upstream: Iterable[str] = (),
    related: Iterable[str] = (),
) -> tuple[str, ...]:
    """The vulnerabilities a record speaks for, sorted (rules in the module docstring)."""
    aliases = tuple(aliases)
    found = {c for name in (record_id, *aliases, *upstream) if (c := _as_cve(name))}
    if not found:
        found = {name for name in related if CVE.match(name)}
    if found:
        return tuple(sorted(found))
    if record_id.startswith(NON_SECURITY_PREFIXES):
        return ()
    return (min((record_id, *aliases)),)


@dataclass(frozen=True, slots=True)
class Vulnerability:
    """Every record's view of one vulnerability, merged.

    ``records`` are the ids of the records that speak for it (advisories, CVE entries),
    sorted; ``published`` the earliest publication any of them gives; ``cvss`` the
    preferred score across them (``severity.preferred_cvss``); ``rating`` the worst
    distribution rating (a record-level one; per-release ratings stay on the entries).
    """

    id: str
    records: tuple[str, ...]
    published: float | None
    cvss: Cvss | None
    rating: Rating | None
    summary: str


def merge(records: Iterable[Record]) -> dict[str, Vulnerability]:
    """Group records by identity: one ``Vulnerability`` per CVE (or own id)."""
    ids: dict[str, list[str]] = {}
    published: dict[str, float] = {}
    scores: dict[str, list[Cvss]] = {}
    ratings: dict[str, Rating] = {}
    summaries: dict[str, str] = {}
    for rec in records:
        for ident in rec.identities:
            ids.setdefault(ident, []).append(rec.id)
            if rec.published is not None and rec.published < published.get(ident, float("inf")):
                published[ident] = rec.published
            if rec.cvss:
                scores.setdefault(ident, []).extend(rec.cvss)
            own = rec.rating
            if own is not None and (
                ident not in ratings or own.level.rank > ratings[ident].level.rank
            ):
                ratings[ident] = own
            if rec.summary and ident not in summaries:
                summaries[ident] = rec.summary
    return {
        ident: Vulnerability(
            id=ident,
            records=tuple(sorted(set(names))),
            published=published.get(ident),
            cvss=preferred_cvss(scores.get(ident, ())),
            rating=ratings.get(ident),
            summary=summaries.get(ident, ""),
        )
        for ident, names in ids.items()
    }
