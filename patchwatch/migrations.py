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
from patchwatch.models import SchemaVersion

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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "lean indexes; package set members clustered on SQLite", _lean_indexes),
    Migration(
        3, "bulk tables without foreign keys on PostgreSQL", _bulk_tables_without_foreign_keys
    ),
    Migration(4, "report.packages_digest", _report_packages_digest),
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
