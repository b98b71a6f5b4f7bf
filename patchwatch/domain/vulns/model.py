"""Records of vulnerability data: what every feed parser returns and what matching reads.

Plain frozen records, one shape for every source: an OSV record, a Debian tracker issue
and (later) an updateinfo advisory all become a :class:`Record` whose
:class:`Affected` entries name an ecosystem, a package and version ranges. Matching then
needs to know only this module, not where the data came from.

:class:`FeedStats` is how a parser says what it skipped: a bad record is counted under a
reason from a fixed vocabulary (:data:`SKIP_REASONS`, so it can become a metric label
later) with the first few messages kept for the log, and it never stops the feed.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.vulns.severity import Cvss
from patchwatch.domain.vulns.severity import Rating

__all__ = [
    "SKIP_REASONS",
    "Affected",
    "Event",
    "FeedStats",
    "Range",
    "Record",
]

#: Why a record or a member was skipped (a bounded set: these become label values).
SKIP_REASONS = (
    "json",  # not JSON, or not the expected top-level type
    "schema",  # a field the parser uses breaks the format's schema
    "version",  # a version the ecosystem's ordering refuses
    "size",  # a record or archive member above its size limit
    "path",  # an archive member whose path or type is refused
    "corrupt",  # an archive member that cannot be read back (bad CRC, truncated)
)

_EXAMPLES = 20


@dataclass(slots=True)
class FeedStats:
    """What one parse read, kept and skipped; filled in as the parser goes."""

    read: int = 0
    kept: int = 0
    withdrawn: int = 0
    ignored: int = 0  # not records at all (a LICENSE in an archive): neither kept nor bad
    unscored: int = 0  # CVSS vectors that did not score (dropped; the record is kept)
    duplicates: int = 0  # a second copy of an id already read (AlmaLinux files each
    #                      multi-release advisory under every release's folder)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, message: str) -> None:
        """Count one bad record under ``reason``; keep the message if few are kept yet."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.skipped[reason] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{reason}: {message}"[:500])

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True, slots=True)
class Event:
    """One OSV range event: ``kind`` is introduced, fixed, last_affected or limit."""

    kind: str
    version: str


@dataclass(frozen=True, slots=True)
class Range:
    """An OSV range; ``kind`` is ECOSYSTEM, SEMVER or GIT (only ECOSYSTEM is matched)."""

    kind: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Affected:
    """One ``affected[]`` entry: a package of one ecosystem and the versions it covers.

    ``name`` is what the record names: a source package for Debian and Ubuntu, a binary
    rpm for AlmaLinux. ``versions`` is the explicit list (exact versions also affected).
    ``rating`` is the entry's own rating (Debian's urgency differs per release).
    """

    ecosystem: str
    name: str
    ranges: tuple[Range, ...]
    versions: tuple[str, ...] = ()
    rating: Rating | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One vulnerability record (an advisory, a CVE entry, a tracker issue).

    ``identities`` are the vulnerabilities it speaks for, merged across feeds (see
    ``patchwatch.domain.vulns.osv.identities``): CVE ids when it names any, else its own id; empty
    for an advisory that is not about security (a bug-fix erratum naming no CVE).
    Times are Unix seconds (UTC), None when the feed does not say (the tracker gives
    no times; Debian writes year 1 for "no publication date").
    """

    id: str
    identities: tuple[str, ...]
    modified: float | None
    published: float | None = None
    aliases: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    summary: str = ""
    affected: tuple[Affected, ...] = ()
    cvss: tuple[Cvss, ...] = ()
    rating: Rating | None = None
    advisory_urls: tuple[str, ...] = ()
