"""The host agent: collection from recorded outputs and from real package tools, sending.

Three kinds of evidence:

- recorded command outputs and configuration files of six distributions
  (``tests/fixtures/agent/<distro>``, hand-written in the tools' real formats) run
  through a fake command runner; every report must validate against the receiver's
  schema, and the parsers are checked against the package managers' own readings of
  the same files (``apt-get indextargets``, dnf's Python API, ``zypper lr``);
- real runs: this machine's dpkg database and apt sources, an rpm database built with
  Debian's dnf in an installroot from a local repository, and the same with zypper;
- sending through a loopback HTTP server that stands in for the receiver.

Tools that are missing make the test skip with the reason, or fail when
``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI).
"""

from __future__ import annotations

import fnmatch
import gzip
import http.server
import io
import json
import os
import platform
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from patchwatch.agent import patchwatch_agent as agent

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "agent"
AGENT_FILE = REPO / "agent" / "patchwatch_agent.py"
HOOKS = REPO / "agent" / "hooks"
SCHEMA = json.loads((REPO / "patchwatch" / "domain" / "schemas" / "report-v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
TOKEN = "pw-test-token-9f8e7d6c5b4a"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-dnf


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless ``condition``; fail instead when oracles are required."""
    if condition:
        return
    if os.environ.get("PATCHWATCH_TEST_REQUIRE_ORACLES") == "1":
        pytest.fail(f"{reason} (required because PATCHWATCH_TEST_REQUIRE_ORACLES=1)")
    pytest.skip(reason)


def validate(report: dict) -> None:
    errors = sorted(VALIDATOR.iter_errors(report), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------- recorded fixtures


class FakeRunner:
    """Answers commands from a fixture's ``commands.json`` and records what was run.

    A key such as ``"rpm -qa"`` matches a command whose program is ``rpm`` and whose
    arguments include ``-qa``. Commands without a key behave as "not installed".
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        spec = json.loads((directory / "commands.json").read_text())
        self.missing = set(spec.pop("missing", []))
        self.spec = spec
        self.calls: list[list[str]] = []
        self.used: set[str] = set()
        self.unknown: list[str] = []

    def __call__(self, argv: list[str]) -> agent.Result | None:
        self.calls.append(list(argv))
        for key, answer in self.spec.items():
            program, *words = key.split()
            if argv[0] == program and all(w in argv for w in words):
                self.used.add(key)
                raw = (self.directory / answer["stdout"]).read_bytes()
                return agent.Result(answer.get("rc", 0), agent.to_text(raw), "")
        if argv[0] not in self.missing:
            self.unknown.append(" ".join(argv))
        return None


def fixture_report(name: str, updates: bool = False, hook: bool = False):
    directory = FIXTURES / name
    host = json.loads((directory / "host.json").read_text())
    runner = FakeRunner(directory)
    ctx = agent.Context(str(directory / "root"), runner, host["kernel"], host["machine"], live=True)
    report = agent.collect_report(ctx, host["hostname"], ["fixture"], hook, updates, now=1.0)
    return report, runner


def repo_by_id(report: dict) -> dict[str, dict]:
    return {r["id"]: r for r in report["repositories"]}


def package_set(report: dict) -> set[tuple[str, str, str, str, str]]:
    return {
        (p["name"], p["epoch"], p["version"], p["release"], p["arch"]) for p in report["packages"]
    }


# what each distribution's fixture must produce: counted by hand from the fixture files
EXPECTED = {
    "ubuntu-24.04": {
        "os": ("ubuntu", "24.04", None),
        "packages": 30,
        "repositories": 18,
        "reboot": True,  # running 6.8.0-45-generic, linux-image-6.8.0-47-generic installed
        "package": ("openssh-server", "1", "9.6p1", "3ubuntu13.5", "amd64"),
        "updates": True,
    },
    "debian-12": {
        "os": ("debian", "12", None),
        "packages": 30,
        "repositories": 17,
        "reboot": True,  # /var/run -> /run, /run/reboot-required
        "package": ("vim", "2", "9.0.1378", "2", "amd64"),
        "updates": False,
    },
    "rocky-9": {
        "os": ("rocky", "9.4", "cpe:/o:rocky:rocky:9::baseos"),
        "packages": 29,
        "repositories": 7,
        "reboot": True,  # kernel-core 427.13.1 running, 427.37.1 installed
        "package": ("perl-interpreter", "4", "5.32.1", "481.el9", "x86_64"),
        "updates": True,
    },
    "fedora-40": {
        "os": ("fedora", "40", "cpe:/o:fedoraproject:fedora:40"),
        "packages": 23,
        "repositories": 7,
        "reboot": True,  # needs-restarting -r exit 1
        "package": ("vim-enhanced", "2", "9.1.719", "1.fc40", "x86_64"),
        "updates": False,
    },
    "amazonlinux-2023": {
        "os": ("amzn", "2023", "cpe:2.3:o:amazon:amazon_linux:2023"),
        "packages": 15,
        "repositories": 4,
        "reboot": False,  # needs-restarting -r exit 0
        "package": ("openssl", "1", "3.0.8", "1.amzn2023.0.14", "x86_64"),
        "updates": False,
    },
    "opensuse-leap-15.6": {
        "os": ("opensuse-leap", "15.6", "cpe:/o:opensuse:leap:15.6"),
        "packages": 19,
        "repositories": 9,
        "reboot": True,  # zypper needs-rebooting exit 102
        "package": ("vendor-mailfilter", "3", "2.1", "7.1", "x86_64"),
        "updates": True,
    },
    "arch": {
        "os": ("arch", None, None),
        "packages": 10,
        "repositories": 3,  # core, extra, pwlocal; [archive] is Usage = Search only
        "reboot": True,  # running 6.12.8-arch1-1, only 6.12.9-arch1-1's modules on disk
        "package": ("ttf-dejavu", "1", "2.37+18+g9b5d1b2f", "6.1", "any"),
        "updates": False,
    },
    "alpine-3.20": {
        "os": ("alpine", "3.20.3", None),
        "packages": 12,
        "repositories": 3,  # main, community, @edge (tagged); the cdrom folder is local
        "reboot": False,  # running 6.6.58-0-lts, its modules still on disk
        "package": ("curl", "", "8.11.1_rc1-r0", "", "x86_64"),
        "updates": False,
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_report_validates_and_has_the_facts(name: str) -> None:
    want = EXPECTED[name]
    report, runner = fixture_report(name, updates=want["updates"])
    validate(report)
    os_id, version_id, cpe = want["os"]
    assert report["os"]["id"] == os_id
    assert report["os"].get("version_id") == version_id
    assert report["os"].get("cpe_name") == cpe
    assert len(report["packages"]) == want["packages"]
    assert want["package"] in package_set(report)
    assert not any(p["name"] == "gpg-pubkey" for p in report["packages"])
    assert len(report["repositories"]) == want["repositories"]
    assert report["reboot_required"] is want["reboot"]
    warnings = report["agent"]["warnings"]
    if name == "alpine-3.20":  # the one warning that fixture is made to give
        assert warnings == ["apk repository /media/cdrom/apks is a local folder: not reported"]
    else:
        assert warnings == []
    assert ("updates" in report) is want["updates"]
    assert runner.unknown == [], "commands the fixture does not record"
    assert runner.used == set(runner.spec), "recorded outputs that were never asked for"


def test_arch_fixture_details() -> None:
    report, _runner = fixture_report("arch")
    repos = report["repositories"]
    assert [(r["id"], r["priority"]) for r in repos] == [
        ("core", 0),
        ("extra", -1),
        ("pwlocal", -2),
    ]
    assert repos[0]["urls"] == [
        "https://geo.mirror.pkgbuild.com/core/os/x86_64",
        "https://mirror.rackspace.com/archlinux/core/os/x86_64",
    ]
    assert repos[2]["urls"] == [  # credentials dropped, trailing slash too
        "https://repo.example.net/archlinux/pwlocal/x86_64",
        "https://backup.example.net/pwlocal/os/x86_64",
    ]
    assert {r["type"] for r in repos} == {"arch"} and {r["arch"] for r in repos} == {"x86_64"}
    # IgnorePkg patterns and IgnoreGroup members are held
    assert report["held"] == [
        {"name": "gnome-shell", "arch": "x86_64"},
        {"name": "linux-firmware", "arch": "any"},
        {"name": "nvidia", "arch": "x86_64"},
    ]
    assert ("linux", "", "6.12.9.arch1", "1", "x86_64") in package_set(report)


def test_alpine_fixture_details() -> None:
    report, _runner = fixture_report("alpine-3.20")
    repos = report["repositories"]
    # a tagged repository is enabled, with its tag and the names world pins to it
    assert [(r["id"], r.get("enabled", True), r.get("tag"), r.get("pinned")) for r in repos] == [
        ("https://dl-cdn.alpinelinux.org/alpine/v3.20/main", True, None, None),
        ("https://dl-cdn.alpinelinux.org/alpine/v3.20/community", True, None, None),
        ("@edge https://dl-cdn.alpinelinux.org/alpine/edge/main", True, "edge", ["vim"]),
    ]
    assert {r["arch"] for r in repos} == {"x86_64"}
    # world: nginx=1.26.2-r0 and curl<8.12 hold; vim@edge, bare names do not
    assert report["held"] == [
        {"name": "curl", "arch": "x86_64"},
        {"name": "nginx", "arch": "x86_64"},
    ]
    assert ("py3-setuptools", "", "70.3.0-r0", "", "noarch") in package_set(report)


def test_alpine_kernel_upgraded_needs_a_reboot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "alpine-3.20" / "root", root, symlinks=True)
    shutil.rmtree(root / "lib" / "modules" / "6.6.58-0-lts")
    (root / "lib" / "modules" / "6.6.62-0-lts").mkdir()
    ctx = agent.Context(str(root), FakeRunner(FIXTURES / "alpine-3.20"), "6.6.58-0-lts",
                        "x86_64", live=True)  # fmt: skip
    report = agent.collect_report(ctx, "edge-01", (), now=1.0)
    assert report["reboot_required"] is True
    ctx = agent.Context(str(root), FakeRunner(FIXTURES / "alpine-3.20"), "6.6.58-0-lts",
                        "x86_64", live=False)  # fmt: skip
    assert agent.collect_report(ctx, "edge-01", (), now=1.0)["reboot_required"] is None


def test_alpine_pins_per_tag_only_names_the_server_takes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "alpine-3.20" / "root", root, symlinks=True)
    (root / "etc/apk/repositories").write_text(
        "https://m.example/v3.20/main\n@edge https://m.example/edge/main\n"
        "@testing https://m.example/edge/testing\n@bad!tag https://m.example/x\n"
    )
    # a constraint with a pin still pins; so:... is a provider, not a name the server takes
    (root / "etc/apk/world").write_text(
        "vim@edge\npy3-foo@edge>=1.2\nso:libfoo.so.1@edge\nneovim@testing\ncurl\n"
    )
    ctx = agent.Context(str(root), FakeRunner(FIXTURES / "alpine-3.20"), "6.6.58-0-lts",
                        "x86_64", live=False)  # fmt: skip
    report = agent.collect_report(ctx, "edge-01", (), now=1.0)
    got = [(r["id"], r.get("tag"), r.get("pinned")) for r in report["repositories"]]
    assert got == [
        ("https://m.example/v3.20/main", None, None),
        ("@edge https://m.example/edge/main", "edge", ["py3-foo", "vim"]),
        ("@testing https://m.example/edge/testing", "testing", ["neovim"]),
    ]
    assert any("bad!tag" in w for w in report["agent"]["warnings"])


def test_pacman_repositories_agree_with_pacman_conf(tmp_path: Path) -> None:
    """pacman's own pacman-conf resolves the fixture's pacman.conf as the agent does."""
    require(shutil.which("pacman-conf") is not None, "pacman-conf not installed")
    root = FIXTURES / "arch" / "root"
    # pacman-conf reads Include paths on this machine: its copy points them into the root
    conf = tmp_path / "pacman.conf"
    text = (root / "etc" / "pacman.conf").read_text()
    conf.write_text(text.replace("/etc/pacman.d/", f"{root}/etc/pacman.d/"))
    ctx = agent.Context(str(root), FakeRunner(FIXTURES / "arch"), "6.12.8-arch1-1", "x86_64",
                        live=False)  # fmt: skip
    report = agent.collect_report(ctx, "build-03", (), now=1.0)

    def pacman_conf(*args: str) -> list[str]:
        done = subprocess.run(
            ["pacman-conf", "--config", str(conf), *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.split()

    names = pacman_conf("--repo-list")
    assert names == ["core", "extra", "pwlocal", "archive"]
    for repo in report["repositories"]:
        servers = [agent.strip_credentials(s.rstrip("/")) for s in
                   pacman_conf("--repo", repo["id"], "Server")]  # fmt: skip
        assert repo["urls"] == servers
        assert repo["priority"] == -names.index(repo["id"])
    assert pacman_conf("--repo", "archive", "Usage") == ["Search"]
    assert set(pacman_conf("IgnorePkg")) == {"linux-firmware*", "nvidia"}
    assert pacman_conf("IgnoreGroup") == ["gnome"]
    # Architecture = auto is this machine's: the fixture's repositories say x86_64
    assert pacman_conf("Architecture") == [platform.machine()]


def test_ubuntu_fixture_details() -> None:
    report, _ = fixture_report("ubuntu-24.04", updates=True)
    names = {p["name"] for p in report["packages"]}
    assert "docker-ce" in names  # held ("hi") counts as installed
    assert "unattended-upgrades" not in names  # "iU": unpacked, not installed
    assert "update-notifier-common" not in names
    assert "linux-image-6.8.0-40-generic" not in names  # "rc": removed
    repos = repo_by_id(report)
    assert repos["http://archive.ubuntu.com/ubuntu noble-backports universe"]["priority"] == 100
    assert repos["http://security.ubuntu.com/ubuntu noble-security main"]["priority"] == 500
    docker = repos["https://download.docker.com/linux/ubuntu noble stable"]
    assert docker["arch"] == "amd64"
    assert docker["signed_by"] == "/etc/apt/keyrings/docker.asc"
    ppa = repos["https://ppa.launchpadcontent.net/ondrej/php/ubuntu noble main"]
    assert ppa["signed_by"].startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBG")
    assert ppa["signed_by"].endswith("-----END PGP PUBLIC KEY BLOCK-----")
    assert not any("jammy" in r["id"] for r in report["repositories"])  # docker.list.save
    updates = {u["name"]: u for u in report["updates"]}
    assert set(updates) == {
        "libssl3t64",
        "linux-generic",
        "linux-image-generic",
        "openssl",
        "python3.12",
        "tzdata",
    }  # the two NEW kernel packages are installs, not updates
    assert updates["openssl"]["security"] is True
    assert updates["openssl"]["version"] == "3.0.13-0ubuntu3.5"
    assert updates["openssl"]["repository"] == "Ubuntu:24.04/noble-security"
    assert updates["python3.12"]["security"] is False
    assert updates["tzdata"]["arch"] == "all"


def test_debian_fixture_details() -> None:
    report, _ = fixture_report("debian-12")
    assert report["os"]["debian_version"] == "12.7"
    pkgs = package_set(report)
    assert ("libc6", "", "2.36", "9+deb12u8", "i386") in pkgs  # multi-arch: both kept
    assert ("libc6", "", "2.36", "9+deb12u8", "amd64") in pkgs
    assert ("base-files", "", "12.4+deb12u7", "", "amd64") in pkgs  # native: no revision
    assert ("zlib1g", "1", "1.2.13.dfsg", "1", "i386") in pkgs
    assert ("postgresql-16", "", "16.4", "1.pgdg120+2", "amd64") in pkgs  # held
    repos = repo_by_id(report)
    assert repos["http://deb.debian.org/debian bookworm-backports main"]["priority"] == 100
    assert repos["https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main"]["priority"] == 600
    flat = repos["file:/srv/local-debs ./"]
    assert flat["suite"] == "./" and "component" not in flat and flat["priority"] == 500
    internal = repos["https://apt.internal.example.com/debian bookworm-internal tools"]
    assert internal["urls"] == ["https://apt.internal.example.com/debian"]  # no password
    assert internal["arch"] == "amd64,i386"
    assert internal["signed_by"] == (
        "/etc/apt/keyrings/internal.gpg,/etc/apt/keyrings/internal-2025.gpg"
    )
    assert internal["priority"] == 500
    staging = repos["https://staging.internal.example.com/debian bookworm-staging main"]
    assert staging["enabled"] is False and "priority" not in staging
    assert "s3cr3t" not in json.dumps(report)
    assert not any(r["id"].startswith("deb-src") for r in report["repositories"])


def test_rpm_fixture_details() -> None:
    rocky, runner = fixture_report("rocky-9", updates=True)
    pkgs = package_set(rocky)
    assert ("bash", "", "5.1.8", "9.el9", "x86_64") in pkgs  # (none) epoch -> ""
    assert ("glibc", "", "2.34", "100.el9_4.2", "i686") in pkgs
    repos = repo_by_id(rocky)
    assert repos["baseos"]["mirrorlist"] == (
        "https://mirrors.rockylinux.org/mirrorlist?arch=x86_64&repo=BaseOS-9"
    )  # $releasever from system-release(releasever) = 9, not VERSION_ID 9.4; $rltype empty
    assert repos["epel"]["metalink"].endswith(
        "repo=epel-9&arch=x86_64&infra=stock&content=pub/rocky"
    )
    assert repos["baseos-debuginfo"]["enabled"] is False
    assert repos["internal-tools"]["priority"] == -10  # dnf priority 10, negated
    assert repos["internal-tools"]["urls"][2] == "https://repo3.internal.example.com/el/9/x86_64/"
    assert repos["appstream"]["priority"] == -99  # dnf's default
    assert rocky["modules"] == [
        {"name": "nodejs", "stream": "20"},
        {"name": "php", "stream": "8.2"},
    ]
    updates = {(u["name"], u["arch"]): u for u in rocky["updates"]}
    assert updates[("glibc", "i686")]["security"] is True
    assert updates[("NetworkManager", "x86_64")] == {
        "name": "NetworkManager",
        "version": "1:1.46.0-20.el9_4",
        "arch": "x86_64",
        "security": False,
        "repository": "baseos",
    }
    assert updates[("npm", "x86_64")]["repository"] == "appstream"  # wrapped line
    assert ("kernel-modules-core", "x86_64") not in updates  # "Obsoleting Packages"
    assert any("--releasever=9" in call for call in runner.calls)

    leap, _ = fixture_report("opensuse-leap-15.6", updates=True)
    repos = repo_by_id(leap)
    assert repos["repo-oss"]["urls"] == [
        "http://download.opensuse.org/distribution/leap/15.6/repo/oss/"
    ]
    assert repos["repo-source"]["enabled"] is False
    vendor = repos["vendor-mail"]
    assert vendor["priority"] == -90
    assert vendor["urls"] == ["https://updates.mailvendor.example.com/leap/15.6/x86_64/"]
    assert "aBcD3fGh" not in json.dumps(leap)  # subscription credentials stay on the host
    updates = {u["name"]: u for u in leap["updates"]}
    assert updates["glibc-32bit"]["security"] is True
    assert updates["openssl-3"]["security"] is True
    assert updates["timezone"]["security"] is False  # "recommended" patch
    assert updates["vendor-mailfilter"]["version"] == "3:2.2-1.1"
    assert "modules" not in leap

    al, _ = fixture_report("amazonlinux-2023")
    mirror = repo_by_id(al)["amazonlinux"]["mirrorlist"]
    assert mirror == (
        "https://al2023-repos-us-east-1-de612dc2.s3.dualstack.us-east-1.amazonaws.com"
        "/core/mirrors/2023.5.20240916/x86_64/mirror.list"
    )


# held packages each fixture's dpkg selections, versionlock lists or zypper locks give
HELD = {
    "debian-12": [("postgresql-16", "amd64")],  # "hi" in dpkg-query
    "ubuntu-24.04": [("docker-ce", "amd64")],
    # nodejs and kernel-core locked (both kernels); the openssl entry is an exclude
    # ("!"), not a lock, and dnf cannot read php-cli's, in yum's epoch-first form
    "rocky-9": [("kernel-core", "x86_64"), ("nodejs", "x86_64")],
    # firefox pinned ("="); chrome only excluded from one build, libreoffice bounded
    "fedora-40": [("firefox", "x86_64")],
    # a glob, an exact name and arch, a case-insensitive substring; the pattern lock
    # and the summary lock cover no package here
    "opensuse-leap-15.6": [
        ("kernel-default", "x86_64"),
        ("postfix", "x86_64"),
        ("sudo", "x86_64"),
    ],
    "amazonlinux-2023": [],
}


@pytest.mark.parametrize("name", sorted(HELD))
def test_fixture_holds_and_locks(name: str) -> None:
    report, _ = fixture_report(name)
    validate(report)
    assert [(h["name"], h["arch"]) for h in report["held"]] == HELD[name]
    hooked, _ = fixture_report(name, hook=True)  # holds are sent from hooks too
    assert hooked["held"] == report["held"]


@pytest.mark.parametrize(
    ("specs", "installed", "held"),
    [
        (["bash-0:5.1.8-6.el9.*"], [("bash", "0", "5.1.8", "9.el9")], {"bash"}),  # a newer one
        (["bash-5.1.8-9.el9.x86_64"], [("bash", "0", "5.1.8", "9.el9")], {"bash"}),
        (["bash"], [("bash", "0", "5.1.8", "9.el9")], {"bash"}),
        (["bash.x86_64"], [("bash", "0", "5.1.8", "9.el9")], {"bash"}),
        (["0:bash-5.1.8-9.el9.*"], [("bash", "0", "5.1.8", "9.el9")], set()),  # yum's form
        (
            ["kernel*"],
            [("kernel-core", "0", "5.14", "1"), ("kernel", "0", "5.14", "1")],
            {"kernel", "kernel-core"},
        ),
        (["!bash-0:5.1.8-9.el9.*"], [("bash", "0", "5.1.8", "9.el9")], set()),  # exclude
        (["# a comment", ""], [("bash", "0", "5.1.8", "9.el9")], set()),
        # dnf's quirk, kept: "python3-libs" is also read as python3 version "libs" first,
        # and every reading's name tried before the one that matches is locked too
        (
            ["python3-libs"],
            [("python3", "0", "3.9", "1"), ("python3-libs", "0", "3.9", "1")],
            {"python3", "python3-libs"},
        ),
    ],
)
def test_versionlock_entries_lock_what_dnf_locks(specs, installed, held) -> None:
    rpms = [{"name": n, "epoch": e, "version": v, "release": r, "arch": "x86_64", "type": "rpm"}
            for n, e, v, r in installed]  # fmt: skip
    names = agent.versionlock_names(agent.parse_versionlock_list("\n".join(specs)), rpms)
    assert {p["name"] for p in rpms if any(fnmatch.fnmatchcase(p["name"], n) for n in names)} == (
        held
    )


def test_yum_versionlock_list_has_the_epoch_first() -> None:
    rpms = [{"name": "bash", "epoch": "", "version": "4.2.46", "release": "34.el7",
             "arch": "x86_64", "type": "rpm"}]  # fmt: skip
    specs = ["0:bash-4.2.46-34.el7.*"]
    assert agent.versionlock_names(specs, rpms, yum=True) == {"bash"}


def test_dnf5_versionlock_needs_its_version_and_a_pin() -> None:
    text = (FIXTURES / "fedora-40" / "root" / "etc" / "dnf" / "versionlock.toml").read_text()
    assert agent.parse_dnf5_versionlock(text) == ["firefox"]
    assert agent.parse_dnf5_versionlock(text.replace('version = "1.0"', 'version = "2.0"')) == []
    assert agent.parse_dnf5_versionlock('version = "1.0"\n[[packages]]\nname = "vim*"\n') == [
        "vim*"
    ]


@pytest.mark.parametrize(
    ("lock", "name", "arch", "held"),
    [
        ("solvable_name: hello", "hello", "noarch", True),  # substring, any case by default
        ("solvable_name: ELL", "hello", "noarch", True),
        ("case_sensitive: on\nsolvable_name: ELL", "hello", "noarch", False),
        ("match_type: exact\nsolvable_name: hell", "hello", "noarch", False),
        ("match_type: glob\nsolvable_name: h*o", "hello", "noarch", True),
        ("match_type: regex\nsolvable_name: ^h.l+o$", "hello", "noarch", True),
        ("match_type: regex\nsolvable_name: (", "hello", "noarch", False),  # bad regex
        ("match_type: word\nsolvable_name: lib", "lib-tools", "noarch", True),
        ("match_type: word\nsolvable_name: lib", "libtools", "noarch", False),
        ("type: patch\nsolvable_name: hello", "hello", "noarch", False),
        ("type: package\nsolvable_name: hello\nsolvable_arch: x86_64", "hello", "noarch", False),
        ("solvable_name: hello\nversion: > 1.0", "hello", "noarch", True),  # blocks the upgrade
        ("query_string: hello\nsolvable_name:", "hello", "noarch", True),
        ("query_string: hello", "hello", "noarch", True),
        ("query_string: hello\nsolvable_summary:", "hello", "noarch", False),  # unknowable
    ],
)
def test_zypper_locks_match_as_libzypp_reads_them(lock, name, arch, held) -> None:
    (entry,) = agent.parse_zypp_locks("# zypper\n" + lock + "\n\n")
    assert agent.zypp_lock_matches(entry, {"name": name, "arch": arch}) is held


def test_hook_report_has_packages_but_no_repositories() -> None:
    report, runner = fixture_report("rocky-9", hook=True)
    validate(report)
    assert "repositories" not in report and "modules" not in report and "updates" not in report
    assert len(report["packages"]) == EXPECTED["rocky-9"]["packages"]
    assert not any(c[0] == "dnf" for c in runner.calls)


def test_broken_input_gives_warnings_and_a_valid_report() -> None:
    report, runner = fixture_report("broken")
    assert runner.unknown == []
    validate(report)
    json.dumps(report).encode("utf-8")  # no lone surrogates anywhere
    assert report["os"]["pretty_name"] == "D\ufffdbian with a latin-1 byte"
    assert package_set(report) == {
        ("good", "", "1.0", "1", "amd64"),
        ("latin1", "", "1.0", "1\ufffd", "amd64"),
    }
    assert [r["id"] for r in report["repositories"]] == [
        "http://deb.example.org/debian b\ufffdd main"
    ]
    warnings = "\n".join(report["agent"]["warnings"])
    for expected in (
        "dpkg-query line 3 ignored",
        "dpkg package badepoch ignored",
        "sources.list:1: incomplete source line ignored",
        "sources.list:2: unknown source type 'rpm' ignored",
        "sources.list:4: unclosed [options]",
        "broken.sources: stanza 1 lacks Types, URIs or Suites",
        "suite bookworm has no components",
        "cannot read /etc/apt/sources.list.d/unreadable.list: Is a directory",
        "apt-cache not found: apt repository priorities not collected",
        "/etc/yum.repos.d/bad.repo: not parsed",
        "rpm not found: rpm packages not collected",
    ):
        assert expected in warnings
    body = agent.encode_report(report)
    assert json.loads(gzip.decompress(body)) == report


def test_missing_package_tool_is_a_warning_not_a_crash() -> None:
    directory = FIXTURES / "rocky-9"
    ctx = agent.Context(str(directory / "root"), lambda argv: None, "5.14.0", "x86_64", live=True)
    report = agent.collect_report(ctx, "h.example", (), now=1.0)
    validate(report)
    assert report["packages"] == []
    assert "rpm not found: rpm packages not collected" in report["agent"]["warnings"]
    assert len(report["repositories"]) == 7  # files are still read
    assert report["reboot_required"] is None


def test_empty_rpm_database_on_a_dpkg_host_is_ignored(tmp_path: Path) -> None:
    """Debian with the rpm tool installed may have an empty /var/lib/rpm database."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "debian-12" / "root", root, symlinks=True)
    (root / "var" / "lib" / "rpm").mkdir()
    (root / "var" / "lib" / "rpm" / "rpmdb.sqlite").write_bytes(b"")
    (root / "etc" / "yum.repos.d").mkdir()
    (root / "etc" / "yum.repos.d" / "image-build.repo").write_text("[x]\nbaseurl=http://x/\n")
    fake = FakeRunner(FIXTURES / "debian-12")

    def runner(argv: list[str]) -> agent.Result | None:
        return agent.Result(0, "", "") if argv[0] == "rpm" else fake(argv)

    ctx = agent.Context(str(root), runner, "6.1.0-26-amd64", "x86_64", live=True)
    report = agent.collect_report(ctx, "h.example", (), now=1.0)
    assert len(report["packages"]) == EXPECTED["debian-12"]["packages"]
    assert len(report["repositories"]) == EXPECTED["debian-12"]["repositories"]
    assert "modules" not in report
    assert report["agent"]["warnings"] == []
    assert fake.unknown == []  # no needs-restarting, no dnf


def test_splay_sleeps_a_random_time_below_the_bound(tmp_path: Path) -> None:
    slept: list[float] = []
    config = tmp_path / "empty.conf"
    config.write_text("")
    out = io.StringIO()
    code = agent.run(
        ["--config", str(config), "--root", str(FIXTURES / "rocky-9" / "root"), "--dry-run",
         "--hostname", "h.example", "--splay", "30"],
        environ={}, runner=FakeRunner(FIXTURES / "rocky-9"), sleep=slept.append, stdout=out,
    )  # fmt: skip
    assert code == agent.EXIT_OK
    assert len(slept) == 1 and 0 <= slept[0] <= 30


def test_real_runner_decodes_invalid_utf8_and_reports_missing_tools() -> None:
    runner = agent.CommandRunner()
    result = runner(["sh", "-c", r"printf 'a\377b'; exit 3"])
    assert (result.rc, result.out) == (3, "a\ufffdb")
    assert runner(["patchwatch-no-such-tool-xyz"]) is None


def test_symlinks_resolve_inside_the_root() -> None:
    root = str(FIXTURES / "debian-12" / "root")
    assert agent.resolve_in_root(root, "/var/run/reboot-required") == root + "/run/reboot-required"
    fedora = str(FIXTURES / "fedora-40" / "root")
    assert agent.resolve_in_root(fedora, "/etc/os-release") == fedora + "/usr/lib/os-release"
    assert agent.resolve_in_root(root, "/../../etc/passwd") == root + "/etc/passwd"


@pytest.mark.parametrize(
    ("packages", "running", "expected"),
    [
        (
            [
                ("linux-image-6.1.0-25-amd64", "6.1.106-3"),
                ("linux-image-6.1.0-26-amd64", "6.1.112-1"),
            ],
            "6.1.0-25-amd64",
            True,
        ),
        (
            [
                ("linux-image-6.1.0-25-amd64", "6.1.106-3"),
                ("linux-image-6.1.0-26-amd64", "6.1.112-1"),
            ],
            "6.1.0-26-amd64",
            False,
        ),
        (
            [
                ("linux-image-6.1.0-26-amd64", "6.1.112-1"),
                ("linux-image-6.1.0-27-cloud-amd64", "6.1.115-1"),
            ],
            "6.1.0-26-amd64",
            False,
        ),  # a newer kernel of another flavour does not count
        ([("linux-image-6.1.0-26-amd64", "6.1.112-1")], "6.18.44-custom", None),
        ([], "6.1.0-26-amd64", None),
    ],
)
def test_debian_kernel_reboot_check(packages, running, expected) -> None:
    pkgs = []
    for name, version in packages:
        upstream, revision = version.rsplit("-", 1)
        pkgs.append(
            {
                "name": name,
                "epoch": "",
                "version": upstream,
                "release": revision,
                "arch": "amd64",
                "type": "deb",
            }
        )
    assert agent.kernel_reboot_needed(pkgs, running) is expected


@pytest.mark.parametrize(
    ("name", "installed", "running", "expected"),
    [
        ("kernel-core", ["427.13.1.el9_4", "427.37.1.el9_4"], "5.14.0-427.13.1.el9_4.x86_64", True),
        (
            "kernel-core",
            ["427.13.1.el9_4", "427.37.1.el9_4"],
            "5.14.0-427.37.1.el9_4.x86_64",
            False,
        ),
        (
            "kernel-default",
            ["150600.23.22.1", "150600.23.25.1"],
            "5.14.0-150600.23.22-default",
            True,
        ),
        (
            "kernel-default",
            ["150600.23.22.1", "150600.23.25.1"],
            "5.14.0-150600.23.25-default",
            False,
        ),
        ("kernel", ["118.189.amzn2023"], "5.14.0-118.189.amzn2023.x86_64", False),
        ("kernel-core", ["427.13.1.el9_4"], "5.14.0-999.el9.x86_64", None),
    ],
)
def test_rpm_kernel_reboot_check(name, installed, running, expected) -> None:
    pkgs = [
        {
            "name": name,
            "epoch": "",
            "version": "5.14.0",
            "release": r,
            "arch": "x86_64",
            "type": "rpm",
        }
        for r in installed
    ]
    assert agent.kernel_reboot_needed(pkgs, running) is expected


def test_substitution_follows_dnf_syntax() -> None:
    variables = {"releasever": "9", "basearch": "x86_64", "empty": ""}
    assert agent.substitute("$releasever/$basearch/$unknown", variables) == "9/x86_64/$unknown"
    assert agent.substitute("${releasever}x", variables) == "9x"
    assert agent.substitute("${empty:-fallback}-${releasever:-no}", variables) == "fallback-9"
    assert agent.substitute("${releasever:+yes}${empty:+no}", variables) == "yes"


# -------------------------------------------------- parsers against the tools' own view


def apt_index_targets(field: str, *options: str) -> list[tuple[tuple[str, str, str], str]]:
    """apt's own view of its Packages indexes: per index target, its repository key
    (URI as the agent normalises it, suite, component) and the indextargets variable
    ``field`` (ARCHITECTURE, FILENAME...). ``options``: apt-get ``-o`` options. A flat
    repository's component is unset, which apt prints as the literal ``$(COMPONENT)``."""
    out = subprocess.run(
        [
            "apt-get",
            *options,
            "indextargets",
            "--no-release-info",
            "--format",
            f"$(REPO_URI)\t$(RELEASE)\t$(COMPONENT)\t$({field})",
            "Identifier: Packages",
            "Target-Of: deb",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    targets = []
    for line in out.splitlines():
        uri, suite, component, value = line.split("\t")
        component = "" if component == "$(COMPONENT)" else component
        targets.append(((agent.normalize_uri(uri), suite, component), value))
    return targets


def test_apt_sources_agree_with_apt_indextargets() -> None:
    """apt itself expands the fixtures' sources; the agent must find the same repositories."""
    require(shutil.which("apt-get") is not None, "apt-get not installed")
    for name in ("ubuntu-24.04", "debian-12"):
        root = FIXTURES / name / "root"
        options = (f"-o=Dir={root}/", f"-o=Dir::State::status={root}/var/lib/dpkg/status")
        apt_view: dict[tuple[str, str, str], set[str]] = {}
        for key, arch in apt_index_targets("ARCHITECTURE", *options):
            apt_view.setdefault(key, set()).add(arch)
        report, _ = fixture_report(name)
        ours = {
            (r["urls"][0].rstrip("/"), r["suite"], r.get("component", "")): r
            for r in report["repositories"]
            if r["enabled"]
        }
        assert set(ours) == set(apt_view), name
        for key, repo in ours.items():
            if "arch" in repo:
                assert set(repo["arch"].split(",")) == apt_view[key] - {"all", "$(ARCHITECTURE)"}


def run_dnf_oracle(root: Path, releasever: str) -> list[dict]:
    script = """
import json, os, sys
import dnf
root, releasever = sys.argv[1], sys.argv[2]
base = dnf.Base()
conf = base.conf
conf.substitutions["releasever"] = releasever
conf.substitutions["arch"] = "x86_64"
conf.substitutions["basearch"] = "x86_64"
conf.substitutions.update_from_etc(root)
conf.reposdir = [os.path.join(root, d) for d in
                 ("etc/yum.repos.d", "etc/yum/repos.d", "etc/distro.repos.d")]
base.read_all_repos()
print(json.dumps([{"id": r.id, "name": r.name, "urls": list(r.baseurl),
                   "mirrorlist": r.mirrorlist or "", "metalink": r.metalink or "",
                   "enabled": bool(r.enabled), "priority": -r.priority}
                  for r in base.repos.values()]))
"""
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", script, str(root), releasever],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def dnf_available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import dnf"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.parametrize(
    ("name", "releasever"),
    [("rocky-9", "9"), ("fedora-40", "40"), ("amazonlinux-2023", "2023.5.20240916")],
)
def test_dnf_repositories_agree_with_dnf(name: str, releasever: str) -> None:
    """dnf's own configuration code reads the same .repo files and variables."""
    require(dnf_available(), f"{SYSTEM_PYTHON} cannot import dnf (apt-get install dnf)")
    oracle = run_dnf_oracle(FIXTURES / name / "root", releasever)
    report, _ = fixture_report(name)
    ours = repo_by_id(report)
    assert set(ours) == {r["id"] for r in oracle}
    for repo in oracle:
        mine = ours[repo["id"]]
        assert mine["name"] == repo["name"]
        assert mine["urls"] == [agent.strip_credentials(u) for u in repo["urls"]]
        assert mine.get("mirrorlist", "") == repo["mirrorlist"]
        assert mine.get("metalink", "") == repo["metalink"]
        assert mine["enabled"] is repo["enabled"]
        assert mine["priority"] == repo["priority"]


def test_zypper_repositories_agree_with_zypper(tmp_path: Path) -> None:
    require(shutil.which("zypper") is not None, "zypper not installed (apt-get install zypper)")
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "opensuse-leap-15.6" / "root", root, symlinks=True)
    env = dict(os.environ, ZYPP_REPO_RELEASEVER="15.6")
    out = subprocess.run(
        ["zypper", "--root", str(root), "--non-interactive", "--xmlout", "lr"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    ).stdout
    import xml.etree.ElementTree as ET

    oracle = {r.get("alias"): r for r in ET.fromstring(out[out.index("<?xml") :]).iter("repo")}
    report, _ = fixture_report("opensuse-leap-15.6")
    ours = repo_by_id(report)
    assert set(ours) == set(oracle)
    for alias, node in oracle.items():
        assert ours[alias]["name"] == node.get("name")
        assert ours[alias]["priority"] == -int(node.get("priority"))
        assert ours[alias]["enabled"] is (node.get("enabled") == "1")
        assert ours[alias]["urls"] == [
            agent.strip_credentials(u.text, drop_query=True) for u in node.iter("url")
        ]


DEB_CASES = [
    ("1.0", "1.0"),
    ("1.0", "1.0-0"),
    ("1.0~rc1", "1.0"),
    ("1.0~~", "1.0~"),
    ("1:0.1", "2.0"),
    ("0:1.0", "1.0"),
    ("1.0-1", "1.0-1+b1"),
    ("1.0-1+deb12u1", "1.0-1+deb12u2"),
    ("2.36-9+deb12u8", "2.36-9+deb12u10"),
    ("1.0a", "1.0+"),
    ("1.0", "1.0.0"),
    ("9.2p1-2+deb12u3", "9.2p1-2+deb12u10"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("1.2.3", "1.2.10"),
    ("6.8.0-45.45", "6.8.0-47.47"),
    ("1.0+really0.9", "1.0"),
    ("a1.0", "1.0"),
    ("1.0.", "1.0"),
    ("1:1.2.13.dfsg-1", "1:1.2.13-1"),
    ("3.0.13-0ubuntu3.4", "3.0.13-0ubuntu3.10"),
    ("0.0001", "0.1"),
    ("1.0-1ubuntu1", "1.0-1"),
    ("5:27.3.1-1~ubuntu.24.04~noble", "5:27.3.1-1"),
]
RPM_CASES = [
    ("1.0", "1.0"),
    ("1.0", "1.0.1"),
    ("1.0~rc1", "1.0"),
    ("1.0^", "1.0"),
    ("1.0^1", "1.0.1"),
    ("1.0^git1", "1.0a"),
    ("1.0~1", "1.0^~1"),
    ("1.0a", "1.0"),
    ("1.0", "1.0b"),
    ("el7", "el7_9"),
    ("1.el7_9", "1.el7.1"),
    ("2.02-142.el8", "2.02-142.el8_9.1"),
    ("6.0.rc1", "6.0"),
    ("FC5", "fc4"),
    ("001", "1"),
    ("1.0_1", "1.0.1"),
    ("10", "9"),
    ("427.13.1.el9_4", "427.37.1.el9_4"),
    ("150600.23.22.1", "150600.23.25.1"),
    ("a", "1"),
    ("1.0.", "1.0"),
    ("1.0~~", "1.0~"),
]


def test_deb_version_order_agrees_with_dpkg() -> None:
    require(shutil.which("dpkg") is not None, "dpkg not installed")
    for a, b in DEB_CASES + [(y, x) for x, y in DEB_CASES]:
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], timeout=30).returncode
        gt = subprocess.run(["dpkg", "--compare-versions", a, "gt", b], timeout=30).returncode
        truth = -1 if lt == 0 else (1 if gt == 0 else 0)
        assert agent.compare_deb_versions(a, b) == truth, (a, b)


def test_rpm_version_order_agrees_with_rpm() -> None:
    require(shutil.which("rpm") is not None, "rpm not installed (apt-get install rpm)")
    pairs = RPM_CASES + [(y, x) for x, y in RPM_CASES]
    lua = "".join(f'print(rpm.vercmp("{a}", "{b}") .. " ") ' for a, b in pairs)
    out = subprocess.run(
        ["rpm", "--eval", "%{lua: " + lua + "}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert len(out) == len(pairs)
    for (a, b), truth in zip(pairs, out, strict=True):
        assert agent.compare_rpm_versions(a, b) == int(truth), (a, b)


# ------------------------------------------------------------------- real systems


def run_agent_file(*args: str, python: str = sys.executable, env=None, timeout=120):
    return subprocess.run(
        [python, str(AGENT_FILE), *args],
        capture_output=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def live_dry_run() -> subprocess.CompletedProcess:
    """One ``--dry-run`` of the agent on this machine, shared by the tests that need it."""
    require(os.path.exists("/var/lib/dpkg/status"), "this machine has no dpkg database")
    return run_agent_file("--dry-run", "--hostname", "real.example.net")


def test_dry_run_on_this_machine_counts_the_real_dpkg_database(live_dry_run) -> None:
    proc = live_dry_run
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    validate(report)
    status = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    expected = sum(1 for line in status.splitlines() if re.match(r"^[ih]i", line))
    assert len([p for p in report["packages"] if p["type"] == "deb"]) == expected
    apt_view = {}
    for key, filename in apt_index_targets("FILENAME"):
        apt_view[key] = apt_view.get(key, False) or any(
            os.path.exists(f)
            for f in [filename, *Path(filename).parent.glob(Path(filename).name + ".*")]
        )
    ours = {
        (agent.normalize_uri(r["id"].split(" ")[0]), r["suite"], r.get("component", "")): r
        for r in report["repositories"]
        if r["enabled"]
    }
    assert set(ours) == set(apt_view)
    for key, downloaded in apt_view.items():
        # apt-cache policy lists an index (and so a priority) once apt has downloaded it
        assert ("priority" in ours[key]) is downloaded, key


def find_python36() -> str | None:
    candidates = [shutil.which("python3.6")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.6*/bin/python3.6"))
    for candidate in candidates:
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 6)":
            return candidate
    return None


def test_agent_runs_on_python_3_6(live_dry_run) -> None:
    """The agent file must run on the oldest Python it promises (RHEL 8's python3)."""
    python36 = find_python36()
    if python36 is None:
        pytest.skip("no Python 3.6 interpreter found (pyenv install 3.6.15 to run this)")
    old = run_agent_file("--dry-run", "--hostname", "real.example.net", python=python36)
    assert old.returncode == 0, old.stderr
    mine, theirs = json.loads(live_dry_run.stdout), json.loads(old.stdout)
    for report in (mine, theirs):
        report["agent"].pop("collected_at")
    assert mine == theirs


def rpm_dbpath() -> str:
    return subprocess.run(
        ["rpm", "--eval", "%{_dbpath}"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def link_rpmdb(root: Path) -> None:
    """Put the rpm database where an rpm distribution keeps it (/var/lib/rpm).

    Debian's rpm (and so dnf and zypper) keeps its database in ~/.rpmdb; a symlink
    gives the root the same layout as Fedora's /var/lib/rpm -> /usr/lib/sysimage/rpm.
    """
    dbpath = rpm_dbpath()
    if dbpath == "/var/lib/rpm":
        return
    link = root / "var" / "lib" / "rpm"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or (link.is_dir() and any(link.iterdir())):
        return  # libzypp links it to ~/.rpmdb itself
    if link.is_dir():
        link.rmdir()
    link.symlink_to(os.path.relpath(str(root) + dbpath, link.parent))


@pytest.fixture(scope="module")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tools = ("rpmbuild", "createrepo_c", "modifyrepo_c")
    require(
        all(shutil.which(t) for t in tools),
        "rpm/createrepo-c missing (apt-get install rpm createrepo-c)",
    )
    out = tmp_path_factory.mktemp("rpmrepo")
    subprocess.run(
        ["bash", str(REPO / "scripts/make_rpm_repo.sh"), str(out), "--release-package"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    return out


OS_RELEASE_ROCKY = 'ID="rocky"\nVERSION_ID="9.4"\nCPE_NAME="cpe:/o:rocky:rocky:9::baseos"\n'


def test_real_rpm_database_from_dnf_installroot(rpm_repo: Path, tmp_path: Path) -> None:
    require(shutil.which("dnf") is not None, "dnf not installed (apt-get install dnf)")
    root = tmp_path / "root"
    (root / "etc" / "yum.repos.d").mkdir(parents=True)
    (root / "etc" / "dnf" / "modules.d").mkdir(parents=True)
    (root / "etc" / "yum.repos.d" / "pwtest.repo").write_text(
        f"[pwtest]\nname=pwtest $releasever $basearch\nbaseurl=file://{rpm_repo}\n"
        "gpgcheck=0\npriority=10\n\n[pwtest-off]\nname=off\nbaseurl=file:///nonexistent\n"
        "enabled=0\n"
    )
    (root / "etc" / "dnf" / "modules.d" / "nodejs.module").write_text(
        "[nodejs]\nname=nodejs\nstream=20\nprofiles=common\nstate=enabled\n"
    )
    (root / "etc" / "os-release").write_text(OS_RELEASE_ROCKY)
    (root / "etc" / "hostname").write_text("rpmhost.example.net\n")
    subprocess.run(
        [
            "dnf",
            "-q",
            "-y",
            f"--installroot={root}",
            "--releasever=9",
            "--disablerepo=pwtest-off",
            "install",
            "hello-1.0-1",
            "widget-2:3.0-1.el9",
            "legacy-0.9-1",
            "pwtest-release",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    link_rpmdb(root)
    proc = run_agent_file("--root", str(root), "--dry-run", "--updates")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    validate(report)
    assert report["host"] == "rpmhost.example.net"  # the root's /etc/hostname
    assert package_set(report) == {
        ("hello", "", "1.0", "1", "noarch"),
        ("widget", "2", "3.0", "1.el9", "noarch"),
        ("legacy", "", "0.9", "1", "noarch"),
        ("pwtest-release", "", "9.4", "1", "noarch"),
    }
    oracle = subprocess.run(
        ["rpm", "--root", str(root), "-qa", "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\n")
    assert sorted(filter(None, oracle)) == sorted(
        f"{p['name']} {p['epoch'] or 0}:{p['version']}-{p['release']}" for p in report["packages"]
    )
    # $releasever as dnf itself detects it from the root's rpm database
    detect = "import sys, dnf.rpm; print(dnf.rpm.detect_releasever(sys.argv[1]))"
    if dnf_available():
        truth = subprocess.run(
            [SYSTEM_PYTHON, "-c", detect, str(root)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        assert truth == "9"
    repos = repo_by_id(report)
    basearch = agent.BASEARCH.get(os.uname().machine, os.uname().machine)
    assert repos["pwtest"] == {
        "type": "rpm",
        "id": "pwtest",
        "name": f"pwtest 9 {basearch}",  # $releasever 9 from pwtest-release, not VERSION_ID
        "urls": [f"file://{rpm_repo}"],
        "enabled": True,
        "priority": -10,
    }
    assert repos["pwtest-off"]["enabled"] is False
    assert report["modules"] == [{"name": "nodejs", "stream": "20"}]
    assert report["reboot_required"] is None  # not the running system
    updates = {u["name"]: u for u in report["updates"]}
    assert updates == {
        "hello": {
            "name": "hello",
            "version": "1.1-1",
            "arch": "noarch",
            "security": True,
            "repository": "pwtest",
        },
        "widget": {
            "name": "widget",
            "version": "2:3.0-2.el9",
            "arch": "noarch",
            "security": False,
            "repository": "pwtest",
        },
        "legacy": {
            "name": "legacy",
            "version": "1:0.8-1",
            "arch": "noarch",
            "security": False,
            "repository": "pwtest",
        },
    }
    assert report["agent"]["warnings"] == []
    assert report["held"] == []

    # dnf's own versionlock plugin locks two packages in the root: the agent's holds
    # are exactly the updates dnf no longer offers
    plugin = versionlock_plugin()
    require(plugin is not None, "dnf's versionlock plugin not found (scripts/dev.sh setup)")
    dnf = versionlock_dnf(root, plugin, tmp_path)
    before = dnf_upgradable(dnf, plugin)
    assert before == {"hello", "widget", "legacy"}
    subprocess.run([*dnf, "versionlock", "add", "hello", "widg*"], check=True,
                   capture_output=True, timeout=300, env=dnf_env(plugin))  # fmt: skip
    after = dnf_upgradable(dnf, plugin)
    proc = run_agent_file("--root", str(root), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    held = json.loads(proc.stdout)["held"]
    assert {h["name"] for h in held} == before - after == {"hello", "widget"}
    assert {h["arch"] for h in held} == {"noarch"}


def versionlock_plugin() -> Path | None:
    """Where dnf's versionlock plugin is: unpacked into the venv by scripts/dev.sh
    (Debian's dnf-plugins-core Breaks zypper), or installed."""
    for base in (Path(sys.prefix) / "share" / "dnf-plugins-core", Path("/")):
        packages = base / "usr" / "lib" / "python3" / "dist-packages"
        if (packages / "dnf-plugins" / "versionlock.py").is_file():
            return packages
    return None


def dnf_env(plugin: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(plugin), "LC_ALL": "C"}  # dnfpluginscore


def versionlock_dnf(root: Path, plugin: Path, tmp_path: Path) -> list[str]:
    """dnf on the root with only the versionlock plugin, its list inside the root.

    dnf reads plugin configuration from the host even with --installroot, so the
    test gives it its own (pointing at the root's list), as the root's own file does.
    """
    plugins, confs = tmp_path / "dnf-plugins", tmp_path / "dnf-plugin-conf"
    plugins.mkdir()
    confs.mkdir()
    shutil.copy(plugin / "dnf-plugins" / "versionlock.py", plugins)
    locklist = root / "etc" / "dnf" / "plugins" / "versionlock.list"
    locklist.parent.mkdir(parents=True, exist_ok=True)
    locklist.write_text("")
    (locklist.parent / "versionlock.conf").write_text(
        "[main]\nenabled = 1\nlocklist = /etc/dnf/plugins/versionlock.list\n"
    )
    (confs / "versionlock.conf").write_text(f"[main]\nenabled = 1\nlocklist = {locklist}\n")
    return [
        "dnf", "-q", "-y", f"--installroot={root}", "--releasever=9",
        "--disablerepo=pwtest-off", f"--setopt=pluginpath={plugins}",
        f"--setopt=pluginconfpath={confs}", f"--setopt=cachedir={tmp_path / 'dnf-cache'}",
    ]  # fmt: skip


def dnf_upgradable(dnf: list[str], plugin: Path) -> set[str]:
    """Names ``dnf check-update`` lists, as the versionlock plugin leaves them."""
    proc = subprocess.run([*dnf, "check-update"], capture_output=True, text=True, timeout=300,
                          env=dnf_env(plugin))  # fmt: skip
    assert proc.returncode in (0, 100), proc.stderr
    return {
        fields[0].rpartition(".")[0]
        for fields in (line.split() for line in proc.stdout.splitlines())
        if len(fields) == 3 and fields[2] == "pwtest"
    }


def test_real_rpm_database_from_zypper_root(rpm_repo: Path, tmp_path: Path) -> None:
    require(shutil.which("zypper") is not None, "zypper not installed (apt-get install zypper)")
    root = tmp_path / "zroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(
        'ID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.6"\n'
    )
    zypper = ["zypper", "--root", str(root), "--non-interactive", "--no-gpg-checks"]
    subprocess.run(
        [*zypper, "ar", "-G", "-p", "90", f"file://{rpm_repo}", "pwtest"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run([*zypper, "refresh"], check=True, capture_output=True, timeout=120)
    subprocess.run(
        [*zypper, "install", "hello=1.0-1", "legacy=0.9-1", "widget=2:3.0-1.el9"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    link_rpmdb(root)
    proc = run_agent_file(
        "--root", str(root), "--hostname", "suse.example.net", "--dry-run", "--updates"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    validate(report)
    assert package_set(report) == {
        ("hello", "", "1.0", "1", "noarch"),
        ("widget", "2", "3.0", "1.el9", "noarch"),
        ("legacy", "", "0.9", "1", "noarch"),
    }
    assert report["repositories"] == [
        {
            "type": "zypper",
            "id": "pwtest",
            "urls": [f"file:{rpm_repo}"],
            "enabled": True,
            "priority": -90,
        }
    ]
    updates = {u["name"]: (u["version"], u["security"]) for u in report["updates"]}
    assert updates == {
        "hello": ("1.1-1", True),
        "widget": ("2:3.0-2.el9", False),
        "legacy": ("1:0.8-1", False),
    }
    assert report["agent"]["warnings"] == []
    assert report["held"] == []

    # zypper's own locks (/etc/zypp/locks in the root): the agent's holds are exactly
    # the updates zypper no longer lists
    def upgradable() -> set[str]:
        out = subprocess.run([*zypper, "list-updates"], check=True, capture_output=True,
                             text=True, timeout=120).stdout  # fmt: skip
        rows = [[f.strip() for f in line.split("|")] for line in out.splitlines()]
        return {row[2] for row in rows if len(row) == 6 and row[0] == "v"}

    before = upgradable()
    assert before == {"hello", "widget", "legacy"}
    subprocess.run([*zypper, "addlock", "hello", "widg*"], check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    after = upgradable()
    proc = run_agent_file("--root", str(root), "--hostname", "suse.example.net", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    held = json.loads(proc.stdout)["held"]
    assert {h["name"] for h in held} == before - after == {"hello", "widget"}


# ------------------------------------------------------------------------ sending


class Receiver:
    """A loopback stand-in for the receiver (which is being written separately).

    It records every request and answers from a queue of (status, body) pairs, 202 when
    the queue is empty. It does not validate anything itself: the tests do.
    """

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict, dict]] = []
        self.hold: threading.Event | None = None  # when set: answer only once it is set
        self.answered = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if receiver.hold is not None:
                    receiver.hold.wait(60)  # a liveness bound: the test sets it
                status, payload, headers = (
                    receiver.answers.pop(0)
                    if receiver.answers
                    else (202, {"report": len(receiver.requests), "status": "accepted"}, {})
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
                receiver.answered += 1

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reports(self) -> list[dict]:
        return [json.loads(gzip.decompress(r["body"])) for r in self.requests]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def write_config(tmp_path: Path, server: str, **extra: object) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = {
        "server": server,
        "token_file": str(token_file),
        "spool_dir": str(tmp_path / "spool"),
        "retries": 1,
        "backoff": 0.01,
        "timeout": 5,
        "tags": "web, prod",
        **extra,
    }
    path = tmp_path / "agent.conf"
    path.write_text("# test\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    path.chmod(0o600)
    return path


def run_fixture_agent(config: Path, *args: str, name: str = "debian-12"):
    """Run the agent's CLI in-process on a fixture root; return (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "--config",
        str(config),
        "--root",
        str(FIXTURES / name / "root"),
        "--hostname",
        "sender.example.net",
        *args,
    ]
    code = agent.run(
        argv,
        environ={},
        runner=FakeRunner(FIXTURES / name),
        sleep=lambda s: None,
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


def spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("report-*.json.gz"))


def test_report_is_sent_gzipped_with_the_bearer_token(receiver: Receiver, tmp_path: Path) -> None:
    code, out, err = run_fixture_agent(write_config(tmp_path, receiver.url), "-v")
    assert code == agent.EXIT_OK, err
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/api/v1/reports"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Content-Encoding"] == "gzip"
    report = json.loads(gzip.decompress(request["body"]))
    validate(report)
    assert report["host"] == "sender.example.net"
    assert report["tags"] == ["web", "prod"]
    assert len(report["packages"]) == EXPECTED["debian-12"]["packages"]
    assert "report accepted" in err
    assert TOKEN not in out + err
    assert spooled(tmp_path) == []


def test_server_down_then_up_delivers_the_spooled_report_once(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}")
    code, _, err = run_fixture_agent(config)
    assert code == agent.EXIT_SPOOLED
    assert "cannot reach" in err and TOKEN not in err
    first = spooled(tmp_path)
    assert len(first) == 1
    first_report = json.loads(gzip.decompress(first[0].read_bytes()))
    time.sleep(0.01)  # the next report gets a later collected_at

    server = Receiver(port)
    try:
        code, _, err = run_fixture_agent(config)
        assert code == agent.EXIT_OK, err
        assert spooled(tmp_path) == []
        reports = server.reports()
        assert len(reports) == 2
        assert reports[0] == first_report  # the spooled one first, unchanged
        assert reports[1]["agent"]["collected_at"] > first_report["agent"]["collected_at"]

        code, _, _ = run_fixture_agent(config)
        assert code == agent.EXIT_OK
        stamps = [r["agent"]["collected_at"] for r in server.reports()]
        assert len(stamps) == 3
        assert stamps.count(first_report["agent"]["collected_at"]) == 1
    finally:
        server.stop()


def test_client_error_is_reported_and_not_spooled(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers.append((400, {"error": "bad version", "where": "packages.3.version"}, {}))
    code, _, err = run_fixture_agent(write_config(tmp_path, receiver.url))
    assert code == agent.EXIT_REJECTED
    assert '"where": "packages.3.version"' in err
    assert len(receiver.requests) == 1  # no retry of a permanent refusal
    assert spooled(tmp_path) == []
    assert TOKEN not in err


def test_server_errors_and_429_are_retried(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers += [(503, {"error": "busy"}, {}), (429, {}, {"Retry-After": "0"})]
    config = write_config(tmp_path, receiver.url, retries=2)
    code, _, err = run_fixture_agent(config)
    assert code == agent.EXIT_OK, err
    assert len(receiver.requests) == 3
    assert len({r["body"] for r in receiver.requests}) == 1


def test_a_previous_report_the_server_could_not_process_is_said(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The server reads a report whole only after acknowledging it: the answer to the
    next report says when the one before failed, and the agent says so (an error on
    stderr, the exit code of a report that was sent)."""
    failed = {"id": 41, "state": "failed", "error": "packages[2].version: is required"}
    receiver.answers.append((202, {"status": "accepted", "report": 42,
                                   "previous_report": failed}, {}))  # fmt: skip
    code, _, err = run_fixture_agent(write_config(tmp_path, receiver.url))
    assert code == agent.EXIT_OK
    assert "previous report (41): packages[2].version: is required" in err
    code, _, err = run_fixture_agent(write_config(tmp_path, receiver.url))
    assert code == agent.EXIT_OK
    assert "previous report" not in err


def test_429_is_retried_no_sooner_than_retry_after() -> None:
    """The receiver's per-host limit answers 429 with the seconds to wait; the agent
    waits at least that long (at most 300 s) before it sends again."""
    answers = [(429, "too many", "45"), (429, "too many", "900"), (202, "{}", None)]
    slept: list[float] = []
    settings = {"server": "http://127.0.0.1:9", "retries": 3, "backoff": 1.0, "token": "t",
                "timeout": 5, "ca_file": None}  # fmt: skip
    outcome = agent.deliver(settings, b"{}", sleep=slept.append,
                            post=lambda *a: answers.pop(0))  # fmt: skip
    assert outcome.state == "sent"
    assert slept[0] >= 45 and slept[1] >= 300 and len(slept) == 2


def test_persistent_server_error_spools_and_the_spool_is_bounded(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(tmp_path, receiver.url, retries=0, spool_max=3)
    for _ in range(5):
        receiver.answers.append((500, {"error": "down"}, {}))
        code, _, _ = run_fixture_agent(config)
        assert code == agent.EXIT_SPOOLED
        time.sleep(0.002)
    assert len(spooled(tmp_path)) == 3  # the newest three
    code, _, _ = run_fixture_agent(config)
    assert code == agent.EXIT_OK
    assert len(receiver.requests) == 5 + 4  # 5 failures, then 3 spooled + 1 new
    assert spooled(tmp_path) == []


def test_spooled_report_rejected_later_is_dropped(receiver: Receiver, tmp_path: Path) -> None:
    config = write_config(tmp_path, receiver.url, retries=0)
    receiver.answers.append((502, {}, {}))
    assert run_fixture_agent(config)[0] == agent.EXIT_SPOOLED
    receiver.answers.append((403, {"error": "token revoked"}, {}))
    code, _, err = run_fixture_agent(config)
    assert code == agent.EXIT_REJECTED  # the new one was accepted, the old one refused
    assert "token revoked" in err
    assert spooled(tmp_path) == []


def test_redirects_are_not_followed(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers.append((302, {}, {"Location": "http://127.0.0.1:9/elsewhere"}))
    code, _, err = run_fixture_agent(write_config(tmp_path, receiver.url))
    assert code == agent.EXIT_REJECTED
    assert "HTTP 302" in err
    assert len(receiver.requests) == 1


def test_dry_run_prints_the_report_and_needs_no_server(tmp_path: Path) -> None:
    config = tmp_path / "empty.conf"
    config.write_text("")
    code, out, _ = run_fixture_agent(config, "--dry-run", name="rocky-9")
    assert code == agent.EXIT_OK
    validate(json.loads(out))


def test_hook_mode_sends_packages_only(receiver: Receiver, tmp_path: Path) -> None:
    config = write_config(tmp_path, receiver.url, hook_delay=0)
    code, _, err = run_fixture_agent(config, "--hook", "--foreground")
    assert code == agent.EXIT_OK, err
    (report,) = receiver.reports()
    validate(report)
    assert "repositories" not in report


def test_debounce_lets_only_the_last_hook_report(tmp_path: Path) -> None:
    def later_hook_arrives(seconds: float) -> None:
        assert seconds == 7
        (tmp_path / "hook.pending").write_text("a newer hook")

    assert agent.debounce(str(tmp_path), 7, later_hook_arrives) is False
    assert agent.debounce(str(tmp_path), 7, lambda s: None) is True


def test_detached_hook_returns_at_once_and_reports(receiver: Receiver, tmp_path: Path) -> None:
    # an agent waiting for its answer would outlast run_agent_file's timeout
    config = write_config(tmp_path, receiver.url, hook_delay=0, timeout=120)
    receiver.hold = threading.Event()  # no report is answered before the hook returns
    proc = run_agent_file(
        "--config",
        str(config),
        "--hook",
        "--hostname",
        "hooked.example.net",
        "--root",
        str(FIXTURES / "debian-12" / "root"),
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert receiver.answered == 0  # returned without waiting for the report's answer
    receiver.hold.set()
    deadline = time.monotonic() + 20
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    (report,) = receiver.reports()
    assert report["host"] == "hooked.example.net" and "repositories" not in report


@pytest.mark.parametrize(
    ("lines", "args", "message"),
    [
        ("server = http://x\n", [], "no token"),
        ("token = t\n", [], "no server URL"),
        ("server = ftp://x\ntoken = t\n", [], "no server URL"),
        ("server = http://x\ntoken = t\ntags = ok, b@d\n", [], "tag 'b@d'"),
        ("server = http://x\ntoken = t\nretries = many\n", [], "retries: 'many' is not a number"),
        ("server = http://x\ntoken_file = /nonexistent/token\n", [], "token_file"),
        ("server = http://x\ntoken = t\n", ["--hostname", "bad host"], "host name 'bad host'"),
    ],
)
def test_configuration_errors_exit_1(tmp_path: Path, lines: str, args: list, message: str) -> None:
    config = tmp_path / "agent.conf"
    config.write_text(lines)
    err = io.StringIO()
    code = agent.run(
        ["--config", str(config), *args], environ={}, runner=lambda a: None, stderr=err
    )
    assert code == agent.EXIT_USAGE
    assert message in err.getvalue()


def test_usage_error_exits_1_not_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.run(["--retries", "x"], environ={}) == agent.EXIT_USAGE
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [["--token", "pw_abc_SECRET"], ["--token=pw_abc_SECRET"], ["--tok", "pw_abc_SECRET"],
     ["pw_abc_SECRET"], ["--token-file", "pw_abc_SECRET"]],
)  # fmt: skip
def test_options_are_not_abbreviated_and_a_token_is_never_echoed(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--token`` used to be taken for ``--token-file`` and the token printed in the
    error that the file could not be read."""
    environ = {"PATCHWATCH_SERVER": "http://127.0.0.1:9"}
    posted: list[object] = []
    code = agent.run([*args, "--spool-dir", str(tmp_path)], environ=environ,
                     runner=lambda a: None, post=lambda *a: posted.append(a))  # fmt: skip
    err = capsys.readouterr().err
    assert code == agent.EXIT_USAGE and not posted
    assert "SECRET" not in err and err.strip()
    if args[0] != "--token-file" and args[0].startswith("--tok"):
        assert "unrecognized arguments: " + args[0].split("=")[0] in err


def test_settings_precedence_and_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "agent.conf"
    config.write_text("[agent]\nserver = http://file\ntoken = from-file\ntimeout = 9\ntokn = x\n")
    warnings: list[str] = []
    opts = agent.build_parser().parse_args(["--config", str(config), "--timeout", "3"])
    env = {"PATCHWATCH_SERVER": "http://env", "PATCHWATCH_TOKEN": "from-env"}
    settings = agent.build_settings(opts, env, warnings.append)
    assert settings["server"] == "http://env"
    assert agent.read_token(settings) == "from-env"
    assert settings["timeout"] == 3.0
    assert any("unknown setting 'tokn'" in w for w in warnings)
    assert any("world-readable" in w for w in warnings) is bool(config.stat().st_mode & 0o004)


# ------------------------------------------------------------------------- hooks


def fake_agent(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in patchwatch-agent on PATH that records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "calls"
    script = bindir / "patchwatch-agent"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(0o755)
    return bindir, record


def test_apt_hook_parses_and_runs_the_agent(tmp_path: Path) -> None:
    require(shutil.which("apt-config") is not None, "apt-config not installed")
    dump = subprocess.run(
        ["apt-config", "-c", str(HOOKS / "apt" / "80patchwatch"), "dump", "DPkg::Post-Invoke"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    commands = [
        json.loads(line.split(" ", 1)[1].rstrip(";"))
        for line in dump.splitlines()
        if "patchwatch-agent" in line
    ]
    assert len(commands) == 1
    bindir, record = fake_agent(tmp_path)
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    assert subprocess.run(["sh", "-c", commands[0]], env=env, timeout=30).returncode == 0
    assert record.read_text() == "--hook\n"
    bare = dict(os.environ, PATH="/nonexistent")
    assert subprocess.run(["/bin/sh", "-c", commands[0]], env=bare, timeout=30).returncode == 0


def test_dnf_action_line_runs_the_agent(tmp_path: Path) -> None:
    lines = [
        line.strip()
        for line in (HOOKS / "dnf" / "patchwatch.action").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    key, state, command = lines[0].split(":", 2)  # as post-transaction-actions parses it
    assert (key, state) == ("*", "any")
    assert "$" not in command  # the plugin would substitute $name, $arch, ...
    bindir, record = fake_agent(tmp_path)
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    assert subprocess.run(command, shell=True, env=env, timeout=30).returncode == 0
    assert record.read_text() == "--hook\n"


def test_zypper_commit_plugin_speaks_the_protocol(tmp_path: Path) -> None:
    _, record = fake_agent(tmp_path)
    frames = b"".join(
        f"{cmd}\n{hdr}\n{body}\0".encode()
        for cmd, hdr, body in [
            ("PLUGINBEGIN", "userdata:x\n", ""),
            ("COMMITBEGIN", "\n", "{}"),
            ("COMMITEND", "\n", '{"TransactionStepList":[]}'),
            ("PLUGINEND", "\n", ""),
            ("_DISCONNECT", "\n", ""),
        ]
    )
    proc = subprocess.run(
        [str(HOOKS / "zypper" / "patchwatch")],
        input=frames,
        capture_output=True,
        timeout=30,
        env=dict(os.environ, PATCHWATCH_AGENT=str(tmp_path / "bin" / "patchwatch-agent")),
    )
    assert proc.returncode == 0
    assert proc.stdout == b"ACK\n\n\0" * 5
    assert record.read_text() == "--hook\n"  # once, on COMMITEND


def test_pacman_hook_triggers_after_every_transaction_and_runs_the_agent(
    tmp_path: Path,
) -> None:
    """The hook in alpm-hooks(5) syntax: read as libalpm reads it (sections of
    ``Key = Value``, Exec split like a shell word list, run without a shell)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in (HOOKS / "pacman" / "patchwatch.hook").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    trigger, action = sections["Trigger"], dict(sections["Action"])
    assert {v for k, v in trigger if k == "Operation"} == {"Install", "Upgrade", "Remove"}
    assert ("Type", "Package") in trigger and ("Target", "*") in trigger
    assert action["When"] == "PostTransaction"
    bindir, record = fake_agent(tmp_path)
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    argv = shlex.split(action["Exec"])
    assert subprocess.run(argv, env=env, timeout=30).returncode == 0
    assert record.read_text() == "--hook\n"
    bare = dict(os.environ, PATH="/nonexistent")  # no agent: the transaction is not failed
    assert subprocess.run(argv, env=bare, timeout=30).returncode == 0


def test_apk_commit_hook_runs_the_agent_after_the_commit_only(tmp_path: Path) -> None:
    bindir, record = fake_agent(tmp_path)
    hook = str(HOOKS / "apk" / "patchwatch-commit-hook")
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    assert subprocess.run([hook, "pre-commit"], env=env, timeout=30).returncode == 0
    assert not record.exists()
    assert subprocess.run([hook, "post-commit"], env=env, timeout=30).returncode == 0
    assert record.read_text() == "--hook\n"
    periodic = str(HOOKS / "apk" / "patchwatch-agent.periodic")
    assert subprocess.run([periodic], env=env, timeout=30).returncode == 0
    assert record.read_text() == "--hook\n--splay 600\n"


def test_systemd_units_verify() -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze not installed")
    timer = HOOKS / "systemd" / "patchwatch-agent.timer"
    service = HOOKS / "systemd" / "patchwatch-agent.service"
    assert re.search(r"^RandomizedDelaySec=\S+", timer.read_text(), re.M)
    assert re.search(r"^SuccessExitStatus=2$", service.read_text(), re.M)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(service), str(timer)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_example_config_and_docs_cover_every_setting() -> None:
    warnings: list[str] = []
    example = REPO / "agent" / "agent.conf.example"
    values = agent.load_config_file(str(example), True, warnings.append)
    assert warnings == []
    assert set(values) <= set(agent.SETTINGS)
    docs = (REPO / "docs" / "agent.md").read_text()
    for key in agent.SETTINGS:
        assert f"| `{key}` |" in docs, key
    for code in (agent.EXIT_OK, agent.EXIT_USAGE, agent.EXIT_SPOOLED, agent.EXIT_REJECTED):
        assert f"| {code} |" in docs
    for variable in ("PATCHWATCH_SERVER", "PATCHWATCH_TOKEN", "PATCHWATCH_CONFIG"):
        assert f"`{variable}`" in docs


def test_agent_file_is_standalone_and_its_version_matches() -> None:
    import patchwatch

    source = AGENT_FILE.read_text()
    assert agent.__version__ == patchwatch.__version__
    imports = set(re.findall(r"^(?:import|from) ([a-z_.]+)", source, re.M))
    stdlib = set(sys.stdlib_module_names)
    assert {name.split(".")[0] for name in imports} <= stdlib
    assert "from __future__" not in source and ":=" not in source


# --- the host's own token ------------------------------------------------------------------

HOST_TOKEN = "pw_0123456789ab_" + "h" * 43


def enrolled_answer(report: int = 1) -> tuple[int, dict, dict]:
    return 202, {"status": "accepted", "report": report, "host_token": HOST_TOKEN,
                 "host": "sender.example.net"}, {}  # fmt: skip


def test_the_token_handed_out_at_enrollment_is_kept_and_used(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.answers.append(enrolled_answer())
    config = write_config(tmp_path, receiver.url, state_dir=str(tmp_path / "state"))
    code, out, err = run_fixture_agent(config)
    assert code == agent.EXIT_OK, err
    first = receiver.requests[0]["headers"]
    assert first["Authorization"] == f"Bearer {TOKEN}"
    key = first["X-Patchwatch-Enrollment-Key"]
    assert len(key) >= 32
    kept = tmp_path / "state" / ".host-token"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert json.loads(kept.read_text()) == {
        "server": receiver.url, "host": "sender.example.net", "token": HOST_TOKEN}  # fmt: skip
    assert (tmp_path / "state" / ".enrollment-key").read_text().strip() == key
    assert "enrolled" in err and HOST_TOKEN not in out + err and key not in out + err
    # from now on: the host's own token, no enrollment key, even without the configured one
    (tmp_path / "token").unlink()
    code, _, err = run_fixture_agent(config)
    assert code == agent.EXIT_OK, err
    second = receiver.requests[1]["headers"]
    assert second["Authorization"] == f"Bearer {HOST_TOKEN}"
    assert "X-Patchwatch-Enrollment-Key" not in second


def test_a_kept_token_belongs_to_one_server_and_one_host_name(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.answers.append(enrolled_answer())
    config = write_config(tmp_path, receiver.url)  # state_dir: the spool folder
    assert run_fixture_agent(config)[0] == agent.EXIT_OK
    assert (tmp_path / "spool" / ".host-token").exists()
    code, _, _ = run_fixture_agent(config, "--hostname", "other.example.net")
    assert code == agent.EXIT_OK
    assert receiver.requests[1]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    other = Receiver()
    try:  # another server never sees this server's host token
        code, _, _ = run_fixture_agent(write_config(tmp_path, other.url))
        assert code == agent.EXIT_OK
        assert other.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    finally:
        other.stop()


def test_spooled_reports_switch_to_the_host_token_mid_run(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}", retries=0)
    assert run_fixture_agent(config)[0] == agent.EXIT_SPOOLED
    time.sleep(0.01)
    assert run_fixture_agent(config)[0] == agent.EXIT_SPOOLED
    server = Receiver(port)
    server.answers.append(enrolled_answer())
    try:
        code, _, err = run_fixture_agent(config)
        assert code == agent.EXIT_OK, err
        tokens = [r["headers"]["Authorization"] for r in server.requests]
        assert tokens == [f"Bearer {TOKEN}"] + [f"Bearer {HOST_TOKEN}"] * 2
    finally:
        server.stop()


def test_a_refused_host_token_says_what_to_do(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers.append(enrolled_answer())
    config = write_config(tmp_path, receiver.url)
    assert run_fixture_agent(config)[0] == agent.EXIT_OK
    receiver.answers.append((401, {"error": "token revoked"}, {}))
    code, _, err = run_fixture_agent(config)
    assert code == agent.EXIT_REJECTED
    assert "patchwatch token release sender.example.net" in err
    assert HOST_TOKEN not in err


def test_an_unusable_state_dir_is_said_before_enrolling(receiver: Receiver, tmp_path: Path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the folder should be")
    receiver.answers.append(enrolled_answer())
    config = write_config(tmp_path, receiver.url, state_dir=str(blocker))
    code, _, err = run_fixture_agent(config)
    assert code == agent.EXIT_OK  # the report itself was accepted
    assert "unusable" in err and "could not be kept" in err
    assert HOST_TOKEN not in err
