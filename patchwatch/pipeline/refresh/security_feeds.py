"""The security feeds a pacman or apk refresh reads beside the index.

Arch's tracker JSON and Alpine's secdb documents are named by the settings
(``arch_security_tracker``, ``apk_secdb``). A URL is read from the last good copy the
``refresh_security_feeds`` job fetched (``patchwatch.pipeline.securityfeeds``; before
the first one the feed says nothing yet); a local path is read from the file. Each
feed's SHA-256 is kept in the mirror's checksum beside the index's, so a new copy
re-classifies the updates even when the index has not changed, and a local feed that
cannot be read or parsed fails the refresh (the last good data, advisories included,
is kept) rather than clearing them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from patchwatch.domain.errors import FetchError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import PackageKind
from patchwatch.domain.versions_apk import valid_apk
from patchwatch.domain.vulns.alpine_secdb import MAX_SECDB_BYTES
from patchwatch.domain.vulns.alpine_secdb import SecDb
from patchwatch.domain.vulns.alpine_secdb import parse_secdb
from patchwatch.domain.vulns.arch_tracker import MAX_TRACKER_BYTES
from patchwatch.domain.vulns.arch_tracker import parse_arch_tracker
from patchwatch.domain.vulns.feeds import is_url
from patchwatch.domain.vulns.fixed_in import FixedIn
from patchwatch.domain.vulns.fixed_in import osv_fixes
from patchwatch.store.osv_fixes import ecosystem_entries
from patchwatch.store.security_feeds import stored_copy

NONE = "-"  # the checksum part of "no feed"
_ALPINE_BRANCH = re.compile(r"^v[0-9]+\.[0-9]+$")


def read_local(path: str, limit: int, setting: str) -> bytes:
    """A local feed file's bytes; ``FetchError`` when unreadable or above ``limit``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise FetchError(path, f"cannot read ({setting}): {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FetchError(path, f"larger than {limit} bytes ({setting})")
    return data


def digest(parts: Sequence[bytes]) -> str:
    """One SHA-256 over the feeds' bytes, or ``-`` when there is none."""
    if not parts:
        return NONE
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def arch_tracker(path: str) -> tuple[str, list[FixedIn] | None]:
    """(digest, fixes) of ``arch_security_tracker``; fixes None when it is not set."""
    if not path:
        return NONE, None
    if is_url(path):
        copy = stored_copy(path)
        if copy is None:
            return NONE, None  # not fetched yet
        data = copy[1]
    else:
        data = read_local(path, MAX_TRACKER_BYTES, "arch_security_tracker")
    try:
        return digest([data]), parse_arch_tracker(data).fixes
    except (ParseError, TooLargeError) as exc:
        raise FetchError(path, f"unreadable Arch security tracker JSON: {exc}") from None


def apk_secdb(paths: Sequence[str], mirror_url: str) -> tuple[str, list[FixedIn] | None]:
    """(digest, fixes) of the secdb documents of the mirror's branch and repository.

    A document applies when the mirror's URL ends in ``/<distroversion>/<reponame>``
    (``.../alpine/v3.20/main``); fixes None when no document applies.
    """
    if not paths:
        return NONE, None
    tail = "/".join(mirror_url.rstrip("/").split("/")[-2:])
    found: list[SecDb] = []
    used: list[bytes] = []
    for path in paths:
        if is_url(path):
            copy = stored_copy(path)
            if copy is None or copy[0] != tail:
                continue  # not fetched yet, or of another branch or repository
            data = copy[1]
        else:
            data = read_local(path, MAX_SECDB_BYTES, "apk_secdb")
        try:
            secdb = parse_secdb(data)
        except (ParseError, TooLargeError) as exc:
            raise FetchError(path, f"unreadable Alpine secdb: {exc}") from None
        if f"{secdb.distroversion}/{secdb.reponame}" == tail:
            found.append(secdb)
            used.append(data)
    if not found:
        return NONE, None
    return digest(used), [fix for secdb in found for fix in secdb.fixes]


def apk_osv(mirror_url: str) -> tuple[str, list[FixedIn] | None]:
    """(digest, fixes) of the stored OSV records of the mirror's Alpine branch.

    The ecosystem is ``Alpine:v3.20`` for a mirror whose URL ends in
    ``/v3.20/<repository>`` (edge has none); the records are those the vulnerability
    feeds (``vulns_osv_sources``) stored. Fixes None when there are none.
    """
    branch = mirror_url.rstrip("/").split("/")[-2:][0]
    if not _ALPINE_BRANCH.match(branch):
        return NONE, None
    entries = ecosystem_entries(f"Alpine:{branch}")
    if not entries:
        return NONE, None
    return digest([repr(entries).encode()]), osv_fixes(entries, PackageKind.APK, valid_apk)


def combined(*sums: str) -> str:
    """One checksum part for several feeds: the one there is, or a digest of them all."""
    present = [s for s in sums if s != NONE]
    if len(present) <= 1:
        return present[0] if present else NONE
    return digest([s.encode() for s in sums])
