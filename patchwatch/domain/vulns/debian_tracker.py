"""Debian's security tracker JSON (what debsecan reads) read into entries and records.

Why this module exists: Debian's OSV records come from advisories and the tracker, but
the tracker itself is the one place that says, per source package and release, which
issues are still open, which the security team decided not to fix by a DSA ("no-dsa",
postponed or ignored) and with which urgency. Hosts exposed to those have no advisory to
wait for, and an operator should see them.

The document (https://security-tracker.debian.org/tracker/data/json) is one object::

    {"<source package>": {"<CVE-… or TEMP-…>": {
        "description": "...", "scope": "local"|"remote", "debianbug": 123,
        "releases": {"<codename>": {
            "status": "resolved"|"open"|"undetermined",
            "fixed_version": "2.36-9+deb12u3",        # "0": never affected
            "urgency": "low"|"medium"|"high"|"unimportant"|"not yet assigned"|"end-of-life",
            "nodsa": "Minor issue", "nodsa_reason": "postponed"|"ignored"|"",
            "repositories": {"bookworm": "2.36-9+deb12u7", ...}}}}}}

Empty fields are left out by the tracker, so every key but ``status`` may be missing.
Each (package, issue, release) becomes a :class:`TrackerEntry` whose :attr:`state` is
``fixed`` (resolved with a version), ``not-affected`` (resolved with ``0``), ``unfixed``
(open) or ``undetermined``. An entry that breaks this shape (an unknown status, a
resolved issue with no version, a version dpkg refuses, a name that is not a package,
issue or codename) is skipped and counted; the document is refused whole only when it is
not an object of packages.

:func:`tracker_records` turns entries into ``Record`` s that matching reads like OSV
records: ecosystem ``Debian:N`` from the codename (releases with no number, sid and
experimental, are left out), the source package name, and a range ``introduced 0`` /
``fixed`` (or open-ended when unfixed). Undetermined and not-affected entries make no
range. ``releases`` restricts the parse to the codenames a fleet runs: the whole
document covers a dozen releases and is about 70 MB.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import VersionError
from patchwatch.domain.osinfo import DEBIAN_CODENAMES
from patchwatch.domain.versions import deb_sort_key
from patchwatch.domain.vulns.feed import feed_json
from patchwatch.domain.vulns.identity import identities
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Event
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.model import Range
from patchwatch.domain.vulns.model import Record
from patchwatch.domain.vulns.severity import Rating
from patchwatch.domain.vulns.severity import rating

__all__ = ["MAX_TRACKER_BYTES", "TrackerData", "TrackerEntry", "parse_tracker", "tracker_records"]

#: Largest document accepted after decompression.
MAX_TRACKER_BYTES = 512 << 20

_SOURCE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}$")
_ISSUE = re.compile(r"^(CVE-[0-9]{4}-[0-9]{4,19}|TEMP-[0-9A-Za-z-]{1,40})$")
_CODENAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
_STATUSES = frozenset({"resolved", "open", "undetermined"})
_NUMBERS = {codename: number for number, codename in DEBIAN_CODENAMES.items()}
_MAX_TEXT = 500


@dataclass(frozen=True, slots=True)
class TrackerEntry:
    """One issue of one source package in one release, as the tracker states it."""

    source: str
    issue: str
    release: str
    status: str
    fixed_version: str | None = None
    urgency: Rating | None = None
    nodsa: str = ""
    nodsa_reason: str = ""
    scope: str = ""
    description: str = ""

    @property
    def state(self) -> str:
        """``fixed``, ``not-affected``, ``unfixed`` or ``undetermined``."""
        if self.status == "resolved":
            return "not-affected" if self.fixed_version == "0" else "fixed"
        return "unfixed" if self.status == "open" else "undetermined"


@dataclass(frozen=True, slots=True)
class TrackerData:
    """Every entry kept, and what was read and skipped."""

    entries: list[TrackerEntry]
    stats: FeedStats = field(default_factory=FeedStats)


def _text(value: object) -> str:
    return " ".join(value.split())[:_MAX_TEXT] if isinstance(value, str) else ""


def parse_tracker(
    data: bytes,
    *,
    releases: Collection[str] | None = None,
    max_bytes: int = MAX_TRACKER_BYTES,
) -> TrackerData:
    """Read the tracker JSON (plain or compressed); keep only ``releases`` when given."""
    doc = feed_json(data, "tracker document", max_bytes)
    if not isinstance(doc, dict):
        raise ParseError("tracker document is not an object of source packages")
    stats = FeedStats()
    entries: list[TrackerEntry] = []
    for source, issues in doc.items():
        if not isinstance(issues, dict):
            stats.read += 1
            stats.skip("schema", f"{source[:60]!r}: not an object of issues")
            continue
        if not _SOURCE.match(source):
            stats.read += len(issues)
            stats.skip("schema", f"{source[:60]!r}: not a source package name")
            continue
        source = sys.intern(source)
        for issue, info in issues.items():
            stats.read += 1
            where = f"{source}/{issue[:60]}"
            if not _ISSUE.match(issue) or not isinstance(info, dict):
                stats.skip("schema", f"{where}: not a CVE or TEMP issue object")
                continue
            per_release = info.get("releases", {})
            if not isinstance(per_release, dict):
                stats.skip("schema", f"{where}.releases: not an object")
                continue
            scope = _text(info.get("scope"))
            description = _text(info.get("description"))
            for codename, state in per_release.items():
                if releases is not None and codename not in releases:
                    continue
                entry = _entry(source, issue, codename, state, scope, description, stats)
                if entry is not None:
                    entries.append(entry)
    stats.kept = len(entries)
    return TrackerData(entries, stats)


def _entry(
    source: str,
    issue: str,
    codename: str,
    state: object,
    scope: str,
    description: str,
    stats: FeedStats,
) -> TrackerEntry | None:
    where = f"{source}/{issue}/{codename[:30]}"
    if not _CODENAME.match(codename) or not isinstance(state, dict):
        stats.skip("schema", f"{where}: not a release object")
        return None
    status = state.get("status")
    if not isinstance(status, str) or status not in _STATUSES:
        stats.skip("schema", f"{where}.status: {str(status)[:30]!r} is not a known status")
        return None
    fixed = state.get("fixed_version")
    if fixed is not None and not isinstance(fixed, str):
        stats.skip("schema", f"{where}.fixed_version: not a string")
        return None
    if status == "resolved":
        if not fixed:
            stats.skip("schema", f"{where}: resolved with no fixed_version")
            return None
        if fixed != "0":
            try:
                deb_sort_key(fixed)
            except VersionError as exc:
                stats.skip("version", f"{where}: {exc}")
                return None
    else:
        fixed = None  # only a resolved issue has a fix, whatever else the entry says
    return TrackerEntry(
        source=source,
        issue=sys.intern(issue),
        release=sys.intern(codename),
        status=status,
        fixed_version=sys.intern(fixed) if fixed else None,
        urgency=rating("debian-urgency", state.get("urgency")),
        nodsa=_text(state.get("nodsa")),
        nodsa_reason=_text(state.get("nodsa_reason")),
        scope=scope,
        description=description,
    )


def tracker_records(entries: Iterable[TrackerEntry]) -> list[Record]:
    """One ``Record`` per issue, with an ``Affected`` per (source package, release).

    Entries of releases with no number (sid, experimental), undetermined ones and those
    never affected make no ``Affected``; an issue left with none makes no record.
    """
    by_issue: dict[str, list[Affected]] = {}
    texts: dict[str, str] = {}
    worst: dict[str, Rating] = {}
    for e in entries:
        number = _NUMBERS.get(e.release)
        if number is None or e.state in ("undetermined", "not-affected"):
            continue
        events = [Event("introduced", "0")]
        if e.state == "fixed" and e.fixed_version:
            events.append(Event("fixed", e.fixed_version))
        by_issue.setdefault(e.issue, []).append(
            Affected(
                f"Debian:{number}", e.source, (Range("ECOSYSTEM", tuple(events)),), (), e.urgency
            )
        )
        if e.description and e.issue not in texts:
            texts[e.issue] = e.description
        if e.urgency is not None and (
            e.issue not in worst or e.urgency.level.rank > worst[e.issue].level.rank
        ):
            worst[e.issue] = e.urgency
    return [
        Record(
            id=issue,
            identities=identities(issue),
            modified=None,
            summary=texts.get(issue, ""),
            affected=tuple(affected),
            rating=worst.get(issue),
        )
        for issue, affected in by_issue.items()
    ]
