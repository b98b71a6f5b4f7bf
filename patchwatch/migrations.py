"""Schema versions and the steps between them.

Every process runs :func:`migrate` at start-up; it applies the missing steps in one
transaction under a lock, so two processes starting together do not race, and a failed
step leaves the previous version intact. A schema newer than this code knows refuses to
start rather than guess.

Rule for changing ``patchwatch.models``: add a step here that brings an existing
database to the new shape (``playhouse.migrate`` operations), never edit an old step.
Step 1 creates the tables from the current models, so on a fresh database every later
step runs against a schema that already has its shape: steps must be idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from peewee import Database
from peewee import PostgresqlDatabase
from peewee import SqliteDatabase

from patchwatch.errors import PatchwatchError
from patchwatch.models import MODELS
from patchwatch.models import HealthProbe
from patchwatch.models import SchemaVersion
from patchwatch.packed_ids import pack_ids

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x70617463  # "patc": serialises migrations on PostgreSQL


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Database], None]


def _initial(db: Database) -> None:
    db.create_tables(MODELS, safe=True)


def _lean_indexes(db: Database) -> None:
    """Drop indexes that another index already covers, and cluster set members.

    Every pending update and every member of a new package set paid for them on each
    insert (a package set of 1,500 packages touched 1,500 pages of each index):
    ``host_update(host_id)`` and ``package_set_member(package_set_id)`` are prefixes
    of unique indexes, and an index on a boolean (``host_update(security)``) is never
    worth reading. One index takes their place: ``host_update(host_id, security,
    first_seen_at)``, which answers a scrape's per-host counts without reading the
    table (without it SQLite read a million pending updates in random order). On
    SQLite, package set members move to a ``WITHOUT ROWID`` table keyed on (set,
    package), so that a set is one contiguous range of one B-tree instead of a row
    table plus its key index.
    """
    for index in (
        "host_update_host_id",
        "host_update_security",
        "package_set_member_package_set_id",
    ):
        db.execute_sql(f'DROP INDEX IF EXISTS "{index}"')
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "host_update_host_id_security_first_seen_at" '
        'ON "host_update" ("host_id", "security", "first_seen_at")'
    )
    if not isinstance(db, SqliteDatabase):
        return
    (table_sql,) = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'package_set_member'"
    ).fetchone()
    if "WITHOUT ROWID" in table_sql.upper():
        return
    for statement in (
        # a view on the table would stop the rename; migration 7 (pending whenever
        # this one is) creates it again
        "DROP VIEW IF EXISTS package_set_content",
        'CREATE TABLE "package_set_member_new" ('
        '"package_set_id" INTEGER NOT NULL, "package_id" INTEGER NOT NULL, '
        'PRIMARY KEY ("package_set_id", "package_id"), '
        'FOREIGN KEY ("package_set_id") REFERENCES "package_set" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("package_id") REFERENCES "package" ("id") ON DELETE CASCADE'
        ") WITHOUT ROWID",
        'INSERT INTO "package_set_member_new" (package_set_id, package_id) '
        'SELECT package_set_id, package_id FROM "package_set_member" '
        "ORDER BY package_set_id, package_id",
        'DROP TABLE "package_set_member"',
        'ALTER TABLE "package_set_member_new" RENAME TO "package_set_member"',
        'CREATE INDEX "package_set_member_package_id" ON "package_set_member" ("package_id")',
    ):
        db.execute_sql(statement)


BULK_TABLES = ("package_set_member", "update_set_item", "host_update")


def _bulk_tables_without_foreign_keys(db: Database) -> None:
    """On PostgreSQL, drop the foreign keys of the three tables written in bulk.

    PostgreSQL checks a foreign key with a trigger per inserted row, which locks the
    referenced row (a write to its page). The members of a new package set (about
    1,500 rows) were half the cost of processing a new report (71 against 46 ms,
    500 hosts of ``bench/fleet.py``), and the pending updates of 1,000 hosts took
    8.5 s to compute and store against 4.6 s without the keys. These rows are written
    only by ``patchwatch.sets`` and ``patchwatch.hostupdates``, from ids they have
    just read or inserted, and deleted with what they belong to by
    ``patchwatch.inventory`` explicitly; ``dbcheck`` finds and deletes any that a
    concurrent deletion left behind. SQLite checks the keys at a fraction of the
    cost, and dropping them there would mean rebuilding the tables: they stay.
    """
    if not isinstance(db, PostgresqlDatabase):
        return
    for table in BULK_TABLES:
        names = db.execute_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            (table,),
        ).fetchall()
        for (name,) in names:
            db.execute_sql(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')


def _report_packages_digest(db: Database) -> None:
    """Add ``report.packages_digest`` (see ``patchwatch.processing.process_pending``)."""
    if "packages_digest" in {c.name for c in db.get_columns("report")}:
        return
    db.execute_sql(
        'ALTER TABLE "report" ADD COLUMN "packages_digest" VARCHAR(64) NOT NULL DEFAULT \'\''
    )


_UPDATE_TABLES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    # table: (columns, the foreign key it keeps on SQLite, its indexes)
    "host_update": (
        (
            '"id" INTEGER NOT NULL PRIMARY KEY',
            '"host_id" INTEGER NOT NULL',
            '"installed_id" INTEGER NOT NULL',
            '"available_id" INTEGER NOT NULL',
            '"security" INTEGER NOT NULL',
            '"repository_id" INTEGER',
            '"first_seen_at" REAL NOT NULL',
        ),
        'FOREIGN KEY ("host_id") REFERENCES "host" ("id") ON DELETE CASCADE',
        (
            'CREATE UNIQUE INDEX "host_update_host_id_installed_id" '
            'ON "host_update" ("host_id", "installed_id")',
            'CREATE INDEX "host_update_host_id_security_first_seen_at" '
            'ON "host_update" ("host_id", "security", "first_seen_at")',
        ),
    ),
    "update_set_item": (
        (
            '"id" INTEGER NOT NULL PRIMARY KEY',
            '"update_set_id" INTEGER NOT NULL',
            '"installed_id" INTEGER NOT NULL',
            '"available_id" INTEGER NOT NULL',
            '"security" INTEGER NOT NULL',
            '"repository_id" INTEGER',
        ),
        'FOREIGN KEY ("update_set_id") REFERENCES "update_set" ("id") ON DELETE CASCADE',
        ('CREATE INDEX "update_set_item_update_set_id" ON "update_set_item" ("update_set_id")',),
    ),
}
_UNINDEXED_COLUMNS = ("installed_id", "available_id", "repository_id")


def _updates_without_package_indexes(db: Database) -> None:
    """Drop the indexes of pending updates on packages and repositories.

    Every pending update of every host paid for three indexes nothing reads
    (``host_update`` and ``update_set_item`` on ``installed_id``, ``available_id`` and
    ``repository_id``): updates are read by host and by update set, and the rare
    questions by package (``dbcheck``, merging repositories) scan the table once.
    Computing and writing the updates of 10,000 drifting hosts (about 1.5 million
    rows) took 43 s with them and 19-20 s without (SQLite, in-process, the
    ``bench/fleet.py`` store with its updates deleted); PostgreSQL, 1,000 hosts
    in-process: 6.6 s against 4.2 s.

    A foreign key needs an index on its column, or each deleted package would scan
    both tables, so on SQLite the tables are rebuilt without the keys to packages
    and repositories (they keep those to hosts and update sets, which are indexed).
    Nothing relied on those keys: packages are deleted only by ``dbcheck``, when no
    update refers to them, and merging repositories repoints updates explicitly.
    PostgreSQL has no foreign keys on these tables since migration 3.
    """
    for table in _UPDATE_TABLES:
        for column in _UNINDEXED_COLUMNS:
            db.execute_sql(f'DROP INDEX IF EXISTS "{table}_{column}"')
    if not isinstance(db, SqliteDatabase):
        return
    for table, (columns, key, indexes) in _UPDATE_TABLES.items():
        (table_sql,) = db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if 'REFERENCES "package"' not in table_sql:
            continue
        names = ", ".join(column.split(" ", 1)[0] for column in columns)
        for statement in (
            f'CREATE TABLE "{table}_new" ({", ".join(columns)}, {key})',
            f'INSERT INTO "{table}_new" ({names}) SELECT {names} FROM "{table}" ORDER BY id',
            f'DROP TABLE "{table}"',
            f'ALTER TABLE "{table}_new" RENAME TO "{table}"',
            *indexes,
        ):
            db.execute_sql(statement)


def _package_set_member_ids(db: Database) -> None:
    """Add ``package_set.member_ids`` and fill it for the sets already stored.

    Filled here rather than left NULL (readers fall back to the member rows) so that
    an upgraded store computes updates as fast as a new one. Costs one pass over the
    members, 200 sets per query: a 10,000-host store (7,000 sets, 10.6 million
    members) took 5.7 s on SQLite and 7.5 s on PostgreSQL, once.
    """
    if "member_ids" not in {c.name for c in db.get_columns("package_set")}:
        kind = "BLOB" if isinstance(db, SqliteDatabase) else "BYTEA"
        db.execute_sql(f'ALTER TABLE "package_set" ADD COLUMN "member_ids" {kind}')
    param = db.param
    ids = [r[0] for r in db.execute_sql('SELECT id FROM "package_set" ORDER BY id').fetchall()]
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        marks = ", ".join([param] * len(chunk))
        rows = db.execute_sql(
            'SELECT package_set_id, package_id FROM "package_set_member" '
            f"WHERE package_set_id IN ({marks}) ORDER BY package_set_id, package_id",
            chunk,
        ).fetchall()
        members: dict[int, list[int]] = {}
        for set_id, package_id in rows:
            members.setdefault(set_id, []).append(package_id)
        db.cursor().executemany(
            f'UPDATE "package_set" SET member_ids = {param} WHERE id = {param}',
            [(pack_ids(members.get(set_id, [])), set_id) for set_id in chunk],
        )


PACKAGE_SET_CONTENT = """
CREATE VIEW package_set_content AS
SELECT m.package_set_id, m.package_id
  FROM package_set s JOIN package_set_member m ON m.package_set_id = s.id
 WHERE s.base_id IS NULL
UNION ALL
SELECT m.package_set_id, m.package_id
  FROM package_set s JOIN package_set_member m ON m.package_set_id = s.id
 WHERE s.base_id IS NOT NULL AND NOT EXISTS (
       SELECT 1 FROM package_set_member b
        WHERE b.package_set_id = s.base_id AND b.package_id = m.package_id)
UNION ALL
SELECT s.id, b.package_id
  FROM package_set s JOIN package_set_member b ON b.package_set_id = s.base_id
 WHERE NOT EXISTS (
       SELECT 1 FROM package_set_member r
        WHERE r.package_set_id = s.id AND r.package_id = b.package_id)
"""


def _package_set_bases(db: Database) -> None:
    """Add ``package_set.base_id`` and the ``package_set_content`` view.

    Sets already stored stay whole (a NULL base); only new ones are written as
    differences (``patchwatch.set_bases``). The view's three parts: a whole set's
    rows; a difference's rows that its base lacks (added packages); the base's rows
    that the difference does not list (kept packages). Each part is an index range
    or probe by set, or by package, on both backends.
    """
    if "base_id" not in {c.name for c in db.get_columns("package_set")}:
        db.execute_sql(
            'ALTER TABLE "package_set" ADD COLUMN "base_id" INTEGER REFERENCES "package_set" ("id")'
        )
    db.execute_sql('CREATE INDEX IF NOT EXISTS "package_set_base_id" ON "package_set" ("base_id")')
    db.execute_sql("DROP VIEW IF EXISTS package_set_content")
    db.execute_sql(PACKAGE_SET_CONTENT)


def _receiver_hardening(db: Database) -> None:
    """Add the ``health_probe`` table (``patchwatch.health``: /healthz proves a write)
    and ``host_credential.enroll_key_hash`` (``patchwatch.tokens``: one token per host).

    Bindings already stored stay as they are: a host bound to an enrollment token
    keeps reporting with it until its agent asks for a token of its own.
    """
    db.create_tables([HealthProbe], safe=True)
    if "enroll_key_hash" not in {c.name for c in db.get_columns("host_credential")}:
        db.execute_sql(
            'ALTER TABLE "host_credential" ADD COLUMN "enroll_key_hash" VARCHAR(64) '
            "NOT NULL DEFAULT ''"
        )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "lean indexes; package set members clustered on SQLite", _lean_indexes),
    Migration(
        3, "bulk tables without foreign keys on PostgreSQL", _bulk_tables_without_foreign_keys
    ),
    Migration(4, "report.packages_digest", _report_packages_digest),
    Migration(5, "pending updates without indexes on packages", _updates_without_package_indexes),
    Migration(6, "package_set.member_ids", _package_set_member_ids),
    Migration(7, "package sets written as differences from a base", _package_set_bases),
    Migration(8, "health_probe table; host_credential.enroll_key_hash", _receiver_hardening),
)

LATEST = MIGRATIONS[-1].version


def current_version(db: Database) -> int:
    """Return the applied schema version, 0 for an empty database."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def migrate(db: Database) -> list[int]:
    """Bring the schema to :data:`LATEST`; return the versions applied.

    :raises PatchwatchError: when the database is newer than this program.
    """
    applied: list[int] = []
    lock = "IMMEDIATE" if not isinstance(db, PostgresqlDatabase) else None
    with db.atomic(lock) if lock else db.atomic():
        if isinstance(db, PostgresqlDatabase):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
        version = current_version(db)
        if version > LATEST:
            raise PatchwatchError(
                f"database schema is version {version}, newer than this patchwatch "
                f"({LATEST}); upgrade patchwatch"
            )
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            log.info("applying schema migration %d: %s", step.version, step.description)
            step.apply(db)
            SchemaVersion.create(
                version=step.version, description=step.description, applied_at=time.time()
            )
            applied.append(step.version)
    return applied
