"""CISA's Known Exploited Vulnerabilities catalogue (JSON) read into ``KevEntry`` records.

Why this module exists: "known exploited, and the fix is waiting on this host" is the
one vulnerability signal worth paging on. The catalogue is one JSON document
(``known_exploited_vulnerabilities.json``, schema ``known_exploited_vulnerabilities_schema.json``):
``catalogVersion``, ``dateReleased``, ``count`` and ``vulnerabilities[]`` with ``cveID``,
``dateAdded``, ``dueDate``, ``knownRansomwareCampaignUse`` and descriptive fields.

Each entry is checked on the fields used (``cveID`` by the schema's pattern, the dates
as ``YYYY-MM-DD``); a bad entry is skipped and counted, never the catalogue. A catalogue
whose top level is not the schema's shape is refused whole (``ParseError``): that is a
wrong download, not a bad entry. ``knownRansomwareCampaignUse`` is ``Known`` or
``Unknown``; "Unknown" means CISA has no confirmation, so it is kept as ``None``
(unknown), never as "not used by ransomware". The due date is CISA's deadline for US
federal agencies; some early entries have a due date before their date added (they were
added with their original deadlines), kept as published.

The input may be gzip/xz/bz2/zst-compressed; it is decompressed with a size bound.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.errors import ParseError
from patchwatch.domain.vulns.feed import feed_json
from patchwatch.domain.vulns.model import FeedStats

__all__ = ["MAX_KEV_BYTES", "KevCatalogue", "KevEntry", "parse_kev"]

#: Largest catalogue accepted after decompression (the 2025 catalogue is 1.3 MB).
MAX_KEV_BYTES = 64 << 20

_CVE = re.compile(r"^CVE-[0-9]{4}-[0-9]{4,19}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class KevEntry:
    """One known-exploited vulnerability.

    ``ransomware`` is True when CISA knows of ransomware campaigns using it, None when
    it does not know (the catalogue's "Unknown").
    """

    cve: str
    date_added: dt.date
    due_date: dt.date | None
    ransomware: bool | None
    vendor: str = ""
    product: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class KevCatalogue:
    """The catalogue: entries by CVE id, with its own version and release time."""

    version: str
    released: float | None
    entries: Mapping[str, KevEntry]
    stats: FeedStats = field(default_factory=FeedStats)


def _date(value: object) -> dt.date | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _text(value: object) -> str:
    return value.strip()[:_MAX_TEXT] if isinstance(value, str) else ""


def _released(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_kev(data: bytes, *, max_bytes: int = MAX_KEV_BYTES) -> KevCatalogue:
    """Read the catalogue; bad entries are skipped and counted in ``stats``.

    Raises ``TooLargeError`` above ``max_bytes`` (decompressed) and ``ParseError`` when
    the document is not a catalogue at all.
    """
    doc = feed_json(data, "KEV catalogue", max_bytes)
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise ParseError("KEV catalogue has no vulnerabilities list", "vulnerabilities")
    stats = FeedStats()
    entries: dict[str, KevEntry] = {}
    for i, item in enumerate(doc["vulnerabilities"]):
        stats.read += 1
        where = f"vulnerabilities[{i}]"
        if not isinstance(item, dict):
            stats.skip("schema", f"{where}: not an object")
            continue
        cve = item.get("cveID")
        if not isinstance(cve, str) or not _CVE.match(cve):
            stats.skip("schema", f"{where}.cveID: not a CVE id")
            continue
        added = _date(item.get("dateAdded"))
        if added is None:
            stats.skip("schema", f"{where}.dateAdded: not a YYYY-MM-DD date")
            continue
        due_raw = item.get("dueDate")
        due = _date(due_raw)
        if due_raw is not None and due is None:
            stats.skip("schema", f"{where}.dueDate: not a YYYY-MM-DD date")
            continue
        use = item.get("knownRansomwareCampaignUse")
        if cve in entries:
            stats.duplicates += 1
            continue
        entries[cve] = KevEntry(
            cve=cve,
            date_added=added,
            due_date=due,
            ransomware=True if isinstance(use, str) and use.strip().lower() == "known" else None,
            vendor=_text(item.get("vendorProject")),
            product=_text(item.get("product")),
            name=_text(item.get("vulnerabilityName")),
        )
    stats.kept = len(entries)
    return KevCatalogue(
        version=_text(doc.get("catalogVersion")),
        released=_released(doc.get("dateReleased")),
        entries=entries,
        stats=stats,
    )
