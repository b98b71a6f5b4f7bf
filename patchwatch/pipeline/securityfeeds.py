"""Fetch Arch's security tracker and Alpine's secdb documents on a schedule, keep the last good.

Why this module exists: the security flag of Arch and Alpine updates comes from these
feeds (``patchwatch.domain.vulns.arch_tracker``, ``alpine_secdb``), not from the
repositories, and both are published on the web and change daily. Each configured
feed (``arch_security_tracker``, ``apk_secdb``: URLs or local paths) is read like a
vulnerability feed (``patchwatch.pipeline.vulnfeeds``): through the project's fetcher
(the fetch policy allows each configured URL's own origin and the non-public networks
of ``mirror_allowed_networks``, deadlines, ``security_feed_max_bytes`` as sent and as
decompressed), conditionally on the validators of the last good copy, skipped when its
digest is the stored one, parsed before anything is kept. A good copy of a URL is
stored whole (``patchwatch.store.security_feeds``); a failing read counts a failure
and leaves the last good copy in use. Local paths are checked the same way, and the
mirror refresh keeps reading them directly.

The mirror refresh puts the digest of the copy it classified with into the mirror's
checksum (``patchwatch.pipeline.refresh.security_feeds``), so a new copy reclassifies
the updates at the next refresh even when no index changed.

Feed names (the ``feed`` label of ``patchwatch_security_feed_*``, bounded by the
settings): ``arch_tracker``; ``apk_secdb:<branch>/<repository>`` from the location's
last two path parts (``.../v3.20/main.json`` is ``apk_secdb:v3.20/main``).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.alpine_secdb import MAX_SECDB_BYTES
from patchwatch.domain.vulns.alpine_secdb import parse_secdb
from patchwatch.domain.vulns.arch_tracker import MAX_TRACKER_BYTES
from patchwatch.domain.vulns.arch_tracker import parse_arch_tracker
from patchwatch.domain.vulns.feeds import Feed
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh.security_feeds import read_local
from patchwatch.pipeline.vulnfeeds import FeedOutcome
from patchwatch.pipeline.vulnfeeds import feed_policy
from patchwatch.store.security_feeds import SecurityFeed
from patchwatch.store.security_feeds import count_failure
from patchwatch.store.security_feeds import feed_row
from patchwatch.store.security_feeds import forget_feeds_except
from patchwatch.store.security_feeds import save_feed

log = logging.getLogger(__name__)

__all__ = ["plan_security_feeds", "refresh_security_feed", "refresh_security_feeds"]

ARCH = "arch_tracker"
SECDB = "apk_secdb"
MAX_LIMITS = {ARCH: MAX_TRACKER_BYTES, SECDB: MAX_SECDB_BYTES}


def _secdb_name(location: str) -> str:
    """``apk_secdb:v3.20/main`` for ``.../v3.20/main.json`` (a URL's path, or a path)."""
    path = urlsplit(location).path if "://" in location else location
    parts = [p for p in path.split("/") if p][-2:]
    if parts:
        parts[-1] = parts[-1].split(".", 1)[0]
    return f"{SECDB}:{'/'.join(parts)[:120]}"


def plan_security_feeds(arch_tracker: str, secdb: Sequence[str]) -> list[Feed]:
    """The security feeds the settings name, each with its state name (module docstring).

    Two secdb locations ending alike get ``#2``, ``#3`` ... so that each keeps its row.
    """
    feeds = [Feed(ARCH, ARCH, arch_tracker)] if arch_tracker else []
    seen: dict[str, int] = {}
    for location in secdb:
        if not location:
            continue
        name = _secdb_name(location)
        seen[name] = seen.get(name, 0) + 1
        feeds.append(Feed(name if seen[name] == 1 else f"{name}#{seen[name]}", SECDB, location))
    return feeds


def _parse(feed: Feed, data: bytes, cap: int) -> tuple[int, FeedStats, str]:
    """(fixes, stats, scope) of a copy; raises ParseError/TooLargeError when unreadable."""
    if feed.kind == ARCH:
        tracker = parse_arch_tracker(data, max_bytes=cap)
        return len(tracker.fixes), tracker.stats, ""
    secdb = parse_secdb(data, max_bytes=cap)
    return len(secdb.fixes), secdb.stats, f"{secdb.distroversion}/{secdb.reponame}"


def refresh_security_feed(
    feed: Feed,
    settings: Settings,
    fetcher: Fetcher | None = None,
    *,
    force: bool = False,
    now: float | None = None,
) -> FeedOutcome:
    """Read one security feed and keep it if it parses and changed (module docstring).

    Never raises for the feed's own trouble: the failure is counted on its row, the last
    good copy stays, and the outcome says why.
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    row = feed_row(feed.name)
    result = FeedOutcome(feed.name, "failed")
    # never above what the mirror refresh's parse of the copy accepts
    cap = min(settings.security_feed_max_bytes, MAX_LIMITS[feed.kind])
    same_place = row.location == feed.location and row.fixes is not None
    try:
        with tempfile.TemporaryDirectory(prefix="patchwatch-secfeed-") as tmp:
            etag = modified = ""
            if feed.is_url:
                assert fetcher is not None
                download = fetcher.fetch(
                    feed.location, Path(tmp) / "feed", max_bytes=cap,
                    etag=row.etag if same_place and not force else "",
                    last_modified=row.last_modified if same_place and not force else "",
                )  # fmt: skip
                etag, modified = download.etag, download.last_modified
                if download.not_modified:
                    return _unchanged(row, result, now, etag, modified)
                assert download.path is not None
                data = download.path.read_bytes()
            else:
                data = read_local(feed.location, cap, "security_feed_max_bytes")
        digest = hashlib.sha256(data).hexdigest()
        if same_place and not force and digest == row.content_digest:
            return _unchanged(row, result, now, etag, modified)
        fixes, stats, scope = _parse(feed, data, cap)
        save_feed(row,
            location=feed.location, etag=etag, last_modified=modified,
            content_digest=digest, content=data if feed.is_url else None, scope=scope,
            last_attempt_at=now, last_success_at=now, last_change_at=now,
            consecutive_failures=0, last_error="", fixes=fixes, skipped=stats.skipped_total,
        )  # fmt: skip
        result.outcome, result.records, result.skipped = "changed", fixes, stats.skipped_total
        result.stats = stats
    except (PatchwatchError, OSError, ValueError) as exc:
        result.error = str(exc)[:500]
        log.warning("security feed %s failed: %s", feed.name, result.error)
        count_failure(feed.name, now, result.error)
    finally:
        result.seconds = time.monotonic() - started
    return result


def _unchanged(
    row: SecurityFeed, result: FeedOutcome, now: float, etag: str, modified: str
) -> FeedOutcome:
    result.outcome, result.records, result.skipped = "unchanged", row.fixes, row.skipped or 0
    save_feed(row,
        last_attempt_at=now, last_success_at=now, consecutive_failures=0, last_error="",
        etag=etag or row.etag, last_modified=modified or row.last_modified,
    )  # fmt: skip
    return result


def refresh_security_feeds(
    settings: Settings,
    fetcher: Fetcher | None = None,
    *,
    only: str | None = None,
    force: bool = False,
    now: float | None = None,
) -> list[FeedOutcome]:
    """Read every configured security feed (``only``: the one of that name)."""
    feeds = plan_security_feeds(settings.arch_security_tracker, settings.apk_secdb)
    if only is None:  # a feed taken out of the settings is not watched any more
        forget_feeds_except([f.name for f in feeds])
    else:
        feeds = [f for f in feeds if f.name == only]
        if not feeds:
            raise PatchwatchError(f"no security feed named {only!r}")
    own = fetcher is None and any(f.is_url for f in feeds)
    if own:
        fetcher = HttpFetcher.from_settings(settings, policy=feed_policy(settings, feeds))
    try:
        return [refresh_security_feed(f, settings, fetcher, force=force, now=now) for f in feeds]
    finally:
        if own and isinstance(fetcher, HttpFetcher):
            fetcher.close()
