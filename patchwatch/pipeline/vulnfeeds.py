"""Read the vulnerability feeds: fetch or open, skip when unchanged, parse, store.

Why this module exists: each feed is a source like a mirror. It is read on its own
(one failing feed never stops the others), through the project's fetcher
(``patchwatch.pipeline.fetch``: deadlines, byte caps, conditional requests, the address
checks) or from a local file or folder, and its last good data is kept when a read
fails. A feed that answers 304, or whose content has the digest of the last good one,
is skipped before parsing. A feed whose record count moved by more than
``vulns_change_share`` is stored but flagged, so a truncated feed is seen.

Feed URLs come from the operator's settings, not from hosts: the fetch policy allows
each configured URL's own origin, and the non-public networks of
``mirror_allowed_networks`` (an internal copy of a feed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.osinfo import DEBIAN_CODENAMES
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns.debian_tracker import parse_tracker
from patchwatch.domain.vulns.debian_tracker import tracker_records
from patchwatch.domain.vulns.ecosystems import HostEcosystem
from patchwatch.domain.vulns.ecosystems import host_ecosystem
from patchwatch.domain.vulns.epss import parse_epss
from patchwatch.domain.vulns.feeds import Feed
from patchwatch.domain.vulns.feeds import RepoAdvisory
from patchwatch.domain.vulns.feeds import changed_too_much
from patchwatch.domain.vulns.feeds import fleet_ecosystems
from patchwatch.domain.vulns.feeds import plan_feeds
from patchwatch.domain.vulns.feeds import updateinfo_records
from patchwatch.domain.vulns.kev import parse_kev
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.osv import load_records
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Package
from patchwatch.store.vuln_models import VulnSource
from patchwatch.store.vulns import fleet_os_groups
from patchwatch.store.vulns import named_cves
from patchwatch.store.vulns import rebuild_vulnerabilities
from patchwatch.store.vulns import replace_epss
from patchwatch.store.vulns import replace_kev
from patchwatch.store.vulns import replace_records
from patchwatch.store.vulns import source_state

log = logging.getLogger(__name__)

__all__ = [
    "FeedOutcome",
    "feed_policy",
    "plan",
    "refresh_feed",
    "refresh_updateinfo",
    "refresh_vulns",
    "summarize_feeds",
]


@dataclass
class FeedOutcome:
    """What one feed's read did: ``changed``, ``unchanged`` or ``failed``."""

    name: str
    outcome: str
    records: int | None = None
    skipped: int = 0
    flagged: bool = False
    error: str = ""
    seconds: float = 0.0
    stats: FeedStats = field(default_factory=FeedStats)


def _host_ecosystems() -> list[HostEcosystem]:
    """What the fleet's hosts read: per OS group its override, else its os-release's."""
    return [
        e for os, override in fleet_os_groups() if (e := host_ecosystem(os, override)) is not None
    ]


def plan(settings: Settings) -> list[Feed]:
    """The feeds the settings and the fleet call for (``feeds.plan_feeds``)."""
    hosts = _host_ecosystems()
    return plan_feeds(
        osv_sources=settings.vulns_osv_sources,
        ecosystems=fleet_ecosystems(hosts, settings.vulns_osv_ecosystems),
        debian_tracker=settings.vulns_debian_tracker_source,
        kev=settings.vulns_kev_source,
        epss=settings.vulns_epss_source,
        debian_hosts=any(h.label.startswith("Debian:") for h in hosts),
    )


def feed_policy(settings: Settings, feeds: Iterable[Feed]) -> MirrorPolicy:
    """Where feed requests may go: each configured URL's origin, plus the allowed networks."""
    origins = sorted(
        {f"{p.scheme}://{p.netloc}" for f in feeds if f.is_url for p in [urlsplit(f.location)]}
    )
    return MirrorPolicy.build(origins, settings.mirror_allowed_networks)


def _debian_releases() -> set[str]:
    """The codenames of the Debian releases the fleet runs (the tracker parse keeps these)."""
    out = set()
    for host in _host_ecosystems():
        if host.label.startswith("Debian:"):
            number = host.label.partition(":")[2]
            codename = DEBIAN_CODENAMES.get(number)
            if codename:
                out.add(codename)
    return out


def _save(state: VulnSource, **fields: object) -> None:
    """Write ``fields`` to a feed's state row (and to the row object, for what follows)."""
    VulnSource.update(**fields).where(VulnSource.name == state.name).execute()
    for key, value in fields.items():
        setattr(state, key, value)


def _digest_path(path: Path) -> str:
    """Content digest of a local feed: the file's bytes, or a folder's names, sizes, times."""
    h = hashlib.sha256()
    if path.is_dir():
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                st = os.lstat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), path)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _parse_and_store(feed: Feed, path: Path, settings: Settings, result: FeedOutcome) -> int:
    """Parse the feed at ``path`` and replace its stored data; return its record count."""
    if feed.kind == "osv":
        stats = result.stats
        limits = archive.ArchiveLimits()
        records = load_records(archive.iter_members(path, stats, limits), stats)
        result.skipped = stats.skipped_total
        return replace_records(feed.name, records)
    if path.stat().st_size > settings.vulns_max_feed_bytes:
        raise PatchwatchError(
            f"{feed.location}: {path.stat().st_size} bytes, above vulns_max_feed_bytes"
        )
    data = path.read_bytes()
    cap = settings.vulns_max_feed_bytes
    if feed.kind == "debian_tracker":
        tracker = parse_tracker(data, releases=_debian_releases(), max_bytes=cap)
        result.stats = tracker.stats
        result.skipped = tracker.stats.skipped_total
        return replace_records(feed.name, tracker_records(tracker.entries))
    if feed.kind == "kev":
        catalogue = parse_kev(data, max_bytes=cap)
        result.stats = catalogue.stats
        result.skipped = catalogue.stats.skipped_total
        return replace_kev(catalogue.entries)
    scores = parse_epss(data, only=named_cves(), max_bytes=cap)
    result.stats = scores.stats
    result.skipped = scores.stats.skipped_total
    return replace_epss(scores.scores)


def refresh_feed(
    feed: Feed,
    settings: Settings,
    fetcher: Fetcher | None = None,
    *,
    file: str | None = None,
    force: bool = False,
    now: float | None = None,
) -> FeedOutcome:
    """Read one feed (``file`` instead of its location when given) and store it if changed.

    Never raises for a feed's own trouble: a failure is counted on its state row, its
    last good data is kept, and the outcome says why.
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    location = file or feed.location
    state = source_state(feed.name, location)
    result = FeedOutcome(feed.name, "failed")
    with tempfile.TemporaryDirectory(prefix="patchwatch-vulns-") as tmp:
        try:
            if file is None and feed.is_url:
                assert fetcher is not None
                cap = settings.vulns_max_feed_bytes
                same_place = state.location == location
                download = fetcher.fetch(
                    location,
                    Path(tmp) / "feed",
                    max_bytes=cap,
                    etag=state.etag if same_place and not force else "",
                    last_modified=state.last_modified if same_place and not force else "",
                )
                etag, modified = download.etag, download.last_modified
                if download.not_modified:
                    digest, path = state.content_digest, None
                else:
                    assert download.path is not None
                    digest, path = download.digest, download.path
            else:
                path = Path(location)
                if not path.exists():
                    raise PatchwatchError(f"{location}: no such file or folder")
                etag = modified = ""
                digest = _digest_path(path)
            if path is None or (
                not force
                and digest == state.content_digest
                and state.location == location
                and state.records is not None
            ):
                result.outcome = "unchanged"
                result.records = state.records
                _save(state,
                    last_attempt_at=now, last_success_at=now, consecutive_failures=0,
                    last_error="", etag=etag or state.etag,
                    last_modified=modified or state.last_modified,
                )  # fmt: skip
                return result
            with write_transaction():
                count = _parse_and_store(feed, path, settings, result)
                previous = state.records
                flagged = changed_too_much(previous, count, settings.vulns_change_share)
                rebuild_vulnerabilities()
                _save(state,
                    location=location, etag=etag, last_modified=modified,
                    content_digest=digest, last_attempt_at=now, last_success_at=now,
                    last_change_at=now, consecutive_failures=0, last_error="",
                    records=count, skipped=result.skipped, changed_too_much=flagged,
                )  # fmt: skip
            result.outcome, result.records, result.flagged = "changed", count, flagged
            if flagged:
                share = settings.vulns_change_share * 100
                log.warning("vulnerability feed %s changed by more than %.0f%%: %s -> %d",
                            feed.name, share, previous, count)  # fmt: skip
        except (PatchwatchError, OSError, ValueError) as exc:
            result.error = str(exc)[:500]
            log.warning("vulnerability feed %s failed: %s", feed.name, result.error)
            state = source_state(feed.name, location)
            _save(state,
                last_attempt_at=now, failures_total=state.failures_total + 1,
                consecutive_failures=state.consecutive_failures + 1, last_error=result.error,
            )  # fmt: skip
        finally:
            result.seconds = time.monotonic() - started
    return result


def _advisories() -> list[RepoAdvisory]:
    """The stored updateinfo advisories that name CVEs or are security ones, with the
    rpm builds that fix them."""
    rows = (
        Advisory.select(
            Advisory.id, Advisory.repository, Advisory.advisory_id, Advisory.type,
            Advisory.severity, Advisory.title, Advisory.cves,
        )
        .where((Advisory.cves != "") | (Advisory.type == "security"))
        .tuples()
    )  # fmt: skip
    found = {aid: row for aid, *row in rows}
    fixes: dict[int, list[tuple[str, str]]] = {}
    query = (
        AdvisoryPackage.select(
            AdvisoryPackage.advisory, Package.kind, Package.name, Package.epoch,
            Package.version, Package.release, Package.arch,
        )
        .join(Package, on=(AdvisoryPackage.package == Package.id))
        .where(Package.kind == PackageKind.RPM.value)
        .tuples()
    )  # fmt: skip
    for aid, kind, name, epoch, version, release, arch in query.iterator():
        if aid in found:
            rec = PackageRecord(name, epoch, version, release, arch, PackageKind(kind))
            fixes.setdefault(aid, []).append((name, rec.evr))
    return [
        RepoAdvisory(repo, adv_id, kind, severity, title, tuple(cves.split()),
                     tuple(fixes.get(aid, ())))
        for aid, (repo, adv_id, kind, severity, title, cves) in sorted(found.items())
    ]  # fmt: skip


def refresh_updateinfo(now: float | None = None) -> FeedOutcome | None:
    """The repositories' updateinfo advisories as the ``updateinfo`` feed (see
    ``feeds.updateinfo_records``), stored only when they changed since the last read."""
    started = time.monotonic()
    now = time.time() if now is None else now
    advisories = _advisories()
    digest = hashlib.sha256(repr(advisories).encode()).hexdigest()
    if not advisories and VulnSource.get_or_none(VulnSource.name == "updateinfo") is None:
        return None  # no repository has security errata: no such feed
    state = source_state("updateinfo", "repositories' updateinfo")
    result = FeedOutcome("updateinfo", "unchanged", records=state.records)
    if digest == state.content_digest and state.records is not None:
        _save(state, last_attempt_at=now, last_success_at=now)
    else:
        with write_transaction():
            count = replace_records("updateinfo", updateinfo_records(advisories))
            rebuild_vulnerabilities()
            _save(state, content_digest=digest, last_attempt_at=now, last_success_at=now,
                  last_change_at=now, records=count, skipped=0)  # fmt: skip
        result.outcome, result.records = "changed", count
    result.seconds = time.monotonic() - started
    return result


def refresh_vulns(
    settings: Settings,
    fetcher: Fetcher | None = None,
    *,
    only: str | None = None,
    file: str | None = None,
    force: bool = False,
) -> list[FeedOutcome]:
    """Read every planned feed (``only``: the one of that name); one result per feed.

    ``file`` reads a local copy instead of the feed's location (``only`` must then name
    the feed, or there must be one feed of the kind the file is).
    """
    feeds = plan(settings)
    if only == "updateinfo":
        return [o for o in [refresh_updateinfo()] if o is not None]
    if only is not None:
        feeds = [f for f in feeds if f.name == only]
        if not feeds and only in ("osv", "debian_tracker", "kev", "epss"):
            feeds = [Feed(only, only, file or "")]
        if not feeds:
            raise PatchwatchError(f"no vulnerability feed named {only!r}")
    own = fetcher is None and any(f.is_url for f in feeds) and file is None
    if own:
        base = HttpFetcher.from_settings(settings)
        fetcher = HttpFetcher(
            timeout=base.timeout,
            retries=base.retries,
            max_seconds=base.max_seconds,
            policy=feed_policy(settings, feeds),
        )
    try:
        out = []
        for feed in feeds:
            out.append(refresh_feed(feed, settings, fetcher, file=file, force=force))
        if only is None and (errata := refresh_updateinfo()) is not None:
            out.append(errata)
        return out
    finally:
        if own and isinstance(fetcher, HttpFetcher):
            fetcher.close()


def summarize_feeds(outcomes: Iterable[FeedOutcome]) -> str:
    """One line for a job run: how many feeds changed, were unchanged, failed."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"feeds: {text}" if text else "no vulnerability feed to read"
