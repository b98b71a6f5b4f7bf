"""What every report protocol shares: protocol names, field limits and normalisations.

The limits are those of ``schemas/report-v1.json``, applied to every protocol so that
what reaches the store has one shape whatever door it came through; the helpers here
apply the normalisations the package docstring lists (host names, epochs, tags,
printable repositories), so that one host reporting through two protocols yields the
same rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import VersionError
from patchwatch.domain.limits import MAX_EPOCH
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedUpdate
from patchwatch.domain.versions import join_alpm
from patchwatch.domain.versions_alpm import alpm_sort_key

PATCHMAN_AGENT = "patchman-client"

# Limits: those of schemas/report-v1.json, applied to every protocol so that what
# reaches the store has one shape whatever door it came through (the package and URL
# limits are patchwatch.domain.limits', which mirror data shares).
MAX_HOST = 253
MAX_OS_ID = 64
MAX_OS_STRING = 1024
MAX_KERNEL = 256
MAX_TAGS = 64
MAX_TAG = 64
MAX_PACKAGES = 100_000
MAX_REPOSITORIES = 10_000
MAX_REPO_ID = 512
MAX_REPO_NAME = 512
MAX_URLS = 64
MAX_REPO_TAG = 64  # an apk repository tag (``@edge`` in /etc/apk/repositories, without @)
MAX_PINNED = 10_000  # names a world file pins to one tag
MAX_SUITE = 256
MAX_SIGNED_BY = 4096
MAX_PRIORITY = 100_000
MAX_MODULES = 10_000
MAX_MODULE_FIELD = 64
MAX_MODULE_PACKAGES = 10_000
MAX_MODULE_PACKAGE = 512
MAX_UPDATES = 100_000
MAX_HELD = 10_000
MAX_SOURCES = 100_000  # one per installed package at most
MAX_AGENT_FIELD = 64
MAX_WARNINGS = 100
MAX_WARNING = 1024


HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
CPE_SUFFIX_RE = re.compile(r"\s*\[[^\[\]]*\]$")
PACKAGE_KINDS: Mapping[str, PackageKind] = {kind.value: kind for kind in PackageKind}


def parse_hostname(text: str, where: str = "host") -> tuple[str, str]:
    """Return ``(fqdn, domain)``: the host name lower-cased, and the text after its first dot.

    The host name is the key of a host across reports, protocols and the operator's
    commands (``token create --host``), so it is normalised once, here, for all of
    them. The rule is the schema's (a letter, digit or underscore, then letters,
    digits, ``_ . -``; at most 253 characters), which rules out empty names, spaces
    and control characters; one trailing dot (absolute FQDN) is dropped, so ``web3.``
    is ``web3``; an empty label (``web1..``, ``a..b``) is refused rather than kept as
    another host.

    :raises ParseError: when the name is not a valid host name.
    """
    if not isinstance(text, str):
        raise ParseError("must be a string", where)
    if not text:
        raise ParseError("empty host name", where)
    if len(text) > MAX_HOST:
        raise ParseError(f"host name longer than {MAX_HOST} characters", where)
    if not HOST_RE.fullmatch(text):
        raise ParseError(
            "not a host name: letters, digits, '_', '.' and '-' only, not starting with '.' or '-'",
            where,
        )
    fqdn = text.lower()
    if fqdn.endswith("."):
        fqdn = fqdn[:-1]
    if ".." in fqdn or fqdn.endswith("."):
        raise ParseError("not a host name: an empty label ('..')", where)
    _, _, domain = fqdn.partition(".")
    return fqdn, domain


def json_integer(value: object, where: str) -> int:
    """A JSON number with no fraction (5.0 counts, a bool does not), within
    ±:data:`MAX_PRIORITY`: a repository priority, in the native and protocol 2 reports."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError("must be an integer", where)
    if isinstance(value, float) and not value.is_integer():
        raise ParseError("must be an integer", where)
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ParseError(f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", where)
    return int(value)


def storable(value: str, where: str) -> None:
    """Reject text that SQLite/PostgreSQL cannot store: NUL and lone surrogates.

    Checked on whole fields so that a 1,500-line ``packages`` field costs two scans.
    """
    if "\x00" in value:
        raise ParseError("contains a NUL character", _where_at(where, value, value.index("\x00")))
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ParseError(
                "contains a lone surrogate (not UTF-8)", _where_at(where, value, exc.start)
            ) from None


def _where_at(where: str, text: str, index: int) -> str:
    """Name the line of a multi-line field ("packages line 3"), or the field itself."""
    if "\n" not in text:
        return where
    line = text.count("\n", 0, index) + 1
    return f"{where} line {line}"


def canonical_epoch(epoch: str, kind: PackageKind, where: str) -> str:
    """Canonical epoch: deb and pacman "" for 0, rpm "0" for none (as dpkg, pacman and rpm
    print them); apk versions have none."""
    if not epoch:
        return "0" if kind is PackageKind.RPM else ""
    if len(epoch) > MAX_EPOCH or not (epoch.isascii() and epoch.isdigit()):
        raise ParseError("epoch must be up to 16 digits", where)
    value = epoch.lstrip("0")
    if not value:
        return "0" if kind is PackageKind.RPM else ""
    if kind is PackageKind.APK:
        raise ParseError("apk versions have no epoch", where)
    return value


CHECKED_KINDS = frozenset({PackageKind.ARCH, PackageKind.APK})
"""Kinds whose version fields :func:`check_version` checks when a report is parsed."""


def check_version(kind: PackageKind, version: str, release: str, where: str) -> None:
    """Refuse a pacman or apk version its ordering cannot place, so the report gets a 400
    rather than the update computation an error.

    pacman: ``pkgver`` and ``pkgrel`` must read back as the same fields
    (``split_alpm``: no ``-`` or ``:`` in the pkgver, none in the pkgrel) and be a
    version ``patchwatch.domain.versions_alpm`` accepts. apk: the whole version is in
    ``version`` (``1.2.3-r4``), so ``release`` must be empty. dpkg and rpm accept every
    bounded string (``patchwatch.domain.versions``) and are not checked here.
    """
    if kind is PackageKind.APK:
        if release:
            raise ParseError(
                "apk versions are sent whole in version (1.2.3-r4), release empty", where
            )
        return
    if kind is not PackageKind.ARCH:
        return
    if "-" in version or ":" in version:
        raise ParseError("a pacman pkgver holds no '-' or ':' (epoch and pkgrel are fields)", where)
    if "-" in release or ":" in release:
        raise ParseError("a pacman pkgrel holds no '-' or ':'", where)
    try:
        alpm_sort_key(join_alpm("", version, release))
    except VersionError as exc:
        raise ParseError(str(exc), where) from None


def text_limit(value: str, where: str, max_len: int, *, required: bool) -> str:
    """Check one string pulled out of a form or Patchman JSON."""
    if required and not value:
        raise ParseError("must not be empty", where)
    if len(value) > max_len:
        raise ParseError(f"longer than {max_len} characters", where)
    return value


def merge_updates(
    security: list[ReportedUpdate], other: list[ReportedUpdate]
) -> tuple[ReportedUpdate, ...]:
    """Security entries first; a bugfix entry for the same name/arch/version is dropped.

    yum lists security updates in both lists; the security flag wins (reference 3.7).
    """
    seen: dict[tuple[str, str, str], ReportedUpdate] = {}
    for update in (*security, *other):
        seen.setdefault((update.name, update.arch, update.version), update)
    return tuple(seen.values())


def split_tags(text: str) -> tuple[str, ...]:
    """Patchman tags: the sample config says space-delimited, the server splits on ','.

    Both separators are honoured, so ``tags="web db"`` gives the two tags users meant.
    """
    return tuple(dict.fromkeys(t for t in re.split(r"[,\s]+", text) if t))


def check_tags(tags: tuple[str, ...], where: str) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise ParseError(f"more than {MAX_TAGS} tags", where)
    for tag in tags:
        if len(tag) > MAX_TAG:
            raise ParseError(f"tag longer than {MAX_TAG} characters: {tag[:20]!r}...", where)
        if not tag.isprintable():
            raise ParseError(f"tag {tag!r} contains a control character", where)
    return tags


def printable_repository(repo: ReportedRepository, where: str) -> ReportedRepository:
    """Refuse a repository whose id, name, suite, component, architecture or URLs hold a
    line break, tab or other control character.

    These strings become the repository's key, its label in listings, metric label
    values and CSV cells, and are shown on operators' terminals: a line break in one
    forges a line of output (the CLI escapes what it shows; this keeps them out).
    """
    for name in ("id", "name", "suite", "component", "arch", "mirrorlist", "metalink"):
        value = getattr(repo, name)
        if not value.isprintable():
            raise ParseError("contains a line break or other control character", f"{where}.{name}")
    for url in repo.urls:
        if not url.isprintable():
            raise ParseError("contains a line break or other control character", f"{where}.urls")
    return repo


def os_variant(os_string: str) -> str:
    """The detailed OS description ("Rocky Linux 9.5 (Blue Onyx)"): the string minus its CPE."""
    return CPE_SUFFIX_RE.sub("", os_string)


def counts(counter: Mapping[str, int]) -> str:
    return ",".join(f"{key}={counter[key]}" for key in sorted(counter))
