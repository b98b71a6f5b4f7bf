"""Reading and writing the vulnerability tables (``patchwatch.store.vuln_models``).

Why this module exists: a feed's good data replaces its previous data in one
transaction, so a reader never sees half a feed, and a failed read leaves it untouched;
the merged :class:`Vulnerability` rows are rebuilt from every source's records in the
same transaction. Everything the pipeline and the operator views need to read back
(records as matching wants them, the fleet's operating systems, per-source state) is
here, so they know no table layout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from array import array
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import orjson

from patchwatch.domain.collector import collector_paused
from patchwatch.domain.packed_ids import pack_ids
from patchwatch.domain.packed_ids import unpack_ids
from patchwatch.domain.records import OSInfo
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
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
from patchwatch.store.db import IN_LIST_SIZE
from patchwatch.store.db import chunks
from patchwatch.store.db import database
from patchwatch.store.db import execute_many
from patchwatch.store.db import placeholders
from patchwatch.store.db import raw_sql
from patchwatch.store.db import update_many
from patchwatch.store.models import Host
from patchwatch.store.models import OSRelease
from patchwatch.store.models import Package
from patchwatch.store.package_sets import bases_of
from patchwatch.store.sets import ensure_packages
from patchwatch.store.vuln_models import PackageSource
from patchwatch.store.vuln_models import VulnAffected
from patchwatch.store.vuln_models import VulnEpss
from patchwatch.store.vuln_models import Vulnerability
from patchwatch.store.vuln_models import VulnFinding
from patchwatch.store.vuln_models import VulnHost
from patchwatch.store.vuln_models import VulnKev
from patchwatch.store.vuln_models import VulnRecord
from patchwatch.store.vuln_models import VulnSet
from patchwatch.store.vuln_models import VulnSource

__all__ = [
    "FindingRow",
    "SetWrite",
    "assign_hosts",
    "decode_fixing",
    "feeds_digest",
    "finding_status",
    "findings",
    "fixing_sets",
    "fleet_os",
    "fleet_os_groups",
    "load_records",
    "named_cves",
    "prune_sets",
    "rebuild_vulnerabilities",
    "record_names",
    "remember_reported_sources",
    "remember_sources",
    "replace_epss",
    "replace_kev",
    "replace_records",
    "save_set",
    "save_sets",
    "scrape_rows",
    "set_finding_groups",
    "set_finding_ids",
    "sets_holding_findings",
    "source_state",
    "sources_of",
    "store_findings",
    "stored_sources",
    "summarize",
    "vulnerability_findings",
    "vulnerability_meta",
    "worst_by_vulnerability",
]

_BATCH = 500


def source_state(name: str, location: str = "") -> VulnSource:
    """The state row of a feed, created (with no data) on first use."""
    row, _ = VulnSource.get_or_create(name=name, defaults={"location": location})
    return row


def fleet_os_groups() -> list[tuple[OSInfo, str]]:
    """The distinct operating systems of the hosts that have reported, each with its OS
    group's ecosystem override ("" for none)."""
    rows = (
        OSRelease.select(
            OSRelease.family, OSRelease.os_id, OSRelease.name, OSRelease.version,
            OSRelease.codename, OSRelease.vuln_ecosystem,
        )
        .join(Host, on=(Host.os_release == OSRelease.id))
        .distinct()
        .tuples()
    )  # fmt: skip
    return [
        (OSInfo(family=f, id=i, name=n, version=v, codename=c), override)
        for f, i, n, v, c, override in rows
    ]


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
    old data stays whole until the new data is. Rows are written with the driver's
    executemany (``COPY`` on PostgreSQL): peewee's query building costs more than the
    database's own work for a feed's 50,000 records.
    """
    old = VulnRecord.select(VulnRecord.id).where(VulnRecord.source == source)
    VulnAffected.delete().where(VulnAffected.record.in_(old)).execute()
    VulnRecord.delete().where(VulnRecord.source == source).execute()
    ids: dict[str, int] = {}  # record id -> row id, of the chunks written
    kept = list(records)
    with collector_paused():  # the rows are acyclic: see collector_paused
        for start in range(0, len(kept), _RECORD_CHUNK):
            _insert_records(source, kept[start : start + _RECORD_CHUNK], ids)
    return len(kept)


# Records written per round: the rows of a whole 50,000-record feed held at once, with
# its parsed records, made storing it a third larger in memory than parsing it.
_RECORD_CHUNK = 5000


def _insert_records(source: str, chunk: Sequence[Record], ids: dict[str, int]) -> None:
    """Insert a chunk of a source's records and their entries; ``ids`` (record id -> row
    id) gets the chunk's rows, read back as those above the highest id it had."""
    rows = []
    for rec in chunk:
        cvss = preferred_cvss(rec.cvss)
        rating = rec.rating
        rows.append(
            (
                source, _cut(rec.id, 160), " ".join(rec.identities), rec.published,
                rec.modified, cvss.version if cvss else "",
                _cut(cvss.vector, 512) if cvss else "", cvss.score if cvss else None,
                cvss.level.value if cvss else "", rating.scheme if rating else "",
                _cut(rating.text, 64) if rating else "",
                rating.level.value if rating else "", _cut(rec.summary, 1000),
                "\n".join(rec.advisory_urls[:10]),
            )
        )  # fmt: skip
    execute_many(
        f"INSERT INTO {VulnRecord._meta.table_name} (source, record_id, identities, "
        "published, modified, cvss_version, cvss_vector, cvss_score, cvss_level, "
        "rating_scheme, rating_text, rating_level, summary, urls) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    del rows
    last = max(ids.values(), default=0)
    ids.update(
        VulnRecord.select(VulnRecord.record_id, VulnRecord.id)
        .where((VulnRecord.source == source) & (VulnRecord.id > last))
        .tuples()
    )
    affected = []
    for rec in chunk:
        rid = ids[_cut(rec.id, 160)]
        for entry in rec.affected:
            ranges, versions = ranges_to_json(entry)
            level = entry.rating.level.value if entry.rating else ""
            affected.append(
                (rid, _cut(entry.ecosystem, 160), _cut(entry.name, 255), ranges, versions, level)
            )
    execute_many(
        f"INSERT INTO {VulnAffected._meta.table_name} (record_id, ecosystem, package, "
        "ranges, versions, rating_level) VALUES (?, ?, ?, ?, ?, ?)",
        affected,
    )


def load_records(
    ecosystems: Iterable[str] | None = None, packages: Iterable[str] | None = None
) -> list[Record]:
    """Every stored record with its entries (only ``ecosystems``' entries when given,
    and only entries about ``packages`` when given).

    What matching reads: records keep their identities and ids; CVSS and ratings stay
    in the tables (the merged :class:`Vulnerability` rows carry them). ``packages``: a
    fleet has a few thousand of a Debian feed's 30,000 source packages installed, and
    parsing the entries' ranges is most of the load.
    """
    wanted = set(ecosystems) if ecosystems is not None else None
    names = set(packages) if packages is not None else None
    entries: dict[int, list[Affected]] = {}
    # Raw rows, and each distinct JSON text parsed once: a feed repeats the same ranges
    # and version lists across releases and records, and peewee's row conversion costs
    # more than the database's own work for a feed's 100,000 entries.
    parsed: dict[tuple[str, str, str, str], Affected] = {}
    table = VulnAffected._meta.table_name
    sql = f"SELECT record_id, ecosystem, package, ranges, versions FROM {table}"
    params: list[str] = []
    if wanted is not None and len(wanted) <= IN_LIST_SIZE:
        # a Debian host reads one of a feed's three releases: the others never leave
        # the database (the ecosystem leads the entries' index)
        params = sorted(wanted)
        sql = raw_sql(f"{sql} WHERE ecosystem IN ({placeholders(len(params))})")
    for rid, eco, package, ranges, versions in database.execute_sql(sql, params).fetchall():
        if (wanted is not None and eco not in wanted) or (
            names is not None and package not in names
        ):
            continue
        key = (eco, package, ranges, versions)
        entry = parsed.get(key)
        if entry is None:
            entry = parsed[key] = affected_from_json(eco, package, ranges, versions)
        entries.setdefault(rid, []).append(entry)
    if not entries:
        return []
    out = []
    sql = f"SELECT id, record_id, identities FROM {VulnRecord._meta.table_name}"
    for rid, record_id, idents in database.execute_sql(sql).fetchall():
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
        (e.cve, e.date_added.isoformat(), e.due_date.isoformat() if e.due_date else "",
         e.ransomware, _cut(e.name, 255))
        for e in entries.values()
    ]  # fmt: skip
    execute_many(
        f"INSERT INTO {VulnKev._meta.table_name} (cve, date_added, due_date, ransomware, name) "
        "VALUES (?, ?, ?, ?, ?)",
        rows,
    )
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
    with collector_paused():  # a feed's worth of records and rows: see collector_paused
        return _rebuild_vulnerabilities()


def _rebuild_vulnerabilities() -> int:
    records = []
    query = VulnRecord.select(
        VulnRecord.record_id, VulnRecord.identities, VulnRecord.modified,
        VulnRecord.published, VulnRecord.summary, VulnRecord.cvss_version,
        VulnRecord.cvss_vector, VulnRecord.cvss_score, VulnRecord.cvss_level,
        VulnRecord.rating_scheme, VulnRecord.rating_text, VulnRecord.rating_level,
        VulnRecord.urls,
    ).tuples()  # fmt: skip
    for (rid, idents, modified, published, summary, c_version, c_vector, c_score, c_level,
         r_scheme, r_text, r_level, link_text) in query.iterator():  # fmt: skip
        cvss = Cvss(c_version, c_vector, c_score, Level(c_level)) if c_score is not None else None
        rating = Rating(r_scheme, r_text, Level(r_level)) if r_scheme else None
        records.append(
            Record(
                id=rid, identities=tuple(idents.split()), modified=modified,
                published=published, summary=summary, cvss=(cvss,) if cvss else (),
                rating=rating, advisory_urls=tuple(u for u in link_text.split("\n") if u),
            )
        )  # fmt: skip
    urls: dict[str, set[str]] = {}
    for rec in records:
        if rec.advisory_urls:
            for ident in rec.identities:
                urls.setdefault(ident, set()).update(rec.advisory_urls)
    merged = merge(records)
    kev = {
        cve: (added, due, ransomware)
        for cve, added, due, ransomware in VulnKev.select(
            VulnKev.cve, VulnKev.date_added, VulnKev.due_date, VulnKev.ransomware
        ).tuples()
    }
    epss = {
        cve: (score, pct)
        for cve, score, pct in VulnEpss.select(
            VulnEpss.cve, VulnEpss.score, VulnEpss.percentile
        ).tuples()
    }
    Vulnerability.delete().execute()
    rows = []
    for ident, v in merged.items():
        k = kev.get(ident)
        e = epss.get(ident)
        rows.append(
            (
                ident, effective_level(v.cvss, v.rating).value,
                v.cvss.score if v.cvss else None, v.cvss.vector if v.cvss else "",
                _cut(f"{v.rating.scheme}: {v.rating.text}", 64) if v.rating else "",
                v.published, k is not None, k[0] if k else "", k[1] if k else "",
                k[2] if k else None, e[0] if e else None, e[1] if e else None,
                _cut(v.summary, 1000), _cut(" ".join(v.records), 4000),
                "\n".join(sorted(urls.get(ident, ()))[:10]),
            )
        )  # fmt: skip
    execute_many(
        f"INSERT INTO {Vulnerability._meta.table_name} (id, severity, cvss_score, "
        "cvss_vector, rating, published, kev, kev_added, kev_due, kev_ransomware, epss, "
        "epss_percentile, summary, records, urls) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
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


@dataclass(frozen=True, slots=True)
class FindingRow:
    """One vulnerability on one installed package version (a ``VulnFinding`` row)."""

    vulnerability: str
    package: str
    installed: str
    status: str
    fixed_version: str = ""
    candidate: str = ""
    records: str = ""  # space-separated record ids

    @property
    def key(self) -> str:
        text = "\0".join(
            (self.vulnerability, self.package, self.installed, self.status,
             self.fixed_version, self.candidate, self.records)
        )  # fmt: skip
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


Meta = dict[str, tuple[str, bool, float | None]]  # vulnerability -> severity, KEV, published
_SEVERE = ("critical", "high")
_RANK = {"fixable": 0, "fixed_upstream": 1, "no_fix": 2}


def vulnerability_meta(ids: Iterable[str] | None = None) -> Meta:
    """What summaries need of every vulnerability (of these only, when given): severity,
    KEV flag, publication. Raw rows: a feed has 40,000 and more, and one new host's set
    names a thousand of them."""
    table = Vulnerability._meta.table_name
    sql = f"SELECT id, severity, kev, published FROM {table}"
    wanted = None if ids is None else sorted(set(ids))
    if wanted is None or len(wanted) > 5000:
        rows = database.execute_sql(sql).fetchall()
    else:
        rows = []
        for part in chunks(wanted):
            query = raw_sql(f"{sql} WHERE id IN ({placeholders(len(part))})")
            rows.extend(database.execute_sql(query, list(part)).fetchall())
    return {vid: (sev, bool(kev), pub) for vid, sev, kev, pub in rows}


def worst_by_vulnerability(rows: Iterable[FindingRow]) -> dict[str, str]:
    """Each vulnerability's worst status over the packages it touches."""
    worst: dict[str, str] = {}
    for r in rows:
        old = worst.get(r.vulnerability)
        if old is None or _RANK[r.status] > _RANK[old]:
            worst[r.vulnerability] = r.status
    return worst


def summarize(rows: Iterable[FindingRow], meta: Meta) -> dict[str, object]:
    """What a scrape serves for a set's hosts (see ``VulnSet.summary``)."""
    cells: dict[str, int] = {}
    kev: dict[str, str] = {}
    oldest: dict[str, float] = {}
    kev_fixable = 0
    for vid, status in worst_by_vulnerability(rows).items():
        severity, is_kev, published = meta.get(vid, ("unknown", False, None))
        key = f"{severity}/{status}"
        cells[key] = cells.get(key, 0) + 1
        if is_kev:
            kev[vid] = status
        if status == "fixable":
            kev_fixable += is_kev
            if (
                severity in _SEVERE
                and published is not None
                and (severity not in oldest or published < oldest[severity])
            ):
                oldest[severity] = published
    return {"cells": cells, "kev_fixable": kev_fixable, "oldest": oldest, "kev": kev}


def save_set(
    package_set: int,
    repository_set: int | None,
    ecosystem: str,
    digest: str,
    now: float,
    rows: Sequence[FindingRow],
    meta: Meta,
    existing: int | None = None,
    fixing: Mapping[int, float | None] | None = None,
) -> int:
    """Store one set's findings and summary through the computation's own path
    (:func:`store_findings`, :func:`save_sets`); return the set's id. For callers that
    hold one set's rows (tests seeding a store).

    ``existing``: the set's id when the caller knows it is stored (else looked up).
    ``fixing``: the installed package ids with a fixable finding (``VulnSet.fixing``),
    each with the first-seen time its update may start at (None: none)."""
    if existing is None:
        where = (
            (VulnSet.package_set == package_set)
            & (VulnSet.repository_set.is_null() if repository_set is None
               else VulnSet.repository_set == repository_set)
            & (VulnSet.ecosystem == ecosystem)
        )  # fmt: skip
        row = VulnSet.get_or_none(where)
        existing = row.id if row is not None else None
    summary = json.dumps(summarize(rows, meta), separators=(",", ":"))
    ids = sorted(set(store_findings(rows)))
    write = SetWrite(package_set, repository_set, ecosystem, digest, ids, summary, existing,
                     fixing or {})  # fmt: skip
    return save_sets([write], now)[(package_set, repository_set, ecosystem)]


def _packed_fixing(fixing: Mapping[int, float | None]) -> tuple[bytes | None, bytes]:
    """``VulnSet.fixing`` and ``fixing_since`` as stored: the package ids packed, and
    their times as float64 in the same order (NaN: none)."""
    order = sorted(fixing)
    times: list[float] = [math.nan if (t := fixing[p]) is None else t for p in order]
    return pack_ids(order), array("d", times).tobytes()


FixingBlobs = tuple[tuple[bytes, bytes], ...]  # (packed ids, float64 times) per set
Fixing = tuple[str, FixingBlobs]  # digest; the stored blobs (``decode_fixing``)


def fixing_sets(package_sets: Iterable[int] | None = None) -> dict[tuple[int, int | None], Fixing]:
    """Per (package set, repository set) with findings: a digest of which installed
    packages' updates fix a vulnerability and since when (what an update set's inputs
    cover: it changes only when they do, not when a feed changes elsewhere), and the
    stored blobs, decoded only for what a run writes (:func:`decode_fixing`).

    Why not decoded here: an updates run reads this for every set of the fleet, and a
    run where nothing changed must stay a few queries; decoding 10,000 sets' packages
    took seconds. The digest is taken over the stored bytes.

    Keyed without the ecosystem: update sets are keyed by package and repository set.
    The same package set under two ecosystems (two OS labels of one image) gets both.
    """
    found: dict[tuple[int, int | None], list[tuple[bytes, bytes]]] = {}
    # raw rows: peewee's conversion of 10,000 rows cost more than the query
    sql = (
        "SELECT package_set_id, repository_set_id, fixing, fixing_since "
        f"FROM {VulnSet._meta.table_name}"
    )
    parts = [None] if package_sets is None else list(chunks(sorted(set(package_sets))))
    for part in parts:
        if part is None:
            rows = database.execute_sql(raw_sql(sql)).fetchall()
        else:
            where = f" WHERE package_set_id IN ({placeholders(len(part))})"
            rows = database.execute_sql(raw_sql(sql + where), list(part)).fetchall()
        for pset, rset, blob, since in rows:
            found.setdefault((pset, rset), []).append(
                (bytes(blob) if blob else b"", bytes(since) if since else b"")
            )
    out: dict[tuple[int, int | None], Fixing] = {}
    for key, blobs in found.items():
        blobs.sort()
        h = hashlib.sha256()
        for ids, since in blobs:
            h.update(len(ids).to_bytes(4, "little") + ids + len(since).to_bytes(4, "little"))
            h.update(since)
        out[key] = (h.hexdigest(), tuple(blobs))
    return out


def decode_fixing(blobs: FixingBlobs) -> dict[int, float | None]:
    """The installed package ids whose update fixes a vulnerability, each with the time
    its first-seen may start at (None: not known or not wanted); of two sets naming a
    package, the earlier time."""
    fixes: dict[int, float | None] = {}
    for blob, since_blob in blobs:
        if not blob:
            continue
        since = array("d", since_blob) if since_blob else array("d")
        for i, pid in enumerate(unpack_ids(blob)):
            t = since[i] if i < len(since) and not math.isnan(since[i]) else None
            old = fixes.get(pid)
            fixes[pid] = t if old is None else (old if t is None else min(old, t))
    return fixes


def store_findings(rows: Sequence[FindingRow]) -> list[int]:
    """The id of each of ``rows`` (distinct findings), inserting those not stored yet.

    For a whole run at once: the stored ones are found by key, the others inserted in
    one statement and read back, instead of a round of both per set.
    """
    keys = [r.key for r in rows]
    table = VulnFinding._meta.table_name
    known: dict[str, int] = {}
    (stored, last) = database.execute_sql(f"SELECT COUNT(*), MAX(id) FROM {table}").fetchone()
    if len(keys) > stored // 4:
        # most of the table is wanted (a fleet's first computation): read it whole
        # rather than in a few hundred IN lists
        known.update(database.execute_sql(f"SELECT key, id FROM {table}").fetchall())
    else:
        for part in chunks(keys):
            sql = raw_sql(f"SELECT key, id FROM {table} WHERE key IN ({placeholders(len(part))})")
            known.update(database.execute_sql(sql, list(part)).fetchall())
    missing = [(k, r) for k, r in zip(keys, rows, strict=True) if k not in known]
    if missing:
        execute_many(
            f"INSERT INTO {table} (key, vulnerability, status, package, installed, "
            "fixed_version, candidate, records) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            [
                (k, r.vulnerability[:160], r.status, r.package[:255], r.installed[:255],
                 r.fixed_version[:255], r.candidate[:255], r.records[:2000])
                for k, r in missing
            ],
        )  # fmt: skip
        # the new rows are those above the highest id before (only this computation
        # writes findings)
        sql = raw_sql(f"SELECT key, id FROM {table} WHERE id > ?")
        known.update(database.execute_sql(sql, (last or 0,)).fetchall())
    return [known[k] for k in keys]


# sets per statement in ``save_sets``: a few megabytes of packed ids and summaries
SETS_PER_WRITE = 250


@dataclass(frozen=True, slots=True)
class SetWrite:
    """One set's computed findings, to be stored by :func:`save_sets`."""

    package_set: int
    repository_set: int | None
    ecosystem: str
    digest: str
    finding_ids: Sequence[int]  # the set's findings (packed when stored)
    summary: str  # JSON (``summarize``)
    existing: int | None = None  # the set's id when it is stored already
    # installed package ids whose update fixes a vulnerability, each with the time its
    # first-seen may start at (``save_set``'s ``fixing``)
    fixing: Mapping[int, float | None] = field(default_factory=dict)


def save_sets(sets: Sequence[SetWrite], now: float) -> dict[tuple[int, int | None, str], int]:
    """Store many sets' findings (updating those stored); (package set, repository set,
    ecosystem) -> id of each. Call inside a transaction.

    Written :data:`SETS_PER_WRITE` sets at a time: a fleet's first computation writes
    7,000 sets of 1,600 packed finding ids and a summary each, and on PostgreSQL one
    ``COPY`` of them all (bytea as hex text, then the driver's copy of that text) took
    half a gigabyte above everything the computation holds (docs/performance.md).
    """
    table = VulnSet._meta.table_name
    update = (
        f"UPDATE {table} SET inputs_digest = ?, computed_at = ?, finding_ids = ?, summary = ?, "
        "fixing = ?, fixing_since = ? WHERE id = ?"
    )
    insert = (
        f"INSERT INTO {table} (package_set_id, repository_set_id, ecosystem, inputs_digest, "
        "computed_at, finding_ids, summary, fixing, fixing_since) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    stored = [w for w in sets if w.existing]
    new = [w for w in sets if not w.existing]
    for part in chunks(stored, SETS_PER_WRITE):
        update_many(
            update,
            [(w.digest, now, pack_ids(w.finding_ids), w.summary, *_packed_fixing(w.fixing),
              w.existing) for w in part],
        )  # fmt: skip
    for part in chunks(new, SETS_PER_WRITE):
        execute_many(
            insert,
            [(w.package_set, w.repository_set, w.ecosystem, w.digest, now,
              pack_ids(w.finding_ids), w.summary, *_packed_fixing(w.fixing)) for w in part],
        )  # fmt: skip
    out = {(w.package_set, w.repository_set, w.ecosystem): w.existing for w in sets if w.existing}
    if new:
        wanted = {(w.package_set, w.repository_set, w.ecosystem) for w in new}
        query = VulnSet.select(
            VulnSet.id, VulnSet.package_set, VulnSet.repository_set, VulnSet.ecosystem
        ).tuples()
        for sid, ps, rs, eco in query.iterator():
            if (ps, rs, eco) in wanted:
                out[(ps, rs, eco)] = sid
    return {k: int(v) for k, v in out.items() if v is not None}


def assign_hosts(rows: Sequence[tuple[int, int | None, str]], now: float) -> None:
    """Give each (host, set or None, ecosystem label) its set, in one statement."""
    table = VulnHost._meta.table_name
    execute_many(
        f"INSERT INTO {table} (host_id, vuln_set_id, ecosystem, computed_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (host_id) DO UPDATE SET "
        "vuln_set_id = excluded.vuln_set_id, ecosystem = excluded.ecosystem, "
        "computed_at = excluded.computed_at",
        [(h, s, label, now) for h, s, label in rows],
    )


def prune_sets(unused: Iterable[int]) -> int:
    """Delete these sets, then every finding no set holds any more; return how many
    findings went. Each set's packed ids are read (one row per set, never a finding).
    """
    for part in chunks(sorted(set(unused))):
        VulnSet.delete().where(VulnSet.id.in_(list(part))).execute()
    held: set[int] = set()
    sql = f"SELECT finding_ids FROM {VulnSet._meta.table_name}"
    for (blob,) in database.execute_sql(sql).fetchall():
        if blob is None:  # ids beyond 32 bits: this set's findings cannot be read here
            return 0
        held.update(unpack_ids(blob))
    table = VulnFinding._meta.table_name
    gone = [f for (f,) in database.execute_sql(f"SELECT id FROM {table}").fetchall()
            if f not in held]  # fmt: skip
    for part in chunks(gone):
        VulnFinding.delete().where(VulnFinding.id.in_(list(part))).execute()
    return len(gone)


def set_finding_ids(set_ids: Iterable[int]) -> dict[int, list[int]]:
    """Each set's finding ids."""
    out: dict[int, list[int]] = {}
    wanted = sorted(set(set_ids))
    for part in chunks(wanted):
        query = VulnSet.select(VulnSet.id, VulnSet.finding_ids).where(VulnSet.id.in_(list(part)))
        for sid, blob in query.tuples():
            out[sid] = list(unpack_ids(blob)) if blob else []
    return out


def set_finding_groups(
    set_ids: Iterable[int],
) -> dict[int, tuple[tuple[int, int | None, str], array[int]]]:
    """Each set's finding ids, with a key that groups sets likely to differ little:
    its package set's base (or the package set itself), repository set, ecosystem.

    Why: sets of one image and one repository set hold nearly the same findings
    (``patchwatch.pipeline.hostvulns`` computes them so), and a fleet-wide view works
    through a group as one set plus each member's difference from it.
    """
    rows: list[tuple[int, int, int | None, str, bytes | None]] = []
    wanted = sorted(set(set_ids))
    for part in chunks(wanted):
        sql = raw_sql(
            f"SELECT id, package_set_id, repository_set_id, ecosystem, finding_ids "
            f"FROM {VulnSet._meta.table_name} WHERE id IN ({placeholders(len(part))})"
        )
        rows.extend(database.execute_sql(sql, list(part)).fetchall())
    bases = bases_of([r[1] for r in rows])
    return {
        sid: ((bases.get(ps, ps), rs, eco), unpack_ids(blob) if blob else array("i"))
        for sid, ps, rs, eco, blob in rows
    }


def finding_status(ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """Finding id -> (vulnerability, status): what counting hosts needs of a finding."""
    out: dict[int, tuple[str, str]] = {}
    table = VulnFinding._meta.table_name
    for part in chunks(sorted(set(ids))):
        sql = raw_sql(
            f"SELECT id, vulnerability, status FROM {table} WHERE id IN ({placeholders(len(part))})"
        )
        for fid, vid, status in database.execute_sql(sql, list(part)).fetchall():
            out[fid] = (vid, status)
    return out


def vulnerability_findings(vid: str) -> dict[int, FindingRow]:
    """The stored findings of one vulnerability, by id (on any set)."""
    query = VulnFinding.select(
        VulnFinding.id, VulnFinding.vulnerability, VulnFinding.package,
        VulnFinding.installed, VulnFinding.status, VulnFinding.fixed_version,
        VulnFinding.candidate, VulnFinding.records,
    ).where(VulnFinding.vulnerability == vid)  # fmt: skip
    return {fid: FindingRow(*fields) for fid, *fields in query.tuples()}


def sets_holding_findings(set_ids: Iterable[int], wanted: Iterable[int]) -> dict[int, list[int]]:
    """Set id -> which of the ``wanted`` findings it holds (ascending), for the sets that
    hold any: each set's packed ids are intersected in C, never turned into rows."""
    want = frozenset(wanted)
    out: dict[int, list[int]] = {}
    if not want:
        return out
    for part in chunks(sorted(set(set_ids))):
        sql = raw_sql(
            f"SELECT id, finding_ids FROM {VulnSet._meta.table_name} "
            f"WHERE id IN ({placeholders(len(part))})"
        )
        for sid, blob in database.execute_sql(sql, list(part)).fetchall():
            if blob:
                held = want.intersection(unpack_ids(blob))
                if held:
                    out[sid] = sorted(held)
    return out


def findings(ids: Iterable[int]) -> dict[int, FindingRow]:
    """Finding rows by id."""
    out: dict[int, FindingRow] = {}
    wanted = sorted(set(ids))
    for part in chunks(wanted):
        query = VulnFinding.select(
            VulnFinding.id, VulnFinding.vulnerability, VulnFinding.package,
            VulnFinding.installed, VulnFinding.status, VulnFinding.fixed_version,
            VulnFinding.candidate, VulnFinding.records,
        ).where(VulnFinding.id.in_(list(part)))  # fmt: skip
        for fid, *fields in query.tuples():
            out[fid] = FindingRow(*fields)
    return out


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


@functools.lru_cache(maxsize=256)
def _cell(key: str) -> tuple[str, str]:
    severity, _, status = key.partition("/")
    return severity, status


def _summary(text: str) -> SetSummary:
    doc = orjson.loads(text or "{}")
    cells = doc.get("cells", {})
    return SetSummary(
        counts={_cell(k): int(cells[k]) for k in sorted(cells)},  # sorted: as served
        kev_fixable=int(doc.get("kev_fixable", 0)),
        oldest_fixable={k: float(v) for k, v in doc.get("oldest", {}).items()},
        kev=dict(doc.get("kev", {})),
    )


def scrape_rows() -> VulnScrape:
    """Per host: its set's summary (counts by severity and worst status, KEV fixable,
    oldest fixable critical/high); one row per set is read, never its findings."""
    feeds = list(VulnSource.select().order_by(VulnSource.name))
    loaded = any(f.records is not None and f.name not in ("kev", "epss") for f in feeds)
    if not loaded:
        return VulnScrape(False, [], feeds)
    # sets of one image often have one summary: each distinct text is read once (the
    # scrape only reads them)
    parsed: dict[str, SetSummary] = {}
    sets = {}
    for sid, at, text in VulnSet.select(VulnSet.id, VulnSet.computed_at, VulnSet.summary).tuples():
        summary = parsed.get(text)
        if summary is None:
            summary = parsed[text] = _summary(text)
        sets[sid] = (at, summary)
    hosts = []
    for name, sid in (
        VulnHost.select(Host.name, VulnHost.vuln_set)
        .join(Host, on=(Host.id == VulnHost.host))
        .where(VulnHost.vuln_set.is_null(False))
        .tuples()
    ):
        if sid in sets:
            at, summary = sets[sid]
            hosts.append((name, at, summary))
    return VulnScrape(True, hosts, feeds)


def remember_sources(sources: Mapping[PackageRecord, str]) -> int:
    """Store each binary's source package name (those that differ), as mirrors say it.

    A package build has one source; a row once written never changes. Returns how many
    were new to the store.
    """
    if not sources:
        return 0
    ids = ensure_packages(sources)
    table = PackageSource._meta.table_name
    known: set[int] = set()
    wanted = sorted(ids.values())
    for part in chunks(wanted):
        sql = raw_sql(
            f"SELECT package_id FROM {table} WHERE package_id IN ({placeholders(len(part))})"
        )
        known.update(pid for (pid,) in database.execute_sql(sql, list(part)).fetchall())
    rows = [(ids[p], name[:255], "") for p, name in sources.items() if ids[p] not in known]
    execute_many(
        f"INSERT INTO {table} (package_id, source, version) VALUES (?, ?, ?) "
        "ON CONFLICT (package_id) DO NOTHING",
        rows,
    )
    return len(rows)


def remember_reported_sources(sources: Mapping[PackageRecord, tuple[str, str]]) -> int:
    """Store each binary's source (name, version "" for the binary's own) as a host's
    package manager reports it; return how many rows were written.

    What a host's own dpkg or rpm says wins over a mirror's index (written over it; the
    mirror's refresh never writes over a row): it names the source version too, and
    covers packages no mirror the server reads has. Rows already saying the same are
    left alone, so hosts of one image write their sources once.
    """
    if not sources:
        return 0
    ids = ensure_packages(sources)
    wanted = {ids[p]: (name[:255], version[:255]) for p, (name, version) in sources.items()}
    stored = stored_sources(wanted)
    rows = [(pid, *value) for pid, value in sorted(wanted.items()) if stored.get(pid) != value]
    execute_many(
        f"INSERT INTO {PackageSource._meta.table_name} (package_id, source, version) "
        "VALUES (?, ?, ?) ON CONFLICT (package_id) DO UPDATE SET source = excluded.source, "
        "version = excluded.version",
        rows,
    )
    return len(rows)


def stored_sources(package_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """The source (name, version; "" when not known) stored for these packages."""
    out: dict[int, tuple[str, str]] = {}
    table = PackageSource._meta.table_name
    wanted = sorted(set(package_ids))
    for part in chunks(wanted):
        sql = raw_sql(
            f"SELECT package_id, source, version FROM {table} "
            f"WHERE package_id IN ({placeholders(len(part))})"
        )
        for pid, source, version in database.execute_sql(sql, list(part)).fetchall():
            out[pid] = (source, version)
    return out


def sources_of(package_ids: Iterable[int]) -> dict[int, str]:
    """The source names stored for these packages (only those that differ)."""
    return {pid: name for pid, (name, _v) in stored_sources(package_ids).items()}


_BINNMU = re.compile(r"\+b[0-9]+$")


def record_names(package_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """The name and version vulnerability records use for these installed packages.

    RPM, apk and pacman records name the binary, at its version. Debian and Ubuntu
    records name the *source* package: a deb whose source differs is matched under the
    source's name and version as the host's agent reported them, else (Patchman
    clients) under the name a mirror's index gives, at the binary's version without a
    binNMU suffix (``+b1``: rebuilt, same source).
    """
    wanted = sorted(set(package_ids))
    sources = stored_sources(wanted)
    table = Package._meta.table_name
    out: dict[int, tuple[str, str]] = {}
    for part in chunks(wanted):
        sql = raw_sql(
            f"SELECT id, kind, name, epoch, version, release, arch FROM {table} "
            f"WHERE id IN ({placeholders(len(part))})"
        )
        for pid, kind, name, epoch, version, release, arch in database.execute_sql(
            sql, list(part)
        ).fetchall():
            rec = PackageRecord(name, epoch, version, release, arch, PackageKind(kind))
            source = sources.get(pid)
            if source is not None and kind == PackageKind.DEB.value:
                out[pid] = (source[0], source[1] or _BINNMU.sub("", rec.evr))
            else:
                out[pid] = (name, rec.evr)
    return out
