"""Each host's update counts, kept on its row, follow every path that changes its updates.

The counts are checked two ways after each step: against values worked out by hand
from the fleet's packages and mirrors, and against the pending update rows counted
here in Python (an oracle apart from the SQL of ``patchwatch.store.host_counts``).
"""

from __future__ import annotations

import time

import pytest

from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.inventory.dbcheck import check_store
from patchwatch.inventory.hosts import delete_hosts
from patchwatch.inventory.hosts import set_host_flags
from patchwatch.inventory.repositories import set_repository_security
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import write_transaction
from patchwatch.store.host_counts import COUNT_COLUMNS
from patchwatch.store.host_counts import mismatched
from patchwatch.store.migrations import MIGRATIONS
from patchwatch.store.migrations import _host_update_counts
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package as PackageRow
from patchwatch.store.models import Repository
from patchwatch.store.models import SchemaVersion
from patchwatch.store.oversized import remove_oversized
from patchwatch.store.package_sets import ensure_package_set
from patchwatch.store.queries import HostFilter
from patchwatch.store.queries import host_summaries
from tests.support.fleets import MAIN
from tests.support.fleets import SECURITY
from tests.support.fleets import WEB1
from tests.support.fleets import deb
from tests.support.fleets import report
from tests.support.fleets import seed_fleet

Counts = tuple[int | None, int | None, int | None, float | None]
WEB1_NAME, WEB2_NAME, DB1_NAME = "web1.example.com", "web2.example.com", "db1.example.org"


def stored(name: str) -> Counts:
    host = Host.get(Host.name == name)
    return (host.security_updates, host.other_updates, host.held_updates,
            host.oldest_security_at)  # fmt: skip


def counted(name: str) -> Counts:
    """The host's pending update rows, counted here: what the stored counts must be."""
    host = Host.get(Host.name == name)
    if host.updates_computed_at is None:
        return (None, None, None, None)
    rows = list(HostUpdate.select().where(HostUpdate.host == host.id))
    security = [u.first_seen_at for u in rows if u.security and not u.held]
    other = sum(1 for u in rows if not u.security and not u.held)
    return (len(security), other, sum(1 for u in rows if u.held), min(security, default=None))


def assert_consistent(db) -> None:
    for (name,) in Host.select(Host.name).tuples():
        assert stored(name) == counted(name), name
    assert mismatched(db) == []


def test_counts_follow_computation_mirror_changes_and_security_flags(db) -> None:
    now = time.time()
    ids = seed_fleet(now)
    assert_consistent(db)
    # openssl 3.0.14 -> 3.0.15 from the security repository; curl from main
    assert stored(WEB1_NAME) == (1, 1, 0, now)
    assert stored(WEB2_NAME) == (1, 0, 0, now)  # its curl is main's
    assert stored(DB1_NAME) == (0, 0, 0, None)  # computed: none pending, 0 not unknown

    # the security mirror publishes a newer openssl: replaced, first seen kept
    later = now + 100
    newer = ensure_package_set([Package("openssl", "", "3.0.16", "1", "amd64", PackageKind.DEB)],
                               later)  # fmt: skip
    Mirror.update(package_set=newer, last_success_at=later).where(
        Mirror.repository == ids["security"]
    ).execute()
    refresh_host_updates(later)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (1, 1, 0, now)
    # ... then drops it: nothing to install from there any more
    empty = ensure_package_set([], later + 1)
    Mirror.update(package_set=empty).where(Mirror.repository == ids["security"]).execute()
    refresh_host_updates(later + 1)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (0, 1, 0, None)

    Mirror.update(package_set=newer).where(Mirror.repository == ids["security"]).execute()
    refresh_host_updates(later + 2)
    assert stored(WEB1_NAME) == (1, 1, 0, later + 2)
    # an operator says the repository is not a security one: the update is "other"
    set_repository_security(Repository.get_by_id(ids["security"]), False)
    refresh_host_updates(later + 3)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (0, 2, 0, None)
    set_repository_security(Repository.get_by_id(ids["security"]), None)
    refresh_host_updates(later + 4)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (1, 1, 0, later + 2)  # the same update, first seen kept


def test_held_packages_count_apart_and_never_as_the_oldest_security_update(db) -> None:
    now = time.time()
    seed_fleet(now)
    doc = report(WEB1_NAME, WEB1, [MAIN, SECURITY],
                 held=[{"name": "openssl", "arch": "amd64"}])  # fmt: skip
    store_report(WEB1_NAME, "patchwatch/1", doc, now + 10)
    process_pending(now + 10)
    refresh_host_updates(now + 20)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (0, 1, 1, None)


def test_a_host_never_computed_has_no_counts_and_listings_say_unknown(db) -> None:
    now = time.time()
    seed_fleet(now)
    doc = report("new.example.com", [deb("bash", "5.2.15-2")], [MAIN])
    store_report("new.example.com", "patchwatch/1", doc, now + 10)
    process_pending(now + 10)
    assert stored("new.example.com") == (None, None, None, None)  # unknown, not 0
    assert mismatched(db) == []
    (row,) = [r for r in host_summaries(HostFilter(), now) if r["name"] == "new.example.com"]
    assert row["security_updates"] is None and row["updates_state"] == "unknown"
    refresh_host_updates(now + 20)
    assert stored("new.example.com") == (0, 0, 0, None)
    assert_consistent(db)


def test_counts_through_maintenance_update_checks_and_host_deletion(db) -> None:
    now = time.time()
    seed_fleet(now)
    web1 = Host.get(Host.name == WEB1_NAME)
    set_host_flags(web1, now + 1, maintenance_until=now + 3600)
    assert stored(WEB1_NAME) == (1, 1, 0, now)
    set_host_flags(Host.get_by_id(web1.id), now + 2, maintenance_until=None)
    assert stored(WEB1_NAME) == (1, 1, 0, now)

    set_host_flags(Host.get_by_id(web1.id), now + 3, check_updates=False)
    assert_consistent(db)  # its updates deleted: its counts with them
    (row,) = [r for r in host_summaries(HostFilter(), now + 3) if r["name"] == WEB1_NAME]
    assert row["security_updates"] is None  # unknown while checks are off
    set_host_flags(Host.get_by_id(web1.id), now + 4, check_updates=True)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (1, 1, 0, now + 4)

    web2 = stored(WEB2_NAME)
    assert delete_hosts([WEB1_NAME]) == 1
    assert_consistent(db)
    assert stored(WEB2_NAME) == web2


def test_dbcheck_finds_counts_unlike_the_updates_and_fix_counts_them_again(db) -> None:
    now = time.time()
    seed_fleet(now)
    Host.update(security_updates=7, oldest_security_at=None).where(Host.name == WEB1_NAME).execute()
    Host.update(other_updates=None).where(Host.name == DB1_NAME).execute()

    def row(rows: list[dict[str, object]]) -> dict[str, object]:
        (found,) = [r for r in rows if r["check"] == "host update counts"]
        return found

    assert row(check_store())["found"] == 2
    assert stored(WEB1_NAME) == (7, 1, 0, None)  # a check without --fix changes nothing
    fixed = row(check_store(fix=True))
    assert (fixed["found"], fixed["fixed"]) == (2, 2)
    assert_consistent(db)
    assert stored(WEB1_NAME) == (1, 1, 0, now)
    assert row(check_store())["found"] == 0


def test_the_migration_adds_and_backfills_the_counts_and_runs_again_harmlessly(db) -> None:
    now = time.time()
    seed_fleet(now)
    before = {n: stored(n) for (n,) in Host.select(Host.name).tuples()}
    step = next(m for m in MIGRATIONS if m.apply is _host_update_counts)
    for column in COUNT_COLUMNS:
        db.execute_sql(f'ALTER TABLE "host" DROP COLUMN "{column}"')
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()

    assert step.version in migrate(db)
    assert {n: stored(n) for n in before} == before
    assert before[WEB1_NAME] == (1, 1, 0, now)
    Host.update(security_updates=None).execute()
    _host_update_counts(db)  # again, on a store that has the columns: counted again
    assert {n: stored(n) for n in before} == before
    assert_consistent(db)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_listings_read_the_host_rows_not_the_pending_updates(db) -> None:
    """What the listings show is what is kept on the host row (one row per host)."""
    now = time.time()
    seed_fleet(now)
    Host.update(security_updates=5).where(Host.name == WEB1_NAME).execute()
    (row,) = [r for r in host_summaries(HostFilter(), now) if r["name"] == WEB1_NAME]
    assert row["security_updates"] == 5


def test_removing_oversized_packages_counts_the_hosts_that_had_updates_to_them(db) -> None:
    """dbcheck --fix and a migration delete pending updates naming a package over the
    field limits (``patchwatch.store.oversized``): the hosts that had them are counted
    again in the same transaction."""
    now = time.time()
    seed_fleet(now)
    if not is_sqlite():  # as an older store could hold it (see test_oversized)
        db.execute_sql('ALTER TABLE "package" ALTER COLUMN "version" TYPE TEXT')
    security_build = (
        HostUpdate.select(HostUpdate.available).join(Host).where(
            (Host.name == WEB1_NAME) & HostUpdate.security
        ).scalar()
    )  # fmt: skip
    PackageRow.update(version="1" * 300).where(PackageRow.id == security_build).execute()
    with write_transaction():
        assert remove_oversized(db).packages == 1
    assert_consistent(db)
    assert stored(WEB1_NAME) == (0, 1, 0, None)
