"""The store on both backends: schema versions, sharing, constraints, the scheduler lease."""

from __future__ import annotations

import time

import pytest
from peewee import IntegrityError
from peewee import SqliteDatabase

from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.packed_ids import pack_ids
from patchwatch.domain.packed_ids import unpack_ids
from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.store import package_sets
from patchwatch.store import sets
from patchwatch.store.db import copy_text
from patchwatch.store.db import execute_many
from patchwatch.store.health import check_database
from patchwatch.store.locks import acquire_lease
from patchwatch.store.locks import release_lease
from patchwatch.store.migrations import LATEST
from patchwatch.store.migrations import MIGRATIONS
from patchwatch.store.migrations import current_version
from patchwatch.store.migrations import migrate
from patchwatch.store.models import MODELS
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSet
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Report
from patchwatch.store.models import ReportedUpdate
from patchwatch.store.models import SchemaVersion
from patchwatch.store.models import UpdateSet
from patchwatch.store.models import UpdateSetItem


def test_migrate_creates_every_table_and_is_idempotent(db) -> None:
    assert current_version(db) == LATEST
    tables = set(db.get_tables())
    assert {m._meta.table_name for m in MODELS} <= tables
    assert migrate(db) == []
    assert SchemaVersion.select().count() == LATEST


def test_every_model_column_exists_after_migration(db) -> None:
    for model in MODELS:
        columns = {c.name for c in db.get_columns(model._meta.table_name)}
        assert {f.column_name for f in model._meta.sorted_fields} <= columns, model.__name__


def test_newer_schema_refuses_to_start(db) -> None:
    SchemaVersion.create(version=LATEST + 1, description="from the future", applied_at=0)
    with pytest.raises(PatchwatchError, match="newer than this patchwatch"):
        migrate(db)


def _index_names(db, table: str) -> set[str]:
    return {index.name for index in db.get_indexes(table)}


def test_migration_4_adds_the_report_digest_and_keeps_queued_reports(db) -> None:
    db.execute_sql('ALTER TABLE "report" DROP COLUMN "packages_digest"')
    SchemaVersion.delete().where(SchemaVersion.version >= 4).execute()
    db.execute_sql(
        'INSERT INTO "report" (host_name, protocol, received_at, remote_addr, user_agent, '
        "body, size, state, error, attempts) "
        "VALUES ('db1', 'patchwatch/1', 1, '', '', '', 0, 'pending', '', 0)"
    )
    assert migrate(db)[0] == 4
    assert Report.get(Report.host_name == "db1").packages_digest == ""  # parsed in full


def test_the_receiver_hardening_migration_keeps_bindings_made_before_it(db) -> None:
    """A store from before per-host tokens: bindings to enrollment tokens stay, with no
    enrollment key; /healthz's probe table appears. (Found by its step, not by number.)"""
    from patchwatch.store.migrations import MIGRATIONS
    from patchwatch.store.migrations import _receiver_hardening
    from patchwatch.store.models import HostCredential
    from patchwatch.store.tokens import create_token

    step = next(m for m in MIGRATIONS if m.apply is _receiver_hardening)
    token, _ = create_token("enroll", 1.0)
    db.execute_sql('ALTER TABLE "host_credential" DROP COLUMN "enroll_key_hash"')
    db.execute_sql('DROP TABLE "health_probe"')
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()
    db.execute_sql(
        'INSERT INTO "host_credential" (host_name, token_id, bound_at) VALUES (?, ?, 1.0)'.replace(
            "?", db.param
        ),
        ("old.example.com", token.id),
    )
    assert step.version in migrate(db)
    binding = HostCredential.get(HostCredential.host_name == "old.example.com")
    assert (binding.token_id, binding.enroll_key_hash) == (token.id, "")
    assert check_database(db, writer="test")["writable"] is True
    assert migrate(db) == []


def test_reports_an_earlier_version_left_processing_are_queued_and_processed(db) -> None:
    """Nothing takes a ``processing`` report any more: the migration queues it again,
    and it is then processed like any other. (Found by its step, not by number.)"""
    from patchwatch.pipeline.processing import NATIVE
    from patchwatch.pipeline.processing import process_pending
    from patchwatch.pipeline.processing import store_report
    from patchwatch.store.migrations import _no_processing_reports

    step = next(m for m in MIGRATIONS if m.apply is _no_processing_reports)
    doc = {"version": 1, "host": "left.example.com",
           "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian 12"},
           "kernel": "6.1.0", "arch": "x86_64", "packages": []}  # fmt: skip
    left = store_report("left.example.com", NATIVE, doc, 1.0)
    done = store_report("done.example.com", NATIVE, doc | {"host": "done.example.com"}, 1.0)
    Report.update(state="processing", processed_at=2.0).where(Report.id == left.id).execute()
    Report.update(state="processed").where(Report.id == done.id).execute()
    SchemaVersion.delete().where(SchemaVersion.version >= step.version).execute()

    assert step.version in migrate(db)
    states = {r.id: r.state for r in Report.select()}
    assert states == {left.id: "pending", done.id: "processed"}
    assert process_pending(time.time()) == {"processed": 1}
    assert Host.get(Host.name == "left.example.com").kernel == "6.1.0"
    assert migrate(db) == []


_SCHEMA_4_UPDATES = {  # as step 1 made them before migration 5 (SQLite)
    "host_update": (
        '"id" INTEGER NOT NULL PRIMARY KEY, "host_id" INTEGER NOT NULL, '
        '"installed_id" INTEGER NOT NULL, "available_id" INTEGER NOT NULL, '
        '"security" INTEGER NOT NULL, "repository_id" INTEGER, "first_seen_at" REAL NOT NULL, '
        'FOREIGN KEY ("host_id") REFERENCES "host" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("installed_id") REFERENCES "package" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("available_id") REFERENCES "package" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("repository_id") REFERENCES "repository" ("id") ON DELETE SET NULL'
    ),
    "update_set_item": (
        '"id" INTEGER NOT NULL PRIMARY KEY, "update_set_id" INTEGER NOT NULL, '
        '"installed_id" INTEGER NOT NULL, "available_id" INTEGER NOT NULL, '
        '"security" INTEGER NOT NULL, "repository_id" INTEGER, '
        'FOREIGN KEY ("update_set_id") REFERENCES "update_set" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("installed_id") REFERENCES "package" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("available_id") REFERENCES "package" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("repository_id") REFERENCES "repository" ("id") ON DELETE SET NULL'
    ),
}


def test_migration_5_drops_update_indexes_on_packages_and_keeps_every_update(db) -> None:
    old, new = _pkg("bash", "5.1"), _pkg("bash", "5.2")
    host = Host.create(name="db1", created_at=time.time())
    pset = PackageSet.create(digest="d" * 64, size=1, created_at=0)
    uset = UpdateSet.create(package_set=pset, kernel="", computed_at=0)
    sqlite = isinstance(db, SqliteDatabase)
    for table, columns in _SCHEMA_4_UPDATES.items():
        if sqlite:
            db.execute_sql(f'DROP TABLE "{table}"')
            db.execute_sql(f'CREATE TABLE "{table}" ({columns})')
        for column in ("installed_id", "available_id", "repository_id"):
            db.execute_sql(f'CREATE INDEX "{table}_{column}" ON "{table}" ("{column}")')
    if sqlite:
        db.execute_sql('CREATE INDEX "update_set_item_update_set_id" '
                       'ON "update_set_item" ("update_set_id")')  # fmt: skip
    db.execute_sql(  # the columns of schema 4 only
        'INSERT INTO "host_update" (host_id, installed_id, available_id, security, first_seen_at) '
        f"VALUES ({host.id}, {old.id}, {new.id}, {db.param}, 7.0)",
        (True,),
    )
    UpdateSetItem.create(update_set=uset, installed=old, available=new, security=True)
    SchemaVersion.delete().where(SchemaVersion.version >= 5).execute()

    assert migrate(db)[0] == 5
    for table in _SCHEMA_4_UPDATES:
        assert not {f"{table}_{c}" for c in ("installed_id", "available_id", "repository_id")} & (
            _index_names(db, table)
        ), table
    assert "host_update_host_id_installed_id" in _index_names(db, "host_update")
    # (the later migration of held packages put ``held`` into this index)
    assert "host_update_host_id_security_held_first_seen_at" in _index_names(db, "host_update")
    assert "update_set_item_update_set_id" in _index_names(db, "update_set_item")
    kept = HostUpdate.get()
    assert (kept.host_id, kept.installed_id, kept.available_id, kept.first_seen_at) == (
        host.id,
        old.id,
        new.id,
        7.0,
    )
    assert UpdateSetItem.get().installed_id == old.id
    with pytest.raises(IntegrityError):  # one pending update per host and package
        HostUpdate.create(host=host, installed=old, available=new, security=True,
                          first_seen_at=8.0)  # fmt: skip
    if sqlite:
        for table in _SCHEMA_4_UPDATES:
            (sql,) = db.execute_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()
            assert 'REFERENCES "package"' not in sql and "FOREIGN KEY" in sql, sql
        host.delete_instance()  # the key to hosts stays, with its cascade
        assert HostUpdate.select().count() == 0


def test_migration_of_held_packages_adds_columns_defaults_and_the_covering_index(db) -> None:
    """A store from before held packages keeps its updates, none of them held, and rows
    written without the column (copied from update sets) get the schema's default."""
    step = next(m.version for m in MIGRATIONS if "held packages" in m.description)
    old, new = _pkg("bash", "5.1"), _pkg("bash", "5.2")
    host = Host.create(name="db1", created_at=time.time())
    HostUpdate.create(host=host, installed=old, available=new, security=True, first_seen_at=7.0)
    db.execute_sql('DROP INDEX "host_update_host_id_security_held_first_seen_at"')
    db.execute_sql('CREATE INDEX "host_update_host_id_security_first_seen_at" '
                   'ON "host_update" ("host_id", "security", "first_seen_at")')  # fmt: skip
    db.execute_sql('ALTER TABLE "host_update" DROP COLUMN "held"')
    db.execute_sql('ALTER TABLE "host" DROP COLUMN "held"')
    SchemaVersion.delete().where(SchemaVersion.version >= step).execute()

    assert migrate(db)[0] == step
    assert _index_names(db, "host_update") - {"host_update_pkey"} == {
        "host_update_host_id_installed_id", "host_update_host_id_security_held_first_seen_at",
    }  # fmt: skip
    kept = HostUpdate.get()
    assert (kept.installed_id, kept.first_seen_at, kept.held) == (old.id, 7.0, False)
    assert Host.get().held == ""
    other = _pkg("zsh", "5.8")
    db.execute_sql(
        'INSERT INTO "host_update" (host_id, installed_id, available_id, security, '
        f"first_seen_at) VALUES ({host.id}, {other.id}, {new.id}, {db.param}, 8.0)",
        (False,),
    )
    assert HostUpdate.get(HostUpdate.installed == other).held is False
    assert migrate(db) == []


def test_migration_6_packs_the_member_ids_of_stored_sets(db) -> None:
    """A store from before migration 6 gets every set's ids packed, equal to its members."""
    a, b, c = _pkg("a", "1"), _pkg("b", "1"), _pkg("c", "1")
    full = PackageSet.create(digest="f" * 64, size=3, created_at=0)
    empty = PackageSet.create(digest="e" * 64, size=0, created_at=0)
    PackageSetMember.insert_many([(full.id, p.id) for p in (c, a, b)]).execute()
    db.execute_sql('ALTER TABLE "package_set" DROP COLUMN "member_ids"')
    SchemaVersion.delete().where(SchemaVersion.version >= 6).execute()

    assert migrate(db)[0] == 6
    packed = dict(db.execute_sql('SELECT id, member_ids FROM "package_set"').fetchall())
    assert list(unpack_ids(packed[full.id])) == sorted([a.id, b.id, c.id])
    assert list(unpack_ids(packed[empty.id])) == []


def test_a_new_package_set_carries_its_member_ids_packed(db) -> None:
    records = [PackageRecord(f"p{i}", "", "1", "1", "amd64", PackageKind.DEB) for i in range(50)]
    pset = package_sets.ensure_package_set(records, 1.0)
    members = sorted(
        m.package_id
        for m in PackageSetMember.select().where(PackageSetMember.package_set == pset.id)
    )
    assert len(members) == 50
    assert list(unpack_ids(PackageSet.get_by_id(pset.id).member_ids)) == members


def test_ids_too_large_to_pack_are_left_to_the_member_rows() -> None:
    assert pack_ids([1, 2**31]) is None  # readers then use package_set_member
    assert list(unpack_ids(pack_ids([3, 1, 2**31 - 1]) or b"")) == [3, 1, 2**31 - 1]
    assert pack_ids([1, 256]) == bytes([1, 0, 0, 0, 0, 1, 0, 0])  # little-endian


def test_migration_2_drops_covered_indexes_and_keeps_every_member(db) -> None:
    """A store made by schema 1 (redundant indexes, a rowid member table) keeps its data."""
    pset = PackageSet.create(digest="d" * 64, size=2, created_at=0)
    members = [_pkg("a", "1").id, _pkg("b", "1").id]
    if isinstance(db, SqliteDatabase):  # schema 1's table: rows plus a separate key index
        db.execute_sql('DROP TABLE "package_set_member"')
        db.execute_sql(
            'CREATE TABLE "package_set_member" ("package_set_id" INTEGER NOT NULL, '
            '"package_id" INTEGER NOT NULL, PRIMARY KEY ("package_set_id", "package_id"))'
        )
        db.execute_sql('CREATE INDEX "package_set_member_package_id" ON '
                       '"package_set_member" ("package_id")')  # fmt: skip
    db.execute_sql('CREATE INDEX "package_set_member_package_set_id" ON '
                   '"package_set_member" ("package_set_id")')  # fmt: skip
    db.execute_sql('CREATE INDEX "host_update_host_id" ON "host_update" ("host_id")')
    db.execute_sql('CREATE INDEX "host_update_security" ON "host_update" ("security")')
    PackageSetMember.insert_many([(pset.id, m) for m in members]).execute()
    SchemaVersion.delete().where(SchemaVersion.version > 1).execute()

    assert migrate(db)[0] == 2
    assert "package_set_member_package_set_id" not in _index_names(db, "package_set_member")
    assert "package_set_member_package_id" in _index_names(db, "package_set_member")
    assert not {"host_update_host_id", "host_update_security"} & _index_names(db, "host_update")
    # (its covering index, with ``held`` since the migration of held packages)
    assert "host_update_host_id_security_held_first_seen_at" in _index_names(db, "host_update")
    rows = PackageSetMember.select(PackageSetMember.package).where(
        PackageSetMember.package_set == pset
    )
    assert sorted(r.package_id for r in rows) == sorted(members)
    if isinstance(db, SqliteDatabase):
        (sql,) = db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'package_set_member'"
        ).fetchone()
        assert "WITHOUT ROWID" in sql
    with pytest.raises(IntegrityError):  # the key still holds
        PackageSetMember.insert(package_set=pset, package=members[0]).execute()


def test_sqlite_runs_with_wal_and_foreign_keys(db) -> None:
    if not isinstance(db, SqliteDatabase):
        pytest.skip("SQLite pragmas only apply to SQLite; this is the PostgreSQL run")
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000


def _pkg(name: str, version: str) -> Package:
    return Package.create(
        kind="deb", name=name, epoch="", version=version, release="1", arch="amd64"
    )


def test_a_package_is_one_row_and_sets_are_shared(db) -> None:
    a = _pkg("openssl", "3.0.15")
    with pytest.raises(IntegrityError), db.atomic():
        _pkg("openssl", "3.0.15")
    pset = PackageSet.create(digest="d" * 64, size=1, created_at=time.time())
    PackageSetMember.create(package_set=pset, package=a)
    for i in range(3):
        Host.create(name=f"web{i}", package_set=pset, created_at=time.time())
    hosts = (
        Host.select()
        .join(PackageSet)
        .join(PackageSetMember)
        .where(PackageSetMember.package == a)
        .order_by(Host.name)
    )
    assert [h.name for h in hosts] == ["web0", "web1", "web2"]
    assert PackageSetMember.select().count() == 1


def test_package_ids_are_found_across_lookup_chunks(db, monkeypatch) -> None:
    monkeypatch.setattr(sets, "ARRAY_PARAMETER_SIZE", 3)  # PostgreSQL: names in arrays of 3
    records = [
        PackageRecord(f"pkg{i % 7}", "", f"1.{i}", "1", "amd64", PackageKind.DEB) for i in range(20)
    ]
    ids = sets.ensure_packages(records[:12])  # some stored first, the rest later
    ids |= sets.ensure_packages(records)
    assert len(set(ids.values())) == 20 == Package.select().count()
    sets.forget_cached_ids()  # found again from the store, by name, chunk by chunk
    assert sets.ensure_packages(records) == ids
    for rec, pid in ids.items():
        row = Package.get_by_id(pid)
        assert (row.name, row.version) == (rec.name, rec.version)


def test_a_package_another_process_inserted_meanwhile_is_found_not_duplicated(db) -> None:
    old = PackageRecord("zlib1g", "1", "1.2.13", "1", "amd64", PackageKind.DEB)
    new = PackageRecord("zlib1g", "1", "1.3", "1", "amd64", PackageKind.DEB)
    row = Package.create(kind="deb", name="zlib1g", epoch="1", version="1.2.13", release="1",
                         arch="amd64")  # fmt: skip
    cache: dict[object, int] = {}
    sets._insert_packages([old, new], cache)  # ``old`` conflicts, as after a lost race
    assert cache[old] == row.id
    assert cache[new] == Package.get(Package.version == "1.3").id
    assert Package.select().count() == 2


def test_deleting_a_package_set_clears_hosts_and_cascades_to_members_on_sqlite(db) -> None:
    pset = PackageSet.create(digest="e" * 64, size=1, created_at=time.time())
    PackageSetMember.create(package_set=pset, package=_pkg("bash", "5.2"))
    host = Host.create(name="db1", package_set=pset, created_at=time.time())
    pset.delete_instance()
    assert Host.get_by_id(host.id).package_set_id is None
    if isinstance(db, SqliteDatabase):
        assert PackageSetMember.select().count() == 0
    else:  # no foreign keys on members (migration 3): dbcheck deletes them explicitly
        assert PackageSetMember.select().count() == 1
        for table in ("package_set_member", "update_set_item", "host_update"):
            keys = db.execute_sql(
                "SELECT COUNT(*) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'f'",
                (table,),
            ).fetchone()[0]
            assert keys == 0, table


def _insert_and_read(model: type, fields: list, rows: list[tuple]) -> list[tuple]:
    columns = ", ".join(f.column_name for f in fields)
    marks = ", ".join("?" * len(fields))
    execute_many(f"INSERT INTO {model._meta.table_name} ({columns}) VALUES ({marks})", rows)
    return list(model.select(*fields).order_by(model.id).tuples())


def test_bulk_insert_keeps_every_value_as_given(db) -> None:
    # on PostgreSQL this is a COPY in text format, where tabs, newlines, backslashes
    # and NULL have to be escaped
    host = Host.create(name="db1", created_at=time.time())
    rows = [
        (host.id, "tab\there", "1\\N", "new\nline", True, "back\\slash\r"),
        (host.id, "\\N", "2", "x86_64", False, ""),
    ]
    fields = [ReportedUpdate.host, ReportedUpdate.name, ReportedUpdate.version,
              ReportedUpdate.arch, ReportedUpdate.security, ReportedUpdate.repository]  # fmt: skip
    assert _insert_and_read(ReportedUpdate, fields, rows) == rows


def test_bulk_insert_of_numbers_flags_and_nulls_keeps_every_value(db) -> None:
    # on PostgreSQL, rows without text are written as COPY text by the tuples' repr
    host = Host.create(name="db1", created_at=time.time())
    old, new = _pkg("bash", "5.1"), _pkg("bash", "5.2")
    rows = [
        (host.id, old.id, new.id, True, None, 1.78e9 + 0.123456789),
        (host.id, new.id, old.id, False, None, 1e16),
        (host.id, 2**31 - 1, 7, True, None, 1e-05),
    ]
    fields = [HostUpdate.host, HostUpdate.installed, HostUpdate.available, HostUpdate.security,
              HostUpdate.repository, HostUpdate.first_seen_at]  # fmt: skip
    assert _insert_and_read(HostUpdate, fields, rows) == rows


def test_copy_text_matches_value_by_value_formatting() -> None:
    rows = [(1, 2.5, True, None, -3, 1e16, 1e-05, 0.1, False, float("inf"))]
    assert copy_text(rows) == "1\t2.5\tt\t\\N\t-3\t1e+16\t1e-05\t0.1\tf\tinf\n"
    assert copy_text([(5,), (None,)]) == "5\n\\N\n"
    assert copy_text([(1, "a\tb"), (2, None)]) == "1\ta\\tb\n2\t\\N\n"
    # bytea in its hex form, the backslash escaped for COPY (packed ids)
    assert copy_text([(1, b"\x01\xff"), (2, b"")]) == "1\t\\\\x01ff\n2\t\\\\x\n"
    with pytest.raises(ValueError, match="different widths"):
        copy_text([(1, 2), (3,)])


def test_copy_text_of_strings_escapes_only_what_needs_it() -> None:
    assert copy_text([("deb", "bash", ""), ("rpm", "zsh", "1")]) == "deb\tbash\t\nrpm\tzsh\t1\n"
    # each of a backslash, a tab, a newline, a carriage return: the value-by-value path
    for raw, escaped in (
        ("e\\N", "e\\\\N"),
        ("a\tb", "a\\tb"),
        ("c\nd", "c\\nd"),
        ("f\rg", "f\\rg"),
    ):
        assert copy_text([(raw, "x"), ("y", "z")]) == f"{escaped}\tx\ny\tz\n"


def test_many_new_packages_are_staged_and_each_gets_its_own_id(db, monkeypatch) -> None:
    """From STAGE_MIN_ROWS new packages, PostgreSQL gets them by COPY into a temporary
    table (twice in one transaction here); values COPY must escape arrive intact, and
    a package stored already keeps its row."""
    monkeypatch.setattr(sets, "STAGE_MIN_ROWS", 3)
    staged: list[int] = []
    real = sets.insert_staged
    monkeypatch.setattr(
        sets, "insert_staged", lambda table, cols, rows, tail: staged.append(len(rows))
        or real(table, cols, rows, tail)
    )  # fmt: skip
    stored = _pkg("bash", "5.2")
    records = [PackageRecord("bash", "", "5.2", "1", "amd64", PackageKind.DEB)] + [
        PackageRecord(f"p{i}", "", f"1.{i}\\x\tz\nq", "1", "amd64", PackageKind.DEB)
        for i in range(8)
    ]
    cache: dict[object, int] = {}
    with db.atomic():
        sets._insert_packages(records[:5], cache)
        sets._insert_packages(records, cache)
    # SQLite inserts with ON CONFLICT directly; PostgreSQL staged both calls (the
    # second with the first one's five again: conflicts, found afterwards)
    assert staged == ([] if isinstance(db, SqliteDatabase) else [5, 9])
    assert cache[records[0]] == stored.id
    assert len(set(cache.values())) == 9 == Package.select().count()
    for record in records:
        row = Package.get_by_id(cache[record])
        assert (row.name, row.version, row.release) == (record.name, record.version, record.release)


def test_second_scheduler_waits_until_the_lease_expires(db) -> None:
    now = 1000.0
    assert acquire_lease("scheduler", "a", now, ttl=60)
    assert not acquire_lease("scheduler", "b", now + 1, ttl=60)
    assert acquire_lease("scheduler", "a", now + 30, ttl=60)  # renewal
    assert not acquire_lease("scheduler", "b", now + 89, ttl=60)
    assert acquire_lease("scheduler", "b", now + 91, ttl=60)  # a died; b takes over
    release_lease("scheduler", "b")
    assert acquire_lease("scheduler", "c", now + 92, ttl=60)


def test_health_reports_backend_and_schema(db) -> None:
    status = check_database(db)
    assert status["ok"] is True
    assert status["schema_version"] == LATEST
    assert status["backend"] == ("sqlite" if isinstance(db, SqliteDatabase) else "postgresql")


def test_timestamps_round_trip_exactly(db) -> None:
    """Double precision on both backends: a float column would round to minutes."""
    now = 1795480961.9239655
    Host.create(name="t", created_at=now, last_report_at=now)
    assert Host.get(Host.name == "t").last_report_at == now


@pytest.mark.parametrize(
    ("from_metadata", "override", "effective"),
    [(False, None, False), (True, None, True), (False, True, True), (True, False, False)],
)
def test_repository_effective_security_is_the_operators_word_else_the_metadatas(
    db, from_metadata: bool, override: bool | None, effective: bool
) -> None:
    """One answer, read back from the store as every caller reads it."""
    from patchwatch.store.models import Repository

    Repository.create(
        kind="deb", key="deb x", security=from_metadata, security_override=override,
        created_at=time.time(),
    )  # fmt: skip
    assert Repository.get().is_security is effective


def test_the_suites_small_sets_are_written_as_differences(db) -> None:
    """The lowered thresholds (conftest) reach the index package sets choose bases with."""
    records = [PackageRecord(f"p{i}", "", "1", "1", "amd64", PackageKind.DEB) for i in range(5)]
    ids = package_sets.ensure_package_sets([records[:4], records[1:]], 1.0)
    stored = {s.id: s.base_id for s in PackageSet.select()}
    (base,) = [b for b in stored.values() if b is not None]  # one written against the other
    assert set(stored) == set(ids) and stored[base] is None
