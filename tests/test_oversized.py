"""Rows over the field limits, stored before mirror data was bounded, are found and removed.

(SQLite stored them; PostgreSQL's varchar columns refused the packages and failed the
whole refresh instead, but stored the advisories, whose title and CVEs are text.)

The store here is what an old patchwatch left after reading a hostile mirror: a
mirror's index holding a package with a 300-character name and one with a
300-character version, a host's set written as a difference from that index, pending
updates to the long version, and advisories naming the long name or with a title over
its bound. Removing them must leave the store consistent: the same content for every
set that survives, no rows pointing at deleted ones, and the mirrors concerned read
again in full. On SQLite and PostgreSQL (where the bulk tables have no foreign keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from patchwatch.domain.packed_ids import pack_ids
from patchwatch.inventory.dbcheck import check_store
from patchwatch.store.db import database
from patchwatch.store.db import is_sqlite
from patchwatch.store.db import write_transaction
from patchwatch.store.migrations import MIGRATIONS
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Advisory
from patchwatch.store.models import AdvisoryPackage
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetContent
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Repository
from patchwatch.store.models import SchemaVersion
from patchwatch.store.models import UpdateSet
from patchwatch.store.models import UpdateSetItem
from patchwatch.store.oversized import find_oversized
from patchwatch.store.oversized import remove_oversized


def version_of(description_start: str) -> int:
    """The number of one of this change's migrations (the integrator may renumber them)."""
    (version,) = [m.version for m in MIGRATIONS if m.description.startswith(description_start)]
    return version


def pkg(name: str, version: str = "1") -> Package:
    return Package.create(kind="rpm", name=name, epoch="0", version=version, release="1",
                          arch="noarch")  # fmt: skip


def package_set(digest: str, members: list[Package], base: PackageSet | None = None,
                rows: list[Package] | None = None) -> PackageSet:  # fmt: skip
    ids = sorted(p.id for p in members)
    pset = PackageSet.create(digest=digest * 64, size=len(ids), created_at=0,
                             member_ids=pack_ids(ids), base=base)  # fmt: skip
    PackageSetMember.insert_many(
        [(pset.id, p.id) for p in (rows if rows is not None else members)],
        fields=[PackageSetMember.package_set, PackageSetMember.package],
    ).execute()
    return pset


def content(set_id: int) -> set[int]:
    query = PackageSetContent.select(PackageSetContent.package_id).where(
        PackageSetContent.package_set_id == set_id
    )
    return {row.package_id for row in query}


@dataclass
class Store:
    normal: list[Package]
    extra: Package
    huge: Package
    long_version: Package
    index: PackageSet
    other_index: PackageSet
    host_set: PackageSet
    mirror: Mirror
    other_mirror: Mirror
    host: Host
    other_host: Host
    advisories: dict[str, Advisory]
    update_set: UpdateSet


def hostile_store() -> Store:
    if not is_sqlite():
        # PostgreSQL refused such rows (varchar), failing the refresh instead: widen the
        # columns to store what SQLite stored, and see the removal work there too
        for column in ("name", "version"):
            database.execute_sql(f'ALTER TABLE "package" ALTER COLUMN "{column}" TYPE TEXT')
    repo = Repository.create(kind="rpm", key="rpm hostile", created_at=0)
    other_repo = Repository.create(kind="rpm", key="rpm other", created_at=0)
    normal = [pkg(f"n{i}") for i in range(5)]
    extra, huge, long_version = pkg("extra"), pkg("h" * 300), pkg("v", "1" * 300)
    index = package_set("a", [*normal, huge, long_version])
    other_index = package_set("b", normal)
    # a host's set written as the difference from the hostile index: it lacks the two
    # oversized packages and has one more
    host_set = package_set("c", [*normal, extra], base=index, rows=[huge, long_version, extra])
    assert content(host_set.id) == {p.id for p in [*normal, extra]}
    mirror = Mirror.create(
        repository=repo, url="http://mirror.invalid/hostile", package_set=index,
        package_count=7, metadata_checksum="p u", etag="e", last_modified="m",
        skipped_packages=0, skipped_advisories=0,
    )  # fmt: skip
    other_mirror = Mirror.create(
        repository=other_repo, url="http://mirror.invalid/other", package_set=other_index,
        package_count=5, metadata_checksum="p2 u2", etag="e2",
    )  # fmt: skip
    host = Host.create(name="x.example", created_at=0, package_set=host_set)
    other_host = Host.create(name="y.example", created_at=0, package_set=other_index)
    advisories = {
        "names-huge": Advisory.create(advisory_id="A1", repository=other_repo, type="security"),
        "long-title": Advisory.create(
            advisory_id="A2", repository=other_repo, type="security", title="t" * 5000
        ),
        "fine": Advisory.create(advisory_id="A3", repository=repo, type="security"),
    }
    AdvisoryPackage.create(advisory=advisories["names-huge"], package=huge)
    AdvisoryPackage.create(advisory=advisories["names-huge"], package=normal[0])
    AdvisoryPackage.create(advisory=advisories["fine"], package=normal[1])
    HostUpdate.create(host=other_host, installed=normal[0], available=long_version,
                      security=True, first_seen_at=0)  # fmt: skip
    HostUpdate.create(host=other_host, installed=normal[2], available=extra, security=False,
                      first_seen_at=0)  # fmt: skip
    update_set = UpdateSet.create(package_set=other_index, computed_at=0, inputs_digest="d")
    UpdateSetItem.create(update_set=update_set, installed=normal[0], available=long_version,
                         security=True)  # fmt: skip
    UpdateSetItem.create(update_set=update_set, installed=normal[2], available=extra,
                         security=False)  # fmt: skip
    return Store(normal, extra, huge, long_version, index, other_index, host_set, mirror,
                 other_mirror, host, other_host, advisories, update_set)  # fmt: skip


def check_removed(store: Store) -> None:
    """What remains after the removal: consistent, and without the oversized rows."""
    assert not Package.select().where(Package.id.in_([store.huge.id, store.long_version.id]))
    assert Package.select().count() == 6
    # the hostile index is gone with its rows; its mirror will read everything again
    assert not PackageSet.select().where(PackageSet.id == store.index.id).exists()
    assert not PackageSetMember.select().where(PackageSetMember.package_set == store.index.id)
    m = Mirror.get_by_id(store.mirror.id)
    assert (m.package_set_id, m.package_count, m.metadata_checksum, m.etag, m.last_modified,
            m.skipped_packages) == (None, 0, "", "", "", None)  # fmt: skip
    # the host's set is whole now, with the same content and packed ids
    host_set = PackageSet.get_by_id(store.host_set.id)
    assert host_set.base_id is None
    assert content(host_set.id) == {p.id for p in [*store.normal, store.extra]}
    assert bytes(host_set.member_ids) == bytes(store.host_set.member_ids)
    assert Host.get_by_id(store.host.id).package_set_id == host_set.id
    assert Host.get_by_id(store.other_host.id).package_set_id == store.other_index.id
    # advisories over the bounds or naming a removed package are gone; their mirrors too
    # will read updateinfo again, keeping their data until then
    assert [a.advisory_id for a in Advisory.select()] == ["A3"]
    assert [p.package_id for p in AdvisoryPackage.select()] == [store.normal[1].id]
    other = Mirror.get_by_id(store.other_mirror.id)
    assert (other.package_set_id, other.metadata_checksum, other.etag) == (
        store.other_index.id, "", "",
    )  # fmt: skip
    # pending updates to the removed version are gone, and their update set is stale
    assert [u.available_id for u in HostUpdate.select()] == [store.extra.id]
    assert [i.available_id for i in UpdateSetItem.select()] == [store.extra.id]
    assert UpdateSet.get_by_id(store.update_set.id).inputs_digest == ""
    assert not find_oversized(database)


def test_removal_leaves_a_consistent_store_without_the_oversized_rows(db) -> None:
    store = hostile_store()
    found = find_oversized(db)
    assert set(found.packages) == {store.huge.id, store.long_version.id}
    expected = {store.advisories["names-huge"].id, store.advisories["long-title"].id}
    assert set(found.advisories) == expected
    with write_transaction():
        removed = remove_oversized(db)
    assert (removed.packages, removed.advisories, removed.package_sets) == (2, 2, 1)
    check_removed(store)
    with write_transaction():
        assert remove_oversized(db).packages == 0  # nothing left: nothing done


def test_the_migration_removes_them_from_an_upgraded_store(db) -> None:
    store = hostile_store()
    version = version_of("mirror rows over the field limits")
    SchemaVersion.delete().where(SchemaVersion.version >= version).execute()
    assert version in migrate(db)
    check_removed(store)


def test_dbcheck_finds_them_and_fix_removes_them(db) -> None:
    store = hostile_store()
    dry = {r["check"]: r for r in check_store()}
    assert (dry["oversized packages"]["found"], dry["oversized packages"]["fixed"]) == (2, None)
    assert dry["oversized advisories"]["found"] == 2
    assert Package.select().count() == 8  # a dry run deletes nothing
    fixed = {r["check"]: r for r in check_store(fix=True)}
    assert fixed["oversized packages"]["fixed"] == 2
    assert fixed["oversized advisories"]["fixed"] == 2
    check_removed(store)
    again = {r["check"]: r for r in check_store()}
    assert again["oversized packages"]["found"] == again["oversized advisories"]["found"] == 0
    assert again["orphan package sets"]["found"] == 0


def test_the_schema_migration_widens_package_columns_and_adds_skip_counts(db) -> None:
    """A store from before: PostgreSQL refused a 256-character name (varchar(255))."""
    postgres = not is_sqlite()
    for column in ("skipped_packages", "skipped_advisories"):
        db.execute_sql(f'ALTER TABLE "mirror" DROP COLUMN "{column}"')
    if postgres:
        for column in ("name", "version", "release"):
            db.execute_sql(f'ALTER TABLE "package" ALTER COLUMN "{column}" TYPE VARCHAR(255)')
    version = version_of("mirror skip counts")
    SchemaVersion.delete().where(SchemaVersion.version >= version).execute()
    assert version in migrate(db)
    assert {"skipped_packages", "skipped_advisories"} <= {c.name for c in db.get_columns("mirror")}
    long = pkg("n" * 256, "1" * 256)
    assert len(Package.get_by_id(long.id).name) == 256
    assert migrate(db) == []
