"""Alpine's secdb (secdb.alpinelinux.org): the security fixes of one branch's repository.

Why this module exists: Alpine publishes no advisories in its repositories; the
security fixes of each package are the ``secfixes`` its maintainers write in the
APKBUILD, collected per branch and repository into one JSON document
(``https://secdb.alpinelinux.org/v3.20/main.json``)::

    {"distroversion": "v3.20", "reponame": "main", "archs": ["x86_64", ...],
     "urlprefix": "https://dl-cdn.alpinelinux.org/alpine", "apkurl": "...",
     "packages": [{"pkg": {"name": "openssl",
                           "secfixes": {"3.3.2-r1": ["CVE-2024-6119"],
                                        "0": ["CVE-2022-1343"]}}}]}

A version key is the apk version that fixes the listed issues (each entry a CVE or
other id, sometimes several separated by spaces); ``0`` lists issues that never
affected Alpine's package and fixes nothing. An update is a security update when it
reaches a listed version (``patchwatch.domain.vulns.fixed_in``). A package entry that
breaks this shape is skipped and counted; the document is refused whole when it is
not JSON, not an object, or says no branch and repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.errors import ParseError
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_VERSION
from patchwatch.domain.records import PackageKind
from patchwatch.domain.versions_apk import valid_apk
from patchwatch.domain.vulns.fixed_in import FixedIn
from patchwatch.domain.vulns.fixed_in import feed_items
from patchwatch.domain.vulns.fixed_in import read_fixes
from patchwatch.domain.vulns.model import FeedStats

__all__ = ["MAX_SECDB_BYTES", "SecDb", "parse_secdb"]

#: Largest document accepted; v3.20/main.json is about 1 MB, community 0.5 MB.
MAX_SECDB_BYTES = 64 << 20
MAX_IDS = 1000  # issue ids of one fixed version
_BRANCH = re.compile(r"^(v[0-9]+\.[0-9]+|edge)$")
_REPO = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


@dataclass(frozen=True, slots=True)
class SecDb:
    """One secdb document: its branch, repository, and every fix it lists."""

    distroversion: str
    reponame: str
    fixes: list[FixedIn]
    stats: FeedStats = field(default_factory=FeedStats)


def parse_secdb(data: bytes, max_bytes: int = MAX_SECDB_BYTES) -> SecDb:
    """Read one secdb JSON document (see the module docstring)."""
    doc = feed_items(data, "secdb document", max_bytes, dict, "an object")
    branch, repo = doc.get("distroversion"), doc.get("reponame")
    if not isinstance(branch, str) or not _BRANCH.match(branch):
        raise ParseError(f"distroversion {str(branch)[:40]!r} is not an Alpine branch")
    if not isinstance(repo, str) or not _REPO.match(repo):
        raise ParseError(f"reponame {str(repo)[:40]!r} is not a repository name")
    items = doc.get("packages")
    if not isinstance(items, list):
        raise ParseError("packages is not a list")

    def package(item: object, stats: FeedStats) -> list[FixedIn] | None:
        pkg = item.get("pkg") if isinstance(item, dict) else None
        name = pkg.get("name") if isinstance(pkg, dict) else None
        secfixes = pkg.get("secfixes") if isinstance(pkg, dict) else None
        if not isinstance(name, str) or not 0 < len(name) <= MAX_PACKAGE_NAME:
            stats.skip("schema", f"{str(name)[:60]!r}: no package name")
            return None
        if not isinstance(secfixes, dict):
            stats.skip("schema", f"{name[:60]}: secfixes is not an object")
            return None
        return _fixes(name, secfixes, branch, repo, stats)

    found = read_fixes(items, package)
    return SecDb(branch, repo, found.fixes, found.stats)


def _fixes(
    name: str, secfixes: dict[str, object], branch: str, repo: str, stats: FeedStats
) -> list[FixedIn] | None:
    out = []
    for version, ids in secfixes.items():
        if version == "0":
            continue  # issues that never affected Alpine's package
        if len(version) > MAX_VERSION or not valid_apk(version):
            stats.skip("version", f"{name[:60]}: {version[:60]!r} is not an apk version")
            return None
        if not isinstance(ids, list) or len(ids) > MAX_IDS:
            stats.skip("schema", f"{name[:60]} {version[:60]}: not a list of ids")
            return None
        cves: list[str] = []
        for entry in ids:
            words = entry.split() if isinstance(entry, str) else [""]
            if not all(_ID.match(word) for word in words):
                stats.skip("schema", f"{name[:60]} {version[:60]}: {str(entry)[:60]!r}")
                return None
            cves.extend(words)
        out.append(
            FixedIn(
                id=f"alpine-secdb:{branch}/{repo}:{name}-{version}",
                name=name,
                kind=PackageKind.APK,
                epoch="",
                version=version,
                release="",
                cves=tuple(dict.fromkeys(cves)),
                title=f"{name} {version} (secfixes)",
            )
        )
    return out
