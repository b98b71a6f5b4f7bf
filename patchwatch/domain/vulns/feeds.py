"""Which feeds to read, and how a feed's records are kept between reads (pure).

Why this module exists: the sources are configuration (``vulns_*`` settings) and the
fleet (which ecosystems its hosts read); turning both into the list of feeds to read,
each with a stable name for its state row and its metrics, is a pure function the
scheduler job and ``patchwatch vulns refresh`` share. The other pure parts of the
wiring live here too: the change-share rule that flags a feed which shrank or grew too
much, and the JSON form an ``Affected`` entry's ranges are stored in.

Feed names (bounded: the label of per-feed metrics):

- ``osv:<ecosystem>`` for each ecosystem an OSV URL with ``{ecosystem}`` is expanded
  for (``osv:Debian:12``); ``osv`` (``osv:2``, ``osv:3``, ... when several) for an OSV URL
  without it or a local zip, tarball or folder;
- ``debian_tracker``, ``kev``, ``epss``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from patchwatch.domain.vulns.ecosystems import HostEcosystem
from patchwatch.domain.vulns.identity import identities
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Event
from patchwatch.domain.vulns.model import Range
from patchwatch.domain.vulns.model import Record
from patchwatch.domain.vulns.severity import rating

__all__ = [
    "KINDS",
    "UPDATEINFO_PREFIX",
    "Feed",
    "RepoAdvisory",
    "affected_from_json",
    "changed_too_much",
    "fleet_ecosystems",
    "plan_feeds",
    "ranges_to_json",
    "updateinfo_records",
]

KINDS = ("osv", "debian_tracker", "kev", "epss")


@dataclass(frozen=True, slots=True)
class Feed:
    """One feed to read: its state name, its format and where it is (URL or path)."""

    name: str
    kind: str
    location: str

    @property
    def is_url(self) -> bool:
        return is_url(self.location)


def is_url(location: str) -> bool:
    """Whether a source setting names a URL (http or https) rather than a local path."""
    return location.startswith(("http://", "https://"))


def fleet_ecosystems(hosts: Iterable[HostEcosystem], extra: Iterable[str] = ()) -> list[str]:
    """The OSV ecosystems to load: those the fleet's hosts read, plus and minus ``extra``.

    An ``extra`` entry starting with ``-`` removes an ecosystem (a distribution whose
    records an operator reads from a local copy instead, say).
    """
    wanted: set[str] = set()
    for host in hosts:
        wanted.update(host.names or {host.label})
    for item in extra:
        if item.startswith("-"):
            wanted.discard(item[1:])
        elif item:
            wanted.add(item)
    return sorted(wanted)


def plan_feeds(
    *,
    osv_sources: Iterable[str],
    ecosystems: Iterable[str],
    debian_tracker: str,
    kev: str,
    epss: str,
    debian_hosts: bool,
) -> list[Feed]:
    """Every feed to read, in a stable order (see the module docstring for the names).

    The Debian tracker is read only when some host runs Debian: it is the largest feed
    and says nothing about other distributions.
    """
    feeds: list[Feed] = []
    ecosystems = sorted(set(ecosystems))
    plain = 0
    for location in osv_sources:
        if "{ecosystem}" in location and is_url(location):
            for eco in ecosystems:
                url = location.replace("{ecosystem}", _quote(eco))
                feeds.append(Feed(f"osv:{eco}", "osv", url))
        else:
            plain += 1
            feeds.append(Feed("osv" if plain == 1 else f"osv:{plain}", "osv", location))
    if debian_tracker and debian_hosts:
        feeds.append(Feed("debian_tracker", "debian_tracker", debian_tracker))
    if kev:
        feeds.append(Feed("kev", "kev", kev))
    if epss:
        feeds.append(Feed("epss", "epss", epss))
    return feeds


def _quote(ecosystem: str) -> str:
    """osv.dev's bucket names folders by ecosystem as is; only spaces need escaping."""
    return ecosystem.replace(" ", "%20")


def changed_too_much(previous: int | None, current: int, share: float) -> bool:
    """Whether a feed's record count moved by more than ``share`` of what it was.

    The first read (``previous`` None) and a feed that was empty and still is are never
    flagged; one that was empty and now has records is (a share of nothing is infinite).
    """
    if previous is None:
        return False
    if previous == 0:
        return current > 0
    return abs(current - previous) / previous > share


def ranges_to_json(entry: Affected) -> tuple[str, str]:
    """The ECOSYSTEM ranges and the ``versions`` list of an entry, as stored (compact)."""
    ranges = [
        [r.kind, [[e.kind, e.version] for e in r.events]]
        for r in entry.ranges
        if r.kind == "ECOSYSTEM"
    ]
    # orjson: a Debian-sized feed stores 125,000 entries, and the standard library's
    # encoder was a fifth of storing it; the text is the same compact JSON
    return orjson.dumps(ranges).decode(), orjson.dumps(list(entry.versions)).decode()


def affected_from_json(ecosystem: str, package: str, ranges: str, versions: str) -> Affected:
    """Rebuild an entry stored by :func:`ranges_to_json` (what matching reads)."""
    return Affected(
        ecosystem=ecosystem,
        name=package,
        ranges=tuple(
            Range(kind, tuple(Event(k, v) for k, v in events))
            for kind, events in orjson.loads(ranges)
        ),
        versions=tuple(orjson.loads(versions)),
    )


UPDATEINFO_PREFIX = "updateinfo:"


@dataclass(frozen=True, slots=True)
class RepoAdvisory:
    """An advisory a repository's updateinfo lists (``Advisory`` rows), as matching needs it.

    ``packages`` are the (name, full version) pairs of the builds that fix it.
    """

    repository: int
    id: str
    type: str
    severity: str
    title: str
    cves: tuple[str, ...]
    packages: tuple[tuple[str, str], ...]


def updateinfo_records(advisories: Iterable[RepoAdvisory]) -> list[Record]:
    """Advisories of yum/dnf ``updateinfo`` as records, one ecosystem per repository.

    Why: local and vendor repositories often have no OSV feed, but their updateinfo says
    which build fixes which CVEs. Each package an advisory names becomes an entry of
    ecosystem ``updateinfo:<repository id>`` (only hosts using that repository read
    it) with the range ``introduced 0`` / ``fixed`` that build; several builds of one
    name (module streams, several releases) make several entries, as AlmaLinux's OSV
    records do. Identities follow ``identity.identities`` with the CVEs as ``related``:
    a bug-fix erratum naming no CVE speaks for no vulnerability. The severity word is
    Red Hat's scale (Important, Moderate ...), which updateinfo files share.
    """
    out = []
    for adv in advisories:
        idents = identities(adv.id, related=adv.cves)
        if not idents or not adv.packages:
            continue
        eco = f"{UPDATEINFO_PREFIX}{adv.repository}"
        entries = tuple(
            Affected(eco, name, (Range("ECOSYSTEM", (Event("introduced", "0"),
                                                     Event("fixed", version))),))
            for name, version in sorted(set(adv.packages))
        )  # fmt: skip
        out.append(
            Record(
                id=adv.id, identities=idents, modified=None, summary=adv.title,
                affected=entries, rating=rating("redhat-impact", adv.severity),
            )
        )  # fmt: skip
    return out
