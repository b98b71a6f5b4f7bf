"""Package sets written as differences from a base, on both backends.

What a set contains must not depend on how it is written: every reader goes through
the ``package_set_content`` view (or the packed ids), and whatever refers to a base
keeps it alive.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from peewee import SqliteDatabase

from patchwatch.domain.packed_ids import unpack_ids
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.set_bases import DEFAULT_THRESHOLDS
from patchwatch.inventory.dbcheck import check_store
from patchwatch.store import package_sets
from patchwatch.store import sets
from patchwatch.store.db import database
from patchwatch.store.migrations import migrate
from patchwatch.store.models import Host
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetContent
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import SchemaVersion
from patchwatch.store.package_sets import matching_members


@pytest.fixture(autouse=True, scope="module")
def production_choice() -> Iterator[None]:
    """These sets are large enough for the real thresholds (conftest lowers them)."""
    lowered = package_sets.use_thresholds(DEFAULT_THRESHOLDS)
    yield
    package_sets.use_thresholds(lowered)


def record(name: str, version: str = "1") -> PackageRecord:
    return PackageRecord(name, "", version, "1", "amd64", PackageKind.DEB)


def image(tag: str, size: int = 200) -> list[PackageRecord]:
    return [record(f"{tag}-lib{i}") for i in range(size)]


def drifted(base: list[PackageRecord], rng: random.Random) -> list[PackageRecord]:
    """A host of an image: a few packages missing, a few newer, a few extra."""
    out = [p for p in base if rng.random() > 0.015]
    out = [record(p.name, "2") if rng.random() < 0.015 else p for p in out]
    return out + [record(f"extra{rng.randrange(50)}") for _ in range(rng.randrange(4))]


def ids_of(packages: list[PackageRecord]) -> set[int]:
    return set(sets.ensure_packages(packages).values())


def content(set_id: int) -> set[int]:
    rows = PackageSetContent.select().where(PackageSetContent.package_set_id == set_id)
    return {r.package_id for r in rows}


def fleet(rng: random.Random) -> list[list[PackageRecord]]:
    images = [image("a"), image("b"), image("c", 150)]
    return [drifted(images[i % 3], rng) for i in range(30)]


def test_sets_written_as_differences_read_back_whole(db) -> None:
    lists = fleet(random.Random(5))
    set_ids = package_sets.ensure_package_sets(lists, 1.0)
    written = {s.id: s for s in PackageSet.select()}
    differences = [s for s in written.values() if s.base_id is not None]
    assert len(differences) >= 24  # most hosts are near a stored image
    assert all(written[s.base_id].base_id is None for s in differences)  # one step only
    rows = PackageSetMember.select().count()
    assert rows < sum(s.size for s in written.values()) / 3

    for set_id, packages in zip(set_ids, lists, strict=True):
        expected = ids_of(packages)
        assert content(set_id) == expected
        assert set(unpack_ids(written[set_id].member_ids)) == expected
        assert written[set_id].size == len(expected)
    # by package: a base's package is in every set that kept it and in none that dropped it
    probe = sets.ensure_packages([record("a-lib7")])[record("a-lib7")]
    holding = {
        r.package_set_id
        for r in PackageSetContent.select().where(PackageSetContent.package_id == probe)
    }
    assert holding == {s for s, p in zip(set_ids, lists, strict=True) if record("a-lib7") in p}


def test_the_same_sets_again_are_found_not_written(db) -> None:
    lists = fleet(random.Random(6))
    first = package_sets.ensure_package_sets(lists, 1.0)
    rows = PackageSetMember.select().count()
    sets.forget_cached_ids()
    assert package_sets.ensure_package_sets(list(reversed(lists)), 2.0) == list(reversed(first))
    assert PackageSetMember.select().count() == rows


def test_a_base_no_host_uses_stays_while_a_difference_needs_it(db) -> None:
    lists = fleet(random.Random(7))
    set_ids = package_sets.ensure_package_sets(lists, 1.0)
    differences = {s.id: s.base_id for s in PackageSet.select() if s.base_id is not None}
    base = next(iter(differences.values()))
    users = [s for s, b in differences.items() if b == base]
    Host.create(name="kept.example.com", created_at=1.0, package_set=users[0])
    for number, set_id in enumerate(set_ids):
        if set_id != base and set_id not in users:
            Host.create(name=f"h{number}.example.com", created_at=1.0, package_set=set_id)
    found = {r["check"]: r for r in check_store(fix=True, include_packages=True)}
    assert found["orphan package sets"]["fixed"] == len(users) - 1  # not the base
    assert PackageSet.get_or_none(PackageSet.id == base) is not None
    assert content(users[0]) == ids_of(lists[set_ids.index(users[0])])
    # the packages only the base holds are still there for the difference to keep
    assert Package.select().count() >= len(content(users[0]))
    again = {r["check"]: r for r in check_store()}
    assert again["orphan package sets"]["found"] == 0
    assert again["orphan packages"]["found"] == 0


def test_a_mirror_index_equal_to_a_difference_is_stored_whole(db) -> None:
    """Mirrors' indexes are read from the member rows directly (hostupdates)."""
    lists = fleet(random.Random(8))
    package_sets.ensure_package_sets(lists, 1.0)
    difference = next(s for s in PackageSet.select() if s.base_id is not None)
    packages = [
        record(p.name, p.version)
        for p in Package.select().where(Package.id.in_(list(content(difference.id))))
    ]
    mirror_set = package_sets.ensure_mirror_set(packages, 2.0)
    assert mirror_set.id == difference.id
    assert PackageSet.get_by_id(difference.id).base_id is None
    members = {
        m.package_id
        for m in PackageSetMember.select().where(PackageSetMember.package_set == difference.id)
    }
    assert members == content(difference.id) == ids_of(packages)


def test_a_base_deleted_behind_the_index_gives_whole_sets(db) -> None:
    rng = random.Random(9)
    base = image("a")
    package_sets.ensure_package_sets([base], 1.0)
    package_sets.ensure_package_sets([drifted(base, rng)], 1.0)  # the index now holds the base
    with database.atomic():
        PackageSetMember.delete().execute()
        PackageSet.delete().execute()
    host = drifted(base, rng)
    (set_id,) = package_sets.ensure_package_sets([host], 2.0)  # chooses the deleted base first
    assert PackageSet.get_by_id(set_id).base_id is None
    assert content(set_id) == ids_of(host)


def test_migration_7_keeps_stored_sets_whole_and_readable(db) -> None:
    whole = package_sets.ensure_package_set(image("m"), 1.0)
    db.execute_sql("DROP VIEW package_set_content")
    db.execute_sql('DROP INDEX "package_set_base_id"')
    if isinstance(db, SqliteDatabase):  # cannot drop a column with a foreign key: rebuild
        db.execute_sql("PRAGMA foreign_keys = OFF")
        for statement in (
            'CREATE TABLE "ps6" ("id" INTEGER NOT NULL PRIMARY KEY, "digest" VARCHAR(64) '
            'NOT NULL, "size" INTEGER NOT NULL, "created_at" REAL NOT NULL, "member_ids" BLOB)',
            'INSERT INTO "ps6" SELECT id, digest, size, created_at, member_ids FROM package_set',
            'DROP TABLE "package_set"',
            'ALTER TABLE "ps6" RENAME TO "package_set"',
            'CREATE UNIQUE INDEX "package_set_digest" ON "package_set" ("digest")',
        ):
            db.execute_sql(statement)
        db.execute_sql("PRAGMA foreign_keys = ON")
    else:
        db.execute_sql('ALTER TABLE "package_set" DROP COLUMN "base_id"')
    assert "base_id" not in {c.name for c in db.get_columns("package_set")}
    SchemaVersion.delete().where(SchemaVersion.version >= 7).execute()

    assert migrate(db)[0] == 7  # and the later steps again, which change nothing here
    assert PackageSet.get_by_id(whole.id).base_id is None
    assert content(whole.id) == ids_of(image("m"))
    sets.forget_cached_ids()
    (near,) = package_sets.ensure_package_sets([image("m")[:-3]], 2.0)
    assert PackageSet.get_by_id(near).base_id == whole.id
    assert content(near) == ids_of(image("m")[:-3])


def test_members_matching_agree_with_the_view(db) -> None:
    """The fleet-wide reads (kernels, architectures) resolve differences themselves."""
    lists = fleet(random.Random(10))
    set_ids = package_sets.ensure_package_sets(lists, 1.0)
    assert PackageSet.select().where(PackageSet.base.is_null(False)).count() > 0
    probe = sorted(sets.ensure_packages([record(f"a-lib{i}") for i in range(0, 200, 7)]).values())
    probe += sorted(sets.ensure_packages([record("extra3"), record("b-lib4", "2")]).values())
    expected = {s: content(s) & set(probe) for s in set_ids}
    everywhere = matching_members(None, probe)
    assert everywhere == {s: ids for s, ids in expected.items() if ids}
    chosen = set_ids[::4]
    assert matching_members(chosen, probe) == {s: expected[s] for s in chosen}
    named = matching_members(chosen, package_where="p.name LIKE 'b-lib%'")
    for s in chosen:
        assert named[s] == {
            r.package_id
            for r in PackageSetContent.select()
            .join(Package, on=(Package.id == PackageSetContent.package_id))
            .where((PackageSetContent.package_set_id == s) & Package.name.startswith("b-lib"))
        }


def test_dbcheck_finds_sets_whose_packed_ids_and_rows_disagree(db, monkeypatch) -> None:
    """A hand-edited or damaged store: a difference losing a member row, a base
    gaining one (which changes its differences too), a packed value rewritten."""
    from patchwatch.domain.packed_ids import pack_ids

    monkeypatch.setattr(package_sets, "chunks", lambda values, size=400: sets.chunks(values, 7))

    def packed_check() -> dict[str, object]:
        return {r["check"]: r for r in check_store()}["packed member ids"]

    package_sets.ensure_package_sets(fleet(random.Random(10)), 1.0)
    assert packed_check()["found"] == 0
    written = list(PackageSet.select().order_by(PackageSet.id))
    difference = next(s for s in written if s.base_id is not None)
    others = [s for s in written if s.base_id is None and s.id != difference.base_id]
    whole = others[0]
    with database.atomic():
        row = PackageSetMember.get(PackageSetMember.package_set == difference.id)
        PackageSetMember.delete().where(
            (PackageSetMember.package_set == difference.id)
            & (PackageSetMember.package == row.package_id)
        ).execute()
    assert packed_check()["found"] == 1
    assert packed_check()["detail"] == f"package sets {difference.id}"
    with database.atomic():
        PackageSetMember.insert(package_set=difference.id, package=row.package_id).execute()
        ids = sorted(unpack_ids(whole.member_ids))
        PackageSet.update(member_ids=pack_ids(ids[1:])).where(PackageSet.id == whole.id).execute()
    assert packed_check()["found"] == 1  # the one just rewritten
    with database.atomic():
        PackageSet.update(member_ids=pack_ids(ids)).where(PackageSet.id == whole.id).execute()
        extra = sets.ensure_packages([record("stray")])[record("stray")]
        PackageSetMember.insert(package_set=difference.base_id, package=extra).execute()
    users = [s.id for s in written if s.base_id == difference.base_id]
    found = packed_check()
    assert found["found"] == 1 + len(users)  # the base and every difference from it


def test_only_the_package_set_module_knows_how_sets_are_stored() -> None:
    """One door: member rows, packed ids, bases and the view are named only where sets
    are stored (and where the schema and the pure encodings are defined)."""
    import inspect
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    allowed = {
        "patchwatch/store/package_sets.py",
        "patchwatch/store/models.py",
        "patchwatch/store/migrations.py",
        "patchwatch/domain/packed_ids.py",
        "patchwatch/domain/set_bases.py",
        # packs the ids of a set's vulnerability findings, not of its packages; reads
        # the packages through package_sets.package_ids_of
        "patchwatch/store/vulns.py",
    }
    encoding = re.compile(
        r"member_ids|package_set_member|package_set_content|PackageSetMember|"
        r"PackageSetContent|pack_ids|unpack_ids|base_id"
    )
    knowing = {
        str(path.relative_to(root))
        for folder in ("patchwatch", "receiver", "scheduler", "exporter", "cli")
        for path in (root / folder).rglob("*.py")
        if encoding.search(path.read_text())
    }
    assert knowing <= allowed, sorted(knowing - allowed)
    # mirrors' sets are whole by the door taken, not by a flag callers must pass
    assert list(inspect.signature(package_sets.ensure_package_set).parameters) == [
        "packages",
        "now",
    ]
