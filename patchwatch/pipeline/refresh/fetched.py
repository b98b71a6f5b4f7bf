"""What a mirror's fetch hands to storing, and the checks both formats apply on the way.

``Fetched`` is a verified fetch ready to store (``None`` fields keep what is stored);
``Skip`` says a mirror cannot be refreshed yet through nobody's fault. The helpers
bound what a mirror sends (declared sizes capped by ``max_index_bytes``, parsed
entries by ``max_index_packages``) and check a download against the size and digest
its signed metadata promised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import Advisory as AdvisoryRecord
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import Download
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.store.models import Mirror

CHECKSUM_CHARS = 160  # Mirror.metadata_checksum


class Skip(Exception):
    """The mirror cannot be refreshed yet, through nobody's fault (no architecture known)."""


@dataclass
class Fetched:
    """A verified fetch, ready to store. ``None`` means "keep what is stored"."""

    checksum: str
    packages: list[PackageRecord] | None = None
    advisories: list[AdvisoryRecord] | None = None
    advisories_changed: bool = False  # updateinfo differs from what was stored
    skipped_packages: Skipped | None = None  # set when the package index was read
    skipped_advisories: Skipped | None = None  # set when updateinfo was read (or is gone)
    security: bool | None = None
    sources: dict[PackageRecord, str] | None = None  # binary -> source name, when they differ
    etag: str = ""
    last_modified: str = ""
    note: str = ""


def collect(
    parsed: Iterable[AvailablePackage],
    into: list[PackageRecord],
    limit: int,
    what: str,
    sources: dict[PackageRecord, str] | None = None,
) -> None:
    """Append the parsed packages to ``into``, stopping past ``limit`` in all.

    The parse stops there too (it is a generator): an index of a million packages
    costs what ``limit`` packages cost, not what the byte limit allows
    (docs/performance.md). With ``sources``, a package whose source package has
    another name is noted there (what vulnerability records of Debian and Ubuntu name).
    """
    for available in parsed:
        if len(into) >= limit:
            raise TooLargeError(f"lists more than {limit} {what} (max_index_packages)")
        into.append(available.package)
        if sources is not None and available.source not in ("", available.package.name):
            sources[available.package] = available.source


def collect_advisories(parsed: Iterable[AdvisoryRecord], limit: int) -> list[AdvisoryRecord]:
    """The advisories, refusing more than ``limit`` of them or of the packages they name."""
    advisories: list[AdvisoryRecord] = []
    named = 0
    for advisory in parsed:
        named += len(advisory.packages)
        if len(advisories) >= limit or named > limit:
            raise TooLargeError(
                f"lists more than {limit} advisories or advisory packages (max_index_packages)"
            )
        advisories.append(advisory)
    return advisories


def cap(url: str, declared: int | None, settings: Settings) -> int:
    """The byte cap for an index download: what the metadata declares, never above
    ``max_index_bytes``. A declared size above it fails before anything is downloaded:
    the metadata is the mirror's word, and a mirror may declare gigabytes."""
    limit = settings.max_index_bytes
    if declared is not None and declared > limit:
        raise FetchError(
            url, f"is declared as {declared} bytes, more than max_index_bytes ({limit})"
        )
    return declared if declared is not None else limit


def check_download(
    download: Download, size: int | None, hash_name: str, digest: str, by: str
) -> None:
    if size is not None and download.size != size:
        raise FetchError(
            download.url,
            f"is {download.size} bytes, but {by} says {size} (truncated or replaced file)",
        )
    if download.digest.lower() != digest.lower():
        raise FetchError(
            download.url,
            f"{hash_name} checksum {download.digest} does not match {digest} from {by}",
        )


def fetch_index(
    fetcher: Fetcher, url: str, dest: Path, mirror: Mirror, max_bytes: int, conditional: bool
) -> Download:
    """Download a mirror's top index file, conditionally on the stored validators when
    ``conditional`` (a 304 then leaves ``dest`` alone and says ``not_modified``)."""
    return fetcher.fetch(
        url, dest, max_bytes=max_bytes,
        etag=mirror.etag if conditional else "",
        last_modified=mirror.last_modified if conditional else "",
    )  # fmt: skip


def kept(mirror: Mirror, download: Download, note: str) -> Fetched:
    """A fetch that changed nothing: the stored checksum stays, the new validators are kept."""
    return Fetched(
        checksum=mirror.metadata_checksum,
        etag=download.etag,
        last_modified=download.last_modified,
        note=note,
    )


def fetch_feed_index(
    fetcher: Fetcher,
    url: str,
    dest: Path,
    mirror: Mirror,
    settings: Settings,
    force: bool,
    feed_sum: str,
    what: str,
) -> tuple[Fetched, Download, bool]:
    """Download a one-file index (pacman's ``REPO.db``, Alpine's ``APKINDEX.tar.gz``)
    whose advisories come from a separate security feed.

    The stored checksum is ``"INDEX_DIGEST FEED_DIGEST"``: a feed that changed makes
    the index be read again even when the mirror's file did not, so validators are used
    only while the feed is the same. Returns the ``Fetched`` to hand on (final when the
    download says ``not_modified``), the download, and whether the index is the same
    bytes as stored (the caller may still verify before it stops there).
    """
    old_index, _, old_feed = mirror.metadata_checksum.partition(" ")
    same_feed = old_feed == feed_sum
    use_validators = not force and mirror.package_set_id is not None and same_feed
    download = fetch_index(fetcher, url, dest, mirror, settings.max_index_bytes, use_validators)
    if download.not_modified:
        return kept(mirror, download, f"; {what} not modified"), download, True
    fetched = Fetched(
        checksum=f"{download.digest} {feed_sum}",
        etag=download.etag,
        last_modified=download.last_modified,
        advisories_changed=not same_feed,
    )
    return fetched, download, use_validators and download.digest == old_index
