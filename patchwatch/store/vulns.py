"""Reading and writing the vulnerability tables (``patchwatch.store.vuln_models``).

Why this module exists: a feed's good data replaces its previous data in one
transaction, so a reader never sees half a feed, and a failed read leaves it untouched;
the merged :class:`Vulnerability` rows are rebuilt from every source's records in the
same transaction. Everything the pipeline and the operator views need to read back
(records as matching wants them, the fleet's operating systems, per-source state) is
here, so they know no table layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from peewee import fn

from patchwatch.domain.records import OSInfo
from patchwatch.domain.vulns.epss import EpssScore
from patchwatch.domain.vulns.feeds import affected_from_json
from patchwatch.domain.vulns.feeds import ranges_to_json
from patchwatch.domain.vulns.identity import merge
from patchwatch.domain.vulns.kev import KevEntry
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Record
from patchwatch.domain.vulns.severity import Cvss
from patchwatch.domain.vulns.severity import Level
from patchwatch.domain.vulns.severity import Rating
from patchwatch.domain.vulns.severity import effective_level
from patchwatch.domain.vulns.severity import preferred_cvss
from patchwatch.store.db import chunks
from patchwatch.store.models import Host
from patchwatch.store.models import OSRelease
from patchwatch.store.vuln_models import VulnAffected
from patchwatch.store.vuln_models import VulnEpss
from patchwatch.store.vuln_models import Vulnerability
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnKev
from patchwatch.store.vuln_models import VulnRecord
from patchwatch.store.vuln_models import VulnSet
from patchwatch.store.vuln_models import VulnSetItem
from patchwatch.store.vuln_models import VulnSource

__all__ = [
    "feeds_digest",
    "fleet_os",
    "load_records",
    "named_cves",
    "rebuild_vulnerabilities",
    "replace_epss",
    "replace_kev",
    "replace_records",
    "scrape_rows",
    "source_state",
]

_BATCH = 500


def source_state(name: str, location: str = "") -> VulnSource:
    """The state row of a feed, created (with no data) on first use."""
    row, _ = VulnSource.get_or_create(name=name, defaults={"location": location})
    return row


def fleet_os() -> list[OSInfo]:
    """The distinct operating systems of the hosts that have reported."""
    rows = (
        OSRelease.select(
            OSRelease.family,
            OSRelease.os_id,
            OSRelease.name,
            OSRelease.version,
            OSRelease.codename,
        )
        .join(Host, on=(Host.os_release == OSRelease.id))
        .distinct()
        .tuples()
    )
    return [OSInfo(family=f, id=i, name=n, version=v, codename=c) for f, i, n, v, c in rows]


def _cut(text: str, limit: int) -> str:
    return text[:limit]


def replace_records(source: str, records: Iterable[Record]) -> int:
    """Replace every stored record of ``source`` by ``records``; return how many.

    Call inside a transaction (with the state update and the rebuild), so the feed's
    old data stays whole until the new data is.
    """
    old = VulnRecord.select(VulnRecord.id).where(VulnRecord.source == source)
    VulnAffected.delete().where(VulnAffected.record.in_(old)).execute()
    VulnRecord.delete().where(VulnRecord.source == source).execute()
    count = 0
    batch: list[tuple[Record, dict[str, object]]] = []

    def flush() -> None:
        ids = []
        for rec, row in batch:
            ids.append((rec, VulnRecord.insert(**row).execute()))
        affected = []
        for rec, rid in ids:
            for entry in rec.affected:
                ranges, versions = ranges_to_json(entry)
                affected.append(
                    {
                        "record": rid,
                        "ecosystem": _cut(entry.ecosystem, 160),
                        "package": _cut(entry.name, 255),
                        "ranges": ranges,
                        "versions": versions,
                        "rating_level": entry.rating.level.value if entry.rating else "",
                    }
                )
        for part in chunks(affected, 200):
            VulnAffected.insert_many(part).execute()
        batch.clear()

    for rec in records:
        count += 1
        cvss = preferred_cvss(rec.cvss)
        batch.append(
            (
                rec,
                {
                    "source": source,
                    "record_id": _cut(rec.id, 160),
                    "identities": " ".join(rec.identities),
                    "published": rec.published,
                    "modified": rec.modified,
                    "cvss_version": cvss.version if cvss else "",
                    "cvss_vector": _cut(cvss.vector, 512) if cvss else "",
                    "cvss_score": cvss.score if cvss else None,
                    "cvss_level": cvss.level.value if cvss else "",
                    "rating_scheme": rec.rating.scheme if rec.rating else "",
                    "rating_text": _cut(rec.rating.text, 64) if rec.rating else "",
                    "rating_level": rec.rating.level.value if rec.rating else "",
                    "summary": _cut(rec.summary, 1000),
                    "urls": "\n".join(rec.advisory_urls[:10]),
                },
            )
        )
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    return count


def load_records(ecosystems: Iterable[str] | None = None) -> list[Record]:
    """Every stored record with its entries (only ``ecosystems``' entries when given).

    What matching reads: records keep their identities and ids; CVSS and ratings stay
    in the tables (the merged :class:`Vulnerability` rows carry them).
    """
    wanted = set(ecosystems) if ecosystems is not None else None
    entries: dict[int, list[Affected]] = {}
    query = VulnAffected.select(
        VulnAffected.record,
        VulnAffected.ecosystem,
        VulnAffected.package,
        VulnAffected.ranges,
        VulnAffected.versions,
    )
    for rid, eco, package, ranges, versions in query.tuples().iterator():
        if wanted is not None and eco not in wanted:
            continue
        entries.setdefault(rid, []).append(affected_from_json(eco, package, ranges, versions))
    if not entries:
        return []
    out = []
    query = VulnRecord.select(VulnRecord.id, VulnRecord.record_id, VulnRecord.identities)
    for rid, record_id, idents in query.tuples().iterator():
        found = entries.get(rid)
        if found:
            out.append(
                Record(
                    id=record_id,
                    identities=tuple(idents.split()),
                    modified=None,
                    affected=tuple(found),
                )
            )
    return out


def replace_kev(entries: Mapping[str, KevEntry]) -> int:
    """Replace the stored catalogue."""
    VulnKev.delete().execute()
    rows = [
        {
            "cve": e.cve,
            "date_added": e.date_added.isoformat(),
            "due_date": e.due_date.isoformat() if e.due_date else "",
            "ransomware": e.ransomware,
            "name": _cut(e.name, 255),
        }
        for e in entries.values()
    ]
    for part in chunks(rows, 200):
        VulnKev.insert_many(part).execute()
    return len(rows)


def replace_epss(scores: Mapping[str, EpssScore]) -> int:
    """Replace the stored scores."""
    VulnEpss.delete().execute()
    rows = [{"cve": cve, "score": s.epss, "percentile": s.percentile} for cve, s in scores.items()]
    for part in chunks(rows, 300):
        VulnEpss.insert_many(part).execute()
    return len(rows)


def named_cves() -> set[str]:
    """The CVE ids some stored record speaks for (what EPSS scores are kept for)."""
    out: set[str] = set()
    for (idents,) in VulnRecord.select(VulnRecord.identities).tuples().iterator():
        out.update(i for i in idents.split() if i.startswith("CVE-"))
    return out


def rebuild_vulnerabilities() -> int:
    """Rebuild the merged rows from every source's records, KEV and EPSS; return how many.

    Severity is the CVSS level when a vector was scored, else the distribution's
    rating (``severity.effective_level``).
    """
    records = []
    for row in VulnRecord.select().iterator():
        cvss = (
            Cvss(row.cvss_version, row.cvss_vector, row.cvss_score, Level(row.cvss_level))
            if row.cvss_score is not None
            else None
        )
        rating = (
            Rating(row.rating_scheme, row.rating_text, Level(row.rating_level))
            if row.rating_scheme
            else None
        )
        records.append(
            Record(
                id=row.record_id,
                identities=tuple(row.identities.split()),
                modified=row.modified,
                published=row.published,
                summary=row.summary,
                cvss=(cvss,) if cvss else (),
                rating=rating,
                advisory_urls=tuple(u for u in row.urls.split("\n") if u),
            )
        )
    urls: dict[str, list[str]] = {}
    for rec in records:
        for ident in rec.identities:
            urls.setdefault(ident, []).extend(rec.advisory_urls)
    merged = merge(records)
    kev = {k.cve: k for k in VulnKev.select()}
    epss = {e.cve: e for e in VulnEpss.select()}
    Vulnerability.delete().execute()
    rows = []
    for ident, v in merged.items():
        k = kev.get(ident)
        e = epss.get(ident)
        rows.append(
            {
                "id": ident,
                "severity": effective_level(v.cvss, v.rating).value,
                "cvss_score": v.cvss.score if v.cvss else None,
                "cvss_vector": v.cvss.vector if v.cvss else "",
                "rating": _cut(f"{v.rating.scheme}: {v.rating.text}", 64) if v.rating else "",
                "published": v.published,
                "kev": k is not None,
                "kev_added": k.date_added if k else "",
                "kev_due": k.due_date if k else "",
                "kev_ransomware": k.ransomware if k else None,
                "epss": e.score if e else None,
                "epss_percentile": e.percentile if e else None,
                "summary": _cut(v.summary, 1000),
                "records": _cut(" ".join(v.records), 4000),
                "urls": "\n".join(sorted(set(urls.get(ident, ())))[:10]),
            }
        )
    for part in chunks(rows, 100):
        Vulnerability.insert_many(part).execute()
    return len(rows)


def feeds_digest() -> str:
    """A digest of every feed's stored data: what a computation of findings read."""
    h = hashlib.sha256()
    rows = VulnSource.select(
        VulnSource.name, VulnSource.content_digest, VulnSource.last_change_at
    ).order_by(VulnSource.name)
    for name, digest, changed in rows.tuples():
        h.update(f"{name}\0{digest}\0{changed}\n".encode())
    return h.hexdigest()


@dataclass
class SetSummary:
    """What a scrape needs of one findings set: counts and the few per-set figures."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (severity, status)
    kev_fixable: int = 0
    oldest_fixable: dict[str, float] = field(default_factory=dict)  # severity -> published
    kev: dict[str, str] = field(default_factory=dict)  # KEV vulnerability -> worst status


@dataclass
class VulnScrape:
    """The vulnerability state a scrape serves, read in a few grouped queries."""

    loaded: bool
    hosts: list[tuple[str, float, SetSummary]]  # host name, computed at, its set's summary
    feeds: list[VulnSource]


_SEVERE = ("critical", "high")


def scrape_rows() -> VulnScrape:
    """Per host: counts by severity and worst status, KEV fixable, oldest fixable severe.

    Statuses compare as their words do (``fixable`` < ``fixed_upstream`` < ``no_fix``),
    so the worst status of a vulnerability over a set's packages is a ``MAX``.
    """
    feeds = list(VulnSource.select().order_by(VulnSource.name))
    loaded = any(f.records is not None and f.name not in ("kev", "epss") for f in feeds)
    if not loaded:
        return VulnScrape(False, [], feeds)
    meta = {
        vid: (sev, bool(kev), pub)
        for vid, sev, kev, pub in Vulnerability.select(
            Vulnerability.id, Vulnerability.severity, Vulnerability.kev, Vulnerability.published
        ).tuples()
    }
    sets: dict[int, SetSummary] = {}
    query = VulnSetItem.select(
        VulnSetItem.vuln_set, VulnSetItem.vulnerability, fn.MAX(VulnSetItem.status)
    ).group_by(VulnSetItem.vuln_set, VulnSetItem.vulnerability)
    for sid, vid, status in query.tuples().iterator():
        summary = sets.setdefault(sid, SetSummary())
        severity, kev, published = meta.get(vid, ("unknown", False, None))
        key = (severity, status)
        summary.counts[key] = summary.counts.get(key, 0) + 1
        if kev:
            summary.kev[vid] = status
        if status == "fixable":
            summary.kev_fixable += kev
            if severity in _SEVERE and published is not None:
                old = summary.oldest_fixable.get(severity)
                if old is None or published < old:
                    summary.oldest_fixable[severity] = published
    empty = SetSummary()
    hosts = [
        (name, at, sets.get(sid, empty))
        for name, sid, at in VulnHost.select(Host.name, VulnHost.vuln_set, VulnSet.computed_at)
        .join(Host, on=(Host.id == VulnHost.host))
        .switch(VulnHost)
        .join(VulnSet, on=(VulnSet.id == VulnHost.vuln_set))
        .tuples()
    ]
    return VulnScrape(True, hosts, feeds)
