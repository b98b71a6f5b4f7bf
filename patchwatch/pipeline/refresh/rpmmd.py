"""Fetch and verify an rpm-md mirror: ``repomd.xml``, then ``primary`` and ``updateinfo``.

``repomd.xml`` is read with a conditional GET; ``primary`` and ``updateinfo`` only
when their checksums changed, each verified against repomd before parsing. Mirrorlists
and metalinks are followed to the first base URL that works.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urljoin

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.model import RepoMdEntry
from patchwatch.domain.repodata.rpmmd import parse_metalink
from patchwatch.domain.repodata.rpmmd import parse_mirrorlist
from patchwatch.domain.repodata.rpmmd import parse_primary
from patchwatch.domain.repodata.rpmmd import parse_repomd
from patchwatch.domain.repodata.rpmmd import parse_updateinfo
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.refresh.fetched import Fetched
from patchwatch.pipeline.refresh.fetched import cap
from patchwatch.pipeline.refresh.fetched import check_download
from patchwatch.pipeline.refresh.fetched import collect
from patchwatch.pipeline.refresh.fetched import collect_advisories
from patchwatch.pipeline.refresh.fetched import fetch_index
from patchwatch.pipeline.refresh.fetched import kept
from patchwatch.store.models import Mirror

log = logging.getLogger(__name__)


REPOMD_MAX_BYTES = 16 << 20
MIRRORLIST_MAX_BYTES = 4 << 20
MAX_LIST_CANDIDATES = 5  # base URLs tried from one mirrorlist or metalink


def fetch_rpmmd(
    mirror: Mirror, fetcher: Fetcher, tmp: Path, settings: Settings, force: bool
) -> Fetched:
    bases = _rpm_bases(mirror, fetcher, tmp)
    errors: list[FetchError] = []
    for base in bases[:MAX_LIST_CANDIDATES]:
        try:
            fetched = _fetch_rpmmd_from(
                base, mirror, fetcher, tmp, settings, force, conditional=mirror.kind == "baseurl"
            )
        except FetchError as exc:
            errors.append(exc)
            if len(bases) > 1:
                log.info("rpm-md base %s failed, trying the next: %s", base, exc)
            continue
        if base != mirror.url:
            fetched.note += f"; served by {base}"
        return fetched
    if len(errors) == 1:
        raise errors[0]
    tried = "; ".join(str(e) for e in errors)
    raise FetchError(mirror.url, f"none of the {len(errors)} mirrors it lists worked: {tried}")


def _rpm_bases(mirror: Mirror, fetcher: Fetcher, tmp: Path) -> list[str]:
    """The base URLs to try: the mirror itself, or what its mirrorlist/metalink lists."""
    if mirror.kind not in ("mirrorlist", "metalink"):
        return [mirror.url.rstrip("/")]
    download = fetcher.fetch(mirror.url, tmp / "mirrorlist", max_bytes=MIRRORLIST_MAX_BYTES)
    assert download.path is not None
    data = download.path.read_bytes()
    try:
        if mirror.kind == "metalink" or data.lstrip()[:5] in (b"<?xml", b"<meta"):
            urls = parse_metalink(data)
        else:
            urls = parse_mirrorlist(data.decode("utf-8"))
    except ParseError as exc:
        raise FetchError(mirror.url, f"unreadable {mirror.kind}: {exc}") from None
    bases = []
    for url in urls:
        url = url.rstrip("/").removesuffix("/repomd.xml").removesuffix("/repodata")
        bases.append(url.rstrip("/"))
    bases = list(dict.fromkeys(b for b in bases if b))
    if not bases:
        raise FetchError(mirror.url, f"the {mirror.kind} lists no http(s) or ftp mirror")
    return bases


def _short_sum(entry: RepoMdEntry | None) -> str:
    if entry is None:
        return "-"
    if len(entry.checksum) <= 64:
        return entry.checksum
    return hashlib.sha256(f"{entry.checksum_type}:{entry.checksum}".encode()).hexdigest()


def _fetch_rpmmd_from(
    base: str,
    mirror: Mirror,
    fetcher: Fetcher,
    tmp: Path,
    settings: Settings,
    force: bool,
    conditional: bool,
) -> Fetched:
    url = f"{base}/repodata/repomd.xml"
    use_validators = conditional and not force and mirror.package_set_id is not None
    download = fetch_index(
        fetcher, url, tmp / "repomd.xml", mirror, REPOMD_MAX_BYTES, use_validators
    )
    if download.not_modified:
        return kept(mirror, download, "; repomd.xml not modified")
    assert download.path is not None
    try:
        repomd = parse_repomd(download.path.read_bytes())
    except ParseError as exc:
        raise FetchError(url, f"unreadable repomd.xml: {exc}") from None
    primary = repomd.get("primary")
    if primary is None:
        raise FetchError(url, "lists no primary metadata")
    updateinfo = repomd.get("updateinfo")
    p_sum, u_sum = _short_sum(primary), _short_sum(updateinfo)
    fetched = Fetched(
        checksum=f"{p_sum} {u_sum}",
        etag=download.etag if conditional else "",
        last_modified=download.last_modified if conditional else "",
    )
    old_p, _, old_u = mirror.metadata_checksum.partition(" ")
    fresh = force or mirror.package_set_id is None
    limit = settings.max_index_packages
    if fresh or old_p != p_sum:
        with _open_rpmmd_data(base, primary, fetcher, tmp, settings) as (data_url, reader):
            packages: list[PackageRecord] = []
            skipped = Skipped()
            try:
                collect(parse_primary(reader, skipped), packages, limit, "packages")
            except (ParseError, TooLargeError) as exc:
                raise FetchError(data_url, str(exc)) from None
            fetched.packages, fetched.skipped_packages = packages, skipped
    if fresh or old_u != u_sum:
        fetched.advisories = []
        fetched.advisories_changed = old_u != u_sum
        fetched.skipped_advisories = Skipped()
        if updateinfo is not None:
            with _open_rpmmd_data(base, updateinfo, fetcher, tmp, settings) as (data_url, reader):
                try:
                    parsed = parse_updateinfo(reader, fetched.skipped_advisories)
                    fetched.advisories = collect_advisories(parsed, limit)
                except (ParseError, TooLargeError) as exc:
                    raise FetchError(data_url, str(exc)) from None
    return fetched


@contextmanager
def _open_rpmmd_data(
    base: str, entry: RepoMdEntry, fetcher: Fetcher, tmp: Path, settings: Settings
) -> Iterator[tuple[str, IO[bytes]]]:
    """Download one repomd entry, verify it, and yield (its URL, a decompressing reader)."""
    url = urljoin((entry.location_base or base).rstrip("/") + "/", entry.location)
    try:
        hashlib.new(entry.hashlib_name)
    except ValueError:
        raise FetchError(url, f"unsupported checksum type {entry.checksum_type!r}") from None
    limit = cap(url, entry.size, settings)
    dest = tmp / entry.type
    download = fetcher.fetch(url, dest, max_bytes=limit, hash_name=entry.hashlib_name)
    assert download.path is not None
    try:
        check_download(download, entry.size, entry.checksum_type, entry.checksum, "repomd.xml")
        kind = "auto" if entry.compression == "plain" else entry.compression
        with (
            download.path.open("rb") as raw,
            open_decompressed(raw, kind, settings.max_index_bytes, name=url) as reader,
        ):
            yield url, reader
    finally:
        dest.unlink(missing_ok=True)
