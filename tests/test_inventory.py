"""Operator reads and writes on a small real fleet, on SQLite and PostgreSQL.

The fleet is built the way production builds it: native reports stored and processed,
mirror indexes stored as package sets, updates computed. ``seed_fleet`` is shared by
the API and CLI tests.
"""

from __future__ import annotations

import time
from datetime import UTC
from datetime import datetime

import pytest

from patchwatch.domain.diffs import HostInventory
from patchwatch.domain.diffs import compute_host_diff
from patchwatch.domain.diffs import format_host_diff
from patchwatch.domain.errors import AmbiguousError
from patchwatch.domain.errors import ConflictError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.inventory.attention import attention
from patchwatch.inventory.dbcheck import check_store
from patchwatch.inventory.hosts import delete_hosts
from patchwatch.inventory.hosts import diff_hosts
from patchwatch.inventory.hosts import match_hosts
from patchwatch.inventory.hosts import parse_maintenance_until
from patchwatch.inventory.hosts import resolve_host
from patchwatch.inventory.hosts import set_host_flags
from patchwatch.inventory.os_groups import add_os_repositories
from patchwatch.inventory.os_groups import os_release_list
from patchwatch.inventory.os_groups import remove_os_repositories
from patchwatch.inventory.os_groups import resolve_os_release
from patchwatch.inventory.packages import orphan_packages
from patchwatch.inventory.repositories import link_repositories
from patchwatch.inventory.repositories import possible_mirrors
from patchwatch.inventory.repositories import repository_detail
from patchwatch.inventory.repositories import resolve_repository
from patchwatch.inventory.repositories import set_repositories_enabled
from patchwatch.inventory.repositories import set_repository_security
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Package as PackageRow
from patchwatch.store.models import PackageSet
from patchwatch.store.models import Report
from patchwatch.store.models import Repository
from patchwatch.store.models import RepositorySetMember
from tests.support.fleets import DAY
from tests.support.fleets import seed_fleet

NOW = time.time()


@pytest.fixture
def fleet(db) -> dict[str, int]:
    return seed_fleet(NOW)


def _updates(host: str) -> set[tuple[str, str, bool]]:
    query = HostUpdate.select().join(Host).where(Host.name == host)
    return {(u.installed.name, u.available.version_string, u.security) for u in query}


# --- pure: diffs and maintenance times ---------------------------------------------------


def test_diff_pairs_a_single_changed_version_and_lists_the_rest_per_side() -> None:
    a = HostInventory("a", "Debian 12", "x86_64", "6.1.0-28-amd64",
                      (("curl", "amd64", "7.88.1-10"), ("kernel", "x86_64", "1"),
                       ("kernel", "x86_64", "2"), ("tzdata", "all", "2024a-0")),
                      ("r1", "r2"))  # fmt: skip
    b = HostInventory("b", "Debian 12", "x86_64", "6.1.0-29-amd64",
                      (("curl", "amd64", "7.88.1-11"), ("kernel", "x86_64", "2"),
                       ("kernel", "x86_64", "3"), ("htop", "amd64", "3.2.2-2")),
                      ("r2", "r3"))  # fmt: skip
    diff = compute_host_diff(a, b)
    assert diff.attributes == (("kernel", "6.1.0-28-amd64", "6.1.0-29-amd64"),)
    assert [c.name for c in diff.changed] == ["curl", "kernel"]  # kernel: 1 -> 3, 2 on both
    assert diff.only_a == (("tzdata", "all", "2024a-0"),)
    assert diff.only_b == (("htop", "amd64", "3.2.2-2"),)
    assert (diff.repositories_only_a, diff.repositories_only_b) == (("r1",), ("r3",))
    lines = format_host_diff(diff)
    assert lines[:2] == ["--- a", "+++ b"]
    assert lines.index("- curl 7.88.1-10 amd64") + 1 == lines.index("+ curl 7.88.1-11 amd64")
    assert "+ htop 3.2.2-2 amd64" in lines and "- tzdata 2024a-0 all" in lines
    same = compute_host_diff(a, a)
    assert same.identical and format_host_diff(same)[-1] == "no differences"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", NOW + 5400), ("12h", NOW + 43200), ("3d", NOW + 3 * DAY), ("1w", NOW + 7 * DAY),
        ("2030-06-01T18:00Z", datetime(2030, 6, 1, 18, tzinfo=UTC).timestamp()),
        ("2030-06-01T18:00", datetime(2030, 6, 1, 18, tzinfo=UTC).timestamp()),  # naive: UTC
        ("2030-06-01T20:00+02:00", datetime(2030, 6, 1, 18, tzinfo=UTC).timestamp()),
        ("off", None), ("OFF", None), (None, None), (1900000000, 1900000000.0),
    ],
)  # fmt: skip
def test_maintenance_end_is_a_time_a_duration_or_off(text: object, expected: object) -> None:
    assert parse_maintenance_until(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["soon", "3 days", "-1d", "", True, [1], float("nan"), float("inf"), "1e999d"]
)
def test_maintenance_end_rejects_anything_else(text: object) -> None:
    with pytest.raises(ParseError):
        parse_maintenance_until(text, NOW)


# --- hosts -------------------------------------------------------------------------------


def test_host_names_resolve_exactly_by_first_label_or_unique_glob(fleet) -> None:
    assert resolve_host("WEB1.example.com").name == "web1.example.com"
    assert resolve_host("db1").name == "db1.example.org"
    assert resolve_host("rocky*").name == "rocky1.example.net"
    with pytest.raises(AmbiguousError, match="2 hosts"):
        resolve_host("web*")
    with pytest.raises(NotFoundError):
        resolve_host("web")  # not a label of anything: no substring guessing
    with pytest.raises(ParseError):
        resolve_host("  ")
    assert match_hosts("*.example.com") == ["old1.example.com", "web1.example.com",
                                            "web2.example.com"]  # fmt: skip
    with pytest.raises(NotFoundError):
        match_hosts("nothing-*")


def test_delete_removes_the_host_its_updates_and_reports_only(fleet) -> None:
    assert delete_hosts(match_hosts("web2*")) == 1
    assert not Host.select().where(Host.name == "web2.example.com").exists()
    assert Report.select().where(Report.host_name == "web2.example.com").count() == 0
    assert _updates("web1.example.com") == {("openssl", "3.0.15-1", True),
                                            ("curl", "7.88.1-10+deb12u8", False)}  # fmt: skip
    assert HostUpdate.select().count() == 2  # web2's went with it


def test_diff_of_two_real_hosts(fleet) -> None:
    diff = diff_hosts(resolve_host("web1"), resolve_host("web2"))
    assert [(c.name, c.version_a, c.version_b) for c in diff.changed] == [
        ("curl", "7.88.1-10", "7.88.1-10+deb12u8")]  # fmt: skip
    assert diff.only_a == (("tzdata", "all", "2024a-0"),)
    assert diff.only_b == (("htop", "amd64", "3.2.2-2"),)
    assert not diff.attributes and not diff.repositories_only_a
    other = diff_hosts(resolve_host("web1"), resolve_host("db1"))
    assert len(other.repositories_only_a) == 2 and len(other.repositories_only_b) == 1


def test_host_flags_maintenance_checks_and_os_repositories(fleet) -> None:
    web1 = resolve_host("web1")
    flags = set_host_flags(web1, NOW, maintenance_until=NOW + DAY)
    assert flags["in_maintenance"] is True and flags["maintenance_until"] == NOW + DAY
    with pytest.raises(ParseError, match="past"):
        set_host_flags(web1, NOW, maintenance_until=NOW - 1)
    assert set_host_flags(web1, NOW, maintenance_until=None)["in_maintenance"] is False

    set_host_flags(web1, NOW, check_updates=False)
    assert _updates("web1.example.com") == set()  # cleared, not left to age
    set_host_flags(resolve_host("web1"), NOW, check_updates=True)
    assert len(_updates("web1.example.com")) == 2  # recomputed at once

    debian = resolve_os_release("debian")
    add_os_repositories(debian, [resolve_repository(str(fleet["security"]))])
    set_host_flags(resolve_host("web1"), NOW, use_os_repositories=True)
    assert _updates("web1.example.com") == {("openssl", "3.0.15-1", True)}  # group: security only


# --- repositories ------------------------------------------------------------------------


def test_repository_references(fleet) -> None:
    assert resolve_repository(str(fleet["main"])).id == fleet["main"]
    assert resolve_repository("security.debian").id == fleet["security"]
    assert resolve_repository("*rockylinux*").id == fleet["baseos"]
    with pytest.raises(AmbiguousError, match="repositories"):
        resolve_repository("bookworm")
    with pytest.raises(NotFoundError):
        resolve_repository("9999")
    with pytest.raises(NotFoundError):
        resolve_repository("security.debian", exact=True)


def test_security_override_and_disable_change_updates_at_the_next_run(fleet) -> None:
    sec = resolve_repository(str(fleet["security"]))
    set_repository_security(sec, False)
    refresh_host_updates(NOW + 1)
    assert ("openssl", "3.0.15-1", False) in _updates("web1.example.com")
    set_repository_security(sec, None)
    assert repository_detail(Repository.get_by_id(sec.id))["security_mode"] == "auto"
    refresh_host_updates(NOW + 2)
    assert ("openssl", "3.0.15-1", True) in _updates("web1.example.com")
    assert set_repositories_enabled([sec], False) == 1
    assert set_repositories_enabled([sec], False) == 0
    refresh_host_updates(NOW + 3)
    assert {u[0] for u in _updates("web1.example.com")} == {"curl"}


def test_possible_mirrors_then_link_into_one_repository(fleet) -> None:
    groups = possible_mirrors()
    assert {(g["id"], g["reason"]) for g in groups} == {
        (fleet["main"], "same identity, same packages"),
        (fleet["german"], "same identity, same packages"),
    }
    main, german = Repository.get_by_id(fleet["main"]), Repository.get_by_id(fleet["german"])
    with pytest.raises(ConflictError, match="does not look like"):
        link_repositories(main, [Repository.get_by_id(fleet["security"])])
    with pytest.raises(ConflictError, match="rpm"):
        link_repositories(main, [Repository.get_by_id(fleet["baseos"])], force=True)
    result = link_repositories(main, [german])
    assert result["mirrors_moved"] == 1 and result["repository_sets_repointed"] == 1
    assert not Repository.select().where(Repository.id == german.id).exists()
    detail = repository_detail(main)
    assert len(detail["mirrors"]) == 2  # type: ignore[arg-type]
    assert "db1.example.org" in detail["hosts"]  # type: ignore[operator]
    assert possible_mirrors() == []
    refresh_host_updates(NOW + 1)  # db1 now computes from the linked repository
    left = RepositorySetMember.select().where(RepositorySetMember.repository == german.id)
    assert left.count() == 0


def test_os_groups(fleet) -> None:
    rows = {r["name"]: r for r in os_release_list()}
    debian = next(r for name, r in rows.items() if "Debian" in str(name))
    assert debian["hosts"] == 4 and debian["repositories"] == 0
    release = resolve_os_release(str(debian["id"]))
    repos = [Repository.get_by_id(fleet["main"]), Repository.get_by_id(fleet["security"])]
    assert add_os_repositories(release, repos) == 2
    assert add_os_repositories(release, repos) == 0
    assert remove_os_repositories(release, repos[:1]) == 1
    assert {r["name"]: r for r in os_release_list()}[debian["name"]]["repositories"] == 1
    with pytest.raises(AmbiguousError):
        resolve_os_release("i")  # both names contain an i


# --- packages, attention, dbcheck --------------------------------------------------------


def test_orphan_packages_are_those_no_repository_of_the_host_offers(fleet) -> None:
    seen: list[tuple[int, int]] = []
    rows = orphan_packages(progress=lambda done, total, _what: seen.append((done, total)))
    # web1/web2 get everything from deb.debian.org; rocky1's repository has no index yet
    # (nothing can be said), and its gpg-pubkey is never an orphan; old1 has no repositories.
    assert rows == [{"host": "db1.example.org", "name": "inhouse-tool", "arch": "amd64",
                     "version": "1.0-1"}]  # fmt: skip
    assert seen[-1][0] == seen[-1][1] and len(seen) > 1
    assert orphan_packages(resolve_host("web1")) == []


def test_one_hosts_orphans_are_its_rows_of_the_fleets(fleet) -> None:
    """One host's page looks up only its own names in its mirrors (the fleet's listing
    reads every name of every mirror): both say the same of every host."""
    everyone = orphan_packages()
    for (name,) in Host.select(Host.name).tuples():
        mine = [r for r in everyone if r["host"] == name]
        assert orphan_packages(resolve_host(name)) == mine, name
    assert orphan_packages(resolve_host("db1.example.org"))[0]["name"] == "inhouse-tool"


def test_a_pacman_package_offered_under_another_arch_is_no_orphan(db) -> None:
    """pacman matches by name alone: a build the repository moved from x86_64 to any
    is an update (see test_updates_pacman_oracle.py), not an orphan; a name the
    repository does not carry at all still is one."""
    from patchwatch.domain.records import HostReport
    from patchwatch.domain.records import OSInfo
    from patchwatch.domain.records import Package
    from patchwatch.domain.records import PackageKind
    from patchwatch.domain.records import RepoKind
    from patchwatch.domain.records import ReportedRepository
    from patchwatch.pipeline.processing import apply_report
    from patchwatch.store.models import Mirror
    from patchwatch.store.models import Repository
    from patchwatch.store.package_sets import ensure_package_set
    from patchwatch.store.sets import repository_key

    def arch(name: str, version: str, arch: str) -> Package:
        return Package(name, "", version, "1", arch, PackageKind.ARCH)

    extra = ReportedRepository(RepoKind.ARCH, "extra", "extra", ("http://arch.example/extra",),
                               arch="x86_64")  # fmt: skip
    report = HostReport(
        hostname="arch1", os=OSInfo("arch", "arch", "Arch Linux", ""), kernel="6.12.8-arch1-1",
        arch="x86_64", repositories=(extra,),
        packages=(arch("mover", "1.0", "x86_64"), arch("shifter", "2.0", "any"),
                  arch("localonly", "1.0", "any")),
    )  # fmt: skip
    apply_report(store_report("arch1", "patchwatch/1", {}, NOW), report, NOW)
    offered = [arch("mover", "1.1", "any"), arch("shifter", "2.1", "x86_64")]
    repo = Repository.get(Repository.key == repository_key(extra))
    pset = ensure_package_set(offered, NOW)
    Mirror.update(package_set=pset, last_success_at=NOW).where(Mirror.repository == repo).execute()
    want = [{"host": "arch1", "name": "localonly", "arch": "any", "version": "1.0-1"}]
    assert orphan_packages() == want
    assert orphan_packages(resolve_host("arch1")) == want


def test_attention_lists_what_needs_an_operator(fleet) -> None:
    items = attention(NOW, stale_days=2)
    found = {(i["issue"], i["subject"]) for i in items}
    assert ("not_reporting", "old1.example.com") in found
    assert ("no_repositories", "old1.example.com") in found
    assert ("security_updates", "web1.example.com") in found
    assert ("reboot_required", "web2.example.com") in found
    assert ("report_failed", "broken.example.com") in found
    failing = [i for i in items if i["issue"] == "mirror_failing"]
    assert len(failing) == 1 and "404" in str(failing[0]["detail"])
    assert not any(i["issue"] == "not_reporting" for i in attention(NOW, stale_days=11))

    store_report("late.example.com", "patchwatch/1", {}, NOW - 7200)  # queued, never processed
    stuck = [i for i in attention(NOW) if i["issue"] == "reports_stuck"]
    assert len(stuck) == 1 and stuck[0]["since"] == NOW - 7200

    set_host_flags(resolve_host("web2"), NOW, maintenance_until=NOW + DAY)
    web2 = [i["issue"] for i in attention(NOW) if i["subject"] == "web2.example.com"]
    assert web2 == ["in_maintenance"]  # its reboot is not listed while in maintenance


def test_dbcheck_deletes_updates_left_by_a_host_deleted_meanwhile(fleet, db) -> None:
    # a host deleted while the scheduler wrote its updates: PostgreSQL has no foreign
    # key to refuse them (migration 3); on SQLite one would, so it is switched off here
    web1 = Host.get(Host.name == "web1.example.com")
    sqlite = is_sqlite()
    if sqlite:
        database.execute_sql("PRAGMA foreign_keys = OFF")
    try:
        row = HostUpdate.select().where(HostUpdate.host == web1.id).first()
        HostUpdate.insert(host=9_999_999, installed=row.installed_id,
                          available=row.available_id, security=row.security,
                          repository=row.repository_id, first_seen_at=NOW).execute()  # fmt: skip
    finally:
        if sqlite:
            database.execute_sql("PRAGMA foreign_keys = ON")
    found = {r["check"]: r for r in check_store()}["updates of deleted hosts"]
    assert found["found"] == 1
    fixed = {r["check"]: r for r in check_store(fix=True)}["updates of deleted hosts"]
    assert fixed["fixed"] == 1
    assert HostUpdate.select().where(HostUpdate.host == 9_999_999).count() == 0
    assert HostUpdate.select().where(HostUpdate.host == web1.id).count() > 0


def test_dbcheck_deletes_only_packages_nothing_refers_to(fleet) -> None:
    PackageRow.create(kind="deb", name="left-behind", epoch="", version="1", release="", arch="all")
    installed = {u.installed_id for u in HostUpdate.select()}
    found = {r["check"]: r for r in check_store()}["orphan packages"]
    assert found["found"] == 1
    fixed = {r["check"]: r for r in check_store(fix=True, include_packages=True)}
    assert fixed["orphan packages"]["fixed"] == 1
    assert not PackageRow.select().where(PackageRow.name == "left-behind").exists()
    assert {u.installed_id for u in HostUpdate.select()} == installed
    assert PackageRow.select().where(PackageRow.id.in_(list(installed))).count() == len(installed)


def test_dbcheck_finds_and_fixes_orphans_and_leaves_live_data(fleet) -> None:
    clean = {r["check"]: r for r in check_store()}
    assert all(clean[c]["found"] == 0 for c in clean if str(c).startswith("orphan"))
    assert clean["rows in host"]["found"] == 5
    assert clean["integrity"]["found"] == 0

    delete_hosts(["web2.example.com", "old1.example.com"])
    Report.create(host_name="gone.example.com", protocol="patchwatch/1", received_at=NOW,
                  body=b"", size=0, state="processed")  # fmt: skip
    dry = {r["check"]: r for r in check_store()}
    assert dry["orphan package sets"]["found"] == 2 and dry["orphan package sets"]["fixed"] is None
    assert dry["orphan update sets"]["found"] == 2
    assert dry["reports of deleted hosts"]["found"] == 1
    assert dry["updates of deleted hosts"]["found"] == 0  # deleted with their hosts
    assert dry["items of deleted update sets"]["found"] == 0
    packages = dry["orphan packages"]["found"]
    assert packages == 0  # web2's htop and curl are in the mirror index, still live

    fixed = {r["check"]: r for r in check_store(fix=True)}
    assert fixed["orphan package sets"]["fixed"] == 2
    assert fixed["reports of deleted hosts"]["fixed"] == 1
    again = {r["check"]: r for r in check_store()}
    assert all(again[c]["found"] == 0 for c in again if str(c).startswith("orphan"))
    assert again.get("foreign keys", {"found": 0})["found"] == 0  # members went with sets
    stray = database.execute_sql(
        "SELECT COUNT(*) FROM package_set_member m LEFT JOIN package_set s "
        "ON s.id = m.package_set_id WHERE s.id IS NULL"
    ).fetchone()[0]
    assert stray == 0  # also on PostgreSQL, where no foreign key deletes them
    assert PackageSet.select().count() == 5  # web1, db1, rocky1, two mirror indexes
    refresh_host_updates(NOW + 1, force=True)  # what is left still computes
    assert len(_updates("web1.example.com")) == 2
