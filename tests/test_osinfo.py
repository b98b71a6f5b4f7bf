"""OS normalisation: os-release fields and Patchman's OS strings land on the same names.

os-release texts are real files kept in ``fixtures/reports/os-release/``; the Patchman
strings are what the stock client builds on those hosts (reference 2.2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchwatch.domain.osinfo import normalise_os
from patchwatch.domain.osinfo import parse_os_release
from patchwatch.domain.osinfo import parse_patchman_os
from patchwatch.domain.records import OSInfo

OS_RELEASE = Path(__file__).parent / "fixtures" / "reports" / "os-release"

DEBIAN12_CPE = "cpe:2.3:o:debian:debian_linux:12.0:*:*:*:*:*:*:*"
UBUNTU2404_CPE = "cpe:2.3:o:canonical:ubuntu_linux:24.04:*:*:*:lts:*:*:*"


def os_release(name: str) -> dict[str, str]:
    return parse_os_release((OS_RELEASE / name).read_text())


# --------------------------------------------------------------------------- os-release


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('ID=debian\nVERSION_ID="12"\n', {"id": "debian", "version_id": "12"}),
        ("NAME='Rocky Linux'", {"name": "Rocky Linux"}),
        ('PRETTY_NAME="A \\"quoted\\" \\$name\\\\"', {"pretty_name": 'A "quoted" $name\\'}),
        ("# comment\n\n   \nID=fedora", {"id": "fedora"}),
        ("not an assignment\nID=arch\n=value\n1BAD=x", {"id": "arch"}),
        ("  ID = ubuntu  ", {"id": "ubuntu"}),
        ("VERSION_CODENAME=\n", {"version_codename": ""}),
        ("ID=a\nID=b", {"id": "b"}),
        ("Id=MixedCase", {"id": "MixedCase"}),
    ],
)
def test_parse_os_release_follows_shell_quoting(text: str, expected: dict[str, str]) -> None:
    assert parse_os_release(text) == expected


def test_parse_os_release_reads_a_real_file() -> None:
    fields = os_release("rocky-9.4")
    assert fields["id"] == "rocky"
    assert fields["pretty_name"] == "Rocky Linux 9.4 (Blue Onyx)"
    assert fields["cpe_name"] == "cpe:/o:rocky:rocky:9::baseos"
    assert all(key == key.lower() for key in fields)


# --------------------------------------------------------------------------- native

NATIVE = [
    ("debian-12", OSInfo("debian", "debian", "Debian 12", "12", "bookworm", DEBIAN12_CPE)),
    ("debian-testing", OSInfo("debian", "debian", "Debian trixie/sid", "", "trixie", "")),
    (
        "ubuntu-24.04",
        OSInfo("debian", "ubuntu", "Ubuntu 24.04", "24.04.1", "noble", UBUNTU2404_CPE),
    ),
    (
        "rocky-9.4",
        OSInfo(
            "redhat", "rocky", "Rocky Linux 9", "9.4", "Blue Onyx", "cpe:/o:rocky:rocky:9::baseos"
        ),
    ),
    (
        "rhel-9.4",
        OSInfo(
            "redhat",
            "rhel",
            "Red Hat Enterprise Linux 9",
            "9.4",
            "Plow",
            "cpe:/o:redhat:enterprise_linux:9::baseos",
        ),
    ),
    (
        "almalinux-9.4",
        OSInfo(
            "redhat",
            "almalinux",
            "AlmaLinux 9",
            "9.4",
            "Seafoam Ocelot",
            "cpe:/o:almalinux:almalinux:9::baseos",
        ),
    ),
    (
        "centos-stream-9",
        OSInfo("redhat", "centos", "CentOS Stream 9", "9", "", "cpe:/o:centos:centos:9"),
    ),
    (
        "centos-7",
        OSInfo("redhat", "centos", "CentOS Linux 7", "7", "Core", "cpe:/o:centos:centos:7"),
    ),
    (
        "oracle-9.4",
        OSInfo("redhat", "ol", "Oracle Linux 9", "9.4", "", "cpe:/o:oracle:linux:9:4:server"),
    ),
    (
        "fedora-40",
        OSInfo("redhat", "fedora", "Fedora Linux 40", "40", "", "cpe:/o:fedoraproject:fedora:40"),
    ),
    (
        "amzn-2023",
        OSInfo(
            "redhat", "amzn", "Amazon Linux 2023", "2023", "", "cpe:2.3:o:amazon:amazon_linux:2023"
        ),
    ),
    (
        "amzn-2",
        OSInfo("redhat", "amzn", "Amazon Linux 2", "2", "", "cpe:2.3:o:amazon:amazon_linux:2"),
    ),
    (
        "opensuse-leap-15.5",
        OSInfo(
            "suse", "opensuse-leap", "openSUSE Leap 15.5", "15.5", "", "cpe:/o:opensuse:leap:15.5"
        ),
    ),
    (
        "opensuse-tumbleweed",
        OSInfo(
            "suse",
            "opensuse-tumbleweed",
            "openSUSE Tumbleweed",
            "20240801",
            "",
            "cpe:/o:opensuse:tumbleweed:20240801",
        ),
    ),
    (
        "sles-15-sp5",
        OSInfo(
            "suse",
            "sles",
            "SUSE Linux Enterprise Server 15 SP5",
            "15.5",
            "",
            "cpe:/o:suse:sles:15:sp5",
        ),
    ),
    ("arch", OSInfo("arch", "arch", "Arch Linux", "", "", "")),
    (
        "alpine-3.20",
        OSInfo(
            "alpine",
            "alpine",
            "Alpine Linux 3.20",
            "3.20.3",
            "",
            "cpe:2.3:o:alpinelinux:alpine_linux:3.20:*:*:*:*:*:*:*",
        ),
    ),
    # Not in the table: family from ID_LIKE, its own name and version kept.
    ("linuxmint-21.3", OSInfo("debian", "linuxmint", "Linux Mint 21.3", "21.3", "virginia", "")),
    ("manjaro", OSInfo("arch", "manjaro", "Manjaro Linux", "", "", "")),
]


@pytest.mark.parametrize(("filename", "expected"), NATIVE, ids=[n for n, _ in NATIVE])
def test_normalise_os_release(filename: str, expected: OSInfo) -> None:
    assert normalise_os(os_release(filename)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # keys in upper case (straight from the file, not lower-cased by the agent)
        ({"ID": "debian", "VERSION_ID": "11"}, ("debian", "Debian 11", "bullseye")),
        # unstable says sid explicitly
        ({"id": "debian", "version_codename": "sid"}, ("debian", "Debian sid", "sid")),
        # testing with only the PRETTY_NAME to go on
        (
            {"id": "debian", "pretty_name": "Debian GNU/Linux forky/sid"},
            ("debian", "Debian forky/sid", "forky"),
        ),
        ({"id": "raspbian", "version_id": "12"}, ("debian", "Raspbian 12", "bookworm")),
        (
            {"id": "pop", "id_like": "ubuntu debian", "name": "Pop!_OS", "version_id": "22.04"},
            ("debian", "Pop!_OS 22.04", ""),
        ),
        (
            {"id": "nobara", "id_like": "rhel fedora", "name": "Nobara Linux"},
            ("redhat", "Nobara Linux", ""),
        ),
        ({"id": "weird"}, ("unknown", "weird", "")),
        ({"id": "sles", "version_id": "12.5"}, ("suse", "SUSE Linux Enterprise Server 12 SP5", "")),
        ({"id": "sles", "version_id": "15"}, ("suse", "SUSE Linux Enterprise Server 15", "")),
        (
            {"id": "arch", "name": "Arch Linux", "build_id": "rolling"},
            ("arch", "Arch Linux", ""),
        ),
        (
            {
                "id": "postmarketos",
                "id_like": "alpine",
                "name": "postmarketOS",
                "version_id": "v24.06",
            },
            ("alpine", "postmarketOS v24.06", ""),
        ),
    ],
)
def test_normalise_os_corner_cases(fields: dict[str, str], expected: tuple[str, str, str]) -> None:
    info = normalise_os(fields)
    assert (info.family, info.name, info.codename) == expected


# --------------------------------------------------------------------------- Patchman

PATCHMAN = [
    # (os string as sent, family, id, name, version, codename, cpe)
    ("Debian 12.5", "debian", "debian", "Debian 12", "12.5", "bookworm", DEBIAN12_CPE),
    ("Debian 12.8", "debian", "debian", "Debian 12", "12.8", "bookworm", DEBIAN12_CPE),
    (
        "Debian 11.11",
        "debian",
        "debian",
        "Debian 11",
        "11.11",
        "bullseye",
        "cpe:2.3:o:debian:debian_linux:11.0:*:*:*:*:*:*:*",
    ),
    (
        "Debian 6.0.10",
        "debian",
        "debian",
        "Debian 6",
        "6.0.10",
        "squeeze",
        "cpe:2.3:o:debian:debian_linux:6.0:*:*:*:*:*:*:*",
    ),
    # testing / unstable: Patchman's get_os crashes on these (reference 2.2, 12.5)
    ("Debian trixie-sid", "debian", "debian", "Debian trixie/sid", "", "trixie", ""),
    ("Debian GNU/Linux trixie/sid", "debian", "debian", "Debian trixie/sid", "", "trixie", ""),
    ("Debian sid", "debian", "debian", "Debian sid", "", "sid", ""),
    (
        "Debian GNU/Linux 12 (bookworm)",
        "debian",
        "debian",
        "Debian 12",
        "12",
        "bookworm",
        DEBIAN12_CPE,
    ),
    ("Raspbian 12.8", "debian", "raspbian", "Raspbian 12", "12.8", "bookworm", ""),
    ("Ubuntu 24.04.1 LTS", "debian", "ubuntu", "Ubuntu 24.04", "24.04.1", "noble", UBUNTU2404_CPE),
    (
        "Ubuntu 22.04.5 LTS",
        "debian",
        "ubuntu",
        "Ubuntu 22.04",
        "22.04.5",
        "jammy",
        "cpe:2.3:o:canonical:ubuntu_linux:22.04:*:*:*:lts:*:*:*",
    ),
    (
        "Ubuntu 23.10",
        "debian",
        "ubuntu",
        "Ubuntu 23.10",
        "23.10",
        "mantic",
        "cpe:2.3:o:canonical:ubuntu_linux:23.10:*:*:*:*:*:*:*",
    ),
    ("Rocky Linux 9.4 (Blue Onyx)", "redhat", "rocky", "Rocky Linux 9", "9.4", "Blue Onyx", ""),
    (
        "Rocky Linux 9.5 (Blue Onyx) [cpe:/o:rocky:rocky:9::baseos]",
        "redhat",
        "rocky",
        "Rocky Linux 9",
        "9.5",
        "Blue Onyx",
        "cpe:/o:rocky:rocky:9::baseos",
    ),
    (
        "Red Hat Enterprise Linux release 9.4 (Plow)",
        "redhat",
        "rhel",
        "Red Hat Enterprise Linux 9",
        "9.4",
        "Plow",
        "",
    ),
    (
        "Red Hat Enterprise Linux Server release 7.9 (Maipo)",
        "redhat",
        "rhel",
        "Red Hat Enterprise Linux 7",
        "7.9",
        "Maipo",
        "",
    ),
    (
        "AlmaLinux 9.4 (Seafoam Ocelot)",
        "redhat",
        "almalinux",
        "AlmaLinux 9",
        "9.4",
        "Seafoam Ocelot",
        "",
    ),
    ("CentOS Stream 9", "redhat", "centos", "CentOS Stream 9", "9", "", ""),
    ("CentOS Stream release 9", "redhat", "centos", "CentOS Stream 9", "9", "", ""),
    (
        "CentOS Linux release 7.9.2009 (Core)",
        "redhat",
        "centos",
        "CentOS Linux 7",
        "7.9.2009",
        "Core",
        "",
    ),
    ("CentOS release 6.10 (Final)", "redhat", "centos", "CentOS Linux 6", "6.10", "Final", ""),
    ("Oracle Linux Server 9.4", "redhat", "ol", "Oracle Linux 9", "9.4", "", ""),
    ("Fedora Linux 40 (Server Edition)", "redhat", "fedora", "Fedora Linux 40", "40", "", ""),
    ("Fedora Linux 40", "redhat", "fedora", "Fedora Linux 40", "40", "", ""),
    ("Fedora release 39 (Thirty Nine)", "redhat", "fedora", "Fedora Linux 39", "39", "", ""),
    ("Amazon Linux 2023", "redhat", "amzn", "Amazon Linux 2023", "2023", "", ""),
    ("Amazon Linux 2", "redhat", "amzn", "Amazon Linux 2", "2", "", ""),
    ("Amazon Linux AMI 2018.03", "redhat", "amzn", "Amazon Linux 1", "2018.03", "", ""),
    ("openSUSE Leap 15.5", "suse", "opensuse-leap", "openSUSE Leap 15.5", "15.5", "", ""),
    (
        "openSUSE Leap 15.6 [cpe:/o:opensuse:leap:15.6]",
        "suse",
        "opensuse-leap",
        "openSUSE Leap 15.6",
        "15.6",
        "",
        "cpe:/o:opensuse:leap:15.6",
    ),
    ("openSUSE Tumbleweed", "suse", "opensuse-tumbleweed", "openSUSE Tumbleweed", "", "", ""),
    (
        "SUSE Linux Enterprise Server 15 SP5",
        "suse",
        "sles",
        "SUSE Linux Enterprise Server 15 SP5",
        "15.5",
        "",
        "",
    ),
    (
        "SUSE Linux Enterprise Server 12",
        "suse",
        "sles",
        "SUSE Linux Enterprise Server 12",
        "12",
        "",
        "",
    ),
    (
        "SUSE Linux Enterprise Server 11 (x86_64)",
        "suse",
        "sles",
        "SUSE Linux Enterprise Server 11",
        "11",
        "",
        "",
    ),
    ("Arch Linux", "arch", "arch", "Arch Linux", "", "", ""),
    # the stock client sends "NAME VERSION"; Alpine's os-release has no VERSION
    ("Alpine Linux", "alpine", "alpine", "Alpine Linux", "", "", ""),
    (
        "Alpine Linux v3.20",
        "alpine",
        "alpine",
        "Alpine Linux 3.20",
        "3.20",
        "",
        "cpe:2.3:o:alpinelinux:alpine_linux:3.20:*:*:*:*:*:*:*",
    ),
    ("Gentoo Linux 2.15", "unknown", "gentoo", "Gentoo Linux", "2.15", "", ""),
    # unknown descriptions keep their text rather than failing the report
    ("Linux Mint 21.3 (Virginia)", "unknown", "", "Linux Mint 21.3", "21.3", "Virginia", ""),
    ("unknown", "unknown", "", "unknown", "", "", ""),
    ("  Debian   12.8  ", "debian", "debian", "Debian 12", "12.8", "bookworm", DEBIAN12_CPE),
]


@pytest.mark.parametrize(
    ("text", "family", "os_id", "name", "version", "codename", "cpe"),
    PATCHMAN,
    ids=[row[0] for row in PATCHMAN],
)
def test_parse_patchman_os(
    text: str, family: str, os_id: str, name: str, version: str, codename: str, cpe: str
) -> None:
    assert parse_patchman_os(text) == OSInfo(family, os_id, name, version, codename, cpe)


# The string the stock client builds on each of these hosts (reference 2.2).
SAME_HOST = [
    ("debian-12", "Debian 12.8"),
    ("debian-testing", "Debian trixie-sid"),
    ("ubuntu-24.04", "Ubuntu 24.04.1 LTS"),
    ("rocky-9.4", "Rocky Linux 9.4 (Blue Onyx) [cpe:/o:rocky:rocky:9::baseos]"),
    (
        "rhel-9.4",
        "Red Hat Enterprise Linux release 9.4 (Plow) [cpe:/o:redhat:enterprise_linux:9::baseos]",
    ),
    ("almalinux-9.4", "AlmaLinux 9.4 (Seafoam Ocelot) [cpe:/o:almalinux:almalinux:9::baseos]"),
    ("centos-stream-9", "CentOS Stream release 9 [cpe:/o:centos:centos:9]"),
    ("centos-7", "CentOS Linux release 7.9.2009 (Core) [cpe:/o:centos:centos:7]"),
    ("oracle-9.4", "Oracle Linux Server 9.4 [cpe:/o:oracle:linux:9:4:server]"),
    ("fedora-40", "Fedora Linux 40 (Server Edition) [cpe:/o:fedoraproject:fedora:40]"),
    ("amzn-2023", "Amazon Linux 2023 [cpe:2.3:o:amazon:amazon_linux:2023]"),
    ("amzn-2", "Amazon Linux 2 [cpe:2.3:o:amazon:amazon_linux:2]"),
    ("opensuse-leap-15.5", "openSUSE Leap 15.5 [cpe:/o:opensuse:leap:15.5]"),
    ("opensuse-tumbleweed", "openSUSE Tumbleweed [cpe:/o:opensuse:tumbleweed:20240801]"),
    ("sles-15-sp5", "SUSE Linux Enterprise Server 15 SP5 [cpe:/o:suse:sles:15:sp5]"),
]


@pytest.mark.parametrize(("filename", "patchman"), SAME_HOST, ids=[n for n, _ in SAME_HOST])
def test_a_host_keeps_its_os_when_it_moves_from_patchman_to_the_agent(
    filename: str, patchman: str
) -> None:
    """Same family, id, stable name, codename and CPE; only the point version may differ."""
    native = normalise_os(os_release(filename))
    legacy = parse_patchman_os(patchman)
    key = ("family", "id", "name", "codename", "cpe")
    assert {k: getattr(legacy, k) for k in key} == {k: getattr(native, k) for k in key}


def test_point_releases_share_the_stable_name() -> None:
    names = {parse_patchman_os(f"Rocky Linux 9.{minor} (Blue Onyx)").name for minor in range(7)}
    assert names == {"Rocky Linux 9"}
    assert parse_patchman_os("Rocky Linux 10.0 (Red Quartz)").name == "Rocky Linux 10"
