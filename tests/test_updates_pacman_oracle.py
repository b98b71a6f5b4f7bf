"""patchwatch's updates for an Arch Linux root equal what pacman itself says.

The oracle is pacman (Debian's pacman-package-manager), run on a throw-away root with
``--root``, ``--dbpath`` and ``--config``:

1. scripts/make_arch_repo.sh builds a real repository with makepkg and repo-add, and
   builds for a host to have installed (older epochs and snapshots, a pkgrel minor, a
   build newer than the repository's, one in no repository); Python's http.server
   serves it on loopback.
2. pacman installs those builds into the root (``-U``), ``-Sy`` syncs the
   repository, and ``pacman -Qu`` lists the upgrades, marking the IgnorePkg one
   ``[ignored]``.
3. patchwatch's agent reads the root (local database, pacman.conf), the receiver's
   processing stores the report, the refresh reads the same repository over HTTP, and
   the update computation runs. Its updates must be exactly ``pacman -Qu``'s, with the
   ignored one counted as held and no other.

Missing tools skip with the reason, or fail under ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from agent import patchwatch_agent as agent
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
from tests.conftest import ROOT
from tests.conftest import require_or_skip

ORACLES_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"
POLICY = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])
SETTINGS = Settings(
    mirror_url_patterns=("http://127.0.0.1:*",), mirror_allowed_networks=("127.0.0.1/32",)
)
HOST = "archroot.test"


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
    for line in pacman(root, "-Qu", ok=(0, 1)).splitlines():
        name, _old, arrow, new, *rest = line.split()
        assert arrow == "->"
        want.add((name, new))
        if rest == ["[ignored]"]:
            ignored.add(name)
    # not vacuous: an older epoch, a version beaten by an epoch, an older snapshot, a
    # plain upgrade; the newer-installed libdemo and the local-only build are none
    assert want == {
        ("gadget", "1.0.r12.gabc1234-3"),
        ("hello", "1.1-1"),
        ("legacy", "1:0.8-1"),
        ("widget", "2:3.0-2"),
    }
    assert ignored == {"gadget"}

    ctx = agent.Context(str(root), lambda _argv: None, "6.12.8-arch1-1", "x86_64", live=False)
    report = agent.collect_report(ctx, HOST, (), now=1.0)
    assert len(report["packages"]) == len(installed)
    now = time.time()
    store_report(HOST, "patchwatch/1", report, now)
    assert process_pending(now) == {"processed": 1}
    with HttpFetcher(timeout=10, retries=0, policy=POLICY) as fetcher:
        (result,) = refresh_all(fetcher, now, SETTINGS)
    assert result.outcome == "changed", result.detail
    refresh_host_updates(now)

    host = Host.get(Host.name == HOST)
    inst, avail = Package.alias(), Package.alias()
    rows = (
        HostUpdate.select(inst.name, avail.kind, avail.epoch, avail.version, avail.release,
                          avail.arch, HostUpdate.held)
        .join(inst, on=(HostUpdate.installed == inst.id))
        .switch(HostUpdate)
        .join(avail, on=(HostUpdate.available == avail.id))
        .where(HostUpdate.host == host)
        .tuples()
    )  # fmt: skip
    got: set[tuple[str, str]] = set()
    held: set[str] = set()
    for name, kind, epoch, version, release, arch, is_held in rows:
        got.add((name, PackageRecord(name, epoch, version, release, arch, PackageKind(kind)).evr))
        if is_held:
            held.add(name)
    assert got == want
    assert held == ignored
