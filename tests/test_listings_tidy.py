"""Listings kept tidy: a listing goes with its package set, and ``dbcheck`` finds (and
with ``--fix`` deletes) those whose set is gone, on both backends.

A listing names its set by digest, so one left behind finds nothing and does no harm
(test_processing_listings.py); these tests check that none is left to accumulate, and
that the listings of sets still stored are kept.
"""

from __future__ import annotations

from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.inventory.dbcheck import check_store
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.store.db import database
from patchwatch.store.db import write_transaction
from patchwatch.store.models import Host
from patchwatch.store.models import PackageListing
from patchwatch.store.models import PackageSet
from patchwatch.store.package_sets import delete_sets
from patchwatch.store.package_sets import orphan_listings
from patchwatch.store.sets import forget_cached_ids
from tests.support.reports import load_form
from tests.support.reports import native_doc


def _fleet() -> dict[str, Host]:
    """Three hosts of three package sets, each set with one listing (two protocols)."""
    store_report("a.example.com", NATIVE, native_doc("a.example.com", 3), 1.0)
    store_report("b.example.com", NATIVE, native_doc("b.example.com", 4), 1.0)
    form = {**load_form("patchman1-debian12"), "host": "c.example.com"}
    store_report("c.example.com", PATCHMAN1, form, 1.0)
    assert process_pending(2.0) == {"processed": 3}
    hosts = {h.name.split(".")[0]: h for h in Host.select()}
    assert len({h.package_set_id for h in hosts.values()}) == 3
    assert PackageListing.select().count() == 3
    return hosts


def _listed_sets() -> set[str]:
    return {listing.set_digest for listing in PackageListing.select()}


def _rows(fix: bool = False) -> dict[str, dict[str, object]]:
    return {r["check"]: r for r in check_store(fix=fix)}


def _clean(rows: dict[str, dict[str, object]]) -> bool:
    """The other rows of a run are as on a store with nothing orphaned."""
    return rows["orphan package sets"]["found"] == 0 and rows["integrity"]["found"] == 0


def test_dbcheck_counts_and_fix_deletes_listings_whose_set_is_gone(db) -> None:
    hosts = _fleet()
    # left by a set deleted before listings went with their sets (or by hand)
    PackageListing.insert(digest="f" * 64, set_digest="e" * 64, created_at=1.0).execute()
    forget_cached_ids()
    assert _clean(_rows())

    dry = _rows()["listings of deleted sets"]
    assert (dry["found"], dry["fixed"]) == (1, None)
    assert PackageListing.select().count() == 4  # a dry run deletes nothing

    fixed = _rows(fix=True)["listings of deleted sets"]
    assert (fixed["found"], fixed["fixed"]) == (1, 1)
    kept = {PackageSet.get_by_id(h.package_set_id).digest for h in hosts.values()}
    assert _listed_sets() == kept
    assert _rows()["listings of deleted sets"]["found"] == 0
    assert [i for (i,) in orphan_listings().tuples()] == []


def test_dbcheck_fix_deletes_an_orphan_sets_listings_with_it(db) -> None:
    hosts = _fleet()
    Host.update(package_set=None).where(Host.id == hosts["b"].id).execute()
    assert _rows()["orphan package sets"]["found"] == 1
    assert _rows()["listings of deleted sets"]["found"] == 0  # its set is still stored

    rows = _rows(fix=True)

    assert (rows["orphan package sets"]["found"], rows["orphan package sets"]["fixed"]) == (1, 1)
    # gone in the same transaction as the set: none left for the next step to find
    assert rows["listings of deleted sets"]["found"] == 0
    kept = {PackageSet.get_by_id(hosts[n].package_set_id).digest for n in ("a", "c")}
    assert _listed_sets() == kept
    assert PackageSet.select().count() == 2


def test_delete_sets_takes_their_listings_in_the_callers_transaction(db) -> None:
    hosts = _fleet()
    target = hosts["c"].package_set_id
    Host.update(package_set=None).where(Host.id == hosts["c"].id).execute()

    with database.atomic() as transaction:  # rolled back: the listing stays with the set
        assert delete_sets(database, [target]) == 1
        assert PackageListing.select().count() == 2
        transaction.rollback()
    assert PackageListing.select().count() == 3
    assert PackageSet.get_or_none(PackageSet.id == target) is not None

    with write_transaction():
        assert delete_sets(database, [target]) == 1
    assert PackageSet.get_or_none(PackageSet.id == target) is None
    assert PackageListing.select().count() == 2
    assert [i for (i,) in orphan_listings().tuples()] == []


def test_a_list_whose_listing_went_with_its_set_is_parsed_and_listed_again(db) -> None:
    hosts = _fleet()
    Host.update(package_set=None).where(Host.id == hosts["b"].id).execute()
    assert _rows(fix=True)["orphan package sets"]["fixed"] == 1
    forget_cached_ids()
    assert PackageListing.select().count() == 2

    store_report("b.example.com", NATIVE, native_doc("b.example.com", 4), 3.0)
    assert process_pending(4.0) == {"processed": 1}

    assert PackageListing.select().count() == 3
    assert _rows()["listings of deleted sets"]["found"] == 0


def test_delete_sets_on_a_store_older_than_listings(db) -> None:
    """Migration 9 removes oversized rows (and their sets) before migration 23
    creates ``package_listing``: deleting sets must not need the table."""
    hosts = _fleet()
    Host.update(package_set=None).execute()
    database.execute_sql('DROP TABLE "package_listing"')
    with write_transaction():
        assert delete_sets(database, [h.package_set_id for h in hosts.values()]) == 3
    assert PackageSet.select().count() == 0
