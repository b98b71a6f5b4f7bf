"""OSV records (the format osv.dev and most distributions publish) read into ``Record``.

Why this module exists: OSV is how Debian, Ubuntu, AlmaLinux, Rocky Linux, Red Hat,
SUSE and Alpine publish which package versions a vulnerability affects. Every record
comes from a feed we do not control, so each one is checked against the format's schema
(``osv-schema.json``, kept beside the tests) in every field that matching reads, and one
that breaks it is skipped and counted, never allowed to stop the feed.

What is checked, and how strictly:

- strict, the record is skipped (reason ``schema``): ``id`` (letters, digits and
  ``._:+-``, up to 128 characters: the schema's prefix list is not enforced, so a new
  database's records are not lost), ``modified`` (RFC 3339 UTC, required), ``published``
  and ``withdrawn`` when present, ``aliases``/``related``/``upstream`` (lists of
  strings), ``summary``, ``affected[].package`` (``ecosystem`` and ``name`` strings),
  ``ranges`` (``type`` one of ECOSYSTEM, SEMVER, GIT; events each with exactly one of
  introduced, fixed, last_affected, limit; at least one introduced; fixed and
  last_affected not both; GIT ranges with a ``repo``), ``versions`` (strings);
- in the ecosystem's own ordering (reason ``version``): every version of an ECOSYSTEM
  range and of ``versions``, for ecosystems with a known ordering
  (``ecosystems.ordering_for``), so a version dpkg or rpm would refuse never reaches a
  comparison;
- bounded (reason ``size``): at most 10,000 affected entries, 1,000 events per range and
  10,000 listed versions per entry, strings of at most 1,024 characters;
- lenient, the record is kept: a ``severity`` whose vector does not score, or of a type
  this version does not know, is dropped and counted in ``FeedStats.unscored``;
  unknown fields are ignored (the schema grows; old readers must not lose records).

Quirks handled: Debian's converter writes ``0001-01-01T00:00:00Z`` for "no time" in
``published`` and ``withdrawn`` (read as absent: such a record is *not* withdrawn);
timestamps with nanoseconds; explicit epochs (``0:4.9.3-2.el9_8.1``, Rocky); the
distribution's own rating from Ubuntu's ``severity`` type ``Ubuntu``, the Red Hat style
summary prefix (``Important: …``, AlmaLinux and Rocky Linux), Debian's per-entry
``ecosystem_specific.urgency`` and any ``database_specific``/``ecosystem_specific``
``severity``. GIT and SEMVER ranges are checked but not kept: distributions' packages
are matched in their ecosystem's ordering only.

Withdrawn records are counted and dropped. Only what matching and reporting need is
kept (no ``details``, no credits); strings are interned so a 50,000-record feed shares
its package names and versions.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import orjson

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import VersionError
from patchwatch.domain.vulns.ecosystems import Ordering
from patchwatch.domain.vulns.ecosystems import check_version
from patchwatch.domain.vulns.ecosystems import ordering_for
from patchwatch.domain.vulns.identity import identities
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Event
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.model import Range
from patchwatch.domain.vulns.model import Record
from patchwatch.domain.vulns.severity import CVSS_TYPES
from patchwatch.domain.vulns.severity import Cvss
from patchwatch.domain.vulns.severity import Rating
from patchwatch.domain.vulns.severity import rating
from patchwatch.domain.vulns.severity import score_vector

__all__ = [
    "MAX_RECORD_BYTES",
    "RecordError",
    "load_records",
    "parse_record",
    "parse_record_bytes",
]

#: Largest single record accepted, in bytes (a Red Hat kernel advisory is about 1 MB).
MAX_RECORD_BYTES = 8 << 20

_MAX_AFFECTED = 10_000
_MAX_EVENTS = 1_000
_MAX_VERSIONS = 10_000
_MAX_IDS = 1_000
_MAX_STRING = 1_024
_MAX_SUMMARY = 500
_MAX_URLS = 5

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_TIMESTAMP = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RANGE_TYPES = frozenset({"ECOSYSTEM", "SEMVER", "GIT"})
_EVENT_KINDS = frozenset({"introduced", "fixed", "last_affected", "limit"})
_REDHAT_SUMMARY = re.compile(r"^(Critical|Important|Moderate|Low):\s")


class RecordError(ParseError):
    """One record cannot be used; ``reason`` is one of ``model.SKIP_REASONS``."""

    def __init__(self, reason: str, message: str, where: str | None = None) -> None:
        super().__init__(message, where)
        self.reason = reason


def _schema(message: str, where: str) -> RecordError:
    return RecordError("schema", message, where)


def _timestamp(value: object, where: str, *, required: bool = False) -> float | None:
    """RFC 3339 -> Unix seconds; None when absent or before 1970 (Debian's "no time")."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _schema("not a timestamp string", where)
    m = _TIMESTAMP.match(value)
    if m is None:
        raise _schema(f"not an RFC 3339 timestamp: {value[:40]!r}", where)
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    try:
        tz = (
            dt.UTC
            if zone in ("Z", "z")
            else dt.timezone(
                (-1 if zone[0] == "-" else 1)
                * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            )
        )
        moment = dt.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
    except ValueError as exc:
        raise _schema(f"impossible timestamp {value[:40]!r}: {exc}", where) from None
    if year < 1970:
        return None
    return moment.timestamp() + fraction


def _string(value: object, where: str, limit: int = _MAX_STRING) -> str:
    if not isinstance(value, str):
        raise _schema("not a string", where)
    if len(value) > limit:
        raise RecordError("size", f"string longer than {limit} characters", where)
    return value


def _strings(value: object, where: str, *, nullable: bool = False) -> tuple[str, ...]:
    if value is None and nullable:
        return ()
    if not isinstance(value, list):
        raise _schema("not a list", where)
    if len(value) > _MAX_IDS:
        raise RecordError("size", f"more than {_MAX_IDS} items", where)
    return tuple(sys.intern(_string(v, f"{where}[{i}]")) for i, v in enumerate(value))


def _objects(value: list[Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The items of a JSON list, each with where it stands; an item not an object is refused."""
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise _schema("not an object", at)
        yield at, item


def _optional_object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _schema("not an object", f"{where}.{key}")
    return value


def _severities(
    value: object, where: str, stats: FeedStats | None
) -> tuple[list[Cvss], Rating | None]:
    """Score CVSS entries; read Ubuntu's priority. Unscorable entries are dropped."""
    if value is None:
        return [], None
    if not isinstance(value, list):
        raise _schema("not a list", where)
    scores: list[Cvss] = []
    own: Rating | None = None
    for i, item in enumerate(value[:_MAX_IDS]):
        if not isinstance(item, dict):
            raise _schema("not an object", f"{where}[{i}]")
        kind, score = item.get("type"), item.get("score")
        if not isinstance(kind, str) or not isinstance(score, str):
            raise _schema("type and score must be strings", f"{where}[{i}]")
        if kind == "Ubuntu":
            own = rating("ubuntu-priority", score)
        elif kind in CVSS_TYPES:
            try:
                scores.append(score_vector(kind, score))
            except ParseError:
                if stats is not None:
                    stats.unscored += 1
        elif stats is not None:
            stats.unscored += 1
    return scores, own


def _vendor_rating(*objects: Mapping[str, Any]) -> Rating | None:
    for obj in objects:
        found = rating("vendor", obj.get("severity"))
        if found is not None:
            return found
    return None


_OPEN = (Event("introduced", "0"),)


class _Reader:
    """Reads the ``affected`` entries of one feed, sharing what records repeat.

    One reader per load: it remembers which versions it has already checked (a feed names
    the same package history in every record about that package) and hands out one tuple
    per distinct ``versions`` list, event and range, so memory grows
    with what is distinct, not with the number of records. Nothing outlives the load but
    the records themselves.
    """

    def __init__(self, stats: FeedStats | None) -> None:
        self.stats = stats
        self.checked: dict[Ordering, set[str]] = {}
        self.shared: dict[object, object] = {}
        self.lists: dict[object, tuple[str, ...]] = {}

    def share(self, value: Any) -> Any:
        return self.shared.setdefault(value, value)

    def check(self, ordering: Ordering | None, version: str, where: str) -> None:
        if ordering is None:
            return
        seen = self.checked.setdefault(ordering, set())
        if version in seen:
            return
        try:
            check_version(ordering, version)
        except VersionError as exc:
            raise RecordError("version", str(exc), where) from None
        seen.add(version)

    def ranges(self, value: object, where: str, ordering: Ordering | None) -> tuple[Range, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _schema("not a list", where)
        kept: list[Range] = []
        for at, item in _objects(value, where):
            kind = item.get("type")
            if not isinstance(kind, str) or kind not in _RANGE_TYPES:
                raise _schema(f"type must be one of {sorted(_RANGE_TYPES)}", f"{at}.type")
            if kind == "GIT" and not isinstance(item.get("repo"), str):
                raise _schema("a GIT range needs a repo", f"{at}.repo")
            raw = item.get("events")
            if not isinstance(raw, list) or not raw:
                raise _schema("events must be a non-empty list", f"{at}.events")
            if len(raw) > _MAX_EVENTS:
                raise RecordError("size", f"more than {_MAX_EVENTS} events", f"{at}.events")
            events: list[Event] = []
            for j, ev in enumerate(raw):
                ev_at = f"{at}.events[{j}]"
                if not isinstance(ev, dict) or len(ev) != 1:
                    raise _schema("an event holds exactly one of introduced, fixed, "
                                  "last_affected, limit", ev_at)  # fmt: skip
                ((ev_kind, version),) = ev.items()
                if ev_kind not in _EVENT_KINDS:
                    raise _schema(f"unknown event {ev_kind!r}", ev_at)
                version = _string(version, f"{ev_at}.{ev_kind}")
                if kind == "ECOSYSTEM" and not (ev_kind == "introduced" and version == "0"):
                    self.check(ordering, version, f"{ev_at}.{ev_kind}")
                events.append(self.share(Event(ev_kind, sys.intern(version))))
            kinds = {e.kind for e in events}
            if "introduced" not in kinds:
                raise _schema("a range needs an introduced event", f"{at}.events")
            if "fixed" in kinds and "last_affected" in kinds:
                raise _schema("fixed and last_affected are mutually exclusive", f"{at}.events")
            if kind == "ECOSYSTEM":
                kept.append(self.share(Range(kind, tuple(events))))
        return tuple(kept)

    def versions(self, value: object, where: str, ordering: Ordering | None) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _schema("not a list", where)
        if len(value) > _MAX_VERSIONS:
            raise RecordError("size", f"more than {_MAX_VERSIONS} versions", where)
        try:
            key = (ordering, tuple(value))
            known = self.lists.get(key)
        except TypeError:  # a list or object among the versions: not hashable, not valid
            key, known = None, None
        if known is not None:
            return known  # the same list, already checked in this ordering
        checked = []
        for j, v in enumerate(value):
            v = _string(v, f"{where}[{j}]")
            self.check(ordering, v, f"{where}[{j}]")
            checked.append(sys.intern(v))
        result = tuple(checked)
        if key is not None:
            # keyed by the interned tuple (equal to the raw one): the decoded strings go
            self.lists[ordering, result] = result
        return result

    def affected(self, value: object) -> tuple[tuple[Affected, ...], list[Cvss]]:
        if value is None:
            return (), []
        if not isinstance(value, list):
            raise _schema("not a list", "affected")
        if len(value) > _MAX_AFFECTED:
            raise RecordError("size", f"more than {_MAX_AFFECTED} entries", "affected")
        out: list[Affected] = []
        scores: list[Cvss] = []
        for at, item in _objects(value, "affected"):
            package = item.get("package")
            if not isinstance(package, dict):
                raise _schema("package must be an object", f"{at}.package")
            ecosystem = _string(package.get("ecosystem"), f"{at}.package.ecosystem")
            name = _string(package.get("name"), f"{at}.package.name")
            if not ecosystem or not name:
                raise _schema("ecosystem and name must not be empty", f"{at}.package")
            if "purl" in package:
                _string(package["purl"], f"{at}.package.purl")
            ordering = ordering_for(ecosystem)
            ranges = self.ranges(item.get("ranges"), f"{at}.ranges", ordering)
            versions = self.versions(item.get("versions"), f"{at}.versions", ordering)
            if any(r.events == _OPEN for r in ranges):
                versions = ()  # every version is affected: the list adds nothing
            own_scores, _ = _severities(item.get("severity"), f"{at}.severity", self.stats)
            scores.extend(own_scores)
            eco_specific = _optional_object(item, "ecosystem_specific", at)
            db_specific = _optional_object(item, "database_specific", at)
            own = rating("debian-urgency", eco_specific.get("urgency")) or _vendor_rating(
                eco_specific, db_specific
            )
            out.append(Affected(sys.intern(ecosystem), sys.intern(name), ranges, versions, own))
        return tuple(out), scores


def _advisory_urls(value: object) -> tuple[str, ...]:
    """Keep a few ADVISORY links (http/https only) for display; references are optional."""
    if not isinstance(value, list):
        return ()
    urls = []
    for ref in value:
        if (
            isinstance(ref, dict)
            and ref.get("type") == "ADVISORY"
            and isinstance(url := ref.get("url"), str)
            and url.startswith(("https://", "http://"))
            and len(url) <= _MAX_STRING
        ):
            urls.append(url)
            if len(urls) == _MAX_URLS:
                break
    return tuple(urls)


def parse_record(
    obj: object, stats: FeedStats | None = None, reader: _Reader | None = None
) -> tuple[Record, bool]:
    """Check and read one decoded OSV record; return it and whether it is withdrawn.

    Raises ``RecordError`` (with its ``reason``) for a record that cannot be used.
    ``stats``, when given, counts severities that were dropped.
    """
    reader = reader or _Reader(stats)
    if not isinstance(obj, dict):
        raise RecordError("json", "a record must be a JSON object")
    record_id = obj.get("id")
    if not isinstance(record_id, str) or not _ID.match(record_id):
        raise _schema("missing or malformed id", "id")
    modified = _timestamp(obj.get("modified"), "modified", required=True)
    published = _timestamp(obj.get("published"), "published")
    withdrawn = _timestamp(obj.get("withdrawn"), "withdrawn")
    aliases = _strings(obj.get("aliases"), "aliases", nullable=True)
    related = _strings(obj.get("related", []), "related")
    upstream = _strings(obj.get("upstream", []), "upstream")
    summary = obj.get("summary", "")
    if not isinstance(summary, str):
        raise _schema("not a string", "summary")
    if "details" in obj and not isinstance(obj["details"], str):
        raise _schema("not a string", "details")
    affected, entry_scores = reader.affected(obj.get("affected"))
    scores, ubuntu = _severities(obj.get("severity"), "severity", stats)
    own = ubuntu
    if own is None and (m := _REDHAT_SUMMARY.match(summary)):
        own = rating("redhat-impact", m.group(1))
    if own is None:
        own = _vendor_rating(_optional_object(obj, "database_specific", "record"))
    record = Record(
        id=sys.intern(record_id),
        identities=identities(record_id, aliases, upstream, related),
        modified=modified,
        published=published,
        aliases=aliases,
        upstream=upstream,
        related=related,
        summary=summary[:_MAX_SUMMARY],
        affected=affected,
        cvss=tuple(dict.fromkeys(scores + entry_scores)),
        rating=own,
        advisory_urls=_advisory_urls(obj.get("references")),
    )
    return record, withdrawn is not None


def parse_record_bytes(
    data: bytes,
    stats: FeedStats | None = None,
    *,
    max_bytes: int = MAX_RECORD_BYTES,
    reader: _Reader | None = None,
) -> tuple[Record, bool]:
    """Decode one JSON record and read it (see :func:`parse_record`)."""
    if len(data) > max_bytes:
        raise RecordError("size", f"record of {len(data)} bytes is above {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError("json", f"not JSON: {exc}") from None
    return parse_record(obj, stats, reader)


def load_records(
    members: Iterable[tuple[str, bytes]],
    stats: FeedStats,
    *,
    max_bytes: int = MAX_RECORD_BYTES,
) -> list[Record]:
    """Read every record of a feed; bad ones are skipped and counted, withdrawn dropped.

    ``members`` are ``(name, bytes)`` pairs, as ``archive`` yields them; ``name`` only
    appears in messages. Two records with one id keep the one modified last and count the
    other in ``duplicates``: AlmaLinux files an advisory that covers several releases
    under each release's folder, as identical copies.
    """
    kept: dict[str, Record] = {}
    reader = _Reader(stats)
    for name, data in members:
        stats.read += 1
        try:
            record, withdrawn = parse_record_bytes(data, stats, max_bytes=max_bytes, reader=reader)
        except RecordError as exc:
            stats.skip(exc.reason, f"{name}: {exc}")
            continue
        if withdrawn:
            stats.withdrawn += 1
            continue
        previous = kept.get(record.id)
        if previous is not None:
            stats.duplicates += 1
            if (previous.modified or 0.0) >= (record.modified or 0.0):
                continue
        kept[record.id] = record
    stats.kept = len(kept)
    return list(kept.values())
