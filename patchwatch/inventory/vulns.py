"""The operator's views of vulnerabilities: the fleet's, one vulnerability's, one host's.

Why this module exists: ``patchwatch vulns``, ``patchwatch vulns show``, ``hosts show``
and ``GET /api/v1/hosts/NAME`` show the same rows; building them here, from the
findings stored per set (``patchwatch.pipeline.hostvulns``), keeps the CLI and the API
about presentation only.

A host's vulnerability is one row per vulnerability with its worst status over the
packages it touches (``no_fix`` over ``fixed_upstream`` over ``fixable``), as counts
and metrics use; the packages are listed under it.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.updates import decode_holds
from patchwatch.domain.vulns.links import advisory_url
from patchwatch.domain.vulns.match import FixStatus
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Package
from patchwatch.store.vuln_models import Vulnerability
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnSource
from patchwatch.store.vulns import FindingRow
from patchwatch.store.vulns import finding_status
from patchwatch.store.vulns import findings
from patchwatch.store.vulns import record_names
from patchwatch.store.vulns import set_finding_groups
from patchwatch.store.vulns import set_finding_ids
from patchwatch.store.vulns import sets_holding_findings
from patchwatch.store.vulns import vulnerability_findings

__all__ = [
    "VULN_FIELDS",
    "VulnFilter",
    "feeds_loaded",
    "fleet_vulnerabilities",
    "host_vulnerabilities",
    "update_fixes",
    "vuln_filter",
    "vulnerability_detail",
]

_RANK = {s.value: s.rank for s in FixStatus}
VULN_FIELDS = ("id", "severity", "cvss_score", "kev", "epss", "published", "hosts", "fixable")


@dataclass(frozen=True)
class VulnFilter:
    """Filters of the listings; None: any."""

    severity: str | None = None
    kev: bool | None = None
    status: str | None = None  # fixable, fixed_upstream, no_fix
    os: str | None = None  # substring of the OS name (an OS group)
    tag: str | None = None


SEVERITIES = ("critical", "high", "medium", "low", "negligible", "unknown")
STATUSES = tuple(s.value for s in FixStatus)


def vuln_filter(
    severity: str | None = None,
    kev: bool | None = None,
    status: str | None = None,
    os: str | None = None,
    tag: str | None = None,
) -> VulnFilter:
    """A filter from an operator's words; ``ParseError`` names a value that is not one."""
    if severity is not None and severity not in SEVERITIES:
        raise ParseError(f"expected one of {', '.join(SEVERITIES)}, got {severity!r}", "severity")
    if status is not None and status not in STATUSES:
        raise ParseError(f"expected one of {', '.join(STATUSES)}, got {status!r}", "status")
    return VulnFilter(severity=severity, kev=kev, status=status, os=os, tag=tag)


def feeds_loaded() -> bool:
    """Whether any feed of records has good data (else nothing can be said)."""
    return (
        VulnSource.select()
        .where(VulnSource.records.is_null(False) & ~VulnSource.name.in_(["kev", "epss"]))
        .exists()
    )


def _worst(items: list[FindingRow]) -> str:
    return max((i.status for i in items), key=lambda s: _RANK[s])


def _vuln_rows(ids: set[str]) -> dict[str, Vulnerability]:
    rows: dict[str, Vulnerability] = {}
    id_list = sorted(ids)
    for i in range(0, len(id_list), 500):
        for v in Vulnerability.select().where(Vulnerability.id.in_(id_list[i : i + 500])):
            rows[v.id] = v
    return rows


def _keep(v: Vulnerability | None, flt: VulnFilter) -> bool:
    if flt.severity and (v is None or v.severity != flt.severity):
        return False
    return not (flt.kev is not None and (v is not None and v.kev) != flt.kev)


def _describe(vid: str, v: Vulnerability | None) -> dict[str, object]:
    return {
        "id": vid,
        "severity": v.severity if v else "unknown",
        "cvss_score": v.cvss_score if v else None,
        "rating": v.rating if v else "",
        "kev": bool(v and v.kev),
        "kev_added": (v.kev_added or None) if v else None,
        "kev_due": (v.kev_due or None) if v else None,
        "epss": v.epss if v else None,
        "published": v.published if v else None,
        "summary": v.summary if v else "",
        "records": v.records.split() if v else [],
        "links": [u for u in v.urls.split("\n") if u] if v else [],
    }


def _hosts_per_set(flt: VulnFilter) -> dict[int, int]:
    """Set id -> how many of the hosts the filter keeps have it."""
    return {sid: len(names) for sid, names in _host_names_per_set(flt).items()}


def _host_names_per_set(flt: VulnFilter) -> dict[int, list[str]]:
    """Set id -> the names of the hosts the filter keeps that have it."""
    query = (
        VulnHost.select(VulnHost.vuln_set, Host.name, Host.tags, OSRelease.name)
        .join(Host, on=(Host.id == VulnHost.host))
        .join(OSRelease, on=(Host.os_release == OSRelease.id))
        .where(VulnHost.vuln_set.is_null(False))
        .tuples()
    )
    out: dict[int, list[str]] = defaultdict(list)
    for sid, name, tags, os_name in query:
        if flt.tag and flt.tag not in tags.split():
            continue
        if flt.os and flt.os.lower() not in os_name.lower():
            continue
        out[sid].append(name)
    return out


class _Tally:
    """Hosts exposed and fixable per vulnerability, counted over a group of sets as one
    reference set's worst statuses (weighted by the hosts of every set it stands for)
    plus each set's changes for the vulnerabilities its difference touches.

    Why: at 10,000 hosts the fleet's 7,000 sets hold 1,650 findings each, nearly all
    shared with the other sets of their image; going over every finding of every set
    took minutes and gigabytes. A set's difference from its group's reference is a
    set operation (C), and only the vulnerabilities it touches are looked at.
    """

    def __init__(self, status: dict[int, tuple[str, str]], only: str | None) -> None:
        self.status = status
        self.only = only
        self.hosts: dict[str, int] = defaultdict(int)
        self.fixable: dict[str, int] = defaultdict(int)

    def _worst(self, ids: Iterable[int]) -> dict[str, str]:
        worst: dict[str, str] = {}
        for fid in ids:
            vid, status = self.status[fid]
            old = worst.get(vid)
            if old is None or _RANK[status] > _RANK[old]:
                worst[vid] = status
        return worst

    def _count(self, vid: str, status: str | None, weight: int) -> None:
        if status is None or (self.only and status != self.only):
            return
        self.hosts[vid] += weight
        if status == FixStatus.FIXABLE.value:
            self.fixable[vid] += weight

    def group(self, members: list[tuple[array[int], int]]) -> None:
        """Count a group's sets: (finding ids, hosts) each.

        A set near one of the group's references (a few of them, the first sets not
        near an earlier one) is counted as that reference plus its difference; only
        the references' ids are held as Python sets (all of a fleet's took a gigabyte).
        """
        refs: list[_Reference] = []
        for packed, weight in members:
            ids = frozenset(packed)
            for ref in refs:
                removed, added = ref.ids - ids, ids - ref.ids
                if len(removed) + len(added) <= max(len(ids) // 4, _NEAR):
                    ref.weight += weight
                    self._changes(ref, removed, added, weight)
                    break
            else:
                ref = _Reference(ids, weight, self._worst(ids), {})
                for fid in ids:
                    ref.by_vuln.setdefault(self.status[fid][0], []).append(fid)
                if len(refs) < _REFERENCES:
                    refs.append(ref)
                else:
                    self._close(ref)
        for ref in refs:
            self._close(ref)

    def _changes(
        self, ref: _Reference, removed: frozenset[int], added: frozenset[int], weight: int
    ) -> None:
        """Count a set near ``ref`` (counted with the reference's statuses) as its own
        statuses for the vulnerabilities its difference touches."""
        touched: dict[str, list[int]] = {}
        for fid in added:
            touched.setdefault(self.status[fid][0], []).append(fid)
        for fid in removed:
            touched.setdefault(self.status[fid][0], [])
        for vid, extra in touched.items():
            kept = [f for f in ref.by_vuln.get(vid, ()) if f not in removed]
            self._count(vid, ref.worst.get(vid), -weight)
            self._count(vid, self._worst(kept + extra).get(vid), weight)

    def _close(self, ref: _Reference) -> None:
        for vid, status in ref.worst.items():
            self._count(vid, status, ref.weight)


_NEAR = 16  # findings a set may differ by from a reference, at least (a quarter at most)
_REFERENCES = 4  # references kept per group


@dataclass
class _Reference:
    """A set counted for every host of the sets near it (``weight``)."""

    ids: frozenset[int]
    weight: int
    worst: dict[str, str]
    by_vuln: dict[str, list[int]]


def fleet_vulnerabilities(flt: VulnFilter = VulnFilter()) -> list[dict[str, object]]:
    """Every vulnerability present in the fleet: hosts exposed, on how many fixable."""
    weights = _hosts_per_set(flt)
    stored = set_finding_groups(weights)
    groups: dict[tuple[int, int | None, str], list[tuple[array[int], int]]] = {}
    for sid in sorted(stored):
        key, ids = stored[sid]
        groups.setdefault(key, []).append((ids, weights[sid]))
    status = finding_status(set().union(*(ids for _, ids in stored.values())))
    del stored
    tally = _Tally(status, flt.status)
    for members in groups.values():
        tally.group(members)
    hosts = {vid: n for vid, n in tally.hosts.items() if n > 0}
    fixable = tally.fixable
    rows = _vuln_rows(set(hosts))
    out = []
    for vid in hosts:
        v = rows.get(vid)
        if not _keep(v, flt):
            continue
        d = _describe(vid, v)
        out.append(
            {
                "id": vid, "severity": d["severity"], "cvss_score": d["cvss_score"],
                "kev": d["kev"], "epss": d["epss"], "published": d["published"],
                "hosts": hosts[vid], "fixable": fixable[vid],
            }
        )  # fmt: skip
    out.sort(key=lambda r: (not r["kev"], -int(r["hosts"]), str(r["id"])))  # type: ignore[call-overload]
    return out


def vulnerability_detail(vid: str, flt: VulnFilter = VulnFilter()) -> dict[str, object]:
    """One vulnerability and every host it touches: package, installed, fix, where."""
    v = Vulnerability.get_or_none(Vulnerability.id == vid)
    # only this vulnerability's findings are read, and found in the sets' packed ids
    rows = vulnerability_findings(vid)
    names = _host_names_per_set(flt)
    by_host: dict[str, list[FindingRow]] = {}
    for sid, held in sets_holding_findings(names, rows).items():
        items = sorted((rows[fid] for fid in held), key=lambda i: (i.package, i.installed))
        for name in names[sid]:
            by_host[name] = items
    hosts = []
    for host, items in sorted(by_host.items()):
        for item in items:
            if flt.status and item.status != flt.status:
                continue
            hosts.append(
                {
                    "host": host, "package": item.package, "installed": item.installed,
                    "status": item.status, "fixed_version": item.fixed_version or None,
                    "candidate": item.candidate or None, "records": item.records.split(),
                }
            )  # fmt: skip
    if v is None and not hosts:
        raise NotFoundError(f"no vulnerability {vid!r}")
    return {**_describe(vid, v), "hosts": hosts}


def host_vulnerabilities(host: Host, flt: VulnFilter = VulnFilter()) -> dict[str, object]:
    """A host's vulnerabilities (``state``: ``known``, ``not_matched`` or ``unknown``)."""
    link = VulnHost.get_or_none(VulnHost.host == host.id)
    if link is None or not feeds_loaded():
        return {"state": "unknown", "ecosystem": None, "vulnerabilities": []}
    if link.vuln_set_id is None:
        return {"state": "not_matched", "ecosystem": None, "vulnerabilities": []}
    # a held package (apt-mark hold, versionlock) stays as it is on upgrade: said so
    held = {name for name, _arch in decode_holds(host.held)}
    per_vuln: dict[str, list[FindingRow]] = defaultdict(list)
    ids = set_finding_ids([link.vuln_set_id]).get(link.vuln_set_id, [])
    for item in findings(ids).values():
        per_vuln[item.vulnerability].append(item)
    rows = _vuln_rows(set(per_vuln))
    out = []
    for vid, items in sorted(per_vuln.items()):
        v = rows.get(vid)
        status = _worst(items)
        if not _keep(v, flt) or (flt.status and status != flt.status):
            continue
        d = _describe(vid, v)
        out.append(
            {
                "id": vid, "severity": d["severity"], "kev": d["kev"], "epss": d["epss"],
                "published": d["published"], "status": status,
                "packages": [
                    {"name": i.package, "installed": i.installed, "status": i.status,
                     "fixed_version": i.fixed_version or None, "candidate": i.candidate or None,
                     "records": i.records.split(), "held": i.package in held}
                    for i in sorted(items, key=lambda i: (i.package, i.installed))
                ],
            }
        )  # fmt: skip
    return {"state": "known", "ecosystem": link.ecosystem, "vulnerabilities": out}


def update_fixes(host: Host) -> dict[tuple[str, str], list[dict[str, object]]] | None:
    """What each of the host's pending updates fixes, by (name, arch) of the package.

    An update fixes the vulnerabilities whose finding on the installed package is
    ``fixable`` (the offered version it installs is affected by none of the records):
    the same relation that makes it a security update (``hostupdates._resolve``). Each
    vulnerability comes with the advisories that fix it (DSA, USN, ALSA, RHSA...) and
    a link to read each. None when the host's vulnerabilities are not known (no feed,
    not computed yet, an OS that maps to no feed): "fixes nothing" would be a guess.
    """
    link = VulnHost.get_or_none(VulnHost.host == host.id)
    if link is None or link.vuln_set_id is None or not feeds_loaded():
        return None
    if link.vuln_set.package_set_id != host.package_set_id:
        return None  # findings of the packages it had before: not computed yet for these
    installed = {
        pid: (name, arch)
        for pid, name, arch in HostUpdate.select(HostUpdate.installed, Package.name, Package.arch)
        .join(Package, on=(HostUpdate.installed == Package.id))
        .where(HostUpdate.host == host.id)
        .tuples()
    }
    if not installed:
        return {}
    fixable: dict[tuple[str, str], list[FindingRow]] = defaultdict(list)
    ids = set_finding_ids([link.vuln_set_id]).get(link.vuln_set_id, [])
    for row in findings(ids).values():
        if row.status == FixStatus.FIXABLE.value:
            fixable[(row.package, row.installed)].append(row)
    names = record_names(installed)
    touched = {pid: fixable.get(names[pid], []) for pid in installed if pid in names}
    vulns = _vuln_rows({r.vulnerability for rows in touched.values() for r in rows})
    out: dict[tuple[str, str], list[dict[str, object]]] = {}
    for pid, rows in touched.items():
        fixes = []
        for row in sorted(rows, key=lambda r: r.vulnerability):
            v = vulns.get(row.vulnerability)
            known = [u for u in v.urls.split("\n") if u] if v else []
            fixes.append(
                {
                    "id": row.vulnerability,
                    "url": advisory_url(row.vulnerability, link.ecosystem, known),
                    "severity": v.severity if v else "unknown",
                    "kev": bool(v and v.kev),
                    "advisories": [
                        {"id": rid, "url": advisory_url(rid, link.ecosystem, known)}
                        for rid in sorted(set(row.records.split()) - {row.vulnerability})
                    ],
                }
            )  # fmt: skip
        out[installed[pid]] = fixes
    return out
