"""Fetch and verify an Alpine mirror: ``ARCH/APKINDEX.tar.gz`` and its RSA signature.

An apk repository is a line of ``/etc/apk/repositories`` (the mirror's URL, such as
``https://dl-cdn.alpinelinux.org/alpine/v3.20/main``); apk reads
``URL/ARCH/APKINDEX.tar.gz`` for the host's architecture (the repository's ``arch``).
The index is fetched with a conditional GET and not parsed again when its SHA-256 is
the stored one. With ``apk_verify_signatures`` (the default) the index must carry a
signature by one of the keys of ``apk_keys`` that verifies
(``patchwatch.domain.repodata.apksign``), as apk requires of every index it does not
get with ``--allow-untrusted``; the stanzas' ``C:`` checksums are checked for shape by
the parser (they vouch for package files, which a refresh does not download).

Alpine's indexes carry no advisories: the secdb documents of ``apk_secdb`` whose
branch and repository the mirror's URL ends in, and the stored OSV records of the
branch's ecosystem (``Alpine:v3.20``, read by the vulnerability feeds), are stored as
the repository's security advisories (``patchwatch.domain.vulns.alpine_secdb``,
:mod:`.security_feeds`); both name source packages, so a fix reaches every binary
package of that origin.
"""

from __future__ import annotations

import logging
from pathlib import Path

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.apkindex import ApkPackage
from patchwatch.domain.repodata.apkindex import parse_apkindex
from patchwatch.domain.repodata.apkindex import read_signatures
from patchwatch.domain.repodata.apksign import load_keys
from patchwatch.domain.repodata.apksign import verify_apk_signature
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.settings import Settings
from patchwatch.domain.vulns.fixed_in import advisories_for
from patchwatch.pipeline.fetch import Fetcher
from patchwatch.pipeline.refresh.fetched import Fetched
from patchwatch.pipeline.refresh.fetched import Skip
from patchwatch.pipeline.refresh.fetched import collect
from patchwatch.pipeline.refresh.fetched import fetch_feed_index
from patchwatch.pipeline.refresh.security_feeds import apk_osv
from patchwatch.pipeline.refresh.security_feeds import apk_secdb
from patchwatch.pipeline.refresh.security_feeds import combined
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository

log = logging.getLogger(__name__)


def apk_record(package: ApkPackage) -> AvailablePackage:
    """An index stanza as the shared record: the whole version in ``version``."""
    record = PackageRecord(package.name, "", package.version, "", package.arch, PackageKind.APK)
    return AvailablePackage(record, source=package.origin, filename=package.filename)


def fetch_apk(
    mirror: Mirror, repo: Repository, fetcher: Fetcher, tmp: Path, settings: Settings, force: bool
) -> Fetched:
    """Fetch, verify and parse one mirror of one apk repository (module docstring)."""
    arch = repo.arch.strip()
    if not arch or "/" in arch or "," in arch:
        raise Skip("no single architecture known for this apk repository yet")
    url = f"{mirror.url.rstrip('/')}/{arch}/APKINDEX.tar.gz"
    secdb_sum, secdb_fixes = apk_secdb(settings.apk_secdb, mirror.url)
    osv_sum, osv_found = apk_osv(mirror.url)
    feed_sum = combined(secdb_sum, osv_sum)
    fixes = [*(secdb_fixes or ()), *(osv_found or ())]
    dest = tmp / "APKINDEX.tar.gz"
    fetched, download, unchanged = fetch_feed_index(
        fetcher, url, dest, mirror, settings, force, feed_sum, "APKINDEX"
    )
    if download.not_modified:
        return fetched
    if unchanged:
        fetched.note = "; APKINDEX unchanged"
        return fetched
    data = dest.read_bytes()
    if settings.apk_verify_signatures:
        # checked before anything the signature covers is parsed
        keys = load_keys(settings.apk_keys)
        if not keys:
            raise FetchError(
                url,
                "no Alpine public key to verify APKINDEX signatures with (set apk_keys to "
                "the keys of /etc/apk/keys, or turn apk_verify_signatures off for an "
                "unsigned local repository)",
            )
        try:
            signer = verify_apk_signature(read_signatures(data, url), keys)
        except ParseError as exc:
            raise FetchError(url, f"signature check failed: {exc.message}") from None
        fetched.note = f"; signed by {signer}"
    else:
        fetched.note = "; signature not checked (apk_verify_signatures off)"
    skipped = Skipped()
    try:
        index = parse_apkindex(
            data, settings.max_index_bytes,
            max_entries=settings.max_index_packages, skipped=skipped, name=url,
        )  # fmt: skip
    except (ParseError, TooLargeError) as exc:
        raise FetchError(url, str(exc)) from None
    packages: list[PackageRecord] = []
    collect(map(apk_record, index.packages), packages, settings.max_index_packages, "packages")
    fetched.packages, fetched.skipped_packages = packages, skipped
    origins: dict[str, set[str]] = {}
    for stanza in index.packages:
        if stanza.origin != stanza.name:
            origins.setdefault(stanza.origin, set()).add(stanza.name)
    fetched.advisories = advisories_for(fixes, packages, origins)
    return fetched
