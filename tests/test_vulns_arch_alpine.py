"""Arch's security tracker and Alpine's secdb: pure readers, and the advisories they give.

The fixtures (tests/fixtures/vulns, see its README) are written in the published
formats with the quirks of the real documents; the expectations are read off them by
hand.
"""

from __future__ import annotations

import gzip
import json

import pytest

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.versions_apk import valid_apk
from patchwatch.domain.vulns.alpine_secdb import parse_secdb
from patchwatch.domain.vulns.arch_tracker import parse_arch_tracker
from patchwatch.domain.vulns.fixed_in import advisories_for
from patchwatch.domain.vulns.fixed_in import osv_fixes
from tests.support.paths import FIXTURES

VULNS = FIXTURES / "vulns"
ARCH, APK = PackageKind.ARCH, PackageKind.APK


def test_arch_tracker_fixed_groups_become_fixes_per_package() -> None:
    tracker = parse_arch_tracker((VULNS / "arch-tracker-all.json").read_bytes())
    got = [(f.id, f.name, f.epoch, f.version, f.release, f.severity) for f in tracker.fixes]
    assert got == [
        ("AVG-2843", "openssl", "", "3.3.2", "1", "High"),
        ("AVG-2843", "lib32-openssl", "", "3.3.2", "1", "High"),
        ("AVG-2850", "ttf-dejavu", "1", "2.37+18+g9b5d1b2f", "6.1", "Low"),
        ("AVG-2854", "curl", "", "8.11.1", "1", "Critical"),
    ]
    assert tracker.fixes[0].cves == ("CVE-2024-6119", "CVE-2024-5535")
    assert tracker.fixes[-1].title == "arbitrary code execution (ASA-202412-3, ASA-202412-4)"
    stats = tracker.stats
    assert (stats.read, stats.kept, stats.ignored) == (7, 4, 2)  # Vulnerable, Not affected
    assert dict(stats.skipped) == {"schema": 1, "version": 1}  # "bad pkg", "8.1."


def test_alpine_secdb_lists_fixed_versions_and_drops_never_affected() -> None:
    secdb = parse_secdb((VULNS / "alpine-secdb-v3.20-main.json").read_bytes())
    assert (secdb.distroversion, secdb.reponame) == ("v3.20", "main")
    got = [(f.name, f.version, f.cves) for f in secdb.fixes]
    assert got == [
        ("openssl", "3.3.2-r1", ("CVE-2024-6119",)),
        ("openssl", "3.3.1-r1", ("CVE-2024-5535", "GHSA-xxxx-yyyy-zzzz")),
        ("busybox", "1.36.1-r29", ("CVE-2023-42363", "CVE-2023-42364")),
        ("curl", "8.11.1-r0", ("CVE-2024-11053",)),
    ]
    assert {f.kind for f in secdb.fixes} == {APK} and {f.release for f in secdb.fixes} == {""}
    assert secdb.stats.read == 7
    assert dict(secdb.stats.skipped) == {"version": 1, "schema": 2}


@pytest.mark.parametrize(
    ("parse", "data", "error"),
    [
        (parse_arch_tracker, b"{not json", ParseError),
        (parse_arch_tracker, b'{"groups": []}', ParseError),
        (parse_secdb, b"[]", ParseError),
        (
            parse_secdb,
            json.dumps({"distroversion": "3.20", "reponame": "main", "packages": []}).encode(),
            ParseError,
        ),
        (
            parse_secdb,
            json.dumps({"distroversion": "v3.20", "reponame": "main"}).encode(),
            ParseError,
        ),
    ],
)
def test_documents_of_the_wrong_shape_are_refused_whole(parse, data: bytes, error: type) -> None:
    with pytest.raises(error):
        parse(data)


def test_size_is_bounded() -> None:
    with pytest.raises(TooLargeError):
        parse_arch_tracker(b"[]" + b" " * 100, max_bytes=50)
    with pytest.raises(TooLargeError):
        parse_secdb(b"{}" + b" " * 100, max_bytes=50)


@pytest.mark.parametrize(
    ("parse", "name"),
    [(parse_arch_tracker, "arch-tracker-all.json"), (parse_secdb, "alpine-secdb-v3.20-main.json")],
)
def test_a_compressed_document_reads_as_the_plain_one(parse, name: str) -> None:
    """Read as the other whole feeds are (KEV, the Debian tracker): gzip is undone within
    the same bound, so a mirror of the feed may serve it compressed."""
    plain = (VULNS / name).read_bytes()
    assert parse(gzip.compress(plain)) == parse(plain)
    with pytest.raises(TooLargeError):  # the bound holds for what it expands to
        parse(gzip.compress(plain + b" " * 4096), max_bytes=len(plain) + 100)


def test_advisories_reach_every_arch_the_repository_offers_and_nothing_else() -> None:
    fixes = parse_arch_tracker((VULNS / "arch-tracker-all.json").read_bytes()).fixes
    offered = [
        Package("openssl", "", "3.3.2", "1", "x86_64", ARCH),
        Package("ttf-dejavu", "1", "2.37+18+g9b5d1b2f", "6.1", "any", ARCH),
        Package("bash", "", "5.2.037", "1", "x86_64", ARCH),
    ]
    advisories = advisories_for(fixes, offered)
    assert [(a.id, a.type, [p.nevra for p in a.packages]) for a in advisories] == [
        ("AVG-2843", "security", ["openssl-3.3.2-1.x86_64"]),
        ("AVG-2850", "security", ["ttf-dejavu-1:2.37+18+g9b5d1b2f-6.1.any"]),
    ]


def test_osv_fixed_events_become_fixes_and_reach_binaries_by_origin() -> None:
    ranges = '[["ECOSYSTEM",[["introduced","0"],["fixed","3.3.2-r1"]]]]'
    entries = [
        ("ALPINE-CVE-2024-9143", "CVE-2024-9143", "openssl: out of bounds", "openssl", ranges),
        ("ALPINE-BUGFIX-1", "", "not a vulnerability", "openssl", ranges),  # no identities
        ("ALPINE-CVE-2024-1", "CVE-2024-1", "", "zlib",
         '[["ECOSYSTEM",[["introduced","0"],["fixed","not a version!"]]]]'),
    ]  # fmt: skip
    fixes = osv_fixes(entries, APK, valid_apk)
    assert [(f.id, f.name, f.version, f.cves) for f in fixes] == [
        ("ALPINE-CVE-2024-9143", "openssl", "3.3.2-r1", ("CVE-2024-9143",))
    ]
    offered = [
        Package("libcrypto3", "", "3.3.2-r1", "", "x86_64", APK),
        Package("libcrypto3", "", "3.3.2-r1", "", "aarch64", APK),
        Package("zlib", "", "1.3.1-r1", "", "x86_64", APK),
    ]
    (advisory,) = advisories_for(fixes, offered, {"openssl": {"libcrypto3", "libssl3"}})
    assert [p.nevra for p in advisory.packages] == [
        "libcrypto3-3.3.2-r1.aarch64",
        "libcrypto3-3.3.2-r1.x86_64",
    ]
    assert advisories_for(fixes, offered) == []  # by name alone: openssl is not offered
