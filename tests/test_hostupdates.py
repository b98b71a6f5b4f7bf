"""Updates in the store: computed once per shared inputs, first-seen times kept."""

from __future__ import annotations

from patchwatch.hostupdates import refresh_host_updates
from patchwatch.models import Host
from patchwatch.models import HostUpdate
from patchwatch.models import Mirror
from patchwatch.models import Repository
from patchwatch.models import UpdateSet
from patchwatch.processing import apply_report
from patchwatch.processing import store_report
from patchwatch.records import HostReport
from patchwatch.records import OSInfo
from patchwatch.records import Package
from patchwatch.records import PackageKind
from patchwatch.records import RepoKind
from patchwatch.records import ReportedRepository
from patchwatch.sets import ensure_package_set
from patchwatch.sets import repository_key

DEB = PackageKind.DEB
MAIN = ReportedRepository(RepoKind.DEB, "m", "main", ("http://deb.example/debian",), 500,
                          suite="bookworm", component="main", arch="amd64")  # fmt: skip
SEC = ReportedRepository(RepoKind.DEB, "s", "security", ("http://sec.example/sec",), 500,
                         suite="bookworm-security", component="main", arch="amd64")  # fmt: skip


def p(name: str, version: str, release: str = "1", arch: str = "amd64") -> Package:
    return Package(name, "", version, release, arch, DEB)


def report(host: str, packages: list[Package], kernel: str = "6.1.0-28-amd64") -> None:
    rep = HostReport(
        hostname=host, os=OSInfo("debian", "debian", "Debian 12", "12", "bookworm"),
        kernel=kernel, arch="x86_64", packages=tuple(packages), repositories=(MAIN, SEC),
    )  # fmt: skip
    row = store_report(host, "patchwatch/1", {}, 100.0)
    apply_report(row, rep, 100.0)


def publish(repo: ReportedRepository, packages: list[Package], now: float) -> None:
    """Stand-in for a mirror refresh: give the repository's mirror this index."""
    r = Repository.get(Repository.key == repository_key(repo))
    pset = ensure_package_set(packages, now)
    Mirror.update(package_set=pset, last_success_at=now).where(Mirror.repository == r).execute()
    if repo is SEC:
        Repository.update(security=True).where(Repository.id == r.id).execute()


def test_updates_shared_by_identical_hosts_and_first_seen_kept(db) -> None:
    installed = [p("openssl", "3.0.14"), p("curl", "7.88.1"), p("bash", "5.2.15"),
                 p("linux-image-6.1.0-28-amd64", "6.1.119"),
                 p("linux-image-6.1.0-29-amd64", "6.1.123")]  # fmt: skip
    for i in range(5):
        report(f"web{i}", installed)
    publish(MAIN, [p("curl", "7.88.2"), p("bash", "5.2.15"), p("openssl", "3.0.14")], 200.0)
    publish(SEC, [p("openssl", "3.0.15")], 200.0)

    ctx = refresh_host_updates(1000.0)
    assert (ctx.computed, ctx.reused) == (1, 4)  # five hosts, one computation
    assert UpdateSet.select().count() == 1
    web0 = Host.get(Host.name == "web0")
    rows = {(u.installed.name, u.available.version, u.security)
            for u in HostUpdate.select().where(HostUpdate.host == web0)}  # fmt: skip
    assert rows == {("openssl", "3.0.15", True), ("curl", "7.88.2", False)}
    host = Host.get(Host.name == "web0")
    assert host.reboot_required  # 6.1.0-29 installed, 6.1.0-28 running
    # curl 7.88.1 and both kernels are in no repository (bash and openssl 3.0.14 are)
    assert host.packages_without_repository == 3

    ctx = refresh_host_updates(2000.0)  # nothing changed: nothing recomputed, times kept
    assert ctx.computed == 0
    assert {u.first_seen_at for u in HostUpdate.select()} == {1000.0}

    publish(MAIN, [p("curl", "7.88.3"), p("bash", "5.2.15"), p("openssl", "3.0.14")], 300.0)
    ctx = refresh_host_updates(3000.0)
    assert ctx.computed == 1
    curl = HostUpdate.select().join(Host).where(Host.name == "web0").switch(HostUpdate)
    by_name = {u.installed.name: u for u in curl}
    assert by_name["curl"].available.version == "7.88.3"
    assert by_name["curl"].first_seen_at == 1000.0  # same installed version still outdated


def test_updated_package_disappears_from_pending(db) -> None:
    report("db1", [p("openssl", "3.0.14")])
    publish(MAIN, [p("openssl", "3.0.14")], 200.0)
    publish(SEC, [p("openssl", "3.0.15")], 200.0)
    refresh_host_updates(1000.0)
    assert HostUpdate.select().count() == 1
    report("db1", [p("openssl", "3.0.15")])
    refresh_host_updates(2000.0)
    assert HostUpdate.select().count() == 0
