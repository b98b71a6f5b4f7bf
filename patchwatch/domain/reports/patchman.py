"""Rules both Patchman protocols share: ``%2b`` decoding, priorities, repositories,
packages, and the ``extra`` entries for what was skipped.

Patchman's protocol 1 (a form of quoted lines) and protocol 2 (JSON) carry the same
fields in two syntaxes; what those fields mean is read here, once.
"""

from __future__ import annotations

import json
import re

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_ARCH
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_RELEASE
from patchwatch.domain.limits import MAX_URL
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.records import Package
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.reports.fields import CHECKED_KINDS
from patchwatch.domain.reports.fields import MAX_PRIORITY
from patchwatch.domain.reports.fields import MAX_REPO_ID
from patchwatch.domain.reports.fields import MAX_REPO_NAME
from patchwatch.domain.reports.fields import MAX_URLS
from patchwatch.domain.reports.fields import PACKAGE_KINDS
from patchwatch.domain.reports.fields import canonical_epoch
from patchwatch.domain.reports.fields import check_version
from patchwatch.domain.reports.fields import counts
from patchwatch.domain.reports.fields import printable_repository
from patchwatch.domain.reports.fields import text_limit

_PCT2B_RE = re.compile("%2b", re.IGNORECASE)
_PRIORITY_RE = re.compile(r"\s*([+-]?[0-9]{1,7})(?:\s*\([^()]*\))?\s*")
UNSUPPORTED_TYPES = frozenset({"gentoo"})


def pct2b(value: str) -> str:
    """Undo the Patchman client's ``+`` -> ``%2b`` temp-file encoding (rpm fields).

    ``%`` is valid in neither deb nor rpm names and versions, so this is never lossy.
    """
    return _PCT2B_RE.sub("+", value) if "%" in value else value


def parse_priority(text: str, where: str) -> int | None:
    """Parse a priority token; None when it is not one.

    zypper may print ``99 (default)``-style annotations; they are ignored.
    """
    match = _PRIORITY_RE.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ParseError(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", where)
    return value


def rpm_repository(
    kind: RepoKind, name: str, repo_id: str, priority: int, urls: list[str], where: str
) -> ReportedRepository:
    """One yum/dnf or zypper repository; yum's lower-is-preferred priority is negated.

    The client mixes ``Repo-mirrors``/``Repo-metalink`` URLs into the baseurl list;
    they are told apart by their well-known shapes (``.../metalink?...``,
    ``.../mirrorlist...``, ``.../mirror.list``) so the server can follow them.
    """
    baseurls: list[str] = []
    mirrorlist = metalink = ""
    for url in urls:
        text_limit(url, where, MAX_URL, required=True)
        lowered = url.lower()
        if not metalink and "metalink" in lowered:
            metalink = url
        elif not mirrorlist and ("mirrorlist" in lowered or lowered.endswith("mirror.list")):
            mirrorlist = url
        else:
            baseurls.append(url.rstrip("/") or url)
    if len(baseurls) > MAX_URLS:
        raise ParseError(f"more than {MAX_URLS} URLs", where)
    repo_id = repo_id or name
    text_limit(repo_id, where, MAX_REPO_ID, required=True)
    text_limit(name, where, MAX_REPO_NAME, required=False)
    repo = ReportedRepository(
        kind=kind,
        id=repo_id,
        name=name or repo_id,
        urls=tuple(dict.fromkeys(baseurls)),
        priority=-priority,
        mirrorlist=mirrorlist,
        metalink=metalink,
    )
    return printable_repository(repo, where)


def deb_repository(name: str, priority: int, url: str, where: str) -> ReportedRepository:
    """One apt repository from Patchman's ``.../dists/SUITE/COMPONENT/binary-ARCH`` URL.

    The id is built as the native agent builds it (``uri suite component``) so a host
    that moves from the Patchman client to the agent keeps its repositories; ``urls``
    holds the archive root, from which the server finds ``dists/SUITE/InRelease``.
    Flat repositories (``deb URI ./``) arrive as ``URI/./`` and get suite ``./``.
    """
    text_limit(url, where, MAX_URL, required=True)
    text_limit(name, where, MAX_REPO_NAME, required=False)
    clean = url.rstrip("/")
    # .../debian/dists/bookworm/main/binary-amd64, .../dists/stretch/updates/main/...;
    # string operations rather than a regex: linear on hostile 2,000-character URLs.
    cut = clean.rfind("/dists/")
    parts = clean[cut + 7 :].split("/") if cut > 0 else []
    if len(parts) >= 3 and parts[-1].startswith("binary-") and all(parts):
        base = clean[:cut].rstrip("/") or clean[:cut]
        suite, component, arch = "/".join(parts[:-2]), parts[-2], parts[-1][7:]
    else:
        base = clean[:-2] if clean.endswith("/.") else clean
        base = base.rstrip("/") or base
        suite, component, arch = "./", "", ""
    repo_id = " ".join(part for part in (base, suite, component) if part)
    if len(repo_id) > MAX_REPO_ID:
        raise ParseError(f"repository id (URL suite component) longer than {MAX_REPO_ID}", where)
    repo = ReportedRepository(
        kind=RepoKind.DEB,
        id=repo_id,
        name=name or repo_id,
        urls=(base,),
        priority=priority,
        suite=suite,
        component=component,
        arch=arch,
    )
    return printable_repository(repo, where)


def arch_repository(
    name: str, repo_id: str, urls: list[str], host_arch: str, where: str
) -> ReportedRepository:
    """One pacman repository: ``'arch' 'NAME' 'ID' 'URL1' ['URL2' ...]`` (reference 1.5, 2.3).

    The stock client expands each ``Server =`` line with a shell in which ``$arch`` is
    empty, so the stock mirror layout ``.../$repo/os/$arch`` arrives as ``.../core/os/``;
    such a URL gets the host's architecture back (the repository's name ends with it
    too), which is the URL the agent reports for the same mirror. The client lists
    repositories from a bash associative array, in no defined order, so pacman.conf's
    order (which decides between two repositories offering one name) is unknown: every
    repository gets priority 0, and the newest version offered wins.
    """
    repo_id = repo_id or name
    text_limit(repo_id, where, MAX_REPO_ID, required=True)
    text_limit(name, where, MAX_REPO_NAME, required=False)
    text_limit(host_arch, where, MAX_ARCH, required=False)
    expanded: list[str] = []
    for url in urls:
        text_limit(url, where, MAX_URL, required=True)
        clean = url.rstrip("/") or url
        if host_arch and clean.endswith("/os"):
            clean = f"{clean}/{host_arch}"
        expanded.append(clean)
    if not expanded:
        raise ParseError("an arch repository needs a URL", where)
    if len(expanded) > MAX_URLS:
        raise ParseError(f"more than {MAX_URLS} URLs", where)
    repo = ReportedRepository(
        kind=RepoKind.ARCH,
        id=repo_id,
        name=name or repo_id,
        urls=tuple(dict.fromkeys(expanded)),
        priority=0,
        arch=host_arch,
    )
    return printable_repository(repo, where)


def make_package(
    fields: list[str] | tuple[str, ...], where: str, skipped: dict[str, int]
) -> Package | None:
    """Build one package from Patchman's (name, epoch, version, release, arch, type).

    ``arch`` packages are pacman's (``epoch:pkgver-pkgrel`` split by the client);
    ``apk`` is no Patchman type but is read the same way (version whole, as the
    native report sends it).
    """
    name, epoch, version, release, arch, ptype = fields[:6]
    kind = PACKAGE_KINDS.get(ptype)
    if kind is None:
        if ptype in UNSUPPORTED_TYPES:
            skipped[ptype] = skipped.get(ptype, 0) + 1
            return None
        raise ParseError(f"unknown package type {ptype[:20]!r} (deb, rpm, arch, gentoo)", where)
    if name == "gpg-pubkey":  # rpm's imported keys, not packages (Patchman skips them too)
        return None
    if "%" in name or "%" in version or "%" in release:
        name, version, release = pct2b(name), pct2b(version), pct2b(release)
    if not name or len(name) > MAX_PACKAGE_NAME:
        raise ParseError(f"package name must be 1 to {MAX_PACKAGE_NAME} characters", where)
    if not version or len(version) > MAX_VERSION:
        raise ParseError(f"version must be 1 to {MAX_VERSION} characters", where)
    if len(release) > MAX_RELEASE:
        raise ParseError(f"release longer than {MAX_RELEASE} characters", where)
    if not arch or len(arch) > MAX_ARCH:
        raise ParseError(f"arch must be 1 to {MAX_ARCH} characters", where)
    epoch = canonical_epoch(epoch, kind, where)
    if kind in CHECKED_KINDS:
        check_version(kind, version, release, where)
    return Package(name, epoch, version, release, arch, kind)


def module_repositories(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``ReportedModule`` has no repository field: keep it in ``extra`` as JSON."""
    mapping = {name: repo for name, repo in pairs if repo}
    return {"module_repositories": json.dumps(mapping, sort_keys=True)} if mapping else {}


def skipped_extra(packages: dict[str, int], repos: dict[str, int]) -> dict[str, str]:
    extra: dict[str, str] = {}
    if packages:
        extra["skipped_packages"] = counts(packages)
    if repos:
        extra["skipped_repositories"] = counts(repos)
    return extra
