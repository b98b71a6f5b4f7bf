"""patchwatch's updates for an Arch Linux root equal what pacman itself says.

The oracle is pacman (Debian's pacman-package-manager), run on a throw-away root with
``--root``, ``--dbpath`` and ``--config``:

1. scripts/make_arch_repo.sh builds a real repository with makepkg and repo-add, and
   builds for a host to have installed (older epochs and snapshots, a pkgrel minor, a
   build newer than the repository's, one in no repository, builds whose newer
   version moved between x86_64 and any); Python's http.server serves it on loopback.
2. pacman installs those builds into the root (``-U``), ``-Sy`` syncs the
   repository, and ``pacman -Qu`` lists the upgrades, marking the IgnorePkg one
   ``[ignored]``.
3. patchwatch's agent reads the root (local database, pacman.conf), the receiver's
   processing stores the report, the refresh reads the same repository over HTTP, and
   the update computation runs. Its updates must be exactly ``pacman -Qu``'s, with the
   ignored one counted as held and no other.
4. Security: Arch's tracker JSON (its ``all.json`` format) names fixed versions; the
   security updates must be those whose installed version is below a fixed one and
   whose candidate reaches it, in the real ``vercmp``'s order.

Missing tools skip with the reason, or fail under ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from patchwatch.agent import patchwatch_agent as agent
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.refresh.run import refresh_all
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Package
from tests.support.paths import ROOT
from tests.support.tools import require_or_skip

ORACLES_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"
POLICY = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])
HOST = "archroot.test"
#: Arch security tracker groups (the all.json format) for the repository's packages:
#: one fixed exactly at the candidate, one below it, one above it, one never fixed
TRACKER = [
    {
        "name": "AVG-9001",
        "packages": ["hello"],
        "status": "Fixed",
        "severity": "High",
        "type": "arbitrary code execution",
        "affected": "1.0-1",
        "fixed": "1.1-1",
        "ticket": None,
        "issues": ["CVE-2026-0001"],
        "advisories": ["ASA-202612-1"],
    },
    {
        "name": "AVG-9002",
        "packages": ["widget"],
        "status": "Fixed",
        "severity": "Medium",
        "type": "denial of service",
        "affected": "1:3.0-2",
        "fixed": "2:3.0-1",
        "ticket": None,
        "issues": ["CVE-2026-0002"],
        "advisories": [],
    },
    {
        "name": "AVG-9003",
        "packages": ["legacy"],
        "status": "Fixed",
        "severity": "Low",
        "type": "information disclosure",
        "affected": "1:0.8-1",
        "fixed": "1:0.9-1",
        "ticket": None,
        "issues": ["CVE-2026-0003"],
        "advisories": [],
    },
    {
        "name": "AVG-9005",
        "packages": ["mover"],
        "status": "Fixed",
        "severity": "Medium",
        "type": "denial of service",
        "affected": "1.0-1",
        "fixed": "1.1-1",
        "ticket": None,
        "issues": ["CVE-2026-0005"],
        "advisories": [],
    },
    {
        "name": "AVG-9004",
        "packages": ["libdemo"],
        "status": "Vulnerable",
        "severity": "High",
        "type": "arbitrary code execution",
        "affected": "1.1-1",
        "fixed": None,
        "ticket": None,
        "issues": ["CVE-2026-0004"],
        "advisories": [],
    },
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def arch_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(the repository folder make_arch_repo.sh wrote, its URL on loopback)."""
    tools = ("pacman", "makepkg", "repo-add", "bsdtar", "fakeroot", "zstd")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        require_or_skip(
            ORACLES_ENV,
            f"{', '.join(missing)} not installed "
            "(apt-get install -y pacman-package-manager makepkg libarchive-tools)",
        )
    out = tmp_path_factory.mktemp("archrepo") / "repo"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "make_arch_repo.sh"), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode == 2:
        require_or_skip(ORACLES_ENV, done.stderr.strip())
    assert done.returncode == 0, done.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def pacman(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    argv = ["pacman", "--root", str(root), "--dbpath", str(root / "var/lib/pacman"),
            "--config", str(root / "etc/pacman.conf"), "--noconfirm", *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})  # fmt: skip
    assert done.returncode in ok, f"{' '.join(argv)}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_arch_updates_agree_with_pacman(
    db: object, tmp_path: Path, arch_repo: tuple[Path, str]
) -> None:
    repo, url = arch_repo
    root = tmp_path / "root"
    (root / "var/lib/pacman").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n')
    (root / "etc/pacman.conf").write_text(
        "[options]\nArchitecture = x86_64\nSigLevel = Never\nIgnorePkg = gadget\n\n"
        f"[pwtest]\nServer = {url}\n"
    )
    installed = sorted((repo / "old").glob("*.pkg.tar.zst")) + sorted(repo.glob("toolkit-*"))
    pacman(root, "-U", "--nodeps", "--nodeps", "--noscriptlet", *map(str, installed))
    pacman(root, "-Sy")
    want: set[tuple[str, str]] = set()
    ignored: set[str] = set()
    old_versions: dict[str, str] = {}
    for line in pacman(root, "-Qu", ok=(0, 1)).splitlines():
        name, old, arrow, new, *rest = line.split()
        assert arrow == "->"
        want.add((name, new))
        old_versions[name] = old
        if rest == ["[ignored]"]:
            ignored.add(name)
    # not vacuous: an older epoch, a version beaten by an epoch, an older snapshot, a
    # plain upgrade, builds that moved between x86_64 and any (pacman matches by name
    # alone); the newer-installed libdemo and the local-only build are none
    assert want == {
        ("gadget", "1.0.r12.gabc1234-3"),
        ("hello", "1.1-1"),
        ("legacy", "1:0.8-1"),
        ("mover", "1.1-1"),
        ("shifter", "2.1-1"),
        ("widget", "2:3.0-2"),
    }
    assert ignored == {"gadget"}

    # a security update reaches a fixed version: installed < fixed <= candidate, in the
    # real vercmp's order
    def vercmp(a: str, b: str) -> int:
        done = subprocess.run(["vercmp", a, b], capture_output=True, text=True, check=True)
        return int(done.stdout)

    fixed = {g["packages"][0]: g["fixed"] for g in TRACKER if g["fixed"]}
    want_security = {
        (name, new) for name, new in want
        if name in fixed and vercmp(old_versions[name], fixed[name]) < 0
        and vercmp(fixed[name], new) <= 0
    }  # fmt: skip
    assert want_security == {("hello", "1.1-1"), ("mover", "1.1-1"), ("widget", "2:3.0-2")}
    tracker = tmp_path / "all.json"
    tracker.write_text(json.dumps(TRACKER))
    settings = Settings(
        mirror_url_patterns=("http://127.0.0.1:*",),
        mirror_allowed_networks=("127.0.0.1/32",),
        arch_security_tracker=str(tracker),
    )

    ctx = agent.Context(str(root), lambda _argv: None, "6.12.8-arch1-1", "x86_64", live=False)
    report = agent.collect_report(ctx, HOST, (), now=1.0)
    assert len(report["packages"]) == len(installed)
    now = time.time()
    store_report(HOST, "patchwatch/1", report, now)
    assert process_pending(now) == {"processed": 1}
    with HttpFetcher(timeout=10, retries=0, policy=POLICY) as fetcher:
        (result,) = refresh_all(fetcher, now, settings)
    assert result.outcome == "changed", result.detail
    refresh_host_updates(now)

    host = Host.get(Host.name == HOST)
    inst, avail = Package.alias(), Package.alias()
    rows = (
        HostUpdate.select(inst.name, avail.kind, avail.epoch, avail.version, avail.release,
                          avail.arch, HostUpdate.held, HostUpdate.security)
        .join(inst, on=(HostUpdate.installed == inst.id))
        .switch(HostUpdate)
        .join(avail, on=(HostUpdate.available == avail.id))
        .where(HostUpdate.host == host)
        .tuples()
    )  # fmt: skip
    got: set[tuple[str, str]] = set()
    held: set[str] = set()
    security: set[tuple[str, str]] = set()
    for name, kind, epoch, version, release, arch, is_held, is_security in rows:
        evr = PackageRecord(name, epoch, version, release, arch, PackageKind(kind)).evr
        got.add((name, evr))
        if is_held:
            held.add(name)
        if is_security:
            security.add((name, evr))
    assert got == want
    assert held == ignored
    assert security == want_security
