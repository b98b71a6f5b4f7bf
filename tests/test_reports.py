"""Report parsing for the three wire formats: native JSON, Patchman protocol 1 and 2.

Literal client examples live in ``fixtures/reports/`` (see its README): one folder per
protocol-1 report with one file per multipart field, exactly as the stock client's
``curl -F field=<file`` sends them, and JSON files for protocol 2 and the native format.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import ParseError
from patchwatch.domain.records import HeldPackage
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedModule
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedUpdate
from patchwatch.domain.reports.fields import parse_hostname
from patchwatch.domain.reports.native import parse_native
from patchwatch.domain.reports.protocol1 import parse_protocol1
from patchwatch.domain.reports.protocol2 import parse_protocol2
from tests.support.fuzzing import accepts
from tests.support.reports import BASE_P2
from tests.support.reports import load_form
from tests.support.reports import load_json
from tests.support.reports import native_fixture
from tests.support.reports import synthetic_reports

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "patchwatch" / "domain" / "schemas" / "report-v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

DEB = PackageKind.DEB
RPM = PackageKind.RPM
ARCH = PackageKind.ARCH
APK = PackageKind.APK


BASE_FORM = {
    "host": "h1.example.com",
    "os": "Debian 12.8",
    "kernel": "6.1.0-28-amd64",
    "arch": "x86_64",
    "protocol": "1",
}


def p1(**fields: str) -> HostReport:
    return parse_protocol1({**BASE_FORM, **fields})


def p1_error(**fields: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        p1(**fields)
    return info.value


def p2(**fields: Any) -> HostReport:
    return parse_protocol2({**BASE_P2, **fields})


def p2_error(doc: Any) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_protocol2(doc)
    return info.value


def native_error(doc: Any) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_native(doc)
    return info.value


# =========================================================================== literal examples


def test_protocol1_debian_example_from_the_reference() -> None:
    report = parse_protocol1(load_form("patchman1-debian12"))
    assert report.hostname == "web01.example.com"
    assert report.extra["domain"] == "example.com"
    assert report.extra["report"] == "false"
    assert report.extra["os_string"] == "Debian 12.8"
    assert (report.os.family, report.os.name, report.os.version, report.os.codename) == (
        "debian",
        "Debian 12",
        "12.8",
        "bookworm",
    )
    assert report.kernel == "6.1.0-28-amd64"
    assert report.arch == "x86_64"
    assert report.tags == ("Server",)
    assert report.reboot_required is None  # ServerCheck: the client could not tell
    assert report.protocol == "patchman/1"
    assert report.packages == (
        Package("bash", "", "5.2.15", "2+b7", "amd64", DEB),
        Package("libc6", "", "2.36", "9+deb12u9", "amd64", DEB),
        Package("openssl", "", "3.0.15", "1~deb12u1", "amd64", DEB),
        Package("tzdata", "", "2024b", "0+deb12u1", "all", DEB),
        Package("linux-image-6.1.0-28-amd64", "", "6.1.119", "1", "amd64", DEB),
    )
    assert report.repositories is not None
    main, security, backports = report.repositories
    assert main == ReportedRepository(
        kind=RepoKind.DEB,
        id="http://DEBIAN-MIRROR/debian bookworm main",
        name="Debian 12 x86_64 repo at http://DEBIAN-MIRROR/debian/dists/bookworm/main/binary-amd64",
        urls=("http://DEBIAN-MIRROR/debian",),
        priority=500,
        suite="bookworm",
        component="main",
        arch="amd64",
    )
    assert (security.id, security.suite, security.priority) == (
        "http://DEBIAN-SECURITY-MIRROR/debian-security bookworm-security main",
        "bookworm-security",
        500,
    )
    assert (backports.suite, backports.priority) == ("bookworm-backports", 100)
    assert report.modules == ()
    assert report.updates == ()  # repositories were read and no local updates found


def test_protocol1_rocky_example_from_the_reference() -> None:
    report = parse_protocol1(load_form("patchman1-rocky9"))
    assert report.extra["report"] == "true"
    assert report.extra["os_variant"] == "Rocky Linux 9.5 (Blue Onyx)"
    assert report.tags == ("Server", "db")
    assert report.os.name == "Rocky Linux 9"
    assert report.os.cpe == "cpe:/o:rocky:rocky:9::baseos"
    assert report.packages == (  # gpg-pubkey skipped, rpm epochs "0" when none
        Package("bash", "0", "5.1.8", "9.el9", "x86_64", RPM),
        Package("openssl", "1", "3.2.2", "6.el9_5", "x86_64", RPM),
        Package("kernel-core", "0", "5.14.0", "503.14.1.el9_5", "x86_64", RPM),
    )
    assert report.repositories == (
        ReportedRepository(
            kind=RepoKind.RPM,
            id="cpe:/o:rocky:rocky:9::baseos-baseos",
            name="Rocky Linux 9 - BaseOS x86_64",
            urls=("http://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os",),
            priority=-99,
            mirrorlist="https://mirrors.rockylinux.org/mirrorlist?arch=x86_64&repo=BaseOS-9",
        ),
        ReportedRepository(
            kind=RepoKind.RPM,
            id="cpe:/o:rocky:rocky:9::baseos-appstream",
            name="Rocky Linux 9 - AppStream x86_64",
            urls=(),
            priority=-99,
            mirrorlist="https://mirrors.rockylinux.org/mirrorlist?arch=x86_64&repo=AppStream-9",
        ),
    )
    assert report.modules == (
        ReportedModule(
            name="nodejs",
            stream="18",
            version="9040020240807145403",
            context="rhel9",
            arch="x86_64",
            packages=(
                "nodejs-1:18.20.2-2.module+el9.4.0+21731+46b5c5f9.x86_64",
                "npm-1:10.5.0-1.18.20.2.2.module+el9.4.0+21731+46b5c5f9.x86_64",
            ),
        ),
    )
    assert json.loads(report.extra["module_repositories"]) == {
        "nodejs": "cpe:/o:rocky:rocky:9::baseos-appstream"
    }
    repo = "cpe:/o:rocky:rocky:9::baseos-baseos"
    assert report.updates == (  # security wins over the same line in bug_updates
        ReportedUpdate("openssl", "1:3.2.2-6.el9_5.1", "x86_64", True, repo),
        ReportedUpdate("bash", "5.1.8-10.el9_5", "x86_64", False, repo),
    )


def test_protocol1_suse_rpm_lines_are_zypper_repositories() -> None:
    report = parse_protocol1(load_form("patchman1-leap15"))
    assert report.os.family == "suse"
    assert report.reboot_required is True
    assert report.repositories is not None
    assert {repo.kind for repo in report.repositories} == {RepoKind.ZYPPER}
    oss = report.repositories[0]
    assert (oss.id, oss.priority, oss.urls) == (
        "repo-oss",
        -99,
        ("http://download.opensuse.org/distribution/leap/15.5/repo/oss",),
    )
    assert report.repositories[-1].priority == -90  # Packman preferred over the default 99
    assert Package("libstdc++6", "0", "13.3.0+git8781", "150000.1.12.1", "x86_64", RPM) in (
        report.packages
    )
    assert report.updates == (
        ReportedUpdate("libzypp", "17.35.8-150500.6.19.1", "x86_64", False, "repo-sle-update"),
    )


def test_protocol2_example_from_the_reference() -> None:
    report = parse_protocol2(load_json("patchman2-rocky9.json"))
    assert report.protocol == "patchman/2"
    assert report.hostname == "db01.example.com"
    assert report.os.name == "Rocky Linux 9"
    assert report.tags == ("Server", "db")
    assert report.reboot_required is None  # false from protocol 2 means "could not tell"
    assert report.packages == (Package("bash", "0", "5.1.8", "9.el9", "x86_64", RPM),)
    assert report.repositories == (
        ReportedRepository(
            kind=RepoKind.RPM,
            id="cpe:/o:rocky:rocky:9::baseos-baseos",
            name="Rocky Linux 9 - BaseOS x86_64",
            urls=("http://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os",),
            priority=-99,
        ),
    )
    assert report.updates == (
        ReportedUpdate(
            "openssl", "1:3.2.2-6.el9_5.1", "x86_64", False, "cpe:/o:rocky:rocky:9::baseos-baseos"
        ),
    )


def test_protocol2_hook_report_decodes_plus_and_keeps_repositories() -> None:
    report = parse_protocol2(load_json("patchman2-rocky9-hook.json"))
    assert report.repositories is None  # "repos": [] from a hook must not wipe them
    assert report.updates is None  # nor the updates the last full run reported
    assert report.packages == (
        Package("bash", "0", "5.1.8", "9.el9", "x86_64", RPM),
        Package("libstdc++", "0", "11.5.0", "2.el9", "x86_64", RPM),
        Package("nodejs", "1", "18.20.2", "2.module+el9.4.0+21731+46b5c5f9", "x86_64", RPM),
    )
    assert json.loads(report.extra["module_repositories"]) == {
        "nodejs": "cpe:/o:rocky:rocky:9::baseos-appstream"
    }


def test_native_deb_fixture() -> None:
    doc = load_json("native_deb.json")
    assert VALIDATOR.is_valid(doc)
    report = parse_native(doc)
    assert report.protocol == "patchwatch/1"
    assert report.agent == "patchwatch-agent/0.1.0"
    assert report.extra == {
        "domain": "example.com",
        "agent_collected_at": "1732406400.500",
        "os_variant": "Debian GNU/Linux 12 (bookworm)",
    }
    assert report.os.name == "Debian 12"
    assert report.reboot_required is False
    assert report.tags == ("web", "prod", "dc:ams1")
    assert len(report.packages) == 13
    assert Package("vim", "2", "9.0.1378", "2", "amd64", DEB) in report.packages
    assert Package("debian-archive-keyring", "", "2023.3+deb12u1", "", "all", DEB) in (
        report.packages
    )
    assert report.repositories is not None
    assert [(r.kind, r.suite, r.priority) for r in report.repositories] == [
        (RepoKind.DEB, "bookworm", 500),
        (RepoKind.DEB, "bookworm-updates", 500),
        (RepoKind.DEB, "bookworm-security", 500),
        (RepoKind.DEB, "bookworm-backports", 100),
    ]
    assert report.repositories[1].name == report.repositories[1].id  # no name: the id
    assert report.updates is None
    assert report.modules == ()
    assert report.held == (HeldPackage("vim", "amd64"),)


def test_native_rpm_fixture() -> None:
    doc = load_json("native_rpm.json")
    assert VALIDATOR.is_valid(doc)
    report = parse_native(doc)
    assert report.hostname == "db01.example.com"  # lower-cased
    assert report.reboot_required is None
    assert report.os.name == "Rocky Linux 9"
    assert Package("bash", "0", "5.1.8", "9.el9", "x86_64", RPM) in report.packages
    assert Package("NetworkManager", "1", "1.46.0", "19.el9_4", "x86_64", RPM) in report.packages
    assert Package("glibc", "0", "2.34", "100.el9_4.4", "i686", RPM) in report.packages
    assert report.repositories is not None
    epel = report.repositories[2]
    assert (epel.metalink, epel.priority, epel.urls) == (
        "https://mirrors.fedoraproject.org/metalink?repo=epel-9&arch=x86_64",
        -10,  # as given: the agent negates yum priorities itself
        (),
    )
    assert report.modules[0].name == "nodejs"
    assert report.updates == (
        ReportedUpdate("openssl", "1:3.0.7-28.el9_4", "x86_64", True, "baseos"),
        ReportedUpdate("tzdata", "2024b-3.el9", "noarch", False, ""),
    )
    assert report.held == (HeldPackage("bash", ""),)  # no arch: every arch of the name


def test_native_arch_fixture() -> None:
    doc = load_json("native_arch.json")
    assert VALIDATOR.is_valid(doc)
    report = parse_native(doc)
    assert (report.os.family, report.os.name) == ("arch", "Arch Linux")
    assert len(report.packages) == 13
    assert Package("linux", "", "6.12.8.arch1", "1", "x86_64", ARCH) in report.packages
    # epoch "0" is pacman's "no epoch", printed by neither pacman nor the record
    assert Package("libjpeg-turbo", "", "3.0.4", "1", "x86_64", ARCH) in report.packages
    dejavu = Package("ttf-dejavu", "1", "2.37+18+g9b5d1b2f", "6.1", "any", ARCH)
    assert dejavu in report.packages
    assert dejavu.evr == "1:2.37+18+g9b5d1b2f-6.1"  # as pacman -Q prints it
    assert report.repositories is not None
    assert [(r.kind, r.id, r.priority, r.arch) for r in report.repositories] == [
        (RepoKind.ARCH, "core", 0, "x86_64"),
        (RepoKind.ARCH, "extra", -1, "x86_64"),
    ]
    assert report.repositories[0].urls[0] == "https://geo.mirror.pkgbuild.com/core/os/x86_64"
    assert report.held == (HeldPackage("linux", ""),)


def test_native_apk_fixture() -> None:
    doc = load_json("native_apk.json")
    assert VALIDATOR.is_valid(doc)
    report = parse_native(doc)
    assert (report.os.family, report.os.name, report.os.version) == (
        "alpine",
        "Alpine Linux 3.20",
        "3.20.3",
    )
    assert len(report.packages) == 11
    busybox = Package("busybox", "", "1.36.1-r29", "", "x86_64", APK)
    assert busybox in report.packages
    assert busybox.evr == "1.36.1-r29"
    assert report.repositories is not None
    assert {r.kind for r in report.repositories} == {RepoKind.APK}
    assert report.held == (HeldPackage("nginx", "x86_64"),)


@pytest.mark.parametrize(
    ("package", "where"),
    [
        # pacman's fields hold no separator of the others: "1.0-1" in pkgver reads back as
        # another pkgver and pkgrel, "1:1.0" as an epoch
        ({"version": "1.0-1", "release": "1"}, "packages[0].version"),
        ({"version": "1:1.0", "release": "1"}, "packages[0].version"),
        ({"version": "1.0", "release": "1-2"}, "packages[0].version"),
        # a trailing separator, which vercmp orders inconsistently
        ({"version": "1.0.", "release": "1"}, "packages[0].version"),
        ({"version": "1.0", "release": "1_"}, "packages[0].version"),
        ({"version": "1.0\t", "release": "1"}, "packages[0].version"),
    ],
)
def test_native_arch_versions_pacman_cannot_order_are_refused(
    package: dict[str, str], where: str
) -> None:
    item = {"name": "a", "arch": "x86_64", "type": "arch", **package}
    doc = native_fixture(packages=[item])
    assert not VALIDATOR.is_valid(doc)  # the schema says the same
    assert native_error(doc).where == where


@pytest.mark.parametrize(
    ("package", "where"),
    [
        ({"version": "1.2.3", "release": "r4"}, "packages[0].version"),  # sent whole, not split
        ({"version": "1.2.3-r4", "epoch": "1"}, "packages[0].epoch"),  # apk has no epoch
    ],
)
def test_native_apk_versions_are_whole(package: dict[str, str], where: str) -> None:
    item = {"name": "a", "arch": "x86_64", "type": "apk", **package}
    doc = native_fixture(packages=[item])
    assert not VALIDATOR.is_valid(doc)
    assert native_error(doc).where == where


def test_native_apk_epoch_zero_is_none() -> None:
    doc = native_fixture(
        packages=[{"name": "a", "version": "1-r0", "epoch": "0", "arch": "x", "type": "apk"}]
    )
    assert VALIDATOR.is_valid(doc)
    assert parse_native(doc).packages == (Package("a", "", "1-r0", "", "x", APK),)


def test_protocol1_arch_host_from_the_stock_client() -> None:
    report = parse_protocol1(load_form("patchman1-arch"))
    assert (report.os.family, report.os.name) == ("arch", "Arch Linux")
    assert report.packages[0] == Package("linux", "", "6.12.8.arch1", "1", "x86_64", ARCH)
    assert Package("ttf-dejavu", "1", "2.37+18+g9b5d1b2f", "6.1", "any", ARCH) in report.packages
    assert report.repositories is not None
    # $arch, which the client expands to nothing, is the host's architecture again; the
    # client's order is a bash associative array's, so every priority is 0
    assert [(r.kind, r.id, r.name, r.urls, r.priority, r.arch) for r in report.repositories] == [
        (
            RepoKind.ARCH,
            "extra",
            "Arch Linux extra x86_64",
            (
                "https://geo.mirror.pkgbuild.com/extra/os/x86_64",
                "https://mirror.rackspace.com/archlinux/extra/os/x86_64",
            ),
            0,
            "x86_64",
        ),
        (
            RepoKind.ARCH,
            "core",
            "Arch Linux core x86_64",
            (
                "https://geo.mirror.pkgbuild.com/core/os/x86_64",
                "https://mirror.rackspace.com/archlinux/core/os/x86_64",
            ),
            0,
            "x86_64",
        ),
        (RepoKind.ARCH, "pwlocal", "Arch Linux pwlocal x86_64", ("file:///srv/repo",), 0, "x86_64"),
    ]
    assert "skipped_repositories" not in report.extra
    assert "skipped_packages" not in report.extra


def test_protocol1_arch_package_version_pacman_cannot_order() -> None:
    error = p1_error(packages="'a' '' '1.0-1' '1' 'x86_64' 'arch'\n")
    assert error.where == "packages line 1"


def test_protocol2_arch_host_takes_the_first_url_back_from_priority() -> None:
    report = parse_protocol2(load_json("patchman2-arch.json"))
    assert report.os.family == "arch"
    assert Package("ttf-dejavu", "1", "2.37+18+g9b5d1b2f", "6.1", "any", ARCH) in report.packages
    assert report.repositories is not None
    assert [(r.id, r.urls, r.priority) for r in report.repositories] == [
        (
            "core",
            (
                "https://geo.mirror.pkgbuild.com/core/os/x86_64",
                "https://mirror.rackspace.com/archlinux/core/os/x86_64",
            ),
            0,
        ),
        ("extra", ("https://geo.mirror.pkgbuild.com/extra/os/x86_64",), 0),
    ]


def test_protocol2_arch_priority_that_is_neither_number_nor_url_is_refused() -> None:
    repo = {"type": "arch", "name": "n", "id": "core", "priority": "high", "urls": ["https://m/"]}
    assert p2_error({**BASE_P2, "repos": [repo]}).where == "repos[0].priority"


@pytest.mark.parametrize("priority", [5, "5", None])
def test_protocol2_arch_numeric_or_missing_priority_is_ignored(priority: object) -> None:
    repo: dict[str, Any] = {
        "type": "arch",
        "name": "n",
        "id": "core",
        "urls": ["https://m/core/os/"],
    }
    if priority is not None:
        repo["priority"] = priority
    report = p2(arch="aarch64", repos=[repo])
    assert report.repositories is not None
    assert [(r.urls, r.priority) for r in report.repositories] == [
        (("https://m/core/os/aarch64",), 0)
    ]


# =========================================================================== host names


@pytest.mark.parametrize(
    ("text", "fqdn", "domain"),
    [
        ("web01.example.com", "web01.example.com", "example.com"),
        ("WEB01.Example.COM", "web01.example.com", "example.com"),
        ("web01", "web01", ""),
        ("web01.example.com.", "web01.example.com", "example.com"),
        ("_gateway.lan", "_gateway.lan", "lan"),
        ("a.b.c.d", "a.b.c.d", "b.c.d"),
        ("x" * 253, "x" * 253, ""),
    ],
)
def test_host_names_are_lower_cased_and_split(text: str, fqdn: str, domain: str) -> None:
    assert parse_hostname(text) == (fqdn, domain)


@pytest.mark.parametrize(
    "text",
    ["", " ", "web 01", "web01\t", "-web", ".web", "web\x00", "wéb", "web/01", "x" * 254, "a\nb"],
)
def test_bad_host_names_are_rejected(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_hostname(text, "hostname")
    assert info.value.where == "hostname"


# =========================================================================== protocol 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # deb: epoch "" when absent, release after the last '-'
        (
            "'vim' '2' '9.0.1378' '2' 'amd64' 'deb'",
            Package("vim", "2", "9.0.1378", "2", "amd64", DEB),
        ),
        (
            "'tzdata' '' '2024b' '0+deb12u1' 'all' 'deb'",
            Package("tzdata", "", "2024b", "0+deb12u1", "all", DEB),
        ),
        ("'mawk' '0' '1.3.4' '3' 'amd64' 'deb'", Package("mawk", "", "1.3.4", "3", "amd64", DEB)),
        (
            "'base-files' '' '12.4+deb12u8' '' 'amd64' 'deb'",
            Package("base-files", "", "12.4+deb12u8", "", "amd64", DEB),
        ),
        # rpm: (none) became '' in the client; stored as "0" as rpm prints it
        (
            "'bash' '' '5.1.8' '9.el9' 'x86_64' 'rpm'",
            Package("bash", "0", "5.1.8", "9.el9", "x86_64", RPM),
        ),
        (
            "'openssl' '1' '3.2.2' '6.el9_5' 'x86_64' 'rpm'",
            Package("openssl", "1", "3.2.2", "6.el9_5", "x86_64", RPM),
        ),
        ("'x' '007' '1' '1' 'x86_64' 'rpm'", Package("x", "7", "1", "1", "x86_64", RPM)),
        ("'x' '000' '1' '1' 'x86_64' 'rpm'", Package("x", "0", "1", "1", "x86_64", RPM)),
        # case kept: rpm names are case-sensitive in repository metadata
        (
            "'NetworkManager' '1' '1.46.0' '19.el9_4' 'x86_64' 'rpm'",
            Package("NetworkManager", "1", "1.46.0", "19.el9_4", "x86_64", RPM),
        ),
        # %2b left by an old client is a '+'
        (
            "'libstdc%2b%2b' '' '11.4.1' '3.el9' 'x86_64' 'rpm'",
            Package("libstdc++", "0", "11.4.1", "3.el9", "x86_64", RPM),
        ),
        # 8-field lines (category, repo) are accepted
        ("'a' '' '1' '1' 'amd64' 'deb' 'cat' 'repo'", Package("a", "", "1", "1", "amd64", DEB)),
        # looser spacing and quoted spaces (Patchman's split-on-space breaks on these)
        ("  'a'   ''\t'1.0' '1'  'amd64' 'deb'  ", Package("a", "", "1.0", "1", "amd64", DEB)),
        ("'odd name' '' '1' '1' 'amd64' 'deb'", Package("odd name", "", "1", "1", "amd64", DEB)),
        ("'a' '' '1' '1' 'amd64' 'deb'\r", Package("a", "", "1", "1", "amd64", DEB)),
    ],
)
def test_protocol1_package_lines(line: str, expected: Package) -> None:
    assert p1(packages=line + "\n").packages == (expected,)


def test_protocol1_skips_keys_blank_lines_duplicates_and_unsupported_types() -> None:
    report = p1(
        packages="\n".join(
            [
                "",
                "'gpg-pubkey' '' '350d275d' '6279464b' '' 'rpm'",
                "'bash' '' '5.2.15' '2+b7' 'amd64' 'deb'",
                "   ",
                "'bash' '' '5.2.15' '2+b7' 'amd64' 'deb'",
                "'linux' '' '6.12.8.arch1' '1' 'x86_64' 'arch'",
                "'sys-apps/portage' '0' '3.0.65' '1' 'amd64' 'gentoo' 'sys-apps' 'gentoo'",
                "'openssl' '' '3.3.2' '1' 'x86_64' 'arch'",
            ]
        )
    )
    assert report.packages == (
        Package("bash", "", "5.2.15", "2+b7", "amd64", DEB),
        Package("linux", "", "6.12.8.arch1", "1", "x86_64", ARCH),
        Package("openssl", "", "3.3.2", "1", "x86_64", ARCH),
    )
    assert report.extra["skipped_packages"] == "gentoo=1"


def test_protocol1_dpkg_hold_status_keeps_the_hold() -> None:
    """A deb line that carries dpkg's status: "hold ok installed" is held, others not."""
    report = p1(
        packages="\n".join(
            [
                "'docker-ce' '5' '27.3.1' '1~debian.12~bookworm' 'amd64' 'deb' 'hold ok installed'",
                "'libc6' '' '2.36' '9+deb12u9' 'i386' 'deb' 'hold ok installed'",
                "'libc6' '' '2.36' '9+deb12u9' 'amd64' 'deb' 'install ok installed'",
                "'bash' '' '5.2.15' '2+b7' 'amd64' 'deb'",  # the stock client: no status
                "'vim' '2' '9.0.1378' '2' 'amd64' 'deb' 'hold ok installed' 'x'",
                "'hello' '0' '1.0' '1' 'noarch' 'rpm' 'hold ok installed'",  # rpm: no dpkg
                "'nano' '' '7.2' '1' 'amd64' 'deb' 'hold ok config-files'",  # not installed
            ]
        )
        + "\n"
    )
    assert len(report.packages) == 7
    assert report.held == (
        HeldPackage("docker-ce", "amd64"),
        HeldPackage("libc6", "i386"),
        HeldPackage("vim", "amd64"),
    )
    assert p1(packages="'bash' '' '5.2.15' '2+b7' 'amd64' 'deb'\n").held == ()


def test_native_held_packages_are_read_checked_and_deduplicated() -> None:
    vim = {"name": "vim", "arch": "amd64"}
    report = parse_native(native_fixture(held=[vim, {"name": "tzdata"}, vim]))
    assert report.held == (HeldPackage("tzdata", ""), HeldPackage("vim", "amd64"))
    assert parse_native(native_fixture(held=[])).held == ()
    doc = native_fixture()
    del doc["held"]
    assert parse_native(doc).held == ()  # absent: nothing held
    for held, where in (
        ([{"name": ""}], "held[0].name"),
        ([{"name": "a", "arch": ""}], "held[0].arch"),
        ([{"name": "a", "version": "1"}], "held[0].version"),
        ([{"arch": "amd64"}], "held[0].name"),
        ("vim", "held"),
        ([{"name": "a"}] * 10_001, "held"),
    ):
        with pytest.raises(ParseError) as info:
            parse_native(native_fixture(held=held))
        assert info.value.where == where


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "'deb' 'Debian 12 x86_64 repo at http://m/debian/dists/bookworm/main/binary-amd64' "
            "'500' 'http://m/debian/dists/bookworm/main/binary-amd64'",
            ReportedRepository(
                RepoKind.DEB,
                "http://m/debian bookworm main",
                "Debian 12 x86_64 repo at http://m/debian/dists/bookworm/main/binary-amd64",
                ("http://m/debian",),
                500,
                suite="bookworm",
                component="main",
                arch="amd64",
            ),
        ),
        # old security suite with a slash, negative pin, https, trailing slash
        (
            "'deb' 'n' '-10' 'https://security.debian.org/dists/stretch/updates/main/binary-i386/'",
            ReportedRepository(
                RepoKind.DEB,
                "https://security.debian.org stretch/updates main",
                "n",
                ("https://security.debian.org",),
                -10,
                suite="stretch/updates",
                component="main",
                arch="i386",
            ),
        ),
        # flat repository (deb URI ./): the client sends URI/./
        (
            "'deb' 'n' '500' 'https://pkgs.example.com/apt/./'",
            ReportedRepository(
                RepoKind.DEB,
                "https://pkgs.example.com/apt ./",
                "n",
                ("https://pkgs.example.com/apt",),
                500,
                suite="./",
            ),
        ),
        # no name: the id stands in
        (
            "'deb' '' '990' 'http://m/debian/dists/sid/main/binary-all'",
            ReportedRepository(
                RepoKind.DEB,
                "http://m/debian sid main",
                "http://m/debian sid main",
                ("http://m/debian",),
                990,
                suite="sid",
                component="main",
                arch="all",
            ),
        ),
        # rpm: priority negated; mirrorlist and metalink picked out of the URL list
        (
            "'rpm' 'Fedora 40 - x86_64 x86_64' 'fedora' '99' "
            "'https://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=x86_64' "
            "'http://dl.fedoraproject.org/pub/fedora/linux/releases/40/Everything/x86_64/os/' "
            "'http://mirror.example.org/fedora/40/'",
            ReportedRepository(
                RepoKind.RPM,
                "fedora",
                "Fedora 40 - x86_64 x86_64",
                (
                    "http://dl.fedoraproject.org/pub/fedora/linux/releases/40/Everything/x86_64/os",
                    "http://mirror.example.org/fedora/40",
                ),
                -99,
                metalink="https://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=x86_64",
            ),
        ),
        (
            "'rpm' 'CentOS-7 - Base x86_64' 'base' '1' "
            "'http://mirrorlist.centos.org/?release=7&arch=x86_64&repo=os'",
            ReportedRepository(
                RepoKind.RPM,
                "base",
                "CentOS-7 - Base x86_64",
                (),
                -1,
                mirrorlist="http://mirrorlist.centos.org/?release=7&arch=x86_64&repo=os",
            ),
        ),
        (
            "'rpm' 'Amazon Linux 2023 repository x86_64' 'amazonlinux' '10' "
            "'https://cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/mirror.list'",
            ReportedRepository(
                RepoKind.RPM,
                "amazonlinux",
                "Amazon Linux 2023 repository x86_64",
                (),
                -10,
                mirrorlist="https://cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/mirror.list",
            ),
        ),
        # clients that sent no repo id: 'rpm' 'NAME' 'PRIORITY' 'URL'
        (
            "'rpm' 'base x86_64' '99' 'http://mirror.centos.org/centos/6/os/x86_64/'",
            ReportedRepository(
                RepoKind.RPM,
                "base x86_64",
                "base x86_64",
                ("http://mirror.centos.org/centos/6/os/x86_64",),
                -99,
            ),
        ),
        # zypper-style annotated priority
        (
            "'rpm' 'n' 'id' '90 (raised priority)' 'http://x/'",
            ReportedRepository(RepoKind.RPM, "id", "n", ("http://x",), -90),
        ),
    ],
)
def test_protocol1_repo_lines(line: str, expected: ReportedRepository) -> None:
    assert p1(repos=line + "\n").repositories == (expected,)


def test_protocol1_multiarch_deb_lines_are_separate_repositories() -> None:
    repos = p1(
        repos="'deb' 'a' '500' 'http://m/debian/dists/bookworm/main/binary-amd64'\n"
        "'deb' 'b' '500' 'http://m/debian/dists/bookworm/main/binary-i386'\n"
        "'deb' 'a' '500' 'http://m/debian/dists/bookworm/main/binary-amd64'\n"
    ).repositories
    assert repos is not None
    assert [(r.id, r.arch) for r in repos] == [
        ("http://m/debian bookworm main", "amd64"),
        ("http://m/debian bookworm main", "i386"),
    ]


def test_protocol1_skips_gentoo_repo_lines_and_reads_arch_ones() -> None:
    report = p1(
        repos="'arch' 'Arch Linux core x86_64' 'core' 'https://geo.mirror.pkgbuild.com/core/os/'\n"
        "'gentoo' 'Gentoo Linux gentoo Repo amd64' 'gentoo' '-1000' 'rsync://rsync.gentoo.org/gentoo-portage'\n"
        "'deb' 'n' '500' 'http://m/debian/dists/bookworm/main/binary-amd64'\n"
    )
    assert report.repositories is not None
    assert [r.kind for r in report.repositories] == [RepoKind.ARCH, RepoKind.DEB]
    assert report.extra["skipped_repositories"] == "gentoo=1"


@pytest.mark.parametrize("repos", ["", "\n", "  \n \n"])
def test_protocol1_empty_repos_means_not_sent(repos: str) -> None:
    """``patchman-client -n`` (every package-manager hook) sends an empty repos field."""
    report = p1(repos=repos, packages="'a' '' '1' '1' 'amd64' 'deb'")
    assert report.repositories is None
    assert report.updates is None  # the client looks for updates only while reading repos


def test_protocol1_missing_repos_field_means_not_sent() -> None:
    assert parse_protocol1(BASE_FORM).repositories is None


def test_protocol1_updates_are_kept_even_without_repositories() -> None:
    report = p1(sec_updates="openssl.x86_64 1:3.2.2-6.el9_5.1 baseos\n")
    assert report.repositories is None
    assert report.updates == (
        ReportedUpdate("openssl", "1:3.2.2-6.el9_5.1", "x86_64", True, "baseos"),
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("bash 5.2 amd64 deb", "packages line 1"),
        ("'a' '' '1' '1' 'amd64' 'deb'\n'b' '' '1' '1' 'amd64'", "packages line 2"),
        ("\n\n'a' '' '1' '1' 'amd64' 'deb' 'c' 'r' 'x'", "packages line 3"),
        ("'a' '' '1' '1' 'amd64' 'pkg'", "packages line 1"),
        ("'' '' '1' '1' 'amd64' 'deb'", "packages line 1"),
        ("'a' '' '' '1' 'amd64' 'deb'", "packages line 1"),
        ("'a' '' '1' '1' '' 'deb'", "packages line 1"),
        ("'a' 'x1' '1' '1' 'amd64' 'deb'", "packages line 1"),
        ("'a' '-1' '1' '1' 'amd64' 'rpm'", "packages line 1"),
        ("'a' '\uff11' '1' '1' 'amd64' 'rpm'", "packages line 1"),  # a full-width digit
        ("'a' '12345678901234567' '1' '1' 'amd64' 'rpm'", "packages line 1"),
        (f"'{'n' * 257}' '' '1' '1' 'amd64' 'deb'", "packages line 1"),
        ("'a' '' '1' '1' 'amd64' 'deb", "packages line 1"),
        ("'a' '' '1' '1' 'amd64' 'deb' junk", "packages line 1"),
        ("'a' '' '1' '1' 'amd64' 'deb'\n'b' '' '1\x00' '1' 'amd64' 'deb'", "packages line 2"),
        ("'a' '' '1' '1' 'amd64' 'deb'\n\n'b' '' '1\ud800' '1' 'amd64' 'deb'", "packages line 3"),
        ("'deb' 'n' 'high' 'http://m/debian/dists/bookworm/main/binary-amd64'", "repos line 1"),
        ("'deb' 'n' '500'", "repos line 1"),
        ("'deb' 'n' '500' ''", "repos line 1"),
        ("\n'rpm' 'n' 'id' 'x' 'http://a'", "repos line 2"),
        ("'rpm' 'n' 'id'", "repos line 1"),
        ("'rpm' 'n' 'id' '999999999' 'http://a'", "repos line 1"),
        ("'yast' 'n' 'id' '99' 'http://a'", "repos line 1"),
        ("deb n 500 http://a", "repos line 1"),
        (f"'rpm' 'n' 'id' '99' '{'u' * 2049}'", "repos line 1"),
        (f"'deb' 'n' '500' 'http://m/{'d' * 600}/dists/s/main/binary-amd64'", "repos line 1"),
        # pacman repositories: no URL, an empty one, a control character in the id
        ("'arch' 'Arch Linux core x86_64' 'core'\n", "repos line 1"),  # no URL
        ("'arch' 'n' 'core' ''\n", "repos line 1"),
        ("'arch' 'n' 'co\x1bre' 'https://m/core/os/'\n", "repos line 1.id"),
        ("'nodejs' '18' '1' 'rhel9' 'x86_64'", "modules line 1"),
        ("'a' 's' '1' 'c' 'x86_64' 'r'\n'' 's' '1' 'c' 'x86_64' 'r'", "modules line 2"),
        ("nodejs 18", "modules line 1"),
        ("openssl 1:3.2.2-6 baseos", "sec_updates line 1"),
        ("a.x86_64 1-1 r\n\nb.x86_64", "sec_updates line 3"),
        (".x86_64 1-1 r", "sec_updates line 1"),
        (f"a.x86_64 {'1' * 300} r", "sec_updates line 1"),
    ],
)
def test_protocol1_bad_lines_name_the_line(text: str, where: str) -> None:
    """A bad line of a list field is named by field and line (``where`` starts with the
    field the text is sent in)."""
    assert p1_error(**{where.split()[0]: text}).where == where


def test_protocol1_module_without_repo_and_artifacts() -> None:
    report = p1(modules="'perl' '5.32' '1' 'ctx' 'x86_64' ''\n")
    assert report.modules == (ReportedModule("perl", "5.32", "1", "ctx", "x86_64", ()),)
    assert "module_repositories" not in report.extra


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # yum/zypper triples, one per line
        (
            "openssl.x86_64 1:3.2.2-6.el9_5.1 baseos\nbash.x86_64 5.1.8-10.el9 baseos\n",
            [
                ("openssl", "1:3.2.2-6.el9_5.1", "x86_64", "baseos"),
                ("bash", "5.1.8-10.el9", "x86_64", "baseos"),
            ],
        ),
        # newlines are not significant (Patchman reads the field as a token stream)
        (
            "a.noarch 1-1 r1 b.x86_64 2-1 r2",
            [("a", "1-1", "noarch", "r1"), ("b", "2-1", "x86_64", "r2")],
        ),
        # apt's -u mode: two tokens per line (Patchman misaligns these)
        (
            "openssl.amd64 3.0.15-1~deb12u1\nlibssl3.amd64 3.0.15-1~deb12u1\n",
            [
                ("openssl", "3.0.15-1~deb12u1", "amd64", ""),
                ("libssl3", "3.0.15-1~deb12u1", "amd64", ""),
            ],
        ),
        # yum wrapping the repository column onto the next line
        (
            "kernel-devel.x86_64 3.10.0-1160.119.1.el7\n        updates\n"
            "tzdata.noarch 2024b-1.el7 updates\n",
            [
                ("kernel-devel", "3.10.0-1160.119.1.el7", "x86_64", "updates"),
                ("tzdata", "2024b-1.el7", "noarch", "updates"),
            ],
        ),
        # dots in names: the arch is after the last dot
        (
            "gir1.2-glib-2.0.amd64 1.74.0-3\npython3.11.x86_64 3.11.7-1.el9 appstream\n",
            [
                ("gir1.2-glib-2.0", "1.74.0-3", "amd64", ""),
                ("python3.11", "3.11.7-1.el9", "x86_64", "appstream"),
            ],
        ),
        (
            "libstdc%2b%2b.x86_64 11.5.0-2.el9 baseos",
            [("libstdc++", "11.5.0-2.el9", "x86_64", "baseos")],
        ),
        ("", []),
        ("\n  \n", []),
    ],
)
def test_protocol1_update_lists(text: str, expected: list[tuple[str, str, str, str]]) -> None:
    report = p1(bug_updates=text, repos="'rpm' 'n' 'baseos' '99' 'http://a'")
    assert report.updates is not None
    assert [(u.name, u.version, u.arch, u.repository) for u in report.updates] == expected
    assert not any(u.security for u in report.updates)


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        ({"kernel": "6.6.51%2brpt-rpi-v8"}, "kernel", "6.6.51+rpt-rpi-v8"),
        ({"kernel": "6.6.51%2Brpt-rpi-v8"}, "kernel", "6.6.51+rpt-rpi-v8"),
        ({"host": "  Web01.Example.com  "}, "hostname", "web01.example.com"),
        ({"tags": "Default"}, "tags", ("Default",)),
        ({"tags": "web,db"}, "tags", ("web", "db")),
        ({"tags": "web db, prod,,web"}, "tags", ("web", "db", "prod")),
        ({"tags": ""}, "tags", ()),
        ({"tags": "Büro"}, "tags", ("Büro",)),
        ({"reboot": "True"}, "reboot_required", True),
        ({"reboot": "ServerCheck"}, "reboot_required", None),
        ({"reboot": ""}, "reboot_required", None),
        ({"os": "Ubuntu 24.04.1 LTS"}, "os", "Ubuntu 24.04"),
        ({"os": "Debian trixie-sid"}, "os", "Debian trixie/sid"),
        ({"verbose": "1", "debug": "1"}, "arch", "x86_64"),  # old clients' extra fields
        ({"protocol": ""}, "protocol", "patchman/1"),
    ],
)
def test_protocol1_scalar_fields(fields: dict[str, str], attr: str, expected: object) -> None:
    value = getattr(p1(**fields), attr)
    assert (value.name if attr == "os" else value) == expected


@pytest.mark.parametrize(
    ("report", "expected"), [("true", "true"), ("1", "true"), ("false", "false"), ("0", "false")]
)
def test_protocol1_report_echo_flag(report: str, expected: str) -> None:
    assert p1(report=report).extra["report"] == expected


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"host": ""}, "host"),
        ({"host": "web 01"}, "host"),
        ({"os": "  "}, "os"),
        ({"os": "x" * 1025}, "os"),
        ({"kernel": ""}, "kernel"),
        ({"kernel": "6.1%00"}, "kernel"),
        ({"arch": ""}, "arch"),
        ({"arch": "x" * 33}, "arch"),
        ({"protocol": "2"}, "protocol"),
        ({"tags": ",".join(f"t{i}" for i in range(65))}, "tags"),
        ({"tags": "a\x01b"}, "tags"),
        ({"tags": "t" * 65}, "tags"),
        ({"os": "Debian\x00 12"}, "os"),
    ],
)
def test_protocol1_bad_scalar_fields(fields: dict[str, str], where: str) -> None:
    assert p1_error(**fields).where == where


def test_protocol1_rejects_what_is_not_a_form() -> None:
    with pytest.raises(ParseError):
        parse_protocol1(["host", "os"])  # type: ignore[arg-type]
    with pytest.raises(ParseError) as info:
        parse_protocol1({**BASE_FORM, "packages": b"'a'"})  # type: ignore[dict-item]
    assert info.value.where == "packages"


# =========================================================================== protocol 2


def test_protocol2_packages_and_types() -> None:
    report = p2(
        packages=[
            {
                "name": "libstdc%2b%2b",
                "epoch": "",
                "version": "11.5.0",
                "release": "2.el9",
                "arch": "x86_64",
                "type": "rpm",
            },
            {
                "name": "vim",
                "epoch": "2",
                "version": "9.0.1378",
                "release": "2",
                "arch": "amd64",
                "type": "deb",
            },
            {"name": "mawk", "version": "1.3.4", "arch": "amd64", "type": "deb"},
            {
                "name": "gpg-pubkey",
                "version": "350d275d",
                "release": "6279464b",
                "arch": "",
                "type": "rpm",
            },
            {
                "name": "linux",
                "version": "6.12.8.arch1",
                "release": "1",
                "arch": "x86_64",
                "type": "arch",
            },
            {
                "name": "x",
                "version": "1",
                "arch": "x86_64",
                "type": "rpm",
                "category": "",
                "repo": "",
                "new": 1,
            },
        ]
    )
    assert report.packages == (
        Package("libstdc++", "0", "11.5.0", "2.el9", "x86_64", RPM),
        Package("vim", "2", "9.0.1378", "2", "amd64", DEB),
        Package("mawk", "", "1.3.4", "", "amd64", DEB),
        Package("linux", "", "6.12.8.arch1", "1", "x86_64", ARCH),
        Package("x", "0", "1", "", "x86_64", RPM),
    )
    assert "skipped_packages" not in report.extra


def test_protocol2_repositories() -> None:
    report = p2(
        os="openSUSE Leap 15.5",
        repos=[
            {
                "type": "deb",
                "name": "d",
                "priority": 500,
                "urls": ["http://m/debian/dists/bookworm/main/binary-amd64"],
            },
            {
                "type": "rpm",
                "name": "Main x86_64",
                "id": "repo-oss",
                "priority": "99",
                "urls": ["http://o/oss/"],
            },
            {
                "type": "gentoo",
                "name": "g",
                "id": "gentoo",
                "priority": 0,
                "urls": ["rsync://rsync.gentoo.org/gentoo-portage"],
            },
            {
                "type": "rpm",
                "name": "rsync is fine here",
                "id": "r",
                "priority": 1.0,
                "urls": ["rsync://x/y"],
            },
        ],
    )
    assert report.repositories == (
        ReportedRepository(
            RepoKind.DEB,
            "http://m/debian bookworm main",
            "d",
            ("http://m/debian",),
            500,
            suite="bookworm",
            component="main",
            arch="amd64",
        ),
        ReportedRepository(RepoKind.ZYPPER, "repo-oss", "Main x86_64", ("http://o/oss",), -99),
        ReportedRepository(RepoKind.ZYPPER, "r", "rsync is fine here", ("rsync://x/y",), -1),
    )
    assert report.extra["skipped_repositories"] == "gentoo=1"


@pytest.mark.parametrize("repos", [None, []])
def test_protocol2_no_repos_means_not_sent(repos: list[object] | None) -> None:
    doc = {**BASE_P2, "sec_updates": [], "bug_updates": []}
    if repos is not None:
        doc["repos"] = repos
    report = parse_protocol2(doc)
    assert report.repositories is None
    assert report.updates is None


def test_protocol2_updates_security_wins() -> None:
    report = p2(
        repos=[{"type": "rpm", "name": "b", "id": "baseos", "priority": 99, "urls": ["http://b"]}],
        sec_updates=[
            {"name": "openssl", "version": "1:3.2.2-6.el9_5.1", "arch": "x86_64", "repo": "baseos"}
        ],
        bug_updates=[
            {"name": "openssl", "version": "1:3.2.2-6.el9_5.1", "arch": "x86_64", "repo": "baseos"},
            {"name": "libstdc%2b%2b", "version": "11.5.0-5.el9_5", "arch": "x86_64"},
        ],
    )
    assert report.updates == (
        ReportedUpdate("openssl", "1:3.2.2-6.el9_5.1", "x86_64", True, "baseos"),
        ReportedUpdate("libstdc++", "11.5.0-5.el9_5", "x86_64", False, ""),
    )


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        ({"reboot_required": True}, "reboot_required", True),
        ({"reboot_required": False}, "reboot_required", None),
        ({"reboot_required": "True"}, "reboot_required", True),
        ({}, "reboot_required", None),
        ({"kernel": "6.6.51%2brpt-rpi-v8"}, "kernel", "6.6.51+rpt-rpi-v8"),
        ({"tags": "web,db"}, "tags", ("web", "db")),
        ({"tags": ["web", "db", "web"]}, "tags", ("web", "db")),
        ({"hostname": "DB01.example.com"}, "hostname", "db01.example.com"),
        ({"protocol": "2"}, "protocol", "patchman/2"),
        ({"protocol": None}, "protocol", "patchman/2"),
        ({"os": "Debian GNU/Linux trixie/sid"}, "os", "Debian trixie/sid"),
    ],
)
def test_protocol2_scalar_fields(fields: dict[str, Any], attr: str, expected: object) -> None:
    value = getattr(p2(**fields), attr)
    assert (value.name if attr == "os" else value) == expected


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], None),
        ("text", None),
        ({**BASE_P2, "protocol": 1}, "protocol"),
        ({**BASE_P2, "protocol": True}, "protocol"),
        ({k: v for k, v in BASE_P2.items() if k != "hostname"}, "hostname"),
        ({**BASE_P2, "hostname": "bad host"}, "hostname"),
        ({**BASE_P2, "arch": 64}, "arch"),
        ({**BASE_P2, "kernel": ""}, "kernel"),
        ({**BASE_P2, "os": None}, "os"),
        ({**BASE_P2, "tags": [1]}, "tags[0]"),
        ({**BASE_P2, "reboot_required": 1}, "reboot_required"),
        ({**BASE_P2, "packages": {}}, "packages"),
        ({**BASE_P2, "packages": ["x"]}, "packages[0]"),
        (
            {
                **BASE_P2,
                "packages": [
                    {"name": "a", "version": "1", "arch": "x", "type": "rpm"},
                    {"name": "b", "version": "1", "arch": "x"},
                ],
            },
            "packages[1].type",
        ),
        (
            {**BASE_P2, "packages": [{"name": "a", "version": "1", "arch": "x", "type": "msi"}]},
            "packages[0]",
        ),
        (
            {
                **BASE_P2,
                "packages": [
                    {"name": "a", "epoch": "e", "version": "1", "arch": "x", "type": "rpm"}
                ],
            },
            "packages[0]",
        ),
        (
            {
                **BASE_P2,
                "packages": [{"name": "a\x00", "version": "1", "arch": "x", "type": "rpm"}],
            },
            "packages[0].name",
        ),
        (
            {**BASE_P2, "repos": [{"type": "rpm", "name": "n", "priority": "high", "urls": []}]},
            "repos[0].priority",
        ),
        (
            {**BASE_P2, "repos": [{"type": "rpm", "name": "n", "priority": 1.5, "urls": []}]},
            "repos[0].priority",
        ),
        ({**BASE_P2, "repos": [{"type": "rpm", "name": "n", "urls": "http://a"}]}, "repos[0].urls"),
        ({**BASE_P2, "repos": [{"type": "rpm", "name": "n", "urls": [3]}]}, "repos[0].urls[0]"),
        ({**BASE_P2, "repos": [{"type": "deb", "name": "n", "urls": []}]}, "repos[0].urls"),
        ({**BASE_P2, "repos": [{"type": "yast", "name": "n", "urls": []}]}, "repos[0].type"),
        ({**BASE_P2, "modules": [{"stream": "18"}]}, "modules[0].name"),
        ({**BASE_P2, "modules": [{"name": "n", "packages": [1]}]}, "modules[0].packages[0]"),
        ({**BASE_P2, "sec_updates": [{"name": "a", "arch": "x"}]}, "sec_updates[0].version"),
        ({**BASE_P2, "bug_updates": "a.x86_64 1 r"}, "bug_updates"),
    ],
)
def test_protocol2_errors_name_the_json_path(doc: Any, where: str | None) -> None:
    assert p2_error(doc).where == where


# =========================================================================== native


@pytest.mark.parametrize(
    ("package", "epoch"),
    [
        ({"type": "deb"}, ""),
        ({"type": "deb", "epoch": ""}, ""),
        ({"type": "deb", "epoch": "0"}, ""),
        ({"type": "deb", "epoch": "00"}, ""),
        ({"type": "deb", "epoch": "1"}, "1"),
        ({"type": "deb", "epoch": "010"}, "10"),
        ({"type": "rpm"}, "0"),
        ({"type": "rpm", "epoch": ""}, "0"),
        ({"type": "rpm", "epoch": "0"}, "0"),
        ({"type": "rpm", "epoch": "2"}, "2"),
    ],
)
def test_native_epochs_are_canonical(package: dict[str, str], epoch: str) -> None:
    item = {"name": "p", "version": "1", "arch": "amd64", **package}
    assert parse_native(native_fixture(packages=[item])).packages[0].epoch == epoch


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"color": "red"}, "packages[0].color"),
        ({"version": 1}, "packages[0].version"),
        ({"version": ["1"]}, "packages[0].version"),
        ({"type": "tar"}, "packages[0].type"),
        ({"name": ""}, "packages[0].name"),
        ({"release": None}, "packages[0].release"),
        ({"epoch": 1}, "packages[0].epoch"),
    ],
)
@pytest.mark.parametrize("full", [False, True], ids=["four-keys", "six-keys"])
def test_native_package_seen_before_is_checked_again_when_it_differs(
    change: dict[str, object], where: str, full: bool
) -> None:
    """Parsed packages are memoised; a variant of a known one must still be rejected.

    Objects with all six keys (as the agent sends them) are memoised by their values
    alone; four-key ones by their pairs."""
    item = {"name": "memo-check", "version": "1.0-1", "arch": "amd64", "type": "deb"}
    if full:
        item = {**item, "epoch": "", "release": "2"}
    first = parse_native(native_fixture(packages=[item])).packages[0]
    assert parse_native(native_fixture(packages=[dict(item)])).packages[0] is first
    with pytest.raises(ParseError) as info:
        parse_native(native_fixture(packages=[{**item, **change}]))
    assert info.value.where == where


def test_native_duplicates_are_dropped_when_the_memo_empties_midway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records are deduplicated by identity only while the memo keeps them canonical.

    Here the memo empties in the middle of the list, so the second ``a`` is another
    object equal to the first: it must still count once."""
    from patchwatch.domain.reports import memo

    monkeypatch.setattr(memo, "MEMO", memo.PackageMemo())
    monkeypatch.setattr(memo.PackageMemo, "LIMIT_BYTES", 3 * 400)
    item = {"epoch": "", "release": "1", "arch": "amd64", "type": "deb"}
    names = ["dedup-a", "dedup-b", "dedup-c", "dedup-d", "dedup-a"]
    packages = parse_native(
        native_fixture(packages=[{**item, "name": n, "version": "1"} for n in names])
    ).packages
    assert memo.MEMO.generation == 1
    assert sorted(p.name for p in packages) == ["dedup-a", "dedup-b", "dedup-c", "dedup-d"]


def test_native_unknown_packages_among_known_ones_are_checked() -> None:
    """Known objects are looked up in bulk; the new ones among them are checked one by one."""
    item = {"epoch": "", "release": "1", "arch": "amd64", "type": "deb", "version": "1"}
    known = [{**item, "name": f"bulk-{i}"} for i in range(5)]
    parse_native(native_fixture(packages=known))
    with pytest.raises(ParseError) as info:
        parse_native(native_fixture(packages=[*known[:3], {**item, "name": "bulk-x", "arch": 7},
                                          *known[3:]]))  # fmt: skip
    assert info.value.where == "packages[3].arch"


def test_native_repositories_absent_empty_and_duplicates() -> None:
    doc = native_fixture()
    del doc["repositories"]
    assert parse_native(doc).repositories is None
    assert parse_native(native_fixture(repositories=[])).repositories == ()
    repo = {"type": "rpm", "id": "baseos", "urls": []}
    assert len(parse_native(native_fixture(repositories=[repo, repo])).repositories or ()) == 1
    pkg = {"name": "p", "version": "1", "arch": "amd64", "type": "deb"}
    assert len(parse_native(native_fixture(packages=[pkg, dict(pkg, epoch="0")])).packages) == 1


def test_native_apk_tagged_repository_carries_its_pins() -> None:
    url = "https://dl-cdn.alpinelinux.org/alpine/edge/main"
    repo = {"type": "apk", "id": f"@edge {url}", "urls": [url], "arch": "x86_64",
            "tag": "edge", "pinned": ["vim", "curl", "vim"]}  # fmt: skip
    VALIDATOR.validate(native_fixture(repositories=[repo]))
    (parsed,) = parse_native(native_fixture(repositories=[repo])).repositories or ()
    assert (parsed.tag, parsed.pinned, parsed.enabled) == ("edge", ("curl", "vim"), True)
    for bad, where in (
        (dict(repo, tag="@edge"), "repositories[0].tag"),
        (dict(repo, tag="", pinned=["vim"]), "repositories[0].pinned"),
        (dict(repo, pinned="vim"), "repositories[0].pinned"),
        (dict(repo, pinned=["x" * 300]), "repositories[0].pinned[0]"),
        (dict(repo, pinned=["vim curl"]), "repositories[0].pinned[0]"),
    ):
        with pytest.raises(ParseError) as err:
            parse_native(native_fixture(repositories=[bad]))
        assert err.value.where == where
        assert not VALIDATOR.is_valid(native_fixture(repositories=[bad]))


def test_native_agent_details_go_to_extra() -> None:
    report = parse_native(
        native_fixture(
            agent={"name": "a", "collected_at": 10**400, "warnings": ["w1", "w2"], "x": [1]}
        )
    )
    assert report.agent == "a"
    assert report.extra["agent_warnings"] == "w1\nw2"
    assert "agent_collected_at" not in report.extra  # not a plausible time: not kept


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"version": 2}, "version"),
        ({"version": True}, "version"),
        ({"host": "bad host"}, "host"),
        ({"host": None}, "host"),
        ({"os": {"version_id": "12"}}, "os.id"),
        ({"os": {"id": "debian", "name": 5}}, "os.name"),
        ({"os": []}, "os"),
        ({"kernel": ""}, "kernel"),
        ({"arch": "a" * 33}, "arch"),
        ({"tags": ["ok", "not ok"]}, "tags[1]"),
        ({"tags": "web"}, "tags"),
        ({"reboot_required": "yes"}, "reboot_required"),
        ({"packages": None}, "packages"),
        (
            {"packages": [{"name": "a", "version": "1", "arch": "x", "type": "deb"}, 7]},
            "packages[1]",
        ),
        ({"packages": [{"version": "1", "arch": "x", "type": "deb"}]}, "packages[0].name"),
        (
            {"packages": [{"name": "a", "version": 1, "arch": "x", "type": "deb"}]},
            "packages[0].version",
        ),
        (
            {"packages": [{"name": "a", "version": "1", "arch": "x", "type": "msi"}]},
            "packages[0].type",
        ),
        (
            {"packages": [{"name": "a", "version": "1", "arch": "x", "type": ["deb"]}]},
            "packages[0].type",
        ),
        (
            {
                "packages": [
                    {"name": "a", "version": "1", "arch": "x", "type": "deb", "epoch": "1a"}
                ]
            },
            "packages[0].epoch",
        ),
        (
            {
                "packages": [
                    {"name": "a", "version": "1", "arch": "x", "type": "deb", "vendor": "x"}
                ]
            },
            "packages[0].vendor",
        ),
        (
            {
                "packages": [
                    {"name": "a", "version": "1", "arch": "x", "type": "deb", "release": "r" * 257}
                ]
            },
            "packages[0].release",
        ),
        (
            {"packages": [{"name": "a\x00", "version": "1", "arch": "x", "type": "deb"}]},
            "packages[0]",
        ),
        ({"repositories": [{"type": "deb", "id": "x", "urls": [""]}]}, "repositories[0].urls[0]"),
        ({"repositories": [{"type": "apt", "id": "x", "urls": []}]}, "repositories[0].type"),
        (
            {"repositories": [{"type": "deb", "id": "x", "urls": [], "priority": 100001}]},
            "repositories[0].priority",
        ),
        (
            {"repositories": [{"type": "deb", "id": "x", "urls": [], "priority": 1.5}]},
            "repositories[0].priority",
        ),
        (
            {"repositories": [{"type": "deb", "id": "x", "urls": [], "enabled": "yes"}]},
            "repositories[0].enabled",
        ),
        ({"repositories": [{"type": "deb", "id": "x"}]}, "repositories[0].urls"),
        ({"modules": [{"name": "n"}]}, "modules[0].stream"),
        ({"modules": [{"name": "n", "stream": "s", "packages": [None]}]}, "modules[0].packages[0]"),
        (
            {"updates": [{"name": "n", "version": "1", "arch": "x", "security": "yes"}]},
            "updates[0].security",
        ),
        ({"agent": {"collected_at": "now"}}, "agent.collected_at"),
        ({"agent": {"warnings": [1]}}, "agent.warnings[0]"),
        ({"agent": "patchwatch-agent"}, "agent"),
    ],
)
def test_native_errors_name_the_json_path(change: dict[str, Any], where: str) -> None:
    assert native_error(native_fixture(**change)).where == where


@pytest.mark.parametrize("key", ["version", "host", "os", "kernel", "arch", "packages"])
def test_native_required_keys(key: str) -> None:
    doc = native_fixture()
    del doc[key]
    assert native_error(doc).where == key


def test_native_rejects_non_objects() -> None:
    for doc in (None, [], "report", 1):
        assert native_error(doc).where is None


def test_native_package_limit() -> None:
    pkg = {"name": "a", "version": "1", "arch": "x", "type": "deb"}
    doc = native_fixture(packages=[pkg] * 100_001)
    assert not VALIDATOR.is_valid(doc)
    assert native_error(doc).where == "packages"


# --------------------------------------------------------------------------- schema agreement

_LENGTHS = (16, 32, 64, 100, 253, 256, 512, 1024, 2048, 4096)
_SCALARS: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    1,
    1.0,
    2,
    -1,
    1.5,
    5.0,
    100_000,
    100_001,
    -100_000,
    -100_001,
    "",
    "x",
    "bad value",
    "-lead",
    "_ok",
    "tail.",
    "UP.case",
    "a..b",
    "1a",
    "007",
    "deb",
    "rpm",
    "zypper",
    "arch",
    [],
    ["x"],
    {},
    {"x": 1},
)


def _paths(value: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _get(doc: Any, path: tuple[object, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _with(doc: Any, path: tuple[object, ...], fn: Callable[[Any, object], None]) -> Any:
    new = copy.deepcopy(doc)
    fn(_get(new, path[:-1]), path[-1])
    return new


def _mutations(doc: Any) -> Iterator[Any]:
    """Every path replaced by odd scalars, strings around every limit, lists resized."""
    for path in _paths(doc):
        value = _get(doc, path)
        if isinstance(value, dict):
            yield _with(doc, (*path, "bogus"), lambda parent, key: parent.__setitem__(key, "x"))
        if isinstance(value, list) and value:
            for size in (64, 65, 100, 101):
                yield _with(
                    doc,
                    (*path, 0),
                    lambda parent, _, n=size: parent.extend(parent[:1] * (n - len(parent))),
                )
        if not path:
            continue
        parent = _get(doc, path[:-1])
        if isinstance(parent, dict):
            yield _with(doc, path, lambda parent, key: parent.pop(key))
        for scalar in _SCALARS:
            yield _with(
                doc, path, lambda parent, key, s=scalar: parent.__setitem__(key, copy.deepcopy(s))
            )
        if isinstance(value, str):
            for n in _LENGTHS:
                for size in (n, n + 1):
                    yield _with(
                        doc, path, lambda parent, key, s=size: parent.__setitem__(key, "a" * s)
                    )


def _trimmed(name: str) -> dict[str, Any]:
    """A fixture cut down to a few list items: the rest would repeat the same paths."""
    doc = load_json(name)
    for key in ("packages", "repositories", "modules", "updates", "held"):
        if key in doc:
            doc[key] = doc[key][:2]
    return doc


@pytest.mark.parametrize(
    "fixture", ["native_deb.json", "native_rpm.json", "native_arch.json", "native_apk.json"]
)
def test_parse_native_accepts_exactly_what_the_schema_accepts(fixture: str) -> None:
    valid = invalid = 0
    disagreements = []
    for doc in _mutations(_trimmed(fixture)):
        expected = VALIDATOR.is_valid(doc)
        valid, invalid = valid + expected, invalid + (not expected)
        if accepts(parse_native, doc, ParseError) != expected:
            disagreements.append((expected, json.dumps(doc)[:300]))
    assert disagreements == []
    assert valid > 500 and invalid > 500  # both sides of the line were exercised


@pytest.mark.parametrize(
    "change",
    [
        {"host": "web01\n"},  # Python's "$" matches before a final newline; ECMA-262's does not
        {"tags": ["web\n"]},
        {"packages": [{"name": "a", "version": "1", "arch": "x", "type": "deb", "epoch": "1\n"}]},
        {"kernel": "6.1\x00"},  # NUL: no database stores it
        {"arch": "x86\ud800"},  # lone surrogate: not encodable as UTF-8
    ],
)
def test_deliberate_differences_from_the_python_schema_validator(change: dict[str, Any]) -> None:
    doc = native_fixture(**change)
    assert VALIDATOR.is_valid(doc)
    assert not accepts(parse_native, doc, ParseError)


_SCHEMA_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\n"), max_size=12)
_SCHEMA_JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-200_000, 200_000),
        st.floats(allow_nan=False),
        _SCHEMA_TEXT,
        st.sampled_from(
            [
                "a" * 64,
                "a" * 65,
                "x.y",
                "-a",
                "deb",
                "rpm",
                "zypper",
                "arch",
                "apk",
                "1",
                "1-r0",
                "1.",
            ]
        ),
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_SCHEMA_TEXT, children),
    max_leaves=8,
)


def _mutate_once(draw: st.DrawFn, doc: Any, junk: Any, text: Any) -> bool:
    """Replace, delete or extend one path of ``doc`` with ``junk``; False without paths."""
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return False
    path = draw(st.sampled_from(paths))
    parent = _get(doc, path[:-1])
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(junk)
    elif action == "delete" and isinstance(parent, dict):
        parent.pop(path[-1])
    elif isinstance(parent, dict):
        parent[draw(text)] = draw(junk)
    else:
        parent.append(draw(junk))
    return True


@st.composite
def _schema_mutated(draw: st.DrawFn, base: Any) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 2))):
        _mutate_once(draw, doc, _SCHEMA_JUNK, _SCHEMA_TEXT)
    return doc


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(
        [_trimmed(f"native_{kind}.json") for kind in ("deb", "rpm", "arch", "apk")]
    ).flatmap(_schema_mutated)
)
def test_parse_native_agrees_with_the_schema_on_random_mutations(doc: Any) -> None:
    """Random junk at random places (minus the deliberate differences tested above, and
    repository strings that are not printable: the parser refuses those, which the
    schema's patterns cannot say; tested in tests/test_repository_keys.py)."""
    assume(_repository_strings_printable(doc))
    assert accepts(parse_native, doc, ParseError) == VALIDATOR.is_valid(doc)


def _repository_strings_printable(doc: Any) -> bool:
    repos = doc.get("repositories") if isinstance(doc, dict) else None
    for repo in repos if isinstance(repos, list) else ():
        if not isinstance(repo, dict):
            continue
        urls = repo.get("urls")
        values = [repo.get(k) for k in ("id", "name", "suite", "component", "arch",
                                        "mirrorlist", "metalink")]  # fmt: skip
        values += urls if isinstance(urls, list) else []
        if any(isinstance(v, str) and not v.isprintable() for v in values):
            return False
    return True


# =========================================================================== fuzzing

_TEXT = st.lists(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs", "Cc"]),
        st.sampled_from(["'", " ", "\n", "\x00", ".", "%2b", "-", ":", "/", "\ud800", "' '"]),
    ),
    max_size=40,
).map("".join)
_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.binary(max_size=8),
)
_JUNK = st.recursive(
    _ATOMS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_TEXT | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def _mutated(draw: st.DrawFn, base: Any) -> Any:
    """A valid document with a few paths replaced, deleted or extended with junk."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        if not _mutate_once(draw, doc, _JUNK, _TEXT):
            break
    return doc


_QUOTED_LINE = st.lists(_TEXT, max_size=9).map(lambda tokens: " ".join(f"'{t}'" for t in tokens))
_FIELD = st.one_of(
    _TEXT,
    st.lists(_QUOTED_LINE | _TEXT, max_size=5).map("\n".join),
    st.lists(st.sampled_from(["a.x86_64", "1:1-1", "repo", "b.amd64", "2", "\n"]), max_size=8).map(
        " ".join
    ),
)
_FORM_KEYS = st.sampled_from(
    [
        "host",
        "os",
        "kernel",
        "arch",
        "tags",
        "protocol",
        "report",
        "reboot",
        "packages",
        "repos",
        "modules",
        "sec_updates",
        "bug_updates",
    ]
)

_FORMS = [
    load_form(name)
    for name in ("patchman1-debian12", "patchman1-rocky9", "patchman1-leap15", "patchman1-arch")
]
_P2 = [
    load_json("patchman2-rocky9.json"),
    load_json("patchman2-rocky9-hook.json"),
    load_json("patchman2-arch.json"),
]
_NATIVE = [load_json(f"native_{kind}.json") for kind in ("deb", "rpm", "arch", "apk")]


def _only_parse_errors(parser: Callable[[Any], HostReport], value: Any) -> None:
    """Anything may be rejected, but only with ParseError; what passes is well-formed."""
    try:
        report = parser(value)
    except ParseError as exc:
        assert exc.where is None or isinstance(exc.where, str)
        return
    assert isinstance(report, HostReport)
    assert report.hostname == report.hostname.lower() and report.hostname
    assert "domain" in report.extra
    for package in report.packages:
        assert package.epoch != ("" if package.kind is RPM else "0")
        assert package.name and package.version and package.arch
        assert "\x00" not in package.name + package.version + package.release


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.one_of(_JUNK, st.sampled_from(_NATIVE).flatmap(_mutated)))
def test_fuzz_native_raises_only_parse_error(doc: Any) -> None:
    _only_parse_errors(parse_native, doc)


@_FUZZ
@given(st.one_of(_JUNK, st.sampled_from(_P2).flatmap(_mutated)))
def test_fuzz_protocol2_raises_only_parse_error(doc: Any) -> None:
    _only_parse_errors(parse_protocol2, doc)


@_FUZZ
@given(
    st.one_of(
        _JUNK,
        st.dictionaries(_FORM_KEYS | _TEXT, _FIELD, max_size=14),
        st.tuples(
            st.sampled_from(_FORMS), st.dictionaries(_FORM_KEYS, _FIELD | _JUNK, max_size=3)
        ).map(lambda pair: {**pair[0], **pair[1]}),
    )
)
def test_fuzz_protocol1_raises_only_parse_error(form: Any) -> None:
    _only_parse_errors(parse_protocol1, form)


# =========================================================================== speed


def test_a_1500_package_report_parses_in_each_protocol() -> None:
    """The size of a real host's report; bench/bench_parse_reports.py times these."""
    native, form, proto2 = synthetic_reports(1500)
    for parser, doc in (
        (parse_native, native),
        (parse_protocol1, form),
        (parse_protocol2, proto2),
    ):
        assert len(parser(doc).packages) == 1500


def test_the_package_memo_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile reports of long, never repeated names cannot grow the memo without bound:
    its memory, measured, stays near its byte limit however many entries come."""
    import gc
    import tracemalloc

    from patchwatch.domain.reports import memo

    limit = 2 * 1024 * 1024
    monkeypatch.setattr(memo, "MEMO", memo.PackageMemo())
    monkeypatch.setattr(memo.PackageMemo, "LIMIT_BYTES", limit)
    gc.collect()
    tracemalloc.start()
    try:
        for batch in range(6):
            items = [
                {"name": f"hostile-{batch}-{i}-" + "x" * 150, "epoch": "", "version": "1",
                 "release": "1", "arch": "amd64", "type": "deb"}
                for i in range(2000)
            ]  # fmt: skip
            parse_native(native_fixture(packages=items))
            del items
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert memo.MEMO.generation >= 3  # 12,000 entries of ~500 bytes: emptied often
    assert memo.MEMO.size <= limit
    assert held < 1.5 * limit, f"memo holds {held / 1e6:.1f} MB for a {limit / 1e6:.1f} MB limit"


# -- routing: the fields the receiver reads before storing a report ------------------

_HOST_VALUES = st.one_of(
    st.sampled_from(["web1.example.com", "WEB1.", "-web", "a..b", "", " web2 ", "x" * 260,
                     "web\x00", "db_1", "1.2.3.4"]),
    st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2), st.text(max_size=12),
)  # fmt: skip
_VERSION_VALUES = st.sampled_from([1, 1.0, 2, "1", True, None, [1]])


def _same_routing(route: Callable[[Any], str], parse: Callable[[Any], HostReport], doc: Any,
                  fields: tuple[str, ...]) -> None:  # fmt: skip
    """``route`` accepts what ``parse`` accepts, with its host name; where ``parse``
    refuses a routing field, ``route`` refuses it the same way."""
    try:
        expected: str | ParseError = parse(doc).hostname
    except ParseError as exc:
        expected = exc
    try:
        got: str | ParseError = route(doc)
    except ParseError as exc:
        got = exc
    if isinstance(expected, str):
        assert got == expected
    elif _names_field(expected.where, fields):
        assert isinstance(got, ParseError)
        assert (got.where, got.message) == (expected.where, expected.message)
    elif isinstance(got, ParseError):  # routing fields are checked first by route alone
        assert _names_field(got.where, fields)


def _names_field(where: str | None, fields: tuple[str, ...]) -> bool:
    """Whether an error's place is one of ``fields`` (or none): ``host``, or a line of it
    (``host line 2``, for a name with a NUL character on its second line)."""
    return where is None or any(where == f or where.startswith(f"{f} line ") for f in fields)


def _routing_with(route: Callable[[Any], str], parse: Callable[[Any], HostReport],
                  doc: dict[str, Any], drop: str, **values: Any) -> None:  # fmt: skip
    """``doc`` with the routing fields set to ``values`` (``drop`` removed, if named)
    is routed as it is parsed (:func:`_same_routing`)."""
    doc = {**doc, **values}
    if drop:
        doc.pop(drop)
    _same_routing(route, parse, doc, tuple(values))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(host=_HOST_VALUES, version=_VERSION_VALUES, drop=st.sampled_from(["", "host", "version"]))
def test_native_routing_agrees_with_the_parser(host, version, drop) -> None:
    from patchwatch.domain.reports import route_native

    _routing_with(route_native, parse_native, load_json("native_deb.json"), drop,
                  host=host, version=version)  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(host=_HOST_VALUES, protocol=st.sampled_from([2, "2", 1, None, True, "x"]),
       drop=st.sampled_from(["", "hostname", "protocol"]))  # fmt: skip
def test_protocol2_routing_agrees_with_the_parser(host, protocol, drop) -> None:
    from patchwatch.domain.reports import route_protocol2

    _routing_with(route_protocol2, parse_protocol2, load_json("patchman2-rocky9.json"), drop,
                  hostname=host, protocol=protocol)  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(host=st.one_of(st.text(max_size=12), _HOST_VALUES.filter(lambda v: isinstance(v, str))),
       protocol=st.sampled_from(["1", "", " 1 ", "2", "x"]),
       drop=st.sampled_from(["", "host", "protocol"]))  # fmt: skip
@example(host="\n\x00", protocol="", drop="")  # refused at "host line 2" by both
def test_protocol1_routing_agrees_with_the_parser(host, protocol, drop) -> None:
    from patchwatch.domain.reports import route_protocol1

    _routing_with(route_protocol1, parse_protocol1, load_form("patchman1-debian12"), drop,
                  host=host, protocol=protocol)  # fmt: skip
