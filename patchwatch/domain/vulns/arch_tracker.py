"""Arch Linux's security tracker (security.archlinux.org): AVG groups, ASA advisories.

Why this module exists: Arch has no security repository and its databases carry no
advisories; what says that an update fixes a vulnerability is the tracker. Its
``/issues/all.json`` (also ``/all.json``) is a list of vulnerability groups (AVG), each
covering packages of one pkgbase with the version found affected and the version that
fixes it::

    [{"name": "AVG-2843", "packages": ["openssl", "lib32-openssl"],
      "status": "Fixed", "severity": "High", "type": "arbitrary code execution",
      "affected": "3.3.1-1", "fixed": "3.3.2-1", "ticket": null,
      "issues": ["CVE-2024-6119"], "advisories": ["ASA-202409-1"]}]

``status`` is ``Vulnerable`` (no fix yet: ``fixed`` null), ``Fixed``, ``Not affected``
or ``Unknown``. A group with a ``fixed`` version becomes one fix per package (pacman's
``[epoch:]pkgver-pkgrel`` split into record fields), so an update that reaches it is a
security update (``patchwatch.domain.vulns.fixed_in``); groups without one are counted
as read and not kept. A group that breaks this shape (a version pacman's ordering
refuses, a package name or id that is not one) is skipped and counted; the document is
refused whole only when it is not a JSON list.
"""

from __future__ import annotations

import re

from patchwatch.domain.errors import VersionError
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.records import PackageKind
from patchwatch.domain.versions_alpm import alpm_sort_key
from patchwatch.domain.versions_alpm import split_alpm
from patchwatch.domain.vulns.fixed_in import FixedIn
from patchwatch.domain.vulns.fixed_in import Fixes
from patchwatch.domain.vulns.fixed_in import feed_items
from patchwatch.domain.vulns.fixed_in import read_fixes
from patchwatch.domain.vulns.model import FeedStats

__all__ = ["MAX_TRACKER_BYTES", "ArchTracker", "parse_arch_tracker"]

#: Every fix the tracker lists, and what was read and skipped.
ArchTracker = Fixes

#: Largest document accepted; all.json is about 2 MB.
MAX_TRACKER_BYTES = 64 << 20
MAX_LIST = 1000  # packages, issues or advisories of one group
_GROUP = re.compile(r"^AVG-[0-9]{1,9}$")
_ISSUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9@_+][a-z0-9@._+-]*$")
_SEVERITIES = frozenset({"Critical", "High", "Medium", "Low", "Unknown"})


def parse_arch_tracker(data: bytes, max_bytes: int = MAX_TRACKER_BYTES) -> ArchTracker:
    """Read the tracker's ``all.json`` (see the module docstring)."""
    doc = feed_items(data, "tracker document", max_bytes, list, "a list of groups")
    return read_fixes(doc, _group)


def _strings(value: object, pattern: re.Pattern[str]) -> list[str] | None:
    if not isinstance(value, list) or len(value) > MAX_LIST:
        return None
    if not all(isinstance(v, str) and len(v) <= MAX_PACKAGE_NAME and pattern.match(v)
               for v in value):  # fmt: skip
        return None
    return value


def _group(group: object, stats: FeedStats) -> list[FixedIn] | None:
    """The fixes of one AVG group, one per package; None when it is skipped."""
    if not isinstance(group, dict):
        stats.skip("schema", "a group that is not an object")
        return None
    name = group.get("name")
    if not isinstance(name, str) or not _GROUP.match(name):
        stats.skip("schema", f"{str(name)[:40]!r}: not an AVG id")
        return None
    fixed = group.get("fixed")
    if fixed is None or group.get("status") == "Not affected":
        stats.ignored += 1  # no fix to reach (yet): nothing to classify
        return None
    packages = _strings(group.get("packages"), _NAME)
    issues = _strings(group.get("issues", []), _ISSUE)
    advisories = _strings(group.get("advisories", []), _ISSUE)
    if not packages or issues is None or advisories is None:
        stats.skip("schema", f"{name}: packages, issues or advisories malformed")
        return None
    if not isinstance(fixed, str):
        stats.skip("schema", f"{name}: fixed is not a version")
        return None
    try:
        epoch, pkgver, pkgrel = split_alpm(fixed)
        alpm_sort_key(fixed)
    except VersionError as exc:
        stats.skip("version", f"{name}: {exc}")
        return None
    severity = group.get("severity")
    kind = group.get("type")
    title = f"{kind} ({', '.join(advisories)})" if advisories else str(kind or "")
    return [
        FixedIn(
            id=name,
            name=package,
            kind=PackageKind.ARCH,
            epoch="" if epoch == "0" else epoch.lstrip("0") or "",
            version=pkgver,
            release=pkgrel or "",
            cves=tuple(issues),
            severity=severity if isinstance(severity, str) and severity in _SEVERITIES else "",
            title=title[:500] if isinstance(kind, str) else "",
        )
        for package in packages
    ]
