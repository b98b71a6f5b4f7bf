"""Update computation (pure): apt's and dnf's candidate rules, security, kernels."""

from __future__ import annotations

import random

import pytest

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.updates import KeyedOffer
from patchwatch.domain.updates import Offer
from patchwatch.domain.updates import compute_newer_kernel_installed
from patchwatch.domain.updates import compute_updates
from patchwatch.domain.updates import decide_update
from patchwatch.domain.updates import has_newer
from patchwatch.domain.updates import match_arch
from patchwatch.domain.updates import newest_installed
from patchwatch.domain.versions import sort_key

DEB, RPM = PackageKind.DEB, PackageKind.RPM


def deb(name: str, evr: str, arch: str = "amd64") -> Package:
    epoch, _, rest = evr.rpartition(":") if ":" in evr else ("", "", evr)
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return Package(name, epoch, version, release, arch, DEB)


def rpm(name: str, evr: str, arch: str = "x86_64") -> Package:
    epoch, _, rest = evr.rpartition(":") if ":" in evr else ("0", "", evr)
    version, _, release = rest.rpartition("-")
    return Package(name, epoch, version, release, arch, RPM)


def one(installed, offers, **kw):
    out = compute_updates(installed, offers, **kw)
    return {(u.installed.name, u.available.evr, u.security) for u in out}


MAIN, SEC, BPO = 500, 500, 100


def test_newer_version_in_main_is_an_update() -> None:
    got = one(
        [deb("curl", "7.88.1-10+deb12u7")], [Offer(deb("curl", "7.88.1-10+deb12u8"), "main", MAIN)]
    )
    assert got == {("curl", "7.88.1-10+deb12u8", False)}


def test_same_or_older_version_is_no_update() -> None:
    inst = [deb("curl", "7.88.1-10+deb12u8")]
    assert one(inst, [Offer(deb("curl", "7.88.1-10+deb12u8"), "main", MAIN)]) == set()
    assert one(inst, [Offer(deb("curl", "7.88.1-10+deb12u5"), "main", MAIN)]) == set()


def test_backports_do_not_update_a_package_from_main() -> None:
    inst = [deb("git", "1:2.39.5-0+deb12u1")]
    offers = [
        Offer(deb("git", "1:2.39.5-0+deb12u1"), "main", MAIN),
        Offer(deb("git", "1:2.45.2-1~bpo12+1"), "backports", BPO),
    ]
    assert one(inst, offers) == set()


def test_backports_update_a_package_installed_from_backports() -> None:
    inst = [deb("git", "1:2.45.1-1~bpo12+1")]
    offers = [
        Offer(deb("git", "1:2.39.5-0+deb12u1"), "main", MAIN),
        Offer(deb("git", "1:2.45.2-1~bpo12+1"), "backports", BPO),
    ]
    assert one(inst, offers) == {("git", "1:2.45.2-1~bpo12+1", False)}


def test_pin_zero_or_negative_never_offers() -> None:
    inst = [deb("vim", "2:9.0.1378-2")]
    assert one(inst, [Offer(deb("vim", "2:9.1.0-1"), "x", 0)]) == set()
    assert one(inst, [Offer(deb("vim", "2:9.1.0-1"), "x", -10)]) == set()


def test_higher_pin_wins_over_newer_version() -> None:
    inst = [deb("nginx", "1.22.1-9")]
    offers = [Offer(deb("nginx", "1.22.1-9+deb12u1"), "pinned", 990),
              Offer(deb("nginx", "1.27.0-1"), "upstream", 500)]  # fmt: skip
    assert one(inst, offers) == {("nginx", "1.22.1-9+deb12u1", False)}


def test_security_repository_makes_a_security_update() -> None:
    inst = [deb("openssl", "3.0.14-1~deb12u2")]
    offers = [Offer(deb("openssl", "3.0.15-1~deb12u1"), "security", SEC, security=True),
              Offer(deb("openssl", "3.0.14-1~deb12u2"), "main", MAIN)]  # fmt: skip
    assert one(inst, offers) == {("openssl", "3.0.15-1~deb12u1", True)}


def test_arch_all_only_from_arch_all_and_arch_must_match() -> None:
    inst = [deb("tzdata", "2024a-0+deb12u1", "all"), deb("libc6", "2.36-9", "i386")]
    offers = [Offer(deb("tzdata", "2024b-0+deb12u1", "amd64"), "main", MAIN),
              Offer(deb("libc6", "2.36-9+deb12u9", "amd64"), "main", MAIN)]  # fmt: skip
    assert one(inst, offers) == set()


def test_newest_installed_kernel_is_compared() -> None:
    inst = [
        rpm("kernel-core", "5.14.0-427.13.1.el9_4"),
        rpm("kernel-core", "5.14.0-503.11.1.el9_5"),
    ]
    offers = [Offer(rpm("kernel-core", "5.14.0-503.11.1.el9_5"), "baseos", -99)]
    assert one(inst, offers) == set()
    offers.append(Offer(rpm("kernel-core", "5.14.0-503.14.1.el9_5"), "baseos", -99))
    assert one(inst, offers) == {("kernel-core", "5.14.0-503.14.1.el9_5", False)}


def test_rpm_priority_hides_newer_versions_in_worse_repositories() -> None:
    inst = [rpm("httpd", "2.4.57-5.el9")]
    offers = [Offer(rpm("httpd", "2.4.57-8.el9"), "appstream", -10),
              Offer(rpm("httpd", "2.4.62-1.el9"), "epel", -99)]  # fmt: skip
    assert one(inst, offers) == {("httpd", "2.4.57-8.el9", False)}


def test_epoch_beats_version_for_rpm() -> None:
    inst = [rpm("legacy", "0.9-1", "noarch")]
    offers = [Offer(rpm("legacy", "1:0.8-1", "noarch"), "t", -99)]
    assert one(inst, offers) == {("legacy", "1:0.8-1", False)}


@pytest.mark.parametrize(
    ("fixed", "expected"),
    [
        ("1.1-1", True),
        ("1.0-1", False),
        ("1.2-1", False),
    ],  # advisory must lie in (installed, candidate]
)
def test_security_advisory_marks_updates_it_covers(fixed: str, expected: bool) -> None:
    inst = [rpm("hello", "1.0-1", "noarch")]
    offers = [Offer(rpm("hello", "1.1-1", "noarch"), "t", -99)]
    got = one(
        inst, offers, security_advisories={("hello", "noarch"): [rpm("hello", fixed, "noarch")]}
    )
    assert got == {("hello", "1.1-1", expected)}


def test_host_reported_security_marks_the_update() -> None:
    inst = [rpm("bash", "5.1.8-6.el9")]
    offers = [Offer(rpm("bash", "5.1.8-9.el9"), "baseos", -99)]
    assert one(inst, offers, reported_security=[("bash", "x86_64")]) == {
        ("bash", "5.1.8-9.el9", True)
    }


@pytest.mark.parametrize(
    ("running", "installed", "expected"),
    [
        ("6.1.0-27-amd64", ["linux-image-6.1.0-27-amd64", "linux-image-6.1.0-28-amd64"], True),
        ("6.1.0-28-amd64", ["linux-image-6.1.0-27-amd64", "linux-image-6.1.0-28-amd64"], False),
        (
            "6.1.0-28-amd64",
            ["linux-image-6.1.0-28-amd64", "linux-image-6.1.0-30-cloud-amd64"],
            False,
        ),
        ("6.1.0-9-amd64", ["linux-image-6.1.0-10-amd64"], True),  # numeric, not text, order
        (
            "6.8.0-45-generic",
            ["linux-image-6.8.0-45-generic", "linux-image-6.8.0-47-generic"],
            True,
        ),
        ("6.1.0-28-amd64", ["bash"], None),
    ],
)
def test_newer_deb_kernel_installed(running, installed, expected) -> None:
    pkgs = [deb(n, "1.0-1") for n in installed]
    assert compute_newer_kernel_installed(running, pkgs) is expected


def test_newer_rpm_kernel_installed() -> None:
    pkgs = [
        rpm("kernel-core", "5.14.0-427.13.1.el9_4"),
        rpm("kernel-core", "5.14.0-503.11.1.el9_5"),
    ]
    assert compute_newer_kernel_installed("5.14.0-427.13.1.el9_4.x86_64", pkgs) is True
    assert compute_newer_kernel_installed("5.14.0-503.11.1.el9_5.x86_64", pkgs) is False
    suse = [
        rpm("kernel-default", "5.14.21-150500.55.68.1"),
        rpm("kernel-default", "5.14.21-150500.55.73.1"),
    ]
    assert compute_newer_kernel_installed("5.14.21-150500.55.68-default", suse) is True
    assert compute_newer_kernel_installed("5.14.21-150500.55.73-default", suse) is False


# --- decide_update: one (name, arch) at a time, as the store memoises it --------------


def _random_case(rng: random.Random, kind: PackageKind) -> tuple[list[Package], list[Offer], dict]:
    """Installed packages, offers and advisories drawn small, so that ties are common."""
    make = {DEB: deb, RPM: rpm, ARCH: pacman, APK: apk}[kind]
    archs = ["amd64", "all", "i386"] if kind == DEB else ["x86_64", "noarch"]
    versions = ["1.0-1", "1.0-2", "1.1-1", "1:0.9-1", "2.0~rc1-1", "2.0-1", "1.00-1"]
    if kind == RPM:
        versions = ["1.0-1", "1.0-2", "1.1-1", "1:0.9-1", "2.0-0.rc1", "2.0-1", "1.0^git1-1"]
    if kind == ARCH:
        archs = ["x86_64", "any"]
        versions = ["1.0-1", "1.0-2", "1.1-1", "1:0.9-1", "2.0rc1-1", "2.0-1", "1.0-1.1"]
    if kind == APK:
        versions = ["1.0-r0", "1.0-r1", "1.1-r0", "0.9_p1-r0", "2.0_rc1-r0", "2.0-r0", "1.0a-r0"]
    priorities = [990, 500, 500, 100, 1, 0, -10] if kind == DEB else [-1, -10, -99, -100000]
    if kind in (ARCH, APK):
        priorities = [0, -1, -2] if kind == ARCH else [0]
    names = [f"p{i}" for i in range(4)]
    installed = []
    for name in names:
        for _ in range(rng.choice([0, 1, 1, 1, 2])):  # two versions: kernels, installonly
            installed.append(make(name, rng.choice(versions), rng.choice(archs)))
    repos = [(f"r{i}", rng.choice(priorities), rng.random() < 0.3) for i in range(4)]
    offers = []
    for repo, priority, security in repos:
        for name in names:
            for version in rng.sample(versions, rng.randint(0, 3)):
                offers.append(
                    Offer(make(name, version, rng.choice(archs)), repo, priority, security)
                )
    rng.shuffle(offers)
    advisories: dict[tuple[str, str], list[Package]] = {}
    for name in names:
        for arch in archs:
            if rng.random() < 0.3:
                advisories[(name, arch)] = [make(name, rng.choice(versions), arch)]
    return installed, offers, advisories


@pytest.mark.parametrize("kind", [DEB, RPM, PackageKind.ARCH, PackageKind.APK])
def test_decide_update_equals_compute_updates(kind: PackageKind) -> None:
    """The memoisable per-package decision is the reference computation, case by case."""
    rng = random.Random(20260712)
    updates = 0
    for _ in range(2000):
        installed, offers, advisories = _random_case(rng, kind)
        want = {
            (u.installed, u.available, u.security, u.repository)
            for u in compute_updates(installed, offers, advisories)
        }
        got = set()
        by_name: dict[tuple[str, str], list[KeyedOffer]] = {}
        for o in offers:
            key = sort_key(o.package.kind, o.package.epoch, o.package.version, o.package.release)
            match = (o.package.name, match_arch(o.package.kind, o.package.arch))
            by_name.setdefault(match, []).append((key, o))
        for (name, arch), inst in newest_installed(installed).items():
            inst_key = sort_key(inst.kind, inst.epoch, inst.version, inst.release)
            keyed = by_name.get((name, arch), [])
            advisory_keys = [
                sort_key(p.kind, p.epoch, p.version, p.release)
                for (n, a), fixed in advisories.items()
                if (n, match_arch(kind, a)) == (name, arch)
                for p in fixed
            ]
            decided = decide_update(inst, inst_key, keyed, advisory_keys)
            if decided is None:
                continue
            assert has_newer(inst_key, [k for k, _o in keyed])
            offer, security = decided
            got.add((inst, offer.package, security, offer.repository))
        assert got == want, (installed, offers, advisories)
        updates += len(want)
    assert updates > 500  # the cases are not vacuous


def test_compute_updates_has_no_rules_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-host computation asks ``decide_update`` for every (name, arch): one rule
    set, so a change to the rules cannot reach the store and miss the reference."""
    from patchwatch.domain import updates

    inst = [deb("curl", "7.88.1-10+deb12u7"), deb("git", "1:2.39.5-0+deb12u1")]
    offers = [
        Offer(deb("curl", "7.88.1-10+deb12u8"), "main", MAIN),
        Offer(deb("git", "1:2.39.5-0+deb12u2"), "security", SEC, security=True),
    ]
    assert len(compute_updates(inst, offers)) == 2
    asked: list[str] = []

    def decide_nothing(installed: Package, *_args: object) -> None:
        asked.append(installed.name)
        return None

    monkeypatch.setattr(updates, "decide_update", decide_nothing)
    assert compute_updates(inst, offers) == []
    assert asked == ["curl", "git"]


# --- pacman and apk: their own orderings, through the same rules ---------------------------

ARCH, APK = PackageKind.ARCH, PackageKind.APK


def pacman(name: str, evr: str, arch: str = "x86_64") -> Package:
    """A pacman package from ``[epoch:]pkgver-pkgrel`` as ``pacman -Q`` prints it."""
    epoch, _, rest = evr.rpartition(":") if ":" in evr else ("", "", evr)
    pkgver, _, pkgrel = rest.rpartition("-")
    return Package(name, epoch, pkgver, pkgrel, arch, ARCH)


def apk(name: str, version: str, arch: str = "x86_64") -> Package:
    return Package(name, "", version, "", arch, APK)


def test_pacman_ordering_decides_arch_updates() -> None:
    # vercmp: 1.0rc1 < 1.0 < 1.0.a < 1.0.1, pkgrel 1 < 1.1 < 2, epoch beats all
    inst = [pacman("a", "1.0rc1-1"), pacman("b", "1.0-1"), pacman("c", "1.0-1.1")]
    offers = [
        Offer(pacman("a", "1.0-1"), "core", 0),
        Offer(pacman("b", "1.0.a-1"), "core", 0),
        Offer(pacman("c", "1.0-1"), "core", 0),  # older pkgrel: no update
    ]
    assert one(inst, offers) == {("a", "1.0-1", False), ("b", "1.0.a-1", False)}
    assert one([pacman("d", "2.0-1")], [Offer(pacman("d", "1:1.0-1"), "core", 0)]) == {
        ("d", "1:1.0-1", False)
    }


def test_pacman_first_repository_offering_the_name_wins() -> None:
    """pacman takes the version of the first sync database with the name (the agent
    reports minus the position in pacman.conf), even when a later one is newer."""
    inst = [pacman("linux", "6.12.7.arch1-1")]
    offers = [
        Offer(pacman("linux", "6.12.9.arch1-1"), "extra", -1),
        Offer(pacman("linux", "6.12.8.arch1-1"), "core", 0),
    ]
    assert one(inst, offers) == {("linux", "6.12.8.arch1-1", False)}
    # the first repository has it no newer: pacman keeps the installed one
    offers_older = [Offer(pacman("linux", "6.12.7.arch1-1"), "core", 0), *offers[:1]]
    assert one(inst, offers_older) == set()


def test_pacman_matches_by_name_alone() -> None:
    """pacman keeps one package per name and upgrades it whatever the architecture of the
    newer build (``pacman -Qu`` lists it; tests/test_updates_pacman_oracle.py holds this
    against pacman itself), unlike dpkg and rpm, where the arch is part of the match."""
    inst = [pacman("ca-certificates", "20240618-1", "any")]
    offers = [Offer(pacman("ca-certificates", "20241010-1", "x86_64"), "core", 0)]
    assert one(inst, offers) == {("ca-certificates", "20241010-1", False)}
    inst = [pacman("mover", "1.0-1", "x86_64")]
    fixed = {("mover", "any"): [pacman("mover", "1.1-1", "any")]}
    offers = [Offer(pacman("mover", "1.1-1", "any"), "extra", 0)]
    assert {(u.available.arch, u.security) for u in compute_updates(inst, offers, fixed)} == {
        ("any", True)
    }
    # rpm: a noarch build does not update the x86_64 one
    rpm_inst = [Package("tzdata", "", "2024a", "1", "x86_64", RPM)]
    rpm_offer = [Offer(Package("tzdata", "", "2024b", "1", "noarch", RPM), "base", 0)]
    assert compute_updates(rpm_inst, rpm_offer) == []


def test_apk_ordering_decides_alpine_updates() -> None:
    # apk: _rc < release < _p, -r revisions, letters after digits
    inst = [apk("curl", "8.11.1_rc1-r0"), apk("busybox", "1.36.1-r29"), apk("x", "1.2.3a-r0")]
    offers = [
        Offer(apk("curl", "8.11.1-r0"), "main", 0),
        Offer(apk("busybox", "1.36.1-r3"), "main", 0),  # r3 < r29: no update
        Offer(apk("x", "1.2.3_p1-r0"), "main", 0),  # 1.2.3a > 1.2.3_p1: no update
        Offer(apk("busybox", "1.36.1_p2-r0"), "community", 0),
    ]
    assert one(inst, offers) == {("curl", "8.11.1-r0", False), ("busybox", "1.36.1_p2-r0", False)}


@pytest.mark.parametrize(
    ("kind", "fields", "string"),
    [
        (ARCH, ("", "1.0", "1"), "1.0-1"),
        (ARCH, ("2", "1.0rc1", "1.1"), "2:1.0rc1-1.1"),
        (ARCH, ("", "1.0", ""), "1.0"),
        (APK, ("", "1.2.3-r4", ""), "1.2.3-r4"),
        (APK, ("", "2.0_rc1", ""), "2.0_rc1"),
    ],
)
def test_sort_key_of_record_fields_is_the_tool_key(
    kind: PackageKind, fields: tuple[str, str, str], string: str
) -> None:
    from patchwatch.domain.versions import compare
    from patchwatch.domain.versions_alpm import alpm_sort_key
    from patchwatch.domain.versions_apk import apk_sort_key

    tool_key = alpm_sort_key if kind == ARCH else apk_sort_key
    assert sort_key(kind, *fields) == tool_key(string)
    assert compare(kind, string, string) == 0
