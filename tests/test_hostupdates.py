"""Updates in the store: computed once per shared inputs, first-seen times kept."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from patchwatch.domain.records import HeldPackage
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import OSInfo
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import RepoKind
from patchwatch.domain.records import ReportedRepository
from patchwatch.domain.records import ReportedUpdate
from patchwatch.domain.updates import Offer
from patchwatch.domain.updates import compute_updates
from patchwatch.domain.updates import count_packages_without_repository
from patchwatch.pipeline import hostupdates
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import apply_report
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package as PackageRow
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember
from patchwatch.store.models import UpdateSet
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.sets import repository_key

DEB, RPM = PackageKind.DEB, PackageKind.RPM
MAIN = ReportedRepository(RepoKind.DEB, "m", "main", ("http://deb.example/debian",), 500,
                          suite="bookworm", component="main", arch="amd64")  # fmt: skip
SEC = ReportedRepository(RepoKind.DEB, "s", "security", ("http://sec.example/sec",), 500,
                         suite="bookworm-security", component="main", arch="amd64")  # fmt: skip


def p(name: str, version: str, release: str = "1", arch: str = "amd64") -> Package:
    return Package(name, "", version, release, arch, DEB)


def report(
    host: str,
    packages: list[Package],
    kernel: str = "6.1.0-28-amd64",
    repositories: tuple[ReportedRepository, ...] = (MAIN, SEC),
    os: OSInfo | None = None,
    updates: tuple[ReportedUpdate, ...] | None = None,
    held: tuple[HeldPackage, ...] = (),
    at: float = 100.0,
) -> None:
    rep = HostReport(
        hostname=host, os=os or OSInfo("debian", "debian", "Debian 12", "12", "bookworm"),
        kernel=kernel, arch="x86_64", packages=tuple(packages), repositories=repositories,
        updates=updates, held=held,
    )  # fmt: skip
    row = store_report(host, "patchwatch/1", {}, at)
    apply_report(row, rep, at)


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
    stored = UpdateSet.get()
    assert stored.computed_at == 3000.0  # the set's row records its new inputs, so...
    assert refresh_host_updates(4000.0).computed == 0  # ...the next run reuses it


def _pending(host: str) -> dict[tuple[str, str], tuple[str, bool, bool, float]]:
    """(name, arch) -> (available version, security, held, first seen) of a host's updates."""
    rows = HostUpdate.select().join(Host).where(Host.name == host).switch(HostUpdate)
    return {
        (u.installed.name, u.installed.arch): (
            u.available.version, u.security, u.held, u.first_seen_at,
        )
        for u in rows
    }  # fmt: skip


def test_held_packages_are_marked_per_host_and_a_hold_flips_only_the_flag(db) -> None:
    """Hosts that hold packages share the update set of hosts that do not; only their
    own rows say held, and putting or lifting a hold keeps the first-seen time."""
    installed = [p("openssl", "3.0.14"), p("curl", "7.88.1"), p("bash", "5.2.15"),
                 p("libc6", "2.36", arch="i386"), p("libc6", "2.36")]  # fmt: skip
    # bash is held but has no update; libc6 without arch: both of its archs
    holds = (HeldPackage("openssl", "amd64"), HeldPackage("libc6"), HeldPackage("bash"))
    report("plain", installed)
    report("holder", installed, held=holds)
    publish(MAIN, [p("curl", "7.88.2"), p("bash", "5.2.15"), p("openssl", "3.0.14"),
                   p("libc6", "2.37", arch="i386"), p("libc6", "2.37")], 200.0)  # fmt: skip
    publish(SEC, [p("openssl", "3.0.15")], 200.0)

    ctx = refresh_host_updates(1000.0)
    assert (ctx.computed, ctx.reused) == (1, 1)  # holds do not split the shared inputs
    assert _pending("plain") == {
        ("openssl", "amd64"): ("3.0.15", True, False, 1000.0),
        ("curl", "amd64"): ("7.88.2", False, False, 1000.0),
        ("libc6", "amd64"): ("2.37", False, False, 1000.0),
        ("libc6", "i386"): ("2.37", False, False, 1000.0),
    }
    assert _pending("holder") == {
        ("openssl", "amd64"): ("3.0.15", True, True, 1000.0),  # still a security update
        ("curl", "amd64"): ("7.88.2", False, False, 1000.0),
        ("libc6", "amd64"): ("2.37", False, True, 1000.0),
        ("libc6", "i386"): ("2.37", False, True, 1000.0),
    }
    assert refresh_host_updates(1500.0).hosts_changed == 0  # nothing to write again

    report("holder", installed, held=(HeldPackage("curl", "amd64"),), at=2000.0)  # new holds
    ctx = refresh_host_updates(3000.0)
    assert ctx.computed == 0 and ctx.hosts_changed == 1
    after = _pending("holder")
    assert {key: row[2] for key, row in after.items()} == {
        ("openssl", "amd64"): False, ("curl", "amd64"): True,
        ("libc6", "amd64"): False, ("libc6", "i386"): False,
    }  # fmt: skip
    assert {row[3] for row in after.values()} == {1000.0}  # first seen when it first was

    report("holder", installed, at=4000.0)  # a report without holds lifts them all
    refresh_host_updates(5000.0)
    assert not any(row[2] for row in _pending("holder").values())
    assert Host.get(Host.name == "holder").held == ""


def test_sets_without_packed_ids_are_read_from_their_member_rows(db) -> None:
    """A set whose ids could not be packed (``member_ids`` NULL) computes the same."""
    report("web0", [p("openssl", "3.0.14"), p("curl", "7.88.1"), p("bash", "5.2.15")])
    publish(MAIN, [p("curl", "7.88.2"), p("bash", "5.2.15"), p("openssl", "3.0.14")], 200.0)
    publish(SEC, [p("openssl", "3.0.15")], 200.0)
    PackageSet.update(member_ids=None).execute()

    refresh_host_updates(1000.0)
    rows = {(u.installed.name, u.available.version, u.security) for u in HostUpdate.select()}
    assert rows == {("openssl", "3.0.15", True), ("curl", "7.88.2", False)}


def test_updated_package_disappears_from_pending(db) -> None:
    report("db1", [p("openssl", "3.0.14")])
    publish(MAIN, [p("openssl", "3.0.14")], 200.0)
    publish(SEC, [p("openssl", "3.0.15")], 200.0)
    refresh_host_updates(1000.0)
    assert HostUpdate.select().count() == 1
    report("db1", [p("openssl", "3.0.15")])
    refresh_host_updates(2000.0)
    assert HostUpdate.select().count() == 0


# --- a drifting fleet against the reference computation --------------------------------

BPO = ReportedRepository(RepoKind.DEB, "b", "backports", ("http://deb.example/debian",), 100,
                         suite="bookworm-backports", component="main", arch="amd64")  # fmt: skip
PIN = ReportedRepository(RepoKind.DEB, "x", "pinned", ("http://pin.example/debian",), 990,
                         suite="stable", component="main", arch="amd64")  # fmt: skip
OFF = ReportedRepository(RepoKind.DEB, "o", "never", ("http://off.example/debian",), -1,
                         suite="stable", component="main", arch="amd64")  # fmt: skip
RPM_OS = OSInfo("redhat", "rocky", "Rocky Linux 9", "9")
BASE = ReportedRepository(RepoKind.RPM, "baseos", "BaseOS", ("http://rpm.example/baseos",), -99)
EXTRA = ReportedRepository(RepoKind.RPM, "extra", "Extra", ("http://rpm.example/extra",), -10)
VERSIONS = ["1.0-1", "1.0-2", "1.1-1", "2.0-1", "1:0.9-1", "2.0~rc1-1"]
NAMES = [f"pkg{i}" for i in range(24)]


def _pkg(kind: PackageKind, name: str, evr: str, arch: str) -> Package:
    epoch, _, rest = evr.rpartition(":")
    version, _, release = rest.rpartition("-")
    return Package(name, epoch if kind == DEB or epoch else "0", version, release, arch, kind)


def _fleet(rng: random.Random) -> dict[str, tuple[list[Package], tuple[ReportedRepository, ...]]]:
    """Hosts drifting from three deb images and one rpm image, with repeated sets."""
    hosts: dict[str, tuple[list[Package], tuple[ReportedRepository, ...]]] = {}
    configs = [(MAIN, SEC), (MAIN, BPO, SEC, PIN, OFF), (SEC, MAIN)]
    for image in range(3):
        base = {
            (n, a): _pkg(DEB, n, rng.choice(VERSIONS), a)
            for n in rng.sample(NAMES, 14)
            for a in [rng.choice(["amd64", "amd64", "all"])]
        }
        for i in range(6):
            packages = dict(base)
            for _ in range(rng.randint(0, 3)):  # drift: another version, one more, one less
                n = rng.choice(NAMES)
                packages[(n, "amd64")] = _pkg(DEB, n, rng.choice(VERSIONS), "amd64")
                if packages and rng.random() < 0.3:
                    packages.pop(rng.choice(sorted(packages)))
            installed = list(packages.values())
            if rng.random() < 0.3:  # two versions of one name and arch, as installonly
                n, a = rng.choice(sorted(packages))
                installed.append(_pkg(DEB, n, rng.choice(VERSIONS), a))
            hosts[f"deb{image}-{i}"] = (installed, configs[(image + i) % len(configs)])
        hosts[f"deb{image}-copy"] = hosts[f"deb{image}-0"]  # shares its update set
    for i in range(5):
        installed = [_pkg(RPM, n, rng.choice(VERSIONS), rng.choice(["x86_64", "noarch"]))
                     for n in rng.sample(NAMES, 10)]  # fmt: skip
        newer = rng.choice(["5.14-2", "5.15-1"])
        installed += [_pkg(RPM, "kernel-core", "5.14-1", "x86_64"),
                      _pkg(RPM, "kernel-core", newer, "x86_64")]  # fmt: skip
        hosts[f"rpm{i}"] = (installed, (BASE, EXTRA) if i % 2 else (BASE,))
    return hosts


def _publish_fleet_mirrors(rng: random.Random, now: float) -> None:
    for repo, kind, archs, share in (
        (MAIN, DEB, ["amd64", "all"], 0.5), (SEC, DEB, ["amd64"], 0.2),
        (BPO, DEB, ["amd64", "all"], 0.3), (PIN, DEB, ["amd64"], 0.1),
        (OFF, DEB, ["amd64"], 0.3), (BASE, RPM, ["x86_64", "noarch"], 0.5),
        (EXTRA, RPM, ["x86_64", "noarch"], 0.2),
    ):  # fmt: skip
        index = [
            _pkg(kind, n, v, a)
            for n in [*NAMES, "kernel-core"]
            for a in archs
            for v in VERSIONS + ["5.14-2", "5.15-1", "5.16-1"] * (n == "kernel-core")
            if rng.random() < share
        ]
        publish(repo, index, now)
    base = Repository.get(Repository.key == repository_key(BASE))
    if Advisory.select().exists():
        return
    with database.atomic():
        for i, (n, v, a) in enumerate([("pkg1", "1.1-1", "x86_64"), ("pkg2", "1.0-2", "noarch"),
                                       ("kernel-core", "5.15-1", "x86_64")]):  # fmt: skip
            fixed = ensure_package_set([_pkg(RPM, n, v, a)], now)
            member = PackageSetMember.get(PackageSetMember.package_set == fixed)
            advisory = Advisory.create(advisory_id=f"PW-{i}", repository=base, type="security")
            AdvisoryPackage.create(advisory=advisory, package=member.package_id)


def _members(pset_id: int | None) -> list[Package]:
    query = (
        PackageRow.select()
        .join(PackageSetMember, on=(PackageSetMember.package == PackageRow.id))
        .where(PackageSetMember.package_set == pset_id)
    )
    return [_record(p) for p in query]


def _reference(host: Host) -> tuple[set[tuple[object, ...]], int | None]:
    """A host's pending updates and orphan count straight from ``compute_updates``."""
    installed = _members(host.package_set_id)
    offers, repo_ids, mirrors = [], [], 0
    for m in RepositorySetMember.select().where(
        RepositorySetMember.repository_set == host.repository_set_id
    ):
        repo = Repository.get_by_id(m.repository_id)
        mirror = Mirror.get(Mirror.repository == repo)
        if not m.enabled:
            continue
        repo_ids.append(repo.id)
        mirrors += mirror.package_set_id is not None
        security = repo.security if repo.security_override is None else repo.security_override
        for p in _members(mirror.package_set_id):
            offers.append(Offer(p, str(repo.id), m.priority, bool(security)))
    advisories: dict[tuple[str, str], list[Package]] = defaultdict(list)
    query = (
        PackageRow.select().join(AdvisoryPackage).join(Advisory)
        .where(Advisory.repository.in_(repo_ids) & (Advisory.type == "security"))
    )  # fmt: skip
    for p in query:
        advisories[(p.name, p.arch)].append(_record(p))
    reported = [(u.name, u.arch) for u in host.reported_updates if u.security]
    pending = compute_updates(installed, offers, advisories, reported)
    rows = {(u.installed.nevra, u.available.nevra, u.security, int(u.repository))
            for u in pending}  # fmt: skip
    return rows, count_packages_without_repository(installed, offers) if mirrors else None


def _stored(host: Host) -> tuple[set[tuple[object, ...]], int | None]:
    installed, available = PackageRow.alias(), PackageRow.alias()
    query = (HostUpdate.select(HostUpdate, installed, available)
             .join(installed, on=(HostUpdate.installed == installed.id)).switch(HostUpdate)
             .join(available, on=(HostUpdate.available == available.id))
             .where(HostUpdate.host == host))  # fmt: skip
    rows = {(_record(u.installed).nevra, _record(u.available).nevra, u.security, u.repository_id)
            for u in query}  # fmt: skip
    return rows, Host.get_by_id(host.id).packages_without_repository


def _record(p: PackageRow) -> Package:
    return Package(p.name, p.epoch, p.version, p.release, p.arch, PackageKind(p.kind))


def _check_fleet() -> int:
    pending = 0
    for host in Host.select():
        want = _reference(host)
        assert _stored(host) == want, host.name
        pending += len(want[0])
    return pending


def test_drifting_fleet_equals_the_reference_in_batches_and_one_host_at_a_time(
    db, monkeypatch
) -> None:
    rng = random.Random(7)
    for name, (installed, repos) in _fleet(rng).items():
        rpm = installed[0].kind == RPM
        updates = tuple(  # what the host's own package manager calls security updates
            ReportedUpdate(n, "9.9-1", a, True)
            for n in NAMES[::2]
            for a in ("amd64", "all")
            if name.endswith("-1")
        )
        report(name, installed, "5.14-1.x86_64" if rpm else "6.1.0-28-amd64", repos,
               os=RPM_OS if rpm else None, updates=updates)  # fmt: skip
    _publish_fleet_mirrors(rng, 200.0)
    monkeypatch.setattr(hostupdates, "WRITE_HOSTS", 4)  # several transactions, sets
    monkeypatch.setattr(hostupdates, "WRITE_ROWS", 10)  # spanning them
    ctx = refresh_host_updates(1000.0)
    assert ctx.written_aside == (not is_sqlite())  # PostgreSQL: through the writer thread
    assert ctx.computed < Host.select().count()  # the copies reuse their image's set
    assert _check_fleet() > 40  # not vacuous
    kinds = {(u.security, u.repository_id is not None) for u in HostUpdate.select()}
    assert (True, True) in kinds and (False, True) in kinds

    # the same from scratch, one host per run (lazy: only each host's names are read)
    HostUpdate.delete().execute()
    UpdateSet.delete().execute()
    Host.update(updates_computed_at=None, packages_without_repository=None).execute()
    for host in Host.select():
        assert refresh_host_updates(2000.0, [host.name]).lazy
    _check_fleet()
    assert {u.first_seen_at for u in HostUpdate.select()} == {2000.0}

    # new indexes: changed updates keep their first-seen time, new ones get the run's
    before = {(u.host_id, u.installed_id): u.available_id for u in HostUpdate.select()}
    _publish_fleet_mirrors(random.Random(8), 300.0)
    assert refresh_host_updates(3000.0).computed > 0
    _check_fleet()
    changed = 0
    for u in HostUpdate.select():
        key = (u.host_id, u.installed_id)
        assert u.first_seen_at == (2000.0 if key in before else 3000.0)
        changed += key in before and before[key] != u.available_id
    assert changed and len(before) > changed
    rows = {(u.host_id, u.installed_id, u.available_id, u.security) for u in HostUpdate.select()}
    ctx = refresh_host_updates(4000.0, force=True)  # recomputed, nothing to write
    assert ctx.hosts_changed == 0
    assert rows == {(u.host_id, u.installed_id, u.available_id, u.security)
                    for u in HostUpdate.select()}  # fmt: skip


def test_a_failing_batch_write_is_raised_and_the_batches_before_it_stay(db, monkeypatch) -> None:
    rng = random.Random(7)
    for name, (installed, repos) in _fleet(rng).items():
        rpm = installed[0].kind == RPM
        report(name, installed, "5.14-1.x86_64" if rpm else "6.1.0-28-amd64", repos,
               os=RPM_OS if rpm else None)  # fmt: skip
    _publish_fleet_mirrors(rng, 200.0)
    monkeypatch.setattr(hostupdates, "WRITE_HOSTS", 4)
    flush, calls = hostupdates._flush, []

    def failing(ctx: object, now: float, batch: list[object]) -> None:
        calls.append(len(batch))
        if len(calls) == 3:
            raise RuntimeError("disk full")
        flush(ctx, now, batch)

    monkeypatch.setattr(hostupdates, "_flush", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        refresh_host_updates(1000.0)
    assert calls == [4, 4, 4]  # nothing more was written after the failure
    done = Host.select().where(Host.updates_computed_at.is_null(False)).count()
    assert done == 8  # the two batches before it stay written

    monkeypatch.setattr(hostupdates, "_flush", flush)
    assert refresh_host_updates(2000.0).written_aside == (not is_sqlite())
    _check_fleet()  # the next run completes the rest
