"""Matching rules: OSV range evaluation, fixed versions, fix status, OS -> ecosystem, hosts.

Each rule is checked on small entries written for it; ``tests/test_vulns_oracles.py``
checks the same code against rpm and dpkg themselves on real version strings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import VersionError
from patchwatch.domain.osinfo import normalise_os
from patchwatch.domain.osinfo import parse_os_release
from patchwatch.domain.osinfo import parse_patchman_os
from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns import osv
from patchwatch.domain.vulns.ecosystems import Ordering
from patchwatch.domain.vulns.ecosystems import check_version
from patchwatch.domain.vulns.ecosystems import ecosystem_for_os
from patchwatch.domain.vulns.ecosystems import ordering_for
from patchwatch.domain.vulns.ecosystems import version_key
from patchwatch.domain.vulns.match import FeedIndex
from patchwatch.domain.vulns.match import FixStatus
from patchwatch.domain.vulns.match import assess
from patchwatch.domain.vulns.match import assess_host
from patchwatch.domain.vulns.match import entry_affects
from patchwatch.domain.vulns.match import entry_fix
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Event
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.model import Range
from patchwatch.domain.vulns.model import Record
from tests.support.vulns import FIXTURES

OS_RELEASE = Path(__file__).resolve().parent / "fixtures" / "reports" / "os-release"


def entry(*ranges: list[tuple[str, str]], versions: tuple[str, ...] = ()) -> Affected:
    return Affected(
        "Debian:12",
        "pkg",
        tuple(Range("ECOSYSTEM", tuple(Event(k, v) for k, v in r)) for r in ranges),
        versions,
    )


def affected(ordering: Ordering, version: str, e: Affected) -> bool:
    return entry_affects(ordering, version_key(ordering, version), e)


@pytest.mark.parametrize(
    ("e", "yes", "no"),
    [
        (entry([("introduced", "0"), ("fixed", "1.2-1")]), ["0.1", "1.1-9", "1.2~rc1-1"],
         ["1.2-1", "1.2-1+b1", "2.0"]),
        (entry([("introduced", "1.0"), ("fixed", "1.2")]), ["1.0", "1.1", "1.2~1"],
         ["0.9", "1.0~rc1", "1.2", "1:0.1"]),
        (entry([("introduced", "1.0"), ("last_affected", "1.2")]), ["1.0", "1.2"],
         ["0.9", "1.2-0.1", "1.2+b1"]),
        # several ranges, events in any order within the record
        (entry([("introduced", "0"), ("fixed", "1.0")], [("fixed", "2.1"), ("introduced", "2.0")]),
         ["0.5", "2.0", "2.0.9"], ["1.0", "1.5", "2.1", "3"]),
        (entry([("introduced", "2.0"), ("fixed", "2.1"), ("introduced", "0"), ("fixed", "1.0")]),
         ["0.5", "2.0"], ["1.5", "2.1"]),
        # an empty range: introduced and fixed at one version
        (entry([("introduced", "1.0"), ("fixed", "1.0")]), [], ["0.9", "1.0", "1.1"]),
        # limit: at or beyond it, out of the range
        (entry([("introduced", "0"), ("limit", "2.0")]), ["1.0", "1.9"], ["2.0", "2.1"]),
        # an open range (no fix) and a versions list alone
        (entry([("introduced", "0")]), ["0", "1.0", "99:1"], []),
        (entry(versions=("1.0-1", "1:2.0-1")), ["1.0-1", "1:2.0-1", "0:1.0-1"],
         ["1.0-2", "2.0-1"]),
    ],
)  # fmt: skip
def test_osv_range_evaluation(e: Affected, yes: list[str], no: list[str]) -> None:
    for v in yes:
        assert affected(Ordering.DPKG, v, e), v
    for v in no:
        assert not affected(Ordering.DPKG, v, e), v


def test_each_ecosystem_is_compared_in_its_own_ordering() -> None:
    rpm = Affected("AlmaLinux:9", "p", (Range("ECOSYSTEM", (Event("introduced", "0"),
                   Event("fixed", "1:1.0-1.el9"))),))  # fmt: skip
    assert affected(Ordering.RPM, "2.0-1.el9", rpm)  # epoch 0 < 1, whatever the version
    assert not affected(Ordering.RPM, "1:1.0-1.el9", rpm)
    assert not affected(Ordering.RPM, "1:1.0-1.el9^1", rpm)
    listed = Affected("AlmaLinux:9", "p", (), ("0:1.2-3.el9",))
    assert affected(Ordering.RPM, "1.2-3.el9", listed)  # one version, two spellings
    apk = Affected("Alpine:v3.23", "curl", (Range("ECOSYSTEM", (Event("introduced", "8.13.0"),
                   Event("fixed", "8.22.0-r0"))),))  # fmt: skip
    assert affected(Ordering.APK, "8.13.0-r1", apk)
    assert affected(Ordering.APK, "8.21.1_rc1-r0", apk)
    assert not affected(Ordering.APK, "8.12.9-r3", apk)
    assert not affected(Ordering.APK, "8.22.0-r0", apk)


def test_the_fix_is_the_event_that_ends_the_span() -> None:
    e = entry([("introduced", "0"), ("fixed", "1.0")], [("introduced", "2.0"), ("fixed", "2.1")])
    key = lambda v: version_key(Ordering.DPKG, v)  # noqa: E731
    assert entry_fix(Ordering.DPKG, key("0.5"), e) == "1.0"
    assert entry_fix(Ordering.DPKG, key("2.0.5"), e) == "2.1"
    assert entry_fix(Ordering.DPKG, key("1.5"), e) is None  # not affected
    last = entry([("introduced", "0"), ("last_affected", "1.0")])
    assert entry_fix(Ordering.DPKG, key("0.5"), last) is None


def test_fix_status() -> None:
    fixed = entry([("introduced", "0"), ("fixed", "1.2-1")])
    regression = entry([("introduced", "1.3-1"), ("fixed", "1.4-1")])
    d = Ordering.DPKG
    assert assess(d, "1.2-1", [fixed]) is None
    fixable = assess(d, "1.1-1", [fixed], ["1.0-1", "1.2-1", "1.2-2", "bad version"])
    assert fixable is not None
    assert (fixable.status, fixable.fixed_version, fixable.candidate) == (
        FixStatus.FIXABLE, "1.2-1", "1.2-2")  # fmt: skip
    assert fixable.matched == (0,)
    # the mirror offers nothing newer, or only versions still affected
    for offered in ([], ["1.0-1"], ["1.1-1"], ["1.1-2"]):
        verdict = assess(d, "1.1-1", [fixed], offered)
        assert verdict is not None and verdict.status is FixStatus.FIXED_UPSTREAM, offered
        assert verdict.candidate is None
    # the newest offered version is hit by another range: not one upgrade away
    verdict = assess(d, "1.1-1", [fixed, regression], ["1.3-1"])
    assert verdict is not None and verdict.status is FixStatus.FIXED_UPSTREAM
    assert verdict.matched == (0,)
    # no fix known anywhere
    open_range = entry([("introduced", "0")])
    verdict = assess(d, "1.1-1", [open_range], ["9.9"])
    assert verdict is not None and (verdict.status, verdict.fixed_version) == (
        FixStatus.NO_FIX,
        None,
    )
    # several entries: every fix is needed; one without a fix makes the fix unknown
    later = entry([("introduced", "0"), ("fixed", "1.3-1")])
    verdict = assess(d, "1.1-1", [fixed, later], ["1.2-1"])
    assert verdict is not None and verdict.fixed_version == "1.3-1"
    assert verdict.status is FixStatus.FIXED_UPSTREAM
    verdict = assess(d, "1.1-1", [fixed, open_range])
    assert verdict is not None and verdict.fixed_version is None
    # last_affected: a later version offered is the fix, though no record names it
    last = entry([("introduced", "0"), ("last_affected", "1.1-1")])
    verdict = assess(d, "1.1-1", [last], ["1.1-2"])
    assert verdict is not None and (verdict.status, verdict.candidate) == (
        FixStatus.FIXABLE,
        "1.1-2",
    )
    with pytest.raises(VersionError):
        assess(d, "1.0 beta", [fixed])


ECOSYSTEMS = {
    "almalinux-9.4": "AlmaLinux:9",
    "alpine-3.20": "Alpine:v3.20",
    "debian-12": "Debian:12",
    "debian-testing": "Debian:13",
    "opensuse-leap-15.5": "openSUSE:Leap 15.5",
    "opensuse-tumbleweed": "openSUSE:Tumbleweed",
    "rhel-9.4": "Red Hat:enterprise_linux:9",
    "rocky-9.4": "Rocky Linux:9",
    "sles-15-sp5": "SUSE:Linux Enterprise 15 SP5",
    "ubuntu-24.04": "Ubuntu:24.04",
    # no OSV ecosystem of their own, or not mapped yet: not matched rather than wrongly
    # Arch publishes no OSV feed: its security comes from the Arch security tracker
    "arch": None,
    "manjaro": None,
    "amzn-2": None,
    "amzn-2023": None,
    "centos-7": None,
    "centos-stream-9": None,
    "fedora-40": None,
    "linuxmint-21.3": None,
    "oracle-9.4": None,
}


def test_every_os_release_fixture_maps_as_documented() -> None:
    assert {p.name for p in OS_RELEASE.iterdir()} == set(ECOSYSTEMS)
    for name, want in ECOSYSTEMS.items():
        host = ecosystem_for_os(normalise_os(parse_os_release((OS_RELEASE / name).read_text())))
        assert (host.label if host else None) == want, name


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Rocky Linux 9.5 (Blue Onyx) [cpe:/o:rocky:rocky:9::baseos]", "Rocky Linux:9"),
        ("Debian 12.8", "Debian:12"),
        ("Ubuntu 22.04.4 LTS", "Ubuntu:22.04"),
        ("AlmaLinux 8.10 (Cerulean Leopard)", "AlmaLinux:8"),
        ("SUSE Linux Enterprise Server 15 SP6", "SUSE:Linux Enterprise 15 SP6"),
        ("Debian trixie-sid", "Debian:13"),
    ],
)
def test_patchman_clients_map_the_same_way(text: str, label: str) -> None:
    host = ecosystem_for_os(parse_patchman_os(text))
    assert host is not None and host.label == label


READS = [  # os-release, ecosystems the host reads, ecosystems it does not
    ('ID="rhel"\nVERSION_ID="9.4"',
     ["Red Hat:enterprise_linux:9::appstream", "Red Hat:enterprise_linux:9::baseos"],
     ["Red Hat:rhel_eus:9.4::appstream", "Red Hat:enterprise_linux:8::appstream"]),
    ('ID=ubuntu\nVERSION_ID="22.04"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"',
     ["Ubuntu:22.04:LTS", "Ubuntu:22.04"], ["Ubuntu:Pro:22.04:LTS"]),
    ('ID="sles"\nVERSION_ID="15.5"',
     ["SUSE:Linux Enterprise Server 15 SP5", "SUSE:Linux Enterprise Module for Basesystem 15 SP5"],
     ["SUSE:Linux Enterprise Server 15 SP4", "openSUSE:Leap 15.5"]),
    ('ID="sles"\nVERSION_ID="15"',
     ["SUSE:Linux Enterprise Server 15"], ["SUSE:Linux Enterprise Server 15 SP5"]),
]  # fmt: skip


def _host(text: str):
    h = ecosystem_for_os(normalise_os(parse_os_release(text)))
    assert h is not None
    return h


@pytest.mark.parametrize(("text", "reads", "ignores"), READS)
def test_which_ecosystems_a_host_reads(text: str, reads: list[str], ignores: list[str]) -> None:
    host = _host(text)
    assert all(host.accepts(eco) for eco in reads)
    assert not any(host.accepts(eco) for eco in ignores)


def test_alpine_and_debian_unstable_hosts() -> None:
    alpine = _host("ID=alpine\nVERSION_ID=3.20.3")
    assert alpine.label == "Alpine:v3.20" and alpine.ordering is Ordering.APK
    assert ecosystem_for_os(normalise_os({"id": "debian", "version_codename": "sid"})) is None


def test_ordering_of_each_ecosystem() -> None:
    assert ordering_for("Debian:12") is ordering_for("Ubuntu:Pro:22.04:LTS") is Ordering.DPKG
    for eco in ("AlmaLinux:9", "Rocky Linux:9", "Red Hat:enterprise_linux:9::baseos",
                "SUSE:Linux Enterprise Server 15 SP5", "openSUSE:Leap 15.5"):  # fmt: skip
        assert ordering_for(eco) is Ordering.RPM, eco
    assert ordering_for("Alpine:v3.20") is Ordering.APK
    for eco in ("PyPI", "npm", "Fedora:40", "Mageia:9", ""):
        assert ordering_for(eco) is None, eco


# --- a host against a feed -------------------------------------------------------------------


def fixture_index(*folders: str) -> FeedIndex:
    stats = FeedStats()
    records = []
    for folder in folders:
        records += osv.load_records(archive.iter_folder(FIXTURES / folder, stats), stats)
    return FeedIndex(records)


def test_a_debian_host_counts_each_cve_once_with_its_status() -> None:
    index = fixture_index("debian")
    host = ecosystem_for_os(normalise_os({"id": "debian", "version_id": "12"}))
    assert host is not None
    installed = {
        "glibc": ["2.36-9+deb12u2"],
        "php-league-commonmark": ["2.3.9-1+deb12u1"],
        "zlib": ["1:1.2.13.dfsg-1"],
        "bind9": ["1:9.18.19-1~deb12u1"],
        "tar": ["1.34+dfsg-1.2+deb12u1"],
        "openssl": ["3.0.19-1~deb12u2"],  # named by no record
    }
    offered = {"glibc": ["2.36-9+deb12u3", "2.36-9+deb12u14"], "bind9": ["1:9.18.19-1~deb12u1"]}
    findings = {f.vulnerability: f for f in assess_host(host, installed, index, offered)}
    assert set(findings) == {
        "CVE-2023-4527", "CVE-2023-4911",  # glibc: DSA-5514-1 and DEBIAN-CVE-2023-4911
        "CVE-2024-58382", "CVE-2023-45853",  # open, no fix
        "CVE-2023-4408", "CVE-2023-50387", "CVE-2023-50868", "CVE-2023-5517", "CVE-2023-5679",
    }  # fmt: skip
    glibc = findings["CVE-2023-4911"]
    assert glibc.status is FixStatus.FIXABLE
    (package,) = glibc.packages
    assert package.records == ("DEBIAN-CVE-2023-4911", "DSA-5514-1")
    assert (package.fixed_version, package.candidate) == ("2.36-9+deb12u3", "2.36-9+deb12u14")
    assert findings["CVE-2023-4527"].packages[0].records == ("DSA-5514-1",)
    assert findings["CVE-2024-58382"].status is FixStatus.NO_FIX
    assert findings["CVE-2023-45853"].status is FixStatus.NO_FIX
    assert findings["CVE-2023-50387"].status is FixStatus.FIXED_UPSTREAM
    assert findings["CVE-2023-50387"].packages[0].fixed_version == "1:9.18.24-1"


def test_an_ubuntu_host_reads_its_release_not_pro() -> None:
    index = fixture_index("ubuntu")
    jammy = ecosystem_for_os(normalise_os({"id": "ubuntu", "version_id": "22.04"}))
    focal = ecosystem_for_os(normalise_os({"id": "ubuntu", "version_id": "20.04"}))
    assert jammy is not None and focal is not None
    found = assess_host(
        jammy, {"glibc": ["2.35-0ubuntu3.1"]}, index, {"glibc": ["2.35-0ubuntu3.4"]}
    )
    assert [(f.vulnerability, f.status) for f in found] == [
        ("CVE-2023-4527", FixStatus.FIXABLE),
        ("CVE-2023-4806", FixStatus.FIXABLE),
        ("CVE-2023-4911", FixStatus.FIXABLE),
    ]
    assert found[2].packages[0].records == ("UBUNTU-CVE-2023-4911", "USN-6409-1")
    assert assess_host(focal, {"glibc": ["2.31-0ubuntu9.12"]}, index) == []


def test_a_vulnerability_on_several_packages_takes_the_worst_status() -> None:
    def rec(name: str, fixed: str | None) -> Affected:
        events = [Event("introduced", "0")] + ([Event("fixed", fixed)] if fixed else [])
        return Affected("AlmaLinux:9", name, (Range("ECOSYSTEM", tuple(events)),))

    records = [
        Record("ALSA-2026:1", ("CVE-2026-1",), None, affected=(rec("a", "1.1-1.el9"),)),
        Record("ALSA-2026:2", ("CVE-2026-1",), None, affected=(rec("b", None),)),
        Record("ALBA-2026:3", (), None, affected=(rec("a", "9.9-1.el9"),)),  # not a vulnerability
    ]
    host = ecosystem_for_os(normalise_os({"id": "almalinux", "version_id": "9.4"}))
    assert host is not None
    found = assess_host(host, {"a": ["1.0-1.el9"], "b": ["2.0-1.el9"]}, FeedIndex(records),
                        {"a": ["1.1-1.el9"]})  # fmt: skip
    assert len(found) == 1
    assert found[0].status is FixStatus.NO_FIX
    assert {p.name: p.status for p in found[0].packages} == {
        "a": FixStatus.FIXABLE,
        "b": FixStatus.NO_FIX,
    }
    # a version the ordering refuses cannot be judged: left out, not counted as safe or not
    assert assess_host(host, {"a": [""]}, FeedIndex(records)) == []


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789:-.~+^_ab \t\x00é"), max_size=12))
def test_checking_a_version_refuses_exactly_what_ordering_refuses(version: str) -> None:
    """Feeds are checked without building keys; the check must agree with the keys."""
    for ordering in Ordering:
        try:
            version_key(ordering, version)
            refused = False
        except VersionError:
            refused = True
        try:
            check_version(ordering, version)
            checked = False
        except VersionError:
            checked = True
        assert checked == refused, (ordering, version)
