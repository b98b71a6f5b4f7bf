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
kept (no ``details``, no credits). A feed repeats itself (every record about a package
names the same version history), so one load keeps, and checks, one copy of each
distinct version, event, range and ``versions`` list, and interns names and ids: a
50,000-record feed shares them. Where a record breaks the schema is spelled out only
when it does, and the cyclic garbage collector stays out of the load
(``patchwatch.domain.collector.collector_paused``).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import orjson

from patchwatch.domain.collector import collector_paused
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


def _timestamp_error(value: object, where: str) -> RecordError:
    if not isinstance(value, str):
        return _schema("not a timestamp string", where)
    return _schema(f"not an RFC 3339 timestamp: {value[:40]!r}", where)


def _read_timestamp(value: str, where: str) -> float | None:
    """RFC 3339 -> Unix seconds; None when before 1970 (Debian's "no time")."""
    m = _TIMESTAMP.match(value)
    if m is None:
        raise _timestamp_error(value, where)
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


def _string_error(value: object, where: str, limit: int = _MAX_STRING) -> RecordError:
    """Why ``value`` is not a string of at most ``limit`` characters (the error to raise)."""
    if not isinstance(value, str):
        return _schema("not a string", where)
    return RecordError("size", f"string longer than {limit} characters", where)


def _string(value: object, where: str, limit: int = _MAX_STRING) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _string_error(value, where, limit)
    return value


def _strings(value: object, where: str, *, nullable: bool = False) -> tuple[str, ...]:
    if value is None and nullable:
        return ()
    if not isinstance(value, list):
        raise _schema("not a list", where)
    if not value:
        return ()
    if len(value) > _MAX_IDS:
        raise RecordError("size", f"more than {_MAX_IDS} items", where)
    intern = sys.intern
    out: list[str] = []
    for v in value:
        if not isinstance(v, str) or len(v) > _MAX_STRING:
            raise _string_error(v, f"{where}[{len(out)}]")
        out.append(intern(v))
    return tuple(out)


def _optional_object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return _EMPTY
    if not isinstance(value, dict):
        raise _schema("not an object", f"{where}.{key}")
    return value


_EMPTY: Mapping[str, Any] = {}


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


class _Checked:
    """What one reader has already checked in one version ordering (or in none).

    ``events``: event kind -> version -> the shared :class:`Event`, whose version the
    ordering accepts; ``ranges``: the events' identities -> the shared :class:`Range` and
    whether it is open (introduced at 0 and nothing else: every version affected);
    ``lists``: a ``versions`` list -> its checked tuple of shared copies; ``versions``:
    the single versions the ordering accepted, each to the one copy the load keeps.
    """

    __slots__ = ("events", "lists", "ordering", "ranges", "versions")

    def __init__(self, ordering: Ordering | None) -> None:
        self.ordering = ordering
        self.events: dict[str, dict[str, Event]] = {kind: {} for kind in _EVENT_KINDS}
        self.ranges: dict[tuple[int, ...], tuple[Range, bool]] = {}
        self.lists: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.versions: dict[str, str] = {}

    def accept(self, version: str) -> str:
        """The one copy of ``version`` this load keeps, checked in the ordering the first
        time; raises ``VersionError`` for what the ordering refuses."""
        known = self.versions.get(version)
        if known is None:
            if self.ordering is not None:
                check_version(self.ordering, version)
            known = self.versions[version] = version
        return known


class _Reader:
    """Reads the ``affected`` entries of one feed, sharing what records repeat.

    One reader per load: a feed names the same package history in every record about
    that package, so each distinct version, event, range and ``versions`` list is
    checked once per ordering and handed out as one shared object; memory grows with
    what is distinct, not with the number of records, and so does the checking. Where a
    record breaks the schema is only spelled out when it does (the hot path builds no
    location strings). Nothing outlives the load but the records themselves.
    """

    def __init__(self, stats: FeedStats | None) -> None:
        self.stats = stats
        self.checked: dict[Ordering | None, _Checked] = {}
        self.unchecked = _Checked(None)  # SEMVER and GIT ranges: validated, not kept
        self.times: dict[str, float | None] = {}
        self.orderings: dict[str, _Checked] = {}

    def timestamp(self, value: object, where: str, *, required: bool = False) -> float | None:
        """RFC 3339 -> Unix seconds; None when absent or before 1970 (Debian's "no time")."""
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise _timestamp_error(value, where)
        try:
            return self.times[value]
        except KeyError:
            moment = _read_timestamp(value, where)
            if len(self.times) < _MAX_TIMES:
                self.times[value] = moment
            return moment

    def for_ecosystem(self, ecosystem: str) -> _Checked:
        """The shared state of an ecosystem's version ordering."""
        found = self.orderings.get(ecosystem)
        if found is None:
            ordering = ordering_for(ecosystem)
            found = self.checked.get(ordering)
            if found is None:
                found = self.checked[ordering] = _Checked(ordering)
            if len(self.orderings) < _MAX_ECOSYSTEMS:
                self.orderings[ecosystem] = found
        return found

    def ranges(self, value: object, i: int, checked: _Checked) -> tuple[tuple[Range, ...], bool]:
        """The ECOSYSTEM ranges of an entry, and whether one of them is open."""
        if value is None:
            return (), False
        if not isinstance(value, list):
            raise _schema("not a list", f"affected[{i}].ranges")
        kept: list[Range] = []
        is_open = False
        for r, item in enumerate(value):
            if not isinstance(item, dict):
                raise _schema("not an object", f"affected[{i}].ranges[{r}]")
            kind = item.get("type")
            if kind == "ECOSYSTEM":
                table = checked
            elif isinstance(kind, str) and kind in _RANGE_TYPES:
                if kind == "GIT" and not isinstance(item.get("repo"), str):
                    raise _schema("a GIT range needs a repo", f"affected[{i}].ranges[{r}].repo")
                table = self.unchecked
            else:
                types = sorted(_RANGE_TYPES)
                raise _schema(f"type must be one of {types}", f"affected[{i}].ranges[{r}].type")
            raw = item.get("events")
            if not isinstance(raw, list) or not raw:
                raise _schema(
                    "events must be a non-empty list", f"affected[{i}].ranges[{r}].events"
                )
            if len(raw) > _MAX_EVENTS:
                raise RecordError(
                    "size", f"more than {_MAX_EVENTS} events", f"affected[{i}].ranges[{r}].events"
                )
            events = []
            for j, ev in enumerate(raw):
                if not isinstance(ev, dict) or len(ev) != 1:
                    raise _schema(
                        "an event holds exactly one of introduced, fixed, last_affected, limit",
                        f"affected[{i}].ranges[{r}].events[{j}]",
                    )
                ((ev_kind, version),) = ev.items()
                known = table.events.get(ev_kind)
                if known is None:
                    raise _schema(
                        f"unknown event {ev_kind!r}", f"affected[{i}].ranges[{r}].events[{j}]"
                    )
                event = known.get(version) if isinstance(version, str) else None
                if event is None:
                    event = self._event(
                        table, ev_kind, version, f"affected[{i}].ranges[{r}].events[{j}]"
                    )
                events.append(event)
            key = tuple(map(id, events))
            shared = table.ranges.get(key)
            if shared is None:
                kinds = {e.kind for e in events}
                if "introduced" not in kinds:
                    raise _schema(
                        "a range needs an introduced event", f"affected[{i}].ranges[{r}].events"
                    )
                if "fixed" in kinds and "last_affected" in kinds:
                    raise _schema("fixed and last_affected are mutually exclusive",
                                  f"affected[{i}].ranges[{r}].events")  # fmt: skip
                opens = len(events) == 1 and events[0] == _OPEN_EVENT
                # the events are the table's own (kept alive by it), so their ids are theirs
                shared = table.ranges[key] = (Range(kind, tuple(events)), opens)
            if table is checked:
                kept.append(shared[0])
                is_open = is_open or shared[1]
        return tuple(kept), is_open

    @staticmethod
    def _event(table: _Checked, kind: str, version: object, where: str) -> Event:
        """A version not seen yet in this kind of event: checked, then shared."""
        if not isinstance(version, str) or len(version) > _MAX_STRING:
            raise _string_error(version, f"{where}.{kind}")
        if table.ordering is not None and not (kind == "introduced" and version == "0"):
            try:
                version = table.accept(version)
            except VersionError as exc:
                raise RecordError("version", str(exc), f"{where}.{kind}") from None
        event = table.events[kind][version] = Event(kind, sys.intern(version))
        return event

    def versions(self, value: object, i: int, checked: _Checked) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _schema("not a list", f"affected[{i}].versions")
        if not value:
            return ()
        if len(value) > _MAX_VERSIONS:
            raise RecordError(
                "size", f"more than {_MAX_VERSIONS} versions", f"affected[{i}].versions"
            )
        try:
            key = tuple(value)
            known = checked.lists.get(key)
        except TypeError:  # a list or object among the versions: not hashable, not valid
            key, known = None, None
        if known is not None:
            return known  # the same list, already checked in this ordering
        seen = checked.versions
        # a list not met yet is mostly versions met already (a package's history, cut
        # short or grown by one): only the new ones are looked at, in the list's order
        new = set(value).difference(seen) if key is not None else None
        for j, v in enumerate(value) if new is None or new else ():
            if new is not None and v not in new:
                continue
            if not isinstance(v, str) or len(v) > _MAX_STRING:
                raise _string_error(v, f"affected[{i}].versions[{j}]")
            try:
                checked.accept(v)
            except VersionError as exc:
                raise RecordError("version", str(exc), f"affected[{i}].versions[{j}]") from None
        shared = tuple(map(seen.__getitem__, value))
        if key is not None:
            # keyed by the shared copies' tuple (equal to the raw one): the decoded strings go
            checked.lists[shared] = shared
        return shared

    def affected(self, value: object) -> tuple[tuple[Affected, ...], list[Cvss]]:
        if value is None:
            return (), []
        if not isinstance(value, list):
            raise _schema("not a list", "affected")
        if len(value) > _MAX_AFFECTED:
            raise RecordError("size", f"more than {_MAX_AFFECTED} entries", "affected")
        out: list[Affected] = []
        scores: list[Cvss] = []
        intern = sys.intern
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _schema("not an object", f"affected[{i}]")
            package = item.get("package")
            if not isinstance(package, dict):
                raise _schema("package must be an object", f"affected[{i}].package")
            ecosystem = package.get("ecosystem")
            if not isinstance(ecosystem, str) or len(ecosystem) > _MAX_STRING:
                raise _string_error(ecosystem, f"affected[{i}].package.ecosystem")
            name = package.get("name")
            if not isinstance(name, str) or len(name) > _MAX_STRING:
                raise _string_error(name, f"affected[{i}].package.name")
            if not ecosystem or not name:
                raise _schema("ecosystem and name must not be empty", f"affected[{i}].package")
            if "purl" in package:
                _string(package["purl"], f"affected[{i}].package.purl")
            checked = self.for_ecosystem(ecosystem)
            ranges, is_open = self.ranges(item.get("ranges"), i, checked)
            versions = self.versions(item.get("versions"), i, checked)
            if is_open:
                versions = ()  # every version is affected: the list adds nothing
            severity = item.get("severity")
            if severity is not None:
                scores += _severities(severity, f"affected[{i}].severity", self.stats)[0]
            eco_specific = item.get("ecosystem_specific")
            if eco_specific is None:
                eco_specific = _EMPTY
            elif not isinstance(eco_specific, dict):
                raise _schema("not an object", f"affected[{i}].ecosystem_specific")
            db_specific = item.get("database_specific")
            if db_specific is None:
                db_specific = _EMPTY
            elif not isinstance(db_specific, dict):
                raise _schema("not an object", f"affected[{i}].database_specific")
            own = rating("debian-urgency", eco_specific.get("urgency"))
            if own is None and (eco_specific or db_specific):
                own = _vendor_rating(eco_specific, db_specific)
            out.append(Affected(intern(ecosystem), intern(name), ranges, versions, own))
        return tuple(out), scores


_OPEN_EVENT = Event("introduced", "0")
# Distinct timestamps remembered per load: a feed converted in one run repeats its
# ``modified`` time; a bound keeps a feed of distinct ones from holding their strings.
_MAX_TIMES = 10_000
# Distinct ecosystem names remembered per load (a feed names a handful; a hostile one is
# bounded in memory, the ordering is then looked up again).
_MAX_ECOSYSTEMS = 1_000


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
    modified = reader.timestamp(obj.get("modified"), "modified", required=True)
    published = reader.timestamp(obj.get("published"), "published")
    withdrawn = reader.timestamp(obj.get("withdrawn"), "withdrawn")
    aliases = _strings(obj.get("aliases"), "aliases", nullable=True)
    related = _strings(obj.get("related", _NONE), "related")
    upstream = _strings(obj.get("upstream", _NONE), "upstream")
    summary = obj.get("summary", "")
    if not isinstance(summary, str):
        raise _schema("not a string", "summary")
    if "details" in obj and not isinstance(obj["details"], str):
        raise _schema("not a string", "details")
    affected, entry_scores = reader.affected(obj.get("affected"))
    severity = obj.get("severity")
    scores, own = _severities(severity, "severity", stats) if severity is not None else ([], None)
    if own is None and summary and (m := _REDHAT_SUMMARY.match(summary)):
        own = rating("redhat-impact", m.group(1))
    if own is None and "database_specific" in obj:
        own = _vendor_rating(_optional_object(obj, "database_specific", "record"))
    scores += entry_scores
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
        cvss=tuple(dict.fromkeys(scores)) if len(scores) > 1 else tuple(scores),
        rating=own,
        advisory_urls=_advisory_urls(obj.get("references")),
    )
    return record, withdrawn is not None


_NONE: list[str] = []


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
    with collector_paused():
        _load(members, stats, max_bytes, reader, kept)
    stats.kept = len(kept)
    return list(kept.values())


def _load(
    members: Iterable[tuple[str, bytes]],
    stats: FeedStats,
    max_bytes: int,
    reader: _Reader,
    kept: dict[str, Record],
) -> None:
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
